"""The corrections that turn the harmoniser's S x S prediction into the output image."""
import ast
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import DEMO_ROOT, REPO
from tfharm import colour
from tfharm.data import coco
from tfharm.metrics import image as image_metrics
from tfharm.models import correction
from tfharm.models.full_resolution import shrink


@pytest.fixture(scope="module")
def photo():
  """A real demo photo (RGB in [0, 1]) and the mask of an object covering about 20 % of it."""
  split = coco.load_split(DEMO_ROOT, "test")
  def fraction(o):
    image = split.images[o.image_id]
    return o.area / (image.height * image.width)
  obj = min((o for o in split.objects.values() if not o.iscrowd),
            key=lambda o: abs(fraction(o) - 0.2))
  record = split.images[obj.image_id]
  rgb = coco.read_image(split.image_dir, record).astype(np.float32) / 255.0
  mask = coco.decode_mask(obj, record.height, record.width).astype(np.float32)
  assert 0.01 < mask.mean() < 0.9
  return rgb[None], mask[None, ..., None]


def _corrupt(rgb, mask, shift=14.0, contrast=0.6):
  """The builder's corruption: numpy Reinhard on L* inside a hard mask."""
  lab = colour.rgb_to_lab(rgb[0])
  stats = colour.l_statistics(lab, mask[0, ..., 0] > 0)
  moved = colour.LStatistics(stats.mean + shift, stats.std * contrast)
  out = colour.reinhard_l_transfer(lab, mask[0, ..., 0] > 0, stats, moved)
  return np.clip(colour.lab_to_rgb(out), 0, 1)[None].astype(np.float32)


def _scalar(x) -> float:
  return float(np.asarray(x).reshape(()))


def _psnr(a, b):
  return float(image_metrics.psnr(a, b, value_range=(0.0, 1.0))[0])


def test_weighted_moments_equal_numpy_statistics_and_ignore_weight_scale(photo):
  rgb, mask = photo
  stats = colour.l_statistics(colour.rgb_to_lab(rgb[0]), mask[0, ..., 0] > 0)
  mean, std = correction.weighted_l_moments(rgb, mask)
  assert _scalar(mean) == pytest.approx(stats.mean, abs=1e-3)
  assert _scalar(std) == pytest.approx(stats.std, abs=1e-3)
  mean_half, std_half = correction.weighted_l_moments(rgb, mask * 0.5)
  assert _scalar(mean_half) == pytest.approx(_scalar(mean), abs=1e-4)
  assert _scalar(std_half) == pytest.approx(_scalar(std), abs=1e-4)


def test_tf_transfer_equals_the_numpy_corruption_for_a_hard_mask(photo):
  rgb, mask = photo
  lab = colour.rgb_to_lab(rgb[0])
  src = colour.l_statistics(lab, mask[0, ..., 0] > 0)
  dst = colour.LStatistics(src.mean - 9.0, src.std * 1.3)
  reference = np.clip(colour.lab_to_rgb(colour.reinhard_l_transfer(
      lab, mask[0, ..., 0] > 0, src, dst)), 0, 1)
  ours = correction.reinhard_l_transfer_tf(
      rgb, mask, (tf.constant(src.mean), tf.constant(src.std)),
      (tf.constant(dst.mean), tf.constant(dst.std)))
  np.testing.assert_allclose(ours[0], reference, atol=2e-4)


# Contrast reductions: the corruption then clips nothing, so it is exactly invertible (a
# stretch pushes L* or RGB out of range and loses what was clipped: -20 / 1.5 -> 34.9 dB).
@pytest.mark.parametrize("shift,contrast", [(14.0, 0.6), (-15.0, 0.7)])
def test_l_moments_undo_the_corruption_given_the_true_statistics(photo, shift, contrast):
  """With a perfect prediction the correction restores the real image: it is the corruption's
  inverse. The residual correction, given the same prediction, is exact at S by construction,
  so the test compares the two on a prediction the network could make: a blurred one."""
  real, mask = photo
  comp = _corrupt(real, mask, shift, contrast)
  assert _psnr(comp, real) < 33
  out = correction.apply_correction("l_moments", comp, mask, comp, mask, real)
  assert _psnr(out, real) > 45
  # A blurred but tonally right prediction (what DIH produces): l_moments keeps the texture.
  blurred = tf.nn.avg_pool2d(real, 5, 1, "SAME")
  via_moments = correction.apply_correction("l_moments", comp, mask, comp, mask, blurred)
  via_residual = correction.apply_correction("residual", comp, mask, comp, mask, blurred)
  assert _psnr(via_moments, real) > _psnr(via_residual, real) + 3


def test_moments_measured_at_s_carry_over_to_full_resolution(photo):
  real, mask = photo
  comp = _corrupt(real, mask)
  comp_s, real_s, mask_s = (tf.clip_by_value(shrink(x, 64), 0, 1) for x in (comp, real, mask))
  out = correction.apply_correction("l_moments", comp, mask, comp_s, mask_s, real_s)
  assert out.shape == comp.shape
  assert _psnr(out, real) > _psnr(comp, real) + 10


@pytest.mark.parametrize("name", correction.CORRECTIONS)
def test_zero_mask_pixels_are_returned_bit_identical(photo, name):
  real, mask = photo
  comp = _corrupt(real, mask)
  for m in (mask, np.zeros_like(mask)):
    out = correction.apply_correction(name, comp, m, comp, m, real).numpy()
    outside = np.broadcast_to(m == 0, out.shape)
    np.testing.assert_array_equal(out[outside], comp[outside])


@pytest.mark.parametrize("name", correction.CORRECTIONS)
def test_nan_and_out_of_range_masks_are_read_as_clipped(photo, name):
  real, mask = photo
  comp = _corrupt(real, mask)
  wild = mask * 3.0 - 1.0  # -1 outside the object, 2 inside
  wild[0, 0, 0, 0] = np.nan
  clean = np.clip(np.nan_to_num(wild, nan=0.0), 0.0, 1.0)
  out = correction.apply_correction(name, comp, wild, comp, wild, real).numpy()
  assert np.isfinite(out).all()
  np.testing.assert_array_equal(
      out, correction.apply_correction(name, comp, clean, comp, clean, real).numpy())


def test_flat_object_is_shifted_and_contrast_is_bounded():
  image = np.full((1, 8, 8, 3), 0.4, np.float32)
  mask = np.ones((1, 8, 8, 1), np.float32)
  target = (tf.constant(60.0), tf.constant(5.0))
  flat_source = correction.weighted_l_moments(image, mask)
  out = correction.reinhard_l_transfer_tf(image, mask, flat_source, target)
  assert np.isfinite(out).all()
  mean, std = correction.weighted_l_moments(out, mask)
  assert _scalar(mean) == pytest.approx(60.0, abs=0.05) and _scalar(std) < 1e-3
  ramp = np.linspace(0.3, 0.5, 64, dtype=np.float32).reshape(1, 8, 8, 1).repeat(3, -1)
  source = correction.weighted_l_moments(ramp, mask)
  wild = (source[0], source[1] * 1000.0)
  _, stretched = correction.weighted_l_moments(
      correction.reinhard_l_transfer_tf(ramp, mask, source, wild), mask)
  assert _scalar(stretched) <= _scalar(source[1]) * correction.MAX_CONTRAST_RATIO * 1.001


@pytest.mark.parametrize("name", correction.CORRECTIONS)
def test_compiles_under_xla(photo, name):
  real, mask = photo
  comp = _corrupt(real, mask)
  comp_s, real_s, mask_s = (tf.clip_by_value(shrink(x, 64), 0, 1) for x in (comp, real, mask))
  fn = lambda: correction.apply_correction(name, comp, mask, comp_s, mask_s, real_s)
  np.testing.assert_allclose(tf.function(fn, jit_compile=True)(), fn(), atol=2e-5)


def test_cli_choices_equal_the_library_corrections():
  """export.py and harmonise.py spell the choices out (importing tfharm.models would start
  TensorFlow before their cheap checks); they must not drift from correction.CORRECTIONS."""
  for program in ("export.py", "harmonise.py"):
    tree = ast.parse(open(os.path.join(REPO, "tfharm", program)).read())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
             and isinstance(n.args[0], ast.Constant) and n.args[0].value == "correction"]
    assert len(calls) == 1, program
    assert calls[0].args[1].value == correction.DEFAULT_CORRECTION
    assert tuple(ast.literal_eval(calls[0].args[2])) == correction.CORRECTIONS
