"""The paper's system: a detector finds the region, a harmoniser fixes it (docs/architecture.md).

At S the output is the harmoniser's raw output, as the paper's Table 1 reports it; at any size
it is the composite with the prediction's correction applied through the upsampled mask
(tfharm.systems.base). Mask sources: "predicted" max(p_negative, p_positive), soft (the
default); "binarised" 1 where that exceeds `threshold`; "ground_truth" a given mask (the paper's
C_s); "empty" all zeros (the harmoniser told "nothing to fix").
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfharm import systems
from tfharm.models import abstention
from tfharm.models import correction as correction_lib
from tfharm.models import detector as detector_lib
from tfharm.models import harmoniser as harmoniser_lib
from tfharm.models import methods
from tfharm.systems import base

# The harmoniser's five masks in the evaluation, in the order of its one 5B call (the last:
# the soft mask through the abstention gate).
HARMONISER_METHODS = ("harmoniser_gt_mask", "detector_harmoniser",
                      "harmoniser_binarised_pred_mask", "harmoniser_empty_mask",
                      "detector_harmoniser_abstain")


@keras.saving.register_keras_serializable(package="tfharm")
class PipelineSystem(base.System):
  """The detector and the harmoniser, trained separately (tfharm.training.tasks)."""

  SYSTEM = "pipeline"

  MASK_SOURCES = ("predicted", "binarised", "ground_truth", "empty")

  def __init__(self, detector: keras.Model, harmoniser: keras.Model,
               mask_source: str = "predicted", threshold: float = 0.5,
               correction: str = correction_lib.DEFAULT_CORRECTION, **kwargs):
    super().__init__(correction=correction, mask_source=mask_source, **kwargs)
    self.detector = detector
    self.harmoniser = harmoniser
    self.threshold = float(threshold)

  @property
  def image_size(self) -> int:
    return int(self.harmoniser.input["image"].shape[1])

  @property
  def mask_path_variables(self) -> list:
    return list(self.harmoniser.variables)  # with a given mask the detector does not run

  def _detect(self, image):
    return detector_lib.detection_channels(
        tf.cast(self.detector(image, training=False), tf.float32))  # (B, S, S, 2)

  def at_size(self, image, mask, mask_source, detect=True):
    out = {}
    if mask_source != "ground_truth" or detect:
      out["detection"] = self._detect(image)
    if mask_source == "predicted":
      mask = detector_lib.soft_mask(out["detection"])
    elif mask_source == "binarised":
      mask = tf.cast(detector_lib.soft_mask(out["detection"]) > self.threshold, tf.float32)
    elif mask_source == "empty":
      mask = tf.zeros_like(image[..., :1])
    out["mask"] = mask  # (B, S, S, 1)
    out["harmonised"] = harmoniser_lib.harmonise(self.harmoniser, image, mask)
    return out

  def with_correction(self, correction):
    return PipelineSystem(self.detector, self.harmoniser, self.mask_source, self.threshold,
                          correction)

  def rows(self, composite, mask=None, threshold=0.5, gate=None):
    gate = gate or abstention.Gate()
    detection = self._detect(composite)  # once per example
    soft = detector_lib.soft_mask(detection)  # (B, S, S, 1)
    gated = abstention.apply_gate(soft, gate)
    if mask is None:  # unedited photos: the mask-free rows only
      masks = {"detector_harmoniser": soft, "detector_harmoniser_abstain": gated}
      names = systems.SYSTEMS["pipeline"].photo_rows
      values = {"detector/abstained": tf.cast(tf.reduce_max(gated, axis=[1, 2, 3]) == 0,
                                              tf.float32)}
    else:
      binarised = tf.cast(soft > threshold, tf.float32)
      masks = dict(zip(HARMONISER_METHODS, (mask, soft, binarised, tf.zeros_like(mask), gated)))
      names, values = systems.SYSTEMS["pipeline"].rows, {}
    raw = methods.harmonise_masks(self.harmoniser, composite, masks)  # one len(masks) B call
    return {"images": methods.method_images(composite, raw, masks, names),
            "detection": detection, "values": values}

  def get_config(self):
    return {"detector": keras.saving.serialize_keras_object(self.detector),
            "harmoniser": keras.saving.serialize_keras_object(self.harmoniser),
            "mask_source": self.mask_source, "threshold": self.threshold,
            "correction": self.correction, "name": self.name}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    detector = keras.saving.deserialize_keras_object(config.pop("detector"))
    harmoniser = keras.saving.deserialize_keras_object(config.pop("harmoniser"))
    return cls(detector, harmoniser, **config)


def load(files: dict[str, str], correction: str = correction_lib.DEFAULT_CORRECTION,
         image_size: int | None = None) -> PipelineSystem:
  """From systems.weight_files' files; image_size: the harmoniser's S (default 256)."""
  with systems.loading("detector_weights", files["detector_weights"], "detector"):
    detector = detector_lib.load_detector(files["detector_weights"])
  cfg = harmoniser_lib.HarmoniserConfig(image_size=image_size) if image_size else None
  what = f"{image_size}x{image_size} harmoniser" if image_size else "harmoniser"
  with systems.loading("harmoniser_weights", files["harmoniser_weights"], what):
    harmoniser = harmoniser_lib.load_harmoniser(files["harmoniser_weights"], cfg)
  return PipelineSystem(detector, harmoniser, correction=correction)
