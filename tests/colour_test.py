"""sRGB <-> CIE L*a*b*: agreement with the CIE definition, exact 8-bit round trips, Reinhard on L*."""

import numpy as np
import pytest
import tensorflow as tf

from tfharm import colour


def _all_8bit_colours() -> np.ndarray:
  v = np.arange(2**24, dtype=np.uint32)
  return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8)


# Published L*a*b* (D65, 2 degree) of sRGB colours (Lindbloom's calculator, CIE 15 formulas).
_PUBLISHED = {
    (255, 255, 255): (100.0, 0.0, 0.0),
    (0, 0, 0): (0.0, 0.0, 0.0),
    (255, 0, 0): (53.2408, 80.0925, 67.2032),
    (0, 255, 0): (87.7347, -86.1827, 83.1793),
    (0, 0, 255): (32.2970, 79.1875, -107.8602),
    (128, 128, 128): (53.5850, 0.0, 0.0),
}


@pytest.mark.parametrize("rgb,lab", list(_PUBLISHED.items()))
def test_matches_published_values(rgb, lab):
  np.testing.assert_allclose(colour.u8_to_lab(np.array(rgb, np.uint8)), lab, atol=0.01)


def test_matches_scikit_image_to_a_hundredth():
  skimage_color = pytest.importorskip("skimage.color")
  rgb = _all_8bit_colours()[::251].astype(np.float64) / 255.0
  np.testing.assert_allclose(colour.rgb_to_lab(rgb), skimage_color.rgb2lab(rgb), atol=0.01)


def test_every_8bit_colour_round_trips_exactly_numpy():
  rgb = _all_8bit_colours()
  back = colour.lab_to_u8(colour.u8_to_lab(rgb))
  assert np.count_nonzero(np.any(back != rgb, axis=-1)) == 0


def test_every_8bit_colour_round_trips_exactly_tensorflow_under_xla():
  rgb = _all_8bit_colours()
  round_trip = tf.function(lambda x: colour.lab_to_rgb_tf(colour.rgb_to_lab_tf(tf.cast(x, tf.float32) / 255.0)),
                           jit_compile=True)
  back = np.clip(np.rint(round_trip(tf.constant(rgb)).numpy() * 255.0), 0, 255).astype(np.uint8)
  assert np.count_nonzero(np.any(back != rgb, axis=-1)) == 0


def test_tensorflow_and_numpy_agree():
  rgb = _all_8bit_colours()[::97].astype(np.float32) / 255.0
  np.testing.assert_allclose(colour.rgb_to_lab_tf(tf.constant(rgb)).numpy(),
                             colour.rgb_to_lab(rgb), atol=2e-4)


def _object_scene(seed=0):
  rng = np.random.default_rng(seed)
  real = rng.integers(20, 230, (32, 40, 3), dtype=np.uint8)
  mask = np.zeros((32, 40), bool)
  mask[8:24, 10:30] = True
  return real, mask


def test_reinhard_matches_reference_statistics_and_keeps_chroma():
  real, mask = _object_scene()
  lab = colour.u8_to_lab(real)
  target = colour.l_statistics(lab, mask)
  reference = colour.LStatistics(mean=35.0, std=6.0)
  out = colour.reinhard_l_transfer(lab, mask, target, reference)
  moved = colour.l_statistics(out, mask)
  assert moved.mean == pytest.approx(35.0, abs=1e-4)
  assert moved.std == pytest.approx(6.0, abs=1e-4)
  np.testing.assert_array_equal(out[..., 1:], lab[..., 1:])
  np.testing.assert_array_equal(out[~mask], lab[~mask])


def test_reinhard_clips_l_and_handles_flat_target():
  lab = np.zeros((4, 4, 3), np.float32)
  lab[..., 0] = 50.0
  mask = np.ones((4, 4), bool)
  flat = colour.l_statistics(lab, mask)
  assert flat.std == 0.0
  out = colour.reinhard_l_transfer(lab, mask, flat, colour.LStatistics(70.0, 10.0))
  np.testing.assert_allclose(out[..., 0], 70.0)  # shifted to the reference mean, not divided by 0
  lab[0, 0, 0] = 60.0
  out = colour.reinhard_l_transfer(lab, mask, colour.l_statistics(lab, mask),
                                   colour.LStatistics(95.0, 40.0))
  assert out[..., 0].max() <= 100.0 and out[..., 0].min() >= 0.0


def test_empty_mask_is_an_error():
  with pytest.raises(ValueError, match="empty mask"):
    colour.l_statistics(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), bool))


def _saturated_colours_moved(factor: float) -> np.ndarray:
  rgb = _all_8bit_colours()[::997]
  lab = colour.u8_to_lab(rgb)
  lab[..., 0] = np.clip(lab[..., 0] * factor, 0.0, 100.0)
  return lab


@pytest.mark.parametrize("factor", [0.4, 1.6, 2.5])
def test_gamut_mapping_keeps_l_and_hue_and_fits(factor):
  lab = _saturated_colours_moved(factor)
  mapped = colour.gamut_map_chroma(lab)
  linear = colour._lab_to_linear(mapped, colour._NP)  # pylint: disable=protected-access
  assert np.all(linear >= -1e-5) and np.all(linear <= 1 + 1e-5)
  np.testing.assert_array_equal(mapped[..., 0], lab[..., 0])  # L* untouched
  chroma, mapped_chroma = np.hypot(lab[..., 1], lab[..., 2]), np.hypot(mapped[..., 1], mapped[..., 2])
  assert np.all(mapped_chroma <= chroma + 1e-4)
  kept = mapped_chroma > 1.0  # hue is undefined at grey
  hue = lambda x: np.arctan2(x[..., 2], x[..., 1])
  np.testing.assert_allclose(np.angle(np.exp(1j * (hue(mapped) - hue(lab))))[kept], 0, atol=1e-5)
  # Per-channel clipping (lab_to_rgb) moves L* of the same colours far more.
  outside = np.any(colour._lab_to_linear(lab, colour._NP) > 1 + 1e-5, axis=-1)  # pylint: disable=protected-access
  if outside.any():
    clipped_l = colour.rgb_to_lab(colour.lab_to_rgb(lab))[..., 0]
    mapped_l = colour.rgb_to_lab(colour.lab_to_rgb(mapped))[..., 0]
    assert np.abs(mapped_l - lab[..., 0])[outside].max() < 1e-2
    assert np.abs(clipped_l - lab[..., 0])[outside].max() > 1.0


def test_gamut_mapping_leaves_in_gamut_colours_alone():
  lab = colour.u8_to_lab(_all_8bit_colours()[::4099])
  np.testing.assert_array_equal(colour.gamut_map_chroma(lab), lab)
  np.testing.assert_array_equal(colour.lab_to_u8_in_gamut(lab), colour.lab_to_u8(lab))
