"""Mask-localisation metrics for the detector: IoU, F1 at a threshold, average precision.

`pred` is a soft mask in [0, 1] (B, H, W) or (B, H, W, 1) (one image without B also works),
`gt` the ground-truth mask (1 = foreground; values >= 0.5 count as foreground). Every function
returns one value per image, (B,), is pure TensorFlow and runs under tf.function(jit_compile=True).

Conventions: a pixel is predicted positive when pred >= threshold. When prediction and ground
truth are both empty, IoU and F1 are 1 (perfect agreement), not 0/0. Average precision is the
step-wise sum AP = sum_k (R_k - R_{k+1}) P_k over the thresholds in decreasing order (the
formula of sklearn's average_precision_score, which it equals when the thresholds include every
distinct score, e.g. 8-bit masks with thresholds k/255). A threshold with no predicted positive
has precision 1; an image with an empty ground truth has AP NaN (recall undefined).
"""

from __future__ import annotations

import tensorflow as tf

DEFAULT_THRESHOLDS = tuple(k / 100 for k in range(101))


def _flat(x) -> tf.Tensor:
  x = tf.cast(x, tf.float32)
  if x.shape.rank == 4:
    if x.shape[-1] != 1:
      raise ValueError(f"masks must have one channel, got {x.shape[-1]}")
    x = x[..., 0]
  if x.shape.rank == 2:
    x = x[None]
  if x.shape.rank != 3:
    raise ValueError(f"expected masks (B, H, W[, 1]) or (H, W), got rank {x.shape.rank}")
  return tf.reshape(x, [tf.shape(x)[0], -1])  # (B, H*W)


def _prepare(pred, gt):
  p, g = _flat(pred), _flat(gt)
  if p.shape.is_fully_defined() and g.shape.is_fully_defined() and p.shape != g.shape:
    raise ValueError(f"mask shapes differ: {tf.convert_to_tensor(pred).shape} vs "
                     f"{tf.convert_to_tensor(gt).shape}")
  if tf.executing_eagerly():
    if not bool(tf.reduce_all(tf.math.is_finite(p))):
      raise ValueError("predicted mask contains NaN or inf")
    if bool(tf.reduce_any((p < 0) | (p > 1))) or bool(tf.reduce_any((g < 0) | (g > 1))):
      raise ValueError("masks must lie in [0, 1]; scale 0-255 masks by 1/255 first")
  return p, tf.cast(g >= 0.5, tf.float32)


def _counts(p, g, threshold):
  pos = tf.cast(p >= threshold, tf.float32)
  tp = tf.reduce_sum(pos * g, axis=1)
  return tp, tf.reduce_sum(pos, axis=1) - tp, tf.reduce_sum(g, axis=1) - tp  # tp, fp, fn


def iou(pred, gt, threshold: float = 0.5) -> tf.Tensor:
  """|P and G| / |P or G| per image; 1 when both are empty."""
  tp, fp, fn = _counts(*_prepare(pred, gt), threshold)
  union = tp + fp + fn
  return tf.where(union > 0, tp / tf.maximum(union, 1.0), 1.0)


def f1(pred, gt, threshold: float = 0.5) -> tf.Tensor:
  """2 TP / (2 TP + FP + FN) per image (= Dice); 1 when both are empty."""
  tp, fp, fn = _counts(*_prepare(pred, gt), threshold)
  denom = 2.0 * tp + fp + fn
  return tf.where(denom > 0, 2.0 * tp / tf.maximum(denom, 1.0), 1.0)


def average_precision(pred, gt, thresholds=DEFAULT_THRESHOLDS) -> tf.Tensor:
  """Per-image AP over `thresholds` (sorted ascending), (B,). O(B*H*W + B*T) memory."""
  p, g = _prepare(pred, gt)
  thr = tf.constant(sorted(thresholds), tf.float32)  # (T,)
  n_thr = thr.shape[0]
  b = tf.shape(p)[0]
  # bin = number of thresholds <= score, so "score >= thr[k]" <=> bin >= k + 1.
  bins = tf.searchsorted(tf.broadcast_to(thr, [b, n_thr]), p, side="right")  # (B, HW) in [0, T]
  seg = bins + tf.range(b)[:, None] * (n_thr + 1)
  hist_pos = tf.reshape(tf.math.unsorted_segment_sum(g, seg, b * (n_thr + 1)), [b, n_thr + 1])
  hist_all = tf.reshape(tf.math.unsorted_segment_sum(tf.ones_like(g), seg, b * (n_thr + 1)),
                        [b, n_thr + 1])
  # Predicted positives / true positives at thr[k]: sum of bins k+1 .. T.
  tp = tf.cumsum(hist_pos, axis=1, reverse=True)[:, 1:]  # (B, T)
  pp = tf.cumsum(hist_all, axis=1, reverse=True)[:, 1:]
  n_pos = tf.reduce_sum(g, axis=1, keepdims=True)  # (B, 1)
  precision = tf.where(pp > 0, tp / tf.maximum(pp, 1.0), 1.0)
  recall = tp / tf.maximum(n_pos, 1.0)
  next_recall = tf.concat([recall[:, 1:], tf.zeros_like(recall[:, :1])], axis=1)
  ap = tf.reduce_sum((recall - next_recall) * precision, axis=1)
  return tf.where(n_pos[:, 0] > 0, ap, float("nan"))


def localisation_metrics(pred, gt, threshold: float = 0.5, thresholds=DEFAULT_THRESHOLDS
                         ) -> dict[str, tf.Tensor]:
  """{'iou', 'f1', 'ap'}: each (B,)."""
  return {"iou": iou(pred, gt, threshold), "f1": f1(pred, gt, threshold),
          "ap": average_precision(pred, gt, thresholds)}
