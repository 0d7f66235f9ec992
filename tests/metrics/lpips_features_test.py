"""LPIPS from precomputed target features (what the evaluation uses) equals `compute`."""

import numpy as np
import pytest
import tensorflow as tf

from tfharm.metrics import lpips as lpips_lib


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_distance_to_features_equals_compute(net):
  model = lpips_lib.LPIPS(net, jit_compile=False)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(-1, 1, (3, 48, 40, 3)), tf.float32)
  y = tf.constant(rng.uniform(-1, 1, (3, 48, 40, 3)), tf.float32)
  expected = model.compute(x, y).numpy()
  got = model.distance_to_features(x, model.normalised_features(y)).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  # several candidates against one target: tiled features give each candidate's distance
  target = model.normalised_features(y[:1])
  tiled = [tf.tile(f, [3, 1, 1, 1]) for f in target]
  np.testing.assert_allclose(model.distance_to_features(x, tiled).numpy(),
                             model.compute(x, tf.tile(y[:1], [3, 1, 1, 1])).numpy(),
                             rtol=1e-6, atol=1e-7)
  assert len(set(np.round(expected, 6))) == 3  # distinct pairs, so a mix-up would show
  np.testing.assert_allclose(model.distance_to_features(y, model.normalised_features(y)).numpy(),
                             0.0, atol=1e-7)


def test_distance_to_features_spatial():
  model = lpips_lib.LPIPS("alex", spatial=True, jit_compile=False)
  rng = np.random.default_rng(1)
  x = tf.constant(rng.uniform(-1, 1, (2, 40, 40, 3)), tf.float32)
  y = tf.constant(rng.uniform(-1, 1, (2, 40, 40, 3)), tf.float32)
  got = model.distance_to_features(x, model.normalised_features(y))
  assert got.shape == (2, 40, 40)
  np.testing.assert_allclose(got.numpy(), model.compute(x, y).numpy(), rtol=1e-6, atol=1e-7)
