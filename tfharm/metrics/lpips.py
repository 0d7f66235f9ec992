"""LPIPS v0.1 (Zhang et al. 2018), a port of the official PyTorch `lpips` 0.1.4 (linear heads on).

Input convention: NHWC (or one HWC image) float RGB in [-1, 1], i.e. uint8 / 127.5 - 1, exactly
what the official `lpips.im2tensor` feeds the model; use `from_uint8` for 0-255 images. Values
outside [-1, 1] (e.g. a 0-255 image passed by mistake) are refused rather than scored.

Distance = sum over 5 tapped layers l of mean_{h,w} sum_c w_lc (f0_hwc - f1_hwc)^2, with f the
channel-unit-normalised ReLU features of AlexNet (default) or VGG16 after the scaling layer
(x - shift) / scale. `spatial=True` instead bilinearly upsamples each layer's map to the input
size (half-pixel centres, as torch's Upsample(align_corners=False)) and sums them: (B, H, W).

Modes: "exact" computes in float32 and matches the official package to ~1e-7 (parity test at
1e-5). "fast" runs the convolutions in bfloat16 (normalisation and sums stay float32) where the device
runs bfloat16 faster (a GPU, or a CPU where one measured convolution says so:
`device.bfloat16_is_fast`), deviating by up to about 1e-3-1e-2; elsewhere bfloat16 is slower
(bench/RESULTS.md), so there "fast" is the exact float32 computation (`LPIPS.compute_dtype`
says which ran; the command prints it).

The command line (`python -m tfharm.lpips`, like the official lpips_2imgs.py /
lpips_2dirs.py) is tfharm/lpips.py; this module holds no command.
"""

from __future__ import annotations

import functools
import sys

MODES = ("exact", "fast")


if __name__ == "__main__":  # the old spelling of `python -m tfharm.lpips`, kept for one version
  import runpy
  sys.stderr.write("warning: python -m tfharm.metrics.lpips is deprecated, use python -m "
                   "tfharm.lpips (the old name goes in version 0.2.0)\n")
  runpy.run_module("tfharm.lpips", run_name="__main__", alter_sys=True)


from absl import logging as absl_logging
import numpy as np
import tensorflow as tf

from tfharm.metrics.device import default_jit_compile
from tfharm.weights import nets, store

_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)  # ScalingLayer of lpips v0.1
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_EPS = 1e-10  # lpips.normalize_tensor


def min_size(net: str) -> int:
  """Smallest H (and W) for which every tapped layer has output (31 for alex, 16 for vgg)."""
  window, stride = nets.POOL[net]
  for side in range(1, 256):
    s, ok = side, True
    for spec in nets.SPECS[net]:
      if spec.pool_before:
        s = (s - window) // stride + 1
      s = (s + 2 * spec.pad - spec.kernel) // spec.stride + 1
      ok = ok and s >= 1
    if ok:
      return side
  raise AssertionError(net)


def from_uint8(images) -> tf.Tensor:
  """uint8 (or 0-255 float) RGB -> float32 [-1, 1] as lpips.im2tensor (x / 127.5 - 1)."""
  return tf.cast(images, tf.float32) / 127.5 - 1.0


def fast_dtype_available() -> bool:
  """Whether --mode=fast runs bfloat16 on this device (tfharm.metrics.device)."""
  from tfharm.metrics import device  # pylint: disable=g-import-not-at-top
  return device.bfloat16_is_fast()


class LPIPS(tf.Module):
  """LPIPS distance; `lpips(x, y)` -> (B,) float32, or (B, H, W) with spatial=True."""

  def __init__(self, net: str = "alex", spatial: bool = False, mode: str = "exact",
               jit_compile: bool | None = None, weights_dir: str | None = None,
               check_inputs: bool = True):
    super().__init__(name=f"lpips_{net}")
    if net not in nets.SPECS:
      raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    self.net, self.spatial, self.mode, self.check_inputs = net, spatial, mode, check_inputs
    self.min_size = min_size(net)
    self.jit_compile = default_jit_compile() if jit_compile is None else jit_compile
    convs, lins = store.load_lpips_arrays(net, weights_dir)  # hash-verified
    # "fast" is bfloat16 only where that is faster (device.bfloat16_is_fast); elsewhere it is
    # the exact float32 computation, never a slowdown. `compute_dtype` says which one runs.
    cdt = tf.bfloat16 if mode == "fast" and fast_dtype_available() else tf.float32
    self.compute_dtype = cdt.name
    if mode == "fast":
      absl_logging.info("LPIPS fast mode: %s convolutions%s", cdt.name,
                        "" if cdt == tf.bfloat16 else " (bfloat16 measured slower on this "
                        "device, so fast = exact)")
    self._specs = nets.SPECS[net]
    self._kernels = [tf.constant(k, cdt) for k, _ in convs]
    self._biases = [tf.constant(b, tf.float32) for _, b in convs]
    self._lins = [tf.constant(w, tf.float32) for w in lins]  # each (C_l,)
    self._pool = nets.POOL[net]
    self._compiled = tf.function(self.compute, jit_compile=self.jit_compile, reduce_retracing=True)

  def features(self, x: tf.Tensor) -> list[tf.Tensor]:
    """Tapped ReLU features of x in [-1, 1] (N, H, W, 3); each (N, h_l, w_l, C_l) float32."""
    x = (x - _SHIFT) / _SCALE
    window, stride = self._pool
    cdt = self._kernels[0].dtype
    taps = []
    for spec, k, b in zip(self._specs, self._kernels, self._biases):
      if spec.pool_before:
        x = tf.nn.max_pool2d(x, window, stride, "VALID")
      p = spec.pad
      y = tf.nn.conv2d(tf.cast(x, cdt), k, spec.stride, [[0, 0], [p, p], [p, p], [0, 0]])
      x = tf.nn.relu(tf.nn.bias_add(tf.cast(y, tf.float32), b))
      if spec.tap:
        taps.append(x)
    return taps

  def normalised_features(self, x: tf.Tensor) -> list[tf.Tensor]:
    """Channel-unit-normalised tapped features of x in [-1, 1] (N, H, W, 3).

    Compute them once for a reference image and compare many candidates against it with
    `distance_to_features` (an evaluation scoring several methods against one ground truth).
    """
    return [f / (tf.sqrt(tf.reduce_sum(tf.square(f), axis=-1, keepdims=True)) + _EPS)
            for f in self.features(x)]

  def distance_to_features(self, x: tf.Tensor, target: list[tf.Tensor]) -> tf.Tensor:
    """LPIPS of x (B, H, W, 3) in [-1, 1] against precomputed `normalised_features(y)`.

    Unchecked pure TF like `compute`, and the same arithmetic: equal to compute(x, y).
    """
    return self._heads(self.normalised_features(x), target, tf.shape(x)[1:3])

  def _heads(self, fx: list[tf.Tensor], fy: list[tf.Tensor], hw: tf.Tensor) -> tf.Tensor:
    total = None
    for a, b, w in zip(fx, fy, self._lins):
      d = tf.reduce_sum(tf.square(a - b) * w, axis=-1)  # (B, h_l, w_l): 1x1 linear head
      if self.spatial:
        d = tf.image.resize(d[..., None], hw, "bilinear")[..., 0]  # (B, H, W)
      else:
        d = tf.reduce_mean(d, axis=[1, 2])  # (B,)
      total = d if total is None else total + d
    return total

  def compute(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Unchecked core (pure TF, jit-compatible): x, y (B, H, W, 3) float32 in [-1, 1]."""
    b = tf.shape(x)[0]
    feats = self.normalised_features(tf.concat([x, y], axis=0))  # one trunk pass over 2B images
    return self._heads([f[:b] for f in feats], [f[b:] for f in feats], tf.shape(x)[1:3])

  def __call__(self, x, y) -> tf.Tensor:
    x, y, single = self._prepare(x, y)
    out = self._compiled(x, y)
    return out[0] if single else out

  def _prepare(self, x, y):
    x = tf.convert_to_tensor(x, tf.float32) if not isinstance(x, tf.Tensor) else x
    y = tf.convert_to_tensor(y, tf.float32) if not isinstance(y, tf.Tensor) else y
    if x.dtype != tf.float32 or y.dtype != tf.float32:
      raise TypeError(f"LPIPS expects float32 in [-1, 1] (use from_uint8 for 0-255 images), "
                      f"got {x.dtype.name} and {y.dtype.name}")
    if x.shape.rank != y.shape.rank or x.shape.rank not in (3, 4):
      raise ValueError(f"expected (H, W, 3) or (B, H, W, 3) images, got shapes {x.shape} and {y.shape}")
    single = x.shape.rank == 3
    if single:
      x, y = x[None], y[None]
    if x.shape.is_fully_defined() and y.shape.is_fully_defined() and x.shape != y.shape:
      raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    channels = x.shape[-1]
    if channels != 3:
      what = {1: "grayscale", 2: "grayscale+alpha", 4: "RGBA"}.get(channels, f"{channels}-channel")
      raise ValueError(f"LPIPS needs RGB images, got {what} (last axis {channels}); convert to "
                       "RGB first (tfharm.lpips.load_image, the command's reader, does, with a warning)")
    for side in x.shape[1:3]:
      if side is not None and side < self.min_size:
        raise ValueError(f"image {x.shape[1]}x{x.shape[2]} is smaller than LPIPS-{self.net}'s "
                         f"minimum {self.min_size}x{self.min_size} (its last layer would be empty)")
    if self.check_inputs and tf.executing_eagerly():
      _check_values(x, "first")
      _check_values(y, "second")
    return x, y, single


@tf.function(reduce_retracing=True)
def _value_stats(x):
  return tf.reduce_all(tf.math.is_finite(x)), tf.reduce_max(tf.abs(x))


def _check_values(x: tf.Tensor, which: str) -> None:
  finite, peak = _value_stats(x)
  if not bool(finite):
    raise ValueError(f"the {which} image contains NaN or inf")
  if float(peak) > 1.0 + 1e-3:
    raise ValueError(f"the {which} image has values up to {float(peak):.4g}; LPIPS expects "
                     "[-1, 1] (pass 0-255 images through from_uint8)")


@functools.lru_cache(maxsize=8)
def get(net: str = "alex", spatial: bool = False, mode: str = "exact") -> LPIPS:
  """A cached LPIPS instance (weights are loaded and hash-checked once per process)."""
  return LPIPS(net, spatial=spatial, mode=mode)


def lpips(x, y, net: str = "alex", spatial: bool = False, mode: str = "exact") -> tf.Tensor:
  """Functional form: x, y in [-1, 1], NHWC -> (B,) (or (B, H, W) with spatial=True)."""
  return get(net, spatial, mode)(x, y)
