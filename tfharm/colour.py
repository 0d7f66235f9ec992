"""8-bit sRGB <-> CIE L*a*b* (D65) and Reinhard transfer on L*, in numpy and TensorFlow.

One definition serves both back ends: every formula is written once against a tiny array
namespace (numpy's or TensorFlow's), so the TFDS builder (numpy) and graphs under `jit_compile=True`
(TensorFlow) cannot drift apart. The constants are the CIE ones (IEC 61966-2-1 sRGB, the
exact rational epsilon/kappa of CIE 15), not OpenCV's approximations, which differ by up to
about 0.2 L*. Computed in float32, every one of the 2**24 8-bit colours round-trips exactly
after rounding (tests/colour_test.py).

Ranges: RGB in [0, 1] (float) or uint8 via the `*_u8` helpers; L* in [0, 100], a*, b* roughly
[-128, 127].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

# sRGB (IEC 61966-2-1) linear RGB -> XYZ, D65. Rows: X, Y, Z.
RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375],
     [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]], dtype=np.float64)
# Exact inverse, so that the round trip has no systematic matrix error.
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
# D65 reference white as the matrix maps RGB (1, 1, 1): keeps grey at a* = b* = 0 exactly.
WHITE_D65 = RGB_TO_XYZ.sum(axis=1)
# CIE 15: epsilon = (6/29)**3, kappa = (29/3)**3.
EPSILON = 216.0 / 24389.0
KAPPA = 24389.0 / 27.0
L_RANGE = (0.0, 100.0)


class _Numpy:
  """numpy, float32 throughout."""
  dtype = np.float32

  @staticmethod
  def asarray(x):
    return np.asarray(x, dtype=np.float32)

  @staticmethod
  def const(x):
    return np.asarray(x, dtype=np.float32)

  where = staticmethod(np.where)
  maximum = staticmethod(np.maximum)
  power = staticmethod(np.power)
  cbrt = staticmethod(np.cbrt)
  clip = staticmethod(np.clip)
  stack = staticmethod(lambda xs: np.stack(xs, axis=-1))

  @staticmethod
  def unstack(x):
    return x[..., 0], x[..., 1], x[..., 2]

  @staticmethod
  def matvec(x, m):
    return np.einsum("...j,ij->...i", x, m).astype(np.float32)


@functools.cache
def _tensorflow_namespace():
  """TensorFlow ops that compile under XLA. Imported lazily: builder workers use numpy only."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class _TensorFlow:
    dtype = tf.float32
    asarray = staticmethod(lambda x: tf.cast(x, tf.float32))
    const = staticmethod(lambda x: tf.constant(np.asarray(x, dtype=np.float32)))
    where = staticmethod(tf.where)
    maximum = staticmethod(tf.maximum)
    power = staticmethod(tf.pow)
    clip = staticmethod(tf.clip_by_value)
    # tf has no cbrt; the branch that uses it only sees values > EPSILON.
    cbrt = staticmethod(lambda x: tf.pow(tf.maximum(x, 1e-12), 1.0 / 3.0))
    stack = staticmethod(lambda xs: tf.stack(xs, axis=-1))
    unstack = staticmethod(lambda x: (x[..., 0], x[..., 1], x[..., 2]))
    matvec = staticmethod(lambda x, m: tf.einsum("...j,ij->...i", x, m))

  return _TensorFlow()


_NP = _Numpy()


def _rgb_to_lab(rgb: Any, xp) -> Any:
  rgb = xp.asarray(rgb)
  linear = xp.where(rgb <= 0.04045, rgb / 12.92, xp.power((rgb + 0.055) / 1.055, 2.4))
  xyz = xp.matvec(linear, xp.const(RGB_TO_XYZ / WHITE_D65[:, None]))
  f = xp.where(xyz > EPSILON, xp.cbrt(xyz), (KAPPA * xyz + 16.0) / 116.0)
  fx, fy, fz = xp.unstack(f)
  return xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)])


def _lab_to_linear(lab: Any, xp) -> Any:
  """L*a*b* -> linear RGB, unclipped: components outside [0, 1] mark out-of-gamut colours."""
  lab = xp.asarray(lab)
  l, a, b = xp.unstack(lab)
  fy = (l + 16.0) / 116.0
  fx = fy + a / 500.0
  fz = fy - b / 200.0
  f = xp.stack([fx, fy, fz])
  f3 = f * f * f
  xyz = xp.where(f3 > EPSILON, f3, (116.0 * f - 16.0) / KAPPA)
  # Y uses the L*-based branch of CIE 15 so that L* <= 8 inverts exactly.
  y_lin = xp.where(l > KAPPA * EPSILON, fy * fy * fy, l / KAPPA)
  xyz = xp.stack([xyz[..., 0], y_lin, xyz[..., 2]])
  return xp.matvec(xyz, xp.const(XYZ_TO_RGB * WHITE_D65[None, :]))


def _encode(linear: Any, xp) -> Any:
  """Linear RGB -> sRGB in [0, 1]; components outside [0, 1] are clipped. The power's
  argument is kept off 0 in the branch that does not use it (same values), so the gradient
  of a black pixel is finite (tfharm.models.joint trains through this)."""
  linear = xp.clip(linear, 0.0, 1.0)
  return xp.where(linear <= 0.0031308, 12.92 * linear,
                  1.055 * xp.power(xp.maximum(linear, 0.0031308), 1.0 / 2.4) - 0.055)


def _lab_to_rgb(lab: Any, xp) -> Any:
  return _encode(_lab_to_linear(lab, xp), xp)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
  """sRGB in [0, 1], (..., 3) -> L*a*b* (D65), float32."""
  return _rgb_to_lab(rgb, _NP)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
  """L*a*b* (D65) -> sRGB in [0, 1], float32; out-of-gamut colours are clipped per channel."""
  return _lab_to_rgb(lab, _NP)


def rgb_to_lab_tf(rgb: "tf.Tensor") -> "tf.Tensor":
  """TensorFlow twin of `rgb_to_lab`; runs under `jit_compile=True`."""
  return _rgb_to_lab(rgb, _tensorflow_namespace())


def lab_to_rgb_tf(lab: "tf.Tensor") -> "tf.Tensor":
  """TensorFlow twin of `lab_to_rgb`; runs under `jit_compile=True`."""
  return _lab_to_rgb(lab, _tensorflow_namespace())


def u8_to_lab(rgb_u8: np.ndarray) -> np.ndarray:
  """uint8 sRGB -> L*a*b*, float32."""
  return rgb_to_lab(np.asarray(rgb_u8, np.float32) / np.float32(255.0))


def to_uint8(x: Any) -> Any:
  """[0, 1] -> uint8 as round(clip(x, 0, 1) * 255), ties to even: the one rounding of every
  uint8 tfharm writes (data, served images, masks, figures). A numpy array gives a numpy
  array; anything else (a tf.Tensor, also inside tf.function and XLA) a tf.Tensor."""
  if isinstance(x, np.ndarray):
    return np.round(np.clip(x, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def lab_to_u8(lab: np.ndarray) -> np.ndarray:
  """L*a*b* -> uint8 sRGB, rounded to nearest."""
  return to_uint8(lab_to_rgb(lab))


# Float slack of the gamut test: grey (a* = b* = 0) at any L* in [0, 100] maps to linear RGB in
# [0, 1] up to float32 rounding, and must count as inside.
_GAMUT_SLACK = 1e-6


def _in_gamut(linear: np.ndarray) -> np.ndarray:
  return np.all((linear >= -_GAMUT_SLACK) & (linear <= 1.0 + _GAMUT_SLACK), axis=-1)


def gamut_map_chroma(lab: np.ndarray, iterations: int = 20) -> np.ndarray:
  """Brings L*a*b* colours into the sRGB gamut keeping L* and hue: chroma is reduced.

  For each out-of-gamut colour, a* and b* are scaled by the largest s in [0, 1] (bisection,
  `iterations` halvings: s to within 1e-6) for which the colour fits. s = 0 is grey of the same
  L*, always inside for L* in [0, 100], so every colour maps. Per-channel clipping (what
  `lab_to_rgb` does) would instead change L* and hue. In-gamut colours are returned unchanged.
  """
  lab = np.array(lab, dtype=np.float32, copy=True)
  outside = ~_in_gamut(_lab_to_linear(lab, _NP))
  if not outside.any():
    return lab
  sub = lab[outside]
  lo = np.zeros(sub.shape[:-1], np.float32)
  hi = np.ones(sub.shape[:-1], np.float32)
  for _ in range(iterations):
    mid = (lo + hi) / 2
    fits = _in_gamut(_lab_to_linear(np.stack([sub[..., 0], sub[..., 1] * mid, sub[..., 2] * mid],
                                             axis=-1), _NP))
    lo = np.where(fits, mid, lo)
    hi = np.where(fits, hi, mid)
  sub[..., 1] *= lo
  sub[..., 2] *= lo
  lab[outside] = sub
  return lab


def lab_to_u8_in_gamut(lab: np.ndarray) -> np.ndarray:
  """L*a*b* -> uint8 sRGB after `gamut_map_chroma` (L* and hue kept), rounded to nearest."""
  return lab_to_u8(gamut_map_chroma(lab))


@dataclasses.dataclass(frozen=True)
class LStatistics:
  """Mean and standard deviation of L* over a mask (population std, ddof=0)."""
  mean: float
  std: float


def l_statistics(lab: np.ndarray, mask: np.ndarray) -> LStatistics:
  """L* mean/std over the pixels where `mask` is true. Raises ValueError on an empty mask."""
  mask = np.asarray(mask, bool)
  if mask.shape != lab.shape[:-1]:
    raise ValueError(f"mask shape {mask.shape} does not match image shape {lab.shape[:-1]}")
  values = lab[..., 0][mask].astype(np.float64)
  if values.size == 0:
    raise ValueError("empty mask: no pixels to compute L* statistics over")
  return LStatistics(float(values.mean()), float(values.std()))


def reinhard_l_transfer(lab: np.ndarray, mask: np.ndarray, target: LStatistics,
                        reference: LStatistics) -> np.ndarray:
  """Moves L* inside `mask` from the target's mean/std onto the reference's (Reinhard et al. 2001).

  L' = (L - mu_t) * sigma_r / sigma_t + mu_r inside the mask, clipped to [0, 100]; a*, b* and every
  pixel outside the mask are returned unchanged. A flat target (sigma_t == 0) cannot be stretched,
  so it is only shifted to the reference mean.
  """
  mask = np.asarray(mask, bool)
  out = np.array(lab, dtype=np.float32, copy=True)
  l = out[..., 0]
  scale = reference.std / target.std if target.std > 0 else 0.0
  moved = (l[mask].astype(np.float64) - target.mean) * scale + reference.mean
  l[mask] = np.clip(moved, *L_RANGE).astype(np.float32)
  return out
