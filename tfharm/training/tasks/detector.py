"""The detector's training task (`--model=detector`): per-pixel classes from the L* ratio.

Labels come from tfharm.models.detector_labels (the object's mean-L* ratio against the
thresholds of `LabelConfig`); the loss is a class-weighted softmax cross-entropy, optionally
plus a soft Dice term; training may use seeded random crops of the labelled images
(`crop_labelled_batch`). Validation: localisation (IoU/F1/AP) on suprathreshold composites,
sign accuracy, and silence on subthreshold ones.
"""
from __future__ import annotations

import dataclasses
import os

from absl import logging
import keras
import tensorflow as tf

from tfharm.metrics import localisation
from tfharm.metrics.aggregate import nan_where
from tfharm.models import detector as detector_lib
from tfharm.models import detector_labels as labels_lib
from tfharm.models import layer_files
from tfharm.training.task import Batch, Task, fixed_size


@dataclasses.dataclass(frozen=True)
class DetectorTaskConfig:
  """class_weights: None = per batch from the label frequencies (detector_labels.class_weights),
  else fixed (w_negative, w_positive, w_none)."""

  model: detector_lib.DetectorConfig = detector_lib.DetectorConfig()
  labels: labels_lib.LabelConfig = labels_lib.LabelConfig()
  image_size: int | None = 256  # static size for tf.data/XLA; None: any multiple of 8
  class_weights: tuple[float, float, float] | None = None
  max_class_weight: float = 10.0
  dice_weight: float = 0.0
  threshold: float = 0.5  # on max(p_neg, p_pos) for IoU/F1/silence
  # near_silence: a subthreshold composite whose detected area stays below this fraction of
  # the image counts as (nearly) silent: the data's smallest object covers 1 % of its image
  # (tfharm.data.composites.min_area_fraction), so a smaller detection is not an object.
  silent_area: float = 0.01
  # AET trunk or head file (tfharm.models.layer_files) loaded into the model at build time; a
  # checkpoint restored afterwards (resume) overrides it.
  init: str | None = None
  # Training on random crops of the labelled images (None: whole images). The labels are made
  # on the whole image first, so an object's class never depends on the crop.
  train_crop: int | None = None
  crop_on_object: float = 0.75  # fraction of crops centred (with jitter) on the target object

  def __post_init__(self):
    if self.class_weights is not None and len(self.class_weights) != 3:
      raise ValueError(f"class_weights needs 3 values (neg, pos, none), got {self.class_weights}")


class DetectorTask(Task):
  """Weighted softmax cross-entropy (+ optional soft Dice on p_neg + p_pos)."""

  name = "detector"

  def __init__(self, config: DetectorTaskConfig = DetectorTaskConfig()):
    self.config = config

  def build_model(self) -> keras.Model:
    model = detector_lib.Detector(self.config.model, name="detector")
    init = self.config.init
    if init and layer_files.is_head_file(init):  # fine-tuning a shipped detector
      layer_files.load_head_weights(model, init)
      logging.info("Detector initialised from the head file %s.", init)
    elif init:
      layer_files.load_trunk_weights(model, init)
      logging.info("Detector trunk initialised from %s.", init)
    return model

  def transform(self, batch: Batch) -> Batch:
    out = fixed_size(batch, {"composite": 3, "real": 3, "mask": 1}, self.config.image_size,
                     multiple=detector_lib.OUTPUT_STRIDE)
    out.update(labels_lib.make_labels(out["composite"], out["real"], out["mask"],
                                      self.config.labels))
    return out

  def train_transform(self, batch: Batch, seed: tf.Tensor) -> Batch:
    """`transform`, then (if `train_crop`) one seeded random crop per example."""
    out = self.transform(batch)
    if not self.config.train_crop:
      return out
    return crop_labelled_batch(out, self.config.train_crop, seed, self.config.crop_on_object)

  def inputs(self, batch: Batch) -> tf.Tensor:
    return batch["composite"]

  def loss(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    probs = tf.cast(outputs, tf.float32)
    y = batch["labels"]
    p_y = tf.reduce_sum(probs * tf.one_hot(y, labels_lib.NUM_CLASSES), axis=-1)  # (B, H, W)
    ce = -tf.math.log(tf.clip_by_value(p_y, 1e-7, 1.0))
    if self.config.class_weights is None:
      w = labels_lib.class_weights(y, self.config.max_class_weight)
    else:
      w = tf.constant(self.config.class_weights, tf.float32)
    wce = tf.reduce_mean(tf.gather(w, y) * ce, axis=[1, 2])  # (B,)
    losses = {"loss": wce, "weighted_ce": wce, "ce": tf.reduce_mean(ce, axis=[1, 2])}
    if self.config.dice_weight:
      m = probs[..., labels_lib.NEGATIVE] + probs[..., labels_lib.POSITIVE]  # (B, H, W)
      g = batch["target"][..., 0]
      dice = 1.0 - (2.0 * tf.reduce_sum(m * g, [1, 2]) + 1.0) / (
          tf.reduce_sum(m, [1, 2]) + tf.reduce_sum(g, [1, 2]) + 1.0)
      losses.update(loss=wce + self.config.dice_weight * dice, dice=dice)
    return losses

  def metrics(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    """Per image; NaN where a metric does not apply (left out of the split's mean).

    iou/f1/ap: thresholded / soft max(p0, p1) vs the suprathreshold object, on images that
    have one. sign_accuracy: on those images, whether sum(p_pos) vs sum(p_neg) over the
    object picks the object's class. silence: on subthreshold images (empty target), 1 if no
    pixel reaches the threshold; near_silence: 1 if under `silent_area` of the pixels do.
    pixel_accuracy: argmax vs labels, every image.
    """
    probs = tf.cast(outputs, tf.float32)
    m = detector_lib.soft_mask(probs)  # (B, H, W, 1)
    target = batch["target"]
    supra = tf.reduce_sum(target, axis=[1, 2, 3]) > 0  # (B,)
    loc = localisation.localisation_metrics(m, target, threshold=self.config.threshold)
    out = {k: nan_where(~supra, v) for k, v in loc.items()}
    s_neg = tf.reduce_sum(probs[..., 0:1] * target, axis=[1, 2, 3])
    s_pos = tf.reduce_sum(probs[..., 1:2] * target, axis=[1, 2, 3])
    pred_sign = tf.where(s_pos > s_neg, labels_lib.POSITIVE, labels_lib.NEGATIVE)
    correct = tf.cast(pred_sign == batch["sign"], tf.float32)
    out["sign_accuracy"] = nan_where(~supra | (batch["sign"] == labels_lib.NONE), correct)
    fired = tf.reduce_max(m, axis=[1, 2, 3]) >= self.config.threshold
    out["silence"] = nan_where(supra, 1.0 - tf.cast(fired, tf.float32))
    fired_area = tf.reduce_mean(tf.cast(m >= self.config.threshold, tf.float32), axis=[1, 2, 3])
    near = tf.cast(fired_area < self.config.silent_area, tf.float32)
    out["near_silence"] = nan_where(supra, near)
    out["false_alarm_fraction"] = nan_where(supra, fired_area)
    pred = tf.argmax(probs, axis=-1, output_type=tf.int32)
    out["pixel_accuracy"] = tf.reduce_mean(tf.cast(pred == batch["labels"], tf.float32), [1, 2])
    out["ce"] = self.loss(batch, probs)["ce"]
    return out

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    """A detector that always says 'none' (silent everywhere)."""
    none = tf.one_hot(tf.fill(tf.shape(batch["labels"]), labels_lib.NONE), labels_lib.NUM_CLASSES)
    return self.metrics(batch, none * 0.98 + 0.01)

  def images(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    probs = tf.cast(outputs, tf.float32)
    zeros = tf.zeros_like(probs[..., :1])
    # red = positive (brighter), blue = negative (darker)
    signed = tf.concat([probs[..., 1:2], zeros, probs[..., 0:1]], axis=-1)
    return {"composite": batch["composite"], "real": batch["real"],
            "target": batch["target"], "soft_mask": detector_lib.soft_mask(probs),
            "detection": signed}

  def export(self, model: keras.Model, workdir: str) -> None:
    """After the run: the small head-only file, unless the VGG16 convs
    changed (AET init, unfrozen encoder); then only <name>.weights.h5 / .keras hold the model."""
    changed = model.changed_backbone_layers()
    if changed:
      logging.warning("No %s.head.weights.h5: the VGG16 convs differ from the ImageNet file "
                      "(%d changed); use %s.weights.h5 or %s.keras (load_detector reads both).",
                      self.name, len(changed), self.name, self.name)
      return
    layer_files.save_head_weights(model, os.path.join(workdir, f"{self.name}.head.weights.h5"))


def crop_labelled_batch(batch: Batch, size: int, seed: tf.Tensor,
                        on_object: float = 0.75) -> Batch:
  """Crops every per-pixel tensor of a labelled batch to size x size at one offset per example.

  Why: the detector is fully convolutional, so a 128^2 crop of a 256^2 composite teaches the
  same thing at the same scale for a quarter of the FLOPs (our CPU-training recipe). With
  probability `on_object` the window is centred on the mask's centroid, jittered by up to
  size/4; otherwise it is uniform over the image (mostly background: it teaches silence).
  Exact pixel copies (gathers), seeded (stateless), XLA-safe. Per-example scalars (ratio,
  sign) keep their whole-object values; `target` is cropped, so a crop that misses the object
  becomes a silent example.
  """
  if size % detector_lib.OUTPUT_STRIDE:
    raise ValueError(f"crop size must be a multiple of {detector_lib.OUTPUT_STRIDE}, got {size}")
  image = batch["composite"]
  b = tf.shape(image)[0]
  h, w = tf.shape(image)[1], tf.shape(image)[2]
  tf.debugging.assert_greater_equal(tf.minimum(h, w), size,
                                    message=f"images smaller than the {size} crop")
  seeds = tf.random.split(tf.cast(seed, tf.int64), 3)
  mask = tf.cast(batch["mask"][..., 0] >= 0.5, tf.float32)  # (B, H, W)
  area = tf.reduce_sum(mask, [1, 2])
  ys = tf.cast(tf.range(h), tf.float32)[None, :, None]
  xs = tf.cast(tf.range(w), tf.float32)[None, None, :]
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  cy = tf.where(area > 0, tf.reduce_sum(mask * ys, [1, 2]) / tf.maximum(area, 1.0), hf / 2)
  cx = tf.where(area > 0, tf.reduce_sum(mask * xs, [1, 2]) / tf.maximum(area, 1.0), wf / 2)
  jitter = tf.random.stateless_uniform([b, 2], seeds[0], -size / 4, size / 4)
  anywhere = tf.random.stateless_uniform([b, 2], seeds[1], 0.0, 1.0)
  pick = tf.random.stateless_uniform([b], seeds[2]) < on_object
  limit = tf.stack([hf - size, wf - size])[None, :]  # (1, 2)
  centred = tf.stack([cy, cx], axis=1) + jitter - size / 2
  offset = tf.where(pick[:, None], centred, anywhere * (limit + 1.0))
  offset = tf.cast(tf.clip_by_value(tf.floor(offset), 0.0, limit), tf.int32)  # (B, 2)
  rows = offset[:, :1] + tf.range(size)[None, :]  # (B, size)
  cols = offset[:, 1:] + tf.range(size)[None, :]

  def crop(x):
    x = tf.gather(x, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)

  out = dict(batch)
  for key, value in batch.items():
    if value.shape.rank is not None and value.shape.rank >= 3:
      out[key] = crop(value)
  return out


