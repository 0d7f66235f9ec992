"""Test helper: small detector inputs whose labels are known by construction."""

import numpy as np

from tfharm import colour


def grey_pair(ratios, size=16, l_real=50.0):
  """Real: grey L*=l_real; composite: the central object at L* = ratio * l_real."""
  n = len(ratios)
  mask = np.zeros((n, size, size, 1), "float32")
  mask[:, 4:12, 4:12] = 1.0
  lab_real = np.zeros((n, size, size, 3), "float32")
  lab_real[..., 0] = l_real
  lab_comp = lab_real.copy()
  lab_comp[..., 0] = np.where(mask[..., 0] > 0, l_real * np.asarray(ratios)[:, None, None], l_real)
  return colour.lab_to_rgb(lab_comp), colour.lab_to_rgb(lab_real), mask


def object_batch(n=3, size=16, seed=0):
  """Random colour images, a rectangle object per example (different places)."""
  rng = np.random.default_rng(seed)
  real = rng.uniform(0, 1, (n, size, size, 3)).astype("float32")
  mask = np.zeros((n, size, size, 1), "float32")
  for i in range(n):
    y, x = rng.integers(0, size // 2, 2)
    mask[i, y:y + size // 2, x:x + size // 3] = 1.0
  return real, mask
