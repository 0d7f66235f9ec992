"""Any-size application of the fixed-size harmoniser (architectures.md 1.3)."""
import numpy as np
import pytest
import tensorflow as tf

from tfharm.models.correction import CORRECTIONS
from tfharm.models.full_resolution import harmonise_any_size
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig


@pytest.fixture(scope="module")
def model():
  return Harmoniser(HarmoniserConfig(image_size=32))


def _data(h, w, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 1, (2, h, w, 3)).astype("float32")
  mask = np.zeros((2, h, w, 1), "float32")
  mask[:, h // 3: 2 * h // 3, w // 4: w // 2] = rng.uniform(0.2, 1.0)
  return image, mask


@pytest.mark.parametrize("correction", CORRECTIONS)
@pytest.mark.parametrize("h,w", [(37, 53), (32, 32), (101, 17), (480, 641)])
def test_untouched_outside_mask_and_shape_kept(model, h, w, correction):
  image, mask = _data(h, w)
  out = harmonise_any_size(model, image, mask, correction=correction).numpy()
  assert out.shape == (2, h, w, 3)
  outside = np.broadcast_to(mask == 0, out.shape)
  np.testing.assert_array_equal(out[outside], image[outside])
  assert out.min() >= 0.0 and out.max() <= 1.0
  inside = np.broadcast_to(mask > 0, out.shape)
  assert np.abs(out[inside] - image[inside]).max() > 0  # the correction is applied


@pytest.mark.parametrize("correction", CORRECTIONS)
def test_empty_mask_returns_input_exactly(model, correction):
  image, mask = _data(45, 70)
  out = harmonise_any_size(model, image, np.zeros_like(mask), correction=correction)
  np.testing.assert_array_equal(out.numpy(), image)


def test_out_of_range_and_nan_masks_are_clipped(model):
  image, mask = _data(40, 24)
  wild = mask * 5 - 1  # -1 where the mask was 0
  wild[0, 0, 0, 0] = np.nan
  out = harmonise_any_size(model, image, wild).numpy()
  np.testing.assert_array_equal(out, harmonise_any_size(model, image, np.clip(mask * 5 - 1, 0, 1)))


@pytest.mark.parametrize("correction", CORRECTIONS)
def test_runs_under_xla(model, correction):
  image, mask = _data(40, 56)
  eager = harmonise_any_size(model, image, mask, correction=correction)
  compiled = tf.function(lambda i, m: harmonise_any_size(model, i, m, correction=correction),
                         jit_compile=True)
  np.testing.assert_allclose(compiled(image, mask), eager, atol=2e-5)


def test_unknown_correction_is_refused(model):
  image, mask = _data(32, 32)
  with pytest.raises(ValueError, match="unknown correction 'lmoments'"):
    harmonise_any_size(model, image, mask, correction="lmoments")


@pytest.mark.parametrize("h,w,size", [(101, 37, 32), (64, 64, 32), (20, 50, 32), (300, 200, 64)])
def test_resize_matrix_matches_tf_image_resize(h, w, size):
  from tfharm.models.full_resolution import shrink
  x = np.random.default_rng(3).uniform(0, 1, (1, h, w, 2)).astype("float32")
  ref = tf.image.resize(x, (size, size), method="bilinear", antialias=True)
  np.testing.assert_allclose(shrink(x, size), ref, atol=2e-5)
