"""The training-free ring baseline and the abstention gate."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfharm import colour
from tfharm.models import abstention, baselines


def _scene(object_l: float, ring_l: float, far_l: float):
  """Grey image: a square object, a 15-pixel ring around it, something else beyond."""
  l = np.full((1, 96, 96), far_l, np.float32)
  l[:, 18:78, 18:78] = ring_l
  l[:, 33:63, 33:63] = object_l + np.linspace(-5, 5, 30)[None, None, :]  # some texture
  lab = np.stack([l, np.zeros_like(l), np.zeros_like(l)], axis=-1)
  mask = np.zeros((1, 96, 96, 1), np.float32)
  mask[:, 33:63, 33:63] = 1
  return colour.lab_to_rgb(lab), mask


def test_ring_is_the_background_band_around_the_object():
  _, mask = _scene(50, 50, 50)
  ring = baselines.ring(tf.constant(mask), width=15).numpy()[0, ..., 0]
  assert ring[33:63, 33:63].sum() == 0  # not the object
  assert ring[18:33, 18:78].all() and ring[63:78, 18:78].all()
  assert ring[:18].sum() == 0 and ring[78:].sum() == 0  # not beyond 15 pixels


def test_ring_baseline_moves_the_object_mean_onto_the_ring_and_keeps_its_spread():
  image, mask = _scene(object_l=30, ring_l=70, far_l=10)
  out = baselines.ring_l_mean(tf.constant(image), tf.constant(mask)).numpy()
  lab_in, lab_out = colour.rgb_to_lab(image), colour.rgb_to_lab(out)
  inside = mask[..., 0] > 0
  assert lab_out[..., 0][inside].mean() == pytest.approx(70, abs=0.05)
  assert lab_out[..., 0][inside].std() == pytest.approx(lab_in[..., 0][inside].std(), abs=0.05)
  np.testing.assert_array_equal(out[~inside], image[~inside])


def test_gate_keeps_confident_pixels_or_abstains():
  soft = tf.constant(np.array([0.2, 0.6, 0.9, 0.95], np.float32).reshape(1, 2, 2, 1))
  np.testing.assert_allclose(abstention.apply_gate(soft, abstention.Gate(0.0, 0.0)), soft)
  kept = abstention.apply_gate(soft, abstention.Gate(0.7, 0.4)).numpy().ravel()
  np.testing.assert_allclose(kept, [0, 0, 0.9, 0.95])  # half the image is confident: kept
  np.testing.assert_array_equal(abstention.apply_gate(soft, abstention.Gate(0.7, 0.6)), 0.0)
  with pytest.raises(ValueError, match="gate thresholds"):
    abstention.Gate(1.5, 0.0)


def test_a_gate_file_for_other_weights_is_refused(tmp_path):
  path = str(tmp_path / "gate.json")
  abstention.save_gate(path, abstention.Gate(0.8, 0.02), {"detector": "aa", "harmoniser": "bb"},
                       {"split": "validation"})
  assert abstention.load_gate(path, {"detector": "aa", "harmoniser": "bb"}) == abstention.Gate(0.8, 0.02)
  with pytest.raises(ValueError, match="calibrated for other detector weights"):
    abstention.load_gate(path, {"detector": "cc", "harmoniser": "bb"})
  with open(path, "w") as f:
    json.dump({"format": "something else"}, f)
  with pytest.raises(ValueError, match="not a gate file"):
    abstention.load_gate(path, {})
