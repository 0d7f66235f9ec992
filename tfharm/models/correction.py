"""How the harmoniser's S x S prediction becomes the output image (docs/architecture.md, "The pipeline").

DIH's output is a blurred reconstruction of the whole image (its FC bottleneck and its 4x4
stride-2 stack lose texture), and at any size other than S it is not even at the right
resolution. So the output is never the network's pixels; it is the composite with a correction
read off the prediction and applied through the (soft) mask m, at full resolution:

  "l_moments" (default): Reinhard on L*, the inverse of our corruption model. The prediction
      says what the object's L* mean and standard deviation should be; the composite's object is
      moved onto those statistics (mask-weighted, measured at S on both) and pasted back through
      m. Texture and a*, b* are the composite's own. This is section 1.3's "fit a per-object
      affine in L*" option, in its moment-matching form: a least-squares fit of L_pred on
      L_composite under-estimates the slope because the prediction is blurred (regression
      dilution), which moment matching suffers less from (measured: docs/decisions.md, "Full resolution and the correction").
  "residual": section 1.3's default, clip(C + m * upsample(H_S - C_S), 0, 1); keeps the
      network's colour changes and its reconstruction error inside the mask.

Both return `image` bit-identical wherever m = 0 (an empty mask changes nothing). Pure TF ops,
usable under tf.function(jit_compile=True).
"""
from __future__ import annotations

from keras import ops
import tensorflow as tf

from tfharm import colour

CORRECTIONS = ("l_moments", "residual")
DEFAULT_CORRECTION = "l_moments"
# Safety bounds on the L* contrast ratio sigma_pred / sigma_composite. The data's true ratios
# span 0.18-8.1 (paper_256 test split, 192 composites); the shipped network's 0.58-2.4.
MAX_CONTRAST_RATIO = 10.0
_TINY = 1e-6


def check_correction(name: str) -> str:
  if name not in CORRECTIONS:
    raise ValueError(f"unknown correction {name!r}; expected one of {CORRECTIONS}")
  return name


def weighted_l_moments(image: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Mask-weighted L* mean and population std of (B, H, W, 3) RGB in [0, 1]; each (B, 1, 1, 1).

  An all-zero weight map gives mean 0 and std 0 (nothing to move; the mask then gates it away).
  """
  l = colour.rgb_to_lab_tf(image)[..., :1]  # (B, H, W, 1)
  total = tf.reduce_sum(weights, axis=[1, 2, 3], keepdims=True)
  safe = tf.maximum(total, _TINY)
  mean = tf.reduce_sum(weights * l, axis=[1, 2, 3], keepdims=True) / safe
  var = tf.reduce_sum(weights * tf.square(l - mean), axis=[1, 2, 3], keepdims=True) / safe
  return mean, tf.sqrt(tf.maximum(var, 0.0))


def reinhard_l_transfer_tf(image: tf.Tensor, mask: tf.Tensor, source: tuple[tf.Tensor, tf.Tensor],
                           target: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
  """Moves L* of `image` from `source` (mean, std) onto `target` (mean, std) through soft `mask`.

  The TF, soft-mask twin of `colour.reinhard_l_transfer` (which builds the corruption):
  L' = clip((L - mu_s) * sigma_t / sigma_s + mu_t, 0, 100), a*, b* kept, then
  out = image + mask * (rgb(L', a*, b*) - image). A flat source (sigma_s == 0) is only shifted,
  as in the numpy version; the contrast ratio is bounded by MAX_CONTRAST_RATIO.
  """
  (mu_s, sigma_s), (mu_t, sigma_t) = source, target
  ratio = tf.where(sigma_s > _TINY, sigma_t / tf.maximum(sigma_s, _TINY), 0.0)
  ratio = tf.clip_by_value(ratio, 0.0, MAX_CONTRAST_RATIO)
  lab = colour.rgb_to_lab_tf(image)
  l = tf.clip_by_value((lab[..., :1] - mu_s) * ratio + mu_t, *colour.L_RANGE)
  moved = colour.lab_to_rgb_tf(tf.concat([l, lab[..., 1:]], axis=-1))
  return image + mask * (moved - image)


def sanitise_mask(mask: tf.Tensor) -> tf.Tensor:
  """NaN -> 0, then clipped to [0, 1]: the one mask sanitiser (the correction, the served
  paths, the systems and the harmoniser's input layer). A NaN would reach every pixel through
  the moments, and through the harmoniser's FC bottleneck. Keras ops, so it also builds the
  harmoniser's functional graph; on tensors they are the TensorFlow ops."""
  return ops.clip(ops.where(ops.isnan(mask), 0.0, mask), 0.0, 1.0)


def correction_parameters(correction: str, image_s: tf.Tensor, mask_s: tf.Tensor,
                          pred_s: tf.Tensor) -> dict[str, tf.Tensor]:
  """What the correction reads off the prediction at S (small tensors): for "l_moments" the
  mask-weighted L* moments of composite and prediction, for "residual" the difference at S.
  `mask_s` must be sanitised already."""
  check_correction(correction)
  if correction == "residual":
    return {"delta_s": pred_s - image_s}  # (B, S, S, 3)
  # Both moments at S, where the prediction lives: the shrink lowers the std of composite and
  # prediction alike, so their ratio is what carries over to full resolution.
  (mu_s, sigma_s), (mu_t, sigma_t) = (weighted_l_moments(image_s, mask_s),
                                      weighted_l_moments(pred_s, mask_s))
  return {"source_mean": mu_s, "source_std": sigma_s, "target_mean": mu_t, "target_std": sigma_t}


def correct_pixels(correction: str, image: tf.Tensor, mask: tf.Tensor,
                   parameters: dict[str, tf.Tensor], delta: tf.Tensor | None = None) -> tf.Tensor:
  """The per-pixel part of the correction: any block of full-resolution rows gives the same
  values as the whole image (every op is element-wise). image (B, h, W, 3), sanitised mask
  (B, h, W, 1); for "residual", `delta` is the upsampled difference at those pixels."""
  if correction == "residual":
    return tf.clip_by_value(image + mask * delta, 0.0, 1.0)
  source = (parameters["source_mean"], parameters["source_std"])
  target = (parameters["target_mean"], parameters["target_std"])
  return tf.clip_by_value(reinhard_l_transfer_tf(image, mask, source, target), 0.0, 1.0)


def apply_correction(correction: str, image: tf.Tensor, mask: tf.Tensor, image_s: tf.Tensor,
                     mask_s: tf.Tensor, pred_s: tf.Tensor) -> tf.Tensor:
  """The output at full resolution from the prediction at S.

  image (B, H, W, 3) and mask (B, H, W, 1) in [0, 1] at full resolution; image_s, mask_s and
  pred_s (the harmoniser's output, [0, 1]) at S. H, W may equal S. Masks are clipped to [0, 1]
  with NaN read as 0. The whole image at once; `full_resolution.correct_in_bands` computes the
  same values a block of rows at a time.
  """
  check_correction(correction)
  mask, mask_s = sanitise_mask(mask), sanitise_mask(mask_s)
  parameters = correction_parameters(correction, image_s, mask_s, pred_s)
  delta = None
  if correction == "residual":
    delta = tf.image.resize(parameters["delta_s"], tf.shape(image)[1:3], method="bilinear")
  return correct_pixels(correction, image, mask, parameters, delta)
