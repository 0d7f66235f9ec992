"""MSE / PSNR / fMSE / SSIM: known values, conventions, agreement with skimage, XLA."""

import math

import numpy as np
import pytest
import tensorflow as tf
from skimage import metrics as skm

from tfharm.metrics import image


def _pair(seed, shape=(2, 40, 48, 3)):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 256, shape).astype(np.float32)
  b = np.clip(a + rng.normal(0, 12, shape), 0, 255).astype(np.float32)
  return a, b


def test_known_values_on_0_255_scale():
  a = np.full((1, 16, 16, 3), 100.0, np.float32)
  np.testing.assert_allclose(image.mse(a + 10, a), [100.0])
  np.testing.assert_allclose(image.psnr(a + 10, a), [10 * math.log10(255**2 / 100)], rtol=1e-6)
  # The same images given in [-1, 1] score identically on the 0-255 scale.
  to_pm1 = lambda x: x / 127.5 - 1
  np.testing.assert_allclose(image.psnr(to_pm1(a + 10), to_pm1(a), value_range=(-1, 1)),
                             image.psnr(a + 10, a), rtol=1e-5)


def test_psnr_is_per_image_then_averaged():
  a = np.full((2, 8, 8, 3), 50.0, np.float32)
  b = a.copy()
  b[0] += 10  # MSE 100
  b[1] += 1  # MSE 1
  per_image = image.psnr(b, a).numpy()
  np.testing.assert_allclose(per_image, [28.1308, 48.1308], atol=1e-3)
  assert abs(per_image.mean() - float(image.psnr_from_mse(tf.constant(50.5)))) > 5


def test_identical_pair_psnr_is_inf_or_capped():
  a, _ = _pair(0)
  assert np.isposinf(image.psnr(a, a).numpy()).all()
  np.testing.assert_array_equal(image.psnr(a, a, max_db=100.0), [100.0, 100.0])


def test_matches_skimage():
  a, b = _pair(1, (2, 64, 72, 3))
  for i in range(2):
    assert image.mse(a[i], b[i]).numpy()[0] == pytest.approx(skm.mean_squared_error(a[i], b[i]), rel=1e-5)
    assert image.psnr(a[i], b[i]).numpy()[0] == pytest.approx(
        skm.peak_signal_noise_ratio(a[i], b[i], data_range=255), rel=1e-5)
    want = skm.structural_similarity(a[i], b[i], data_range=255, channel_axis=-1,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert image.ssim(a[i], b[i]).numpy()[0] == pytest.approx(want, abs=2e-3)


def test_ssim_matches_tf_image_ssim():
  a, b = _pair(6, (3, 37, 50, 3))
  want = tf.image.ssim(a, b, max_val=255.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)
  np.testing.assert_allclose(image.ssim(a, b), want, rtol=0, atol=1e-4)
  fn = tf.function(image.ssim, jit_compile=True)
  np.testing.assert_allclose(fn(a, b), want, rtol=0, atol=1e-4)


def test_ssim_identity_symmetry_and_ordering():
  a, b = _pair(2)
  np.testing.assert_allclose(image.ssim(a, a), [1.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(image.ssim(a, b), image.ssim(b, a), atol=1e-6)
  c = np.clip(a + np.random.default_rng(3).normal(0, 40, a.shape), 0, 255).astype(np.float32)
  assert (image.ssim(a, b).numpy() > image.ssim(a, c).numpy()).all()


def test_fmse_conventions():
  a, b = _pair(4, (1, 32, 32, 3))
  full = np.ones((1, 32, 32), np.float32)
  np.testing.assert_allclose(image.fmse(a, b, full), image.mse(a, b), rtol=1e-6)
  mask = np.zeros((1, 32, 32, 1), np.float32)
  mask[:, 8:20, 4:30] = 1
  # DoveNet / iHarmony4 evaluation: mse(I*M, J*M) * H*W / sum(M).
  dove = skm.mean_squared_error(a[0] * mask[0], b[0] * mask[0]) * 32 * 32 / mask.sum()
  np.testing.assert_allclose(image.fmse(a, b, mask), [dove], rtol=1e-5)
  outside_only = np.where(mask > 0, a, b)  # errors only outside the mask
  np.testing.assert_array_equal(image.fmse(a, outside_only, mask), [0.0])
  with pytest.raises(ValueError, match="empty foreground"):
    image.fmse(a, b, np.zeros_like(mask))


def test_compiled_matches_eager_and_handles_empty_mask_as_nan():
  a, b = _pair(5)
  mask = np.zeros((2, 40, 48, 1), np.float32)
  mask[0, 5:9, 5:9] = 1
  eager = image.image_metrics(a[:1], b[:1], mask[:1])
  fn = image.compiled()
  got = fn(tf.constant(a), tf.constant(b), tf.constant(mask))
  for k, v in eager.items():
    np.testing.assert_allclose(got[k].numpy()[:1], v.numpy(), rtol=1e-5)
  assert np.isnan(got["fmse"].numpy()[1])  # inside a graph the empty mask is NaN, never a number


@pytest.mark.parametrize("a_shape,b_shape,match", [
    ((1, 16, 16, 3), (1, 16, 12, 3), "shapes differ"),
    ((1, 16, 16, 1), (1, 16, 16, 1), "RGB"),
    ((1, 16, 16, 4), (1, 16, 16, 4), "RGB"),
])
def test_check_images_refuses_bad_shapes(a_shape, b_shape, match):
  with pytest.raises(ValueError, match=match):
    image.check_images(np.zeros(a_shape, np.float32), np.zeros(b_shape, np.float32))


def test_check_images_refuses_nan_and_small_ssim():
  a = np.zeros((1, 16, 16, 3), np.float32)
  b = a.copy()
  b[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    image.check_images(a, b)
  with pytest.raises(ValueError, match="11x11"):
    image.ssim(np.zeros((1, 10, 16, 3)), np.zeros((1, 10, 16, 3)))
