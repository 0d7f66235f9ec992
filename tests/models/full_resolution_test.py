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


# --------------------------------------------------------------------------- in bands
from tfharm.models import full_resolution as fr  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize("in_hw,out_hw", [((32, 32), (480, 641)), ((256, 256), (37, 53)),
                                          ((32, 32), (32, 32)), ((20, 30), (1000, 3))])
def test_resize_rows_is_bit_identical_to_tf_image_resize(in_hw, out_hw):
  x = np.random.default_rng(4).uniform(0, 1, (2, *in_hw, 2)).astype("float32")
  ref = tf.image.resize(x, out_hw, method="bilinear").numpy()
  h = out_hw[0]
  for y0, y1 in ((0, h), (0, min(h, 7)), (h // 3, h // 2 + 1), (max(0, h - 5), h)):
    np.testing.assert_array_equal(fr.resize_rows(x, *out_hw, y0, y1).numpy(), ref[:, y0:y1])


@pytest.mark.parametrize("band_pixels", [fr.BAND_PIXELS, 900])
def test_shrink_in_bands_equals_the_whole_image_shrink(band_pixels):
  image = np.random.default_rng(5).integers(0, 256, (2, 101, 77, 3)).astype("uint8")
  ref = tf.clip_by_value(fr.shrink(tf.cast(image, tf.float32) / 255.0, 32), 0.0, 1.0)
  got = fr.shrink_in_bands(tf.constant(image), 32, fr.uint8_to_unit, band_pixels)
  assert got.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(got, ref, atol=1e-6)


def _u8_data(h, w, seed=0):
  image, mask = _data(h, w, seed)
  return np.round(image * 255).astype("uint8"), mask


@pytest.mark.parametrize("correction", CORRECTIONS)
@pytest.mark.parametrize("band_pixels", [fr.BAND_PIXELS, 700])  # one block; ~20 blocks
def test_banded_uint8_path_equals_the_whole_image_path(model, correction, band_pixels):
  """The old path (float32 at full size, then uint8) against the banded one, in the same mode
  (graph): identical except, rarely, one level at a rounding tie."""
  image, mask = _u8_data(101, 77)
  mask[0, 5, 5, 0] = np.nan  # sanitised the same way
  whole = tf.function(lambda i, m: fr.unit_to_uint8(harmonise_any_size(
      model, fr.uint8_to_unit(i), m, correction=correction)))(image, mask).numpy()
  banded = tf.function(lambda i, m: fr.harmonise_uint8(
      model, i, m, correction, band_pixels))(tf.constant(image), tf.constant(mask)).numpy()
  diff = np.abs(banded.astype(int) - whole)
  assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, (diff.max(), np.mean(diff > 0))
  outside = np.broadcast_to(mask == 0, image.shape)
  np.testing.assert_array_equal(banded[outside], image[outside])  # untouched, bit for bit
