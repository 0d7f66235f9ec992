"""Pixel metrics of the paper: MSE, PSNR (eqs. 1-2, R = 255), fMSE (iHarmony4) and SSIM.

Images are NHWC (or one HWC image), RGB, given on the range `value_range` (default (0, 255);
pass (-1, 1) for tanh outputs or (0, 1)) and mapped linearly to 0-255 before scoring, so every
number is on the paper's 0-255 scale. All functions are pure TensorFlow, batched (one value per
image, shape (B,)), and run under `tf.function(jit_compile=True)`; `compiled()` wraps them with
the per-device default (XLA on GPU, TF kernels on CPU, where they measured faster).

- MSE: mean over H, W and the 3 channels of (pred - target)^2 (as skimage's mean_squared_error).
- PSNR: 10 log10(255^2 / MSE) per image; report the mean over images of these per-image values.
  An identical pair (MSE = 0) gives +inf, as eq. 2 and skimage do; `max_db` caps it if a finite
  table entry is wanted (the paper's tables never meet it: harmonised outputs are never exact).
- fMSE: squared error summed over the foreground mask (and channels) divided by the mask's pixel
  count and the channel count, i.e. DoveNet/iHarmony4's mse(I*M, J*M) * H*W / sum(M); it equals
  MSE when the mask covers the whole image. An empty mask has no fMSE: NaN (and an error from
  `check_images`/eager calls via `fmse`).
- SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  data range 255, mean over valid positions and channels: tf.image.ssim's definition (tested to
  1e-4), computed with a separable filter; close to skimage's structural_similarity(
  gaussian_weights=True, use_sample_covariance=False), which truncates the window differently.
Values are not rounded to 8 bits: quantise first if scoring saved images is intended.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfharm.metrics.device import default_jit_compile

R = 255.0


def _to255(x, value_range) -> tf.Tensor:
  lo, hi = value_range
  x = tf.cast(x, tf.float32)
  if (lo, hi) == (0.0, 255.0) or (lo, hi) == (0, 255):
    return x
  return (x - lo) * (R / (hi - lo))


def _batch(x) -> tf.Tensor:
  x = tf.convert_to_tensor(x)
  return x[None] if x.shape.rank == 3 else x


def check_images(pred, target, min_side: int = 1) -> None:
  """Clear errors for bad input (static shapes always; values only when executing eagerly)."""
  pred, target = tf.convert_to_tensor(pred), tf.convert_to_tensor(target)
  if pred.shape.rank not in (3, 4) or pred.shape.rank != target.shape.rank:
    raise ValueError(f"expected (H, W, 3) or (B, H, W, 3) images, got {pred.shape} and {target.shape}")
  if pred.shape.is_fully_defined() and target.shape.is_fully_defined() and pred.shape != target.shape:
    raise ValueError(f"image shapes differ: {pred.shape} vs {target.shape}")
  if pred.shape[-1] != 3:
    raise ValueError(f"expected RGB images (last axis 3), got last axis {pred.shape[-1]}; convert "
                     "grayscale/RGBA to RGB first")
  for side in pred.shape[-3:-1]:
    if side is not None and side < min_side:
      raise ValueError(f"images are {pred.shape[-3]}x{pred.shape[-2]}, need at least "
                       f"{min_side}x{min_side}")
  if tf.executing_eagerly():
    for name, x in (("pred", pred), ("target", target)):
      if x.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise ValueError(f"{name} contains NaN or inf")


def mse(pred, target, value_range=(0.0, 255.0)) -> tf.Tensor:
  """Per-image MSE on the 0-255 scale, (B,)."""
  d = _to255(_batch(pred), value_range) - _to255(_batch(target), value_range)
  return tf.reduce_mean(tf.square(d), axis=[1, 2, 3])


def psnr_from_mse(m: tf.Tensor, max_db: float | None = None) -> tf.Tensor:
  """10 log10(R^2 / MSE); +inf for MSE = 0 unless capped at `max_db`."""
  # Written as a difference of logs, so MSE = 0 gives +inf without a division warning.
  p = 10.0 * (2.0 * tf.math.log(R) - tf.math.log(m)) / tf.math.log(10.0)
  return p if max_db is None else tf.minimum(p, max_db)


def psnr(pred, target, value_range=(0.0, 255.0), max_db: float | None = None) -> tf.Tensor:
  """Per-image PSNR in dB (R = 255), (B,); average these for the paper's table."""
  return psnr_from_mse(mse(pred, target, value_range), max_db)


def fmse(pred, target, mask, value_range=(0.0, 255.0)) -> tf.Tensor:
  """Per-image foreground MSE, (B,); mask (B, H, W[, 1]) with 1 = foreground."""
  pred, target = _batch(pred), _batch(target)
  mask = tf.cast(mask, tf.float32)
  if mask.shape.rank == 2 or (mask.shape.rank == 3 and mask.shape[-1] != 1):
    mask = mask[..., None]  # (H, W) or (B, H, W) -> add the channel axis
  mask = _batch(mask)  # (B, H, W, 1)
  if tf.executing_eagerly():
    if bool(tf.reduce_any(tf.reduce_sum(mask, axis=[1, 2, 3]) <= 0)):
      raise ValueError("fMSE of an image with an empty foreground mask is undefined")
    if bool(tf.reduce_any((mask < 0) | (mask > 1))):
      raise ValueError("mask values must lie in [0, 1] (1 = foreground)")
  sq = tf.square(_to255(pred, value_range) - _to255(target, value_range))  # (B, H, W, 3)
  area = tf.reduce_sum(mask, axis=[1, 2, 3])  # (B,)
  total = tf.reduce_sum(sq * mask, axis=[1, 2, 3])
  channels = tf.cast(tf.shape(pred)[-1], tf.float32)
  return tf.where(area > 0, total / (area * channels), float("nan"))


def _gaussian(size: int = 11, sigma: float = 1.5) -> list[float]:
  g = [math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(size)]
  return [v / sum(g) for v in g]


def _filter_valid(v: tf.Tensor, g: list[float]) -> tf.Tensor:
  """Separable 'VALID' Gaussian filter of (N, H, W, C) as sums of shifted slices.

  Elementwise work that XLA fuses into a few memory passes; tf.image.ssim's 11x11 depthwise
  convolution measured about 100x slower on this CPU (bench/RESULTS.md).
  """
  n = len(g)
  h, w = tf.shape(v)[1] - n + 1, tf.shape(v)[2] - n + 1
  v = tf.add_n([g[i] * v[:, i:i + h] for i in range(n)])  # (N, H-n+1, W, C)
  return tf.add_n([g[j] * v[:, :, j:j + w] for j in range(n)])  # (N, H-n+1, W-n+1, C)


def ssim(pred, target, value_range=(0.0, 255.0)) -> tf.Tensor:
  """Per-image SSIM (Gaussian 11x11, sigma 1.5), (B,); images must be at least 11x11.

  Same definition as tf.image.ssim (population covariances, valid window positions, mean of
  the SSIM map over positions and channels).
  """
  pred, target = _batch(pred), _batch(target)
  for side in pred.shape[1:3]:
    if side is not None and side < 11:
      raise ValueError(f"SSIM needs images of at least 11x11 (its window), got {pred.shape[1:3]}")
  x, y = _to255(pred, value_range), _to255(target, value_range)
  g = _gaussian()
  c1, c2 = (0.01 * R) ** 2, (0.03 * R) ** 2
  mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
  xx, yy, xy = _filter_valid(x * x, g), _filter_valid(y * y, g), _filter_valid(x * y, g)
  mu_xy, mu_xx, mu_yy = mu_x * mu_y, tf.square(mu_x), tf.square(mu_y)
  lum = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1)
  cs = (2.0 * (xy - mu_xy) + c2) / ((xx - mu_xx) + (yy - mu_yy) + c2)
  return tf.reduce_mean(lum * cs, axis=[1, 2, 3])


def image_metrics(pred, target, mask=None, value_range=(0.0, 255.0)) -> dict[str, tf.Tensor]:
  """{'mse', 'psnr', 'ssim'[, 'fmse']}: each (B,). Pure TF; see `compiled`."""
  m = mse(pred, target, value_range)
  out = {"mse": m, "psnr": psnr_from_mse(m), "ssim": ssim(pred, target, value_range)}
  if mask is not None:
    out["fmse"] = fmse(pred, target, mask, value_range)
  return out


def compiled(fn=image_metrics, jit_compile: bool | None = None):
  """`fn` as a tf.function; XLA by default on GPU only (see tfharm.metrics.device)."""
  return tf.function(fn, jit_compile=default_jit_compile() if jit_compile is None else jit_compile,
                     reduce_retracing=True)
