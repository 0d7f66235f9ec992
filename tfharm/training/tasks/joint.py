"""The joint model's training task (`--model=joint`): detection loss + loss on the output.

loss = detection_weight * the detector task's cross-entropy (its labels, tfharm.models.
detector_labels, and its class weights) + output_weight * MSE(harmonised, real) in [0, 1] RGB,
so the network is trained on what the user receives (the mask-free output) as well as on the
per-pixel classes; optionally + mask_output_weight * MSE of the composite shifted by the same
L* change through the ground-truth mask. That term trains the L* head where the objects are
even while the detection is still near-silent (the output's gradient reaches delta_l scaled by
m, ~0.05 at the start), and on identity examples it teaches "inside a mask that needs nothing,
change nothing", which makes false alarms harmless. Validation: the detector task's metrics on the "probs" head and the
harmoniser task's image metrics on the "harmonised" output (both beside doing nothing).
"""
from __future__ import annotations

import dataclasses

from absl import logging
import keras
import tensorflow as tf

from tfharm.models import detector as detector_lib
from tfharm.models import detector_labels as labels_lib
from tfharm.models import joint as joint_lib
from tfharm.models import presets as model_presets
from tfharm.training.task import Batch, Task
from tfharm.training.tasks.detector import DetectorTask, DetectorTaskConfig
from tfharm.training.tasks.harmoniser import image_metrics


@dataclasses.dataclass(frozen=True)
class JointTaskConfig:
  """class_weights as DetectorTaskConfig's (None: per batch from the label frequencies).
  output_weight: the output MSE of an uncorrected composite is ~1e-3 (an object of a fifth of
  the image off by ~0.07 in RGB), the cross-entropy ~0.1-1; 100 makes them comparable."""

  model: joint_lib.JointConfig = joint_lib.JointConfig()
  labels: labels_lib.LabelConfig = labels_lib.LabelConfig()
  image_size: int | None = 256  # static size for tf.data; None: any multiple of STRIDE
  detection_weight: float = 1.0
  output_weight: float = 100.0
  class_weights: tuple[float, float, float] | None = None
  max_class_weight: float = 10.0
  mask_output_weight: float = 0.0  # the ground-truth-gated output term (module docstring)
  threshold: float = 0.5  # on m = max(p_neg, p_pos) for IoU/F1/silence
  init: str | None = None  # joint weights (a file or a preset name) to start from; a resumed
  # checkpoint overrides them

  def __post_init__(self):
    if self.mask_output_weight < 0:
      raise ValueError(f"mask_output_weight must be >= 0, got {self.mask_output_weight}")
    if self.detection_weight < 0 or self.output_weight < 0 or not (
        self.detection_weight or self.output_weight):
      raise ValueError("detection_weight and output_weight must be >= 0, not both 0; got "
                       f"{self.detection_weight}, {self.output_weight}")


class JointTask(Task):
  """Weighted sum of the detector task's loss and the output's MSE against the real image."""

  name = "joint"

  def __init__(self, config: JointTaskConfig = JointTaskConfig()):
    self.config = config
    self._shift = joint_lib.LightnessShift(dtype="float32", name="mask_shift")
    # The detection half is the detector task's own (labels, loss, metrics), not a copy.
    self.detection = DetectorTask(DetectorTaskConfig(
        labels=config.labels, image_size=config.image_size, class_weights=config.class_weights,
        max_class_weight=config.max_class_weight, threshold=config.threshold))

  def build_model(self) -> keras.Model:
    model = joint_lib.JointModel(self.config.model, name="joint")
    if self.config.init:
      start = model_presets.load(self.config.init, "joint", self.config.model)
      model.set_weights(start.get_weights())
      logging.info("Joint model initialised from %s.", self.config.init)
    return model

  def transform(self, batch: Batch) -> Batch:
    return self.detection.transform(batch)  # composite, real, mask + labels, target, ratio, sign

  def inputs(self, batch: Batch) -> tf.Tensor:
    return batch["composite"]

  def loss(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    det = self.detection.loss(batch, outputs["probs"])
    err = tf.square(tf.cast(outputs["harmonised"], tf.float32) - batch["real"])
    mse = tf.reduce_mean(err, axis=[1, 2, 3])  # (B,)
    cfg = self.config
    out = {"loss": cfg.detection_weight * det["loss"] + cfg.output_weight * mse,
           "detection_loss": det["loss"], "ce": det["ce"], "output_mse": mse}
    if cfg.mask_output_weight:
      gated = self._shift(batch["composite"], outputs["delta_l"], batch["mask"])
      out["mask_output_mse"] = tf.reduce_mean(tf.square(gated - batch["real"]), axis=[1, 2, 3])
      out["loss"] += cfg.mask_output_weight * out["mask_output_mse"]
    return out

  def metrics(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    """The detector task's metrics of "probs", the image metrics of "harmonised", and
    `changed_fraction`: the share of pixels the output moves by more than 1/255."""
    out = self.detection.metrics(batch, outputs["probs"])
    harmonised = tf.cast(outputs["harmonised"], tf.float32)
    out.update(image_metrics(harmonised, batch["real"], batch["mask"]))
    moved = tf.reduce_max(tf.abs(harmonised - batch["composite"]), axis=-1) > 1.0 / 255.0
    out["changed_fraction"] = tf.reduce_mean(tf.cast(moved, tf.float32), axis=[1, 2])
    return out

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    return {**self.detection.baseline(batch),
            **image_metrics(batch["composite"], batch["real"], batch["mask"])}

  def images(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    probs = tf.cast(outputs["probs"], tf.float32)
    shown = self.detection.images(batch, probs)
    shown["harmonised"] = tf.cast(outputs["harmonised"], tf.float32)
    shown["delta_l"] = tf.clip_by_value(
        0.5 + tf.cast(outputs["delta_l"], tf.float32) / (2.0 * self.config.model.max_delta_l),
        0.0, 1.0)
    shown["soft_mask"] = detector_lib.soft_mask(probs)
    return shown
