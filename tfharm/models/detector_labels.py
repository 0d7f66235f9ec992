"""Per-pixel training labels and class weights for the luminance detector.

docs/architecture.md, "The detector". A composite's target object is summarised by the ratio of
its mean lightness to the real image's over the mask,

    r = (mean_mask L*(composite) + eps) / (mean_mask L*(real) + eps),

and the object's pixels get class NEGATIVE (0) if r < tau_neg, POSITIVE (1) if r > tau_pos,
NONE (2) otherwise; background pixels are always NONE. The default thresholds are the means of
the authors' per-image 2AFC thresholds (tfharm.data.composites.TAU_NEG / TAU_POS).

Which L: CIE L* from `tfharm.colour.rgb_to_lab_tf` (the same L* the dataset's Reinhard
transfer moved). The authors' thresholds are factors on 8-bit OpenCV L = L* * 255/100; a
*ratio* of means is invariant to that scale, so the thresholds carry over unchanged (up to
OpenCV's approximate sRGB curve and 8-bit rounding, both < 1 % of the ratio here).

Every function is pure TensorFlow on batched NHWC tensors, usable inside `tf.data.map` and
under `tf.function(jit_compile=True)`.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfharm import colour
from tfharm.data import composites

NEGATIVE, POSITIVE, NONE = 0, 1, 2
NUM_CLASSES = 3


@dataclasses.dataclass(frozen=True)
class LabelConfig:
  """How composites become per-pixel classes."""

  tau_neg: float = composites.TAU_NEG  # ratio below this: perceptibly darker than the real object
  tau_pos: float = composites.TAU_POS  # ratio above this: perceptibly brighter
  mode: str = "object"  # "object": one ratio per object (default); "pixel": ratio per pixel
  eps: float = 1e-3  # added to both means (L* units): a black object gives r ~ 1, not 0/0

  def __post_init__(self):
    if not 0.0 < self.tau_neg < 1.0 < self.tau_pos:
      raise ValueError(f"need 0 < tau_neg < 1 < tau_pos, got {self.tau_neg}, {self.tau_pos}")
    if self.mode not in ("object", "pixel"):
      raise ValueError(f"mode must be 'object' or 'pixel', got {self.mode!r}")


def lightness(rgb: tf.Tensor) -> tf.Tensor:
  """CIE L* in [0, 100] of sRGB in [0, 1]: (..., 3) -> (..., 1)."""
  rgb = tf.clip_by_value(tf.cast(rgb, tf.float32), 0.0, 1.0)
  return colour.rgb_to_lab_tf(rgb)[..., :1]


def luminance_ratio(composite: tf.Tensor, real: tf.Tensor, mask: tf.Tensor,
                    eps: float = 1e-3) -> tf.Tensor:
  """(B,) ratio of mean L* inside the mask, composite over real. 1 for an empty mask."""
  m = tf.cast(tf.cast(mask, tf.float32) >= 0.5, tf.float32)  # (B, H, W, 1)
  area = tf.reduce_sum(m, axis=[1, 2, 3])
  mean_c = tf.math.divide_no_nan(tf.reduce_sum(lightness(composite) * m, axis=[1, 2, 3]), area)
  mean_r = tf.math.divide_no_nan(tf.reduce_sum(lightness(real) * m, axis=[1, 2, 3]), area)
  return tf.where(area > 0, (mean_c + eps) / (mean_r + eps), 1.0)


def _classify(ratio: tf.Tensor, cfg: LabelConfig) -> tf.Tensor:
  return tf.where(ratio < cfg.tau_neg, NEGATIVE, tf.where(ratio > cfg.tau_pos, POSITIVE, NONE))


def make_labels(composite: tf.Tensor, real: tf.Tensor, mask: tf.Tensor,
                cfg: LabelConfig = LabelConfig()) -> dict[str, tf.Tensor]:
  """Labels for a batch: composite/real (B, H, W, 3) in [0, 1], mask (B, H, W, 1).

  Returns
    labels: (B, H, W) int32 in {0 negative, 1 positive, 2 none}.
    target: (B, H, W, 1) float32 {0, 1}, the suprathreshold object (labels != none): the
      ground truth for IoU/F1/AP.
    ratio:  (B,) the object's mean-L* ratio (reported in "pixel" mode too).
    sign:   (B,) int32 class of the object as a whole by its ratio (0, 1, or 2 = subthreshold).
  """
  obj = tf.cast(mask, tf.float32)[..., 0] >= 0.5  # (B, H, W)
  ratio = luminance_ratio(composite, real, mask, cfg.eps)  # (B,)
  sign = tf.cast(_classify(ratio, cfg), tf.int32)
  if cfg.mode == "object":
    per_pixel = tf.broadcast_to(sign[:, None, None], tf.shape(obj))
  else:
    r = (lightness(composite)[..., 0] + cfg.eps) / (lightness(real)[..., 0] + cfg.eps)
    per_pixel = tf.cast(_classify(r, cfg), tf.int32)
  labels = tf.where(obj, per_pixel, NONE)
  target = tf.cast(labels != NONE, tf.float32)[..., None]
  return {"labels": labels, "target": target, "ratio": ratio, "sign": sign}


def class_weights(labels: tf.Tensor, max_weight: float = 10.0) -> tf.Tensor:
  """(3,) weights from the label frequencies of a batch (docs/decisions.md, "Detector labels and loss").

  none gets 1; each object class c gets clip(sqrt(f_none / f_c), 1, max_weight). A class
  absent from the batch gets max_weight (it has no pixels, so the value does not matter).
  """
  counts = tf.reduce_sum(tf.one_hot(tf.reshape(labels, [-1]), NUM_CLASSES), axis=0)  # (3,)
  ratio = tf.math.divide_no_nan(counts[NONE], counts[:NONE])
  w_obj = tf.where(counts[:NONE] > 0, tf.sqrt(ratio), max_weight)
  w_obj = tf.clip_by_value(w_obj, 1.0, max_weight)
  return tf.concat([w_obj, [1.0]], axis=0)
