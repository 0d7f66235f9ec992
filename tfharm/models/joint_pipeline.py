"""The joint model where the two-network pipeline is used: `JointPipeline`, a drop-in for
tfharm.models.pipeline.HarmonisationPipeline in the serving code and the command lines.

  pipe = JointPipeline(load_joint("joint.keras"))
  pipe(image01)              # (B, S, S, 3): {"harmonised", "detection", "mask"} at S
  pipe.any_size(photo01)     # any H x W: the full-resolution path of the pipeline

The same dicts as HarmonisationPipeline. At S the output is the joint model's own (composite
with L* += m * delta_l). At any size the model runs on the antialiased S x S shrink, and the
pipeline's correction (default `l_moments`, tfharm.models.correction) carries its prediction to
the full-resolution photo through the upsampled m, so pixels with m = 0 come back unchanged.
Mask sources: "predicted" (m, the model's max(p_negative, p_positive)) and "ground_truth" (a
given mask gates the model's L* change instead of m: `harmonise_with_mask`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfharm.models import correction as correction_lib
from tfharm.models import detector as detector_lib
from tfharm.models import full_resolution
from tfharm.models import joint as joint_lib

MASK_SOURCES = ("predicted", "ground_truth")


def _check_source(mask_source: str) -> str:
  if mask_source not in MASK_SOURCES:
    raise ValueError(f"the joint pipeline's mask_source is one of {MASK_SOURCES}, got "
                     f"{mask_source!r}")
  return mask_source


def mask_harmoniser(model: joint_lib.JointModel, size: int) -> keras.Model:
  """The joint model as a harmoniser with the DIH interface ({"image" in [-1, 1], "mask"} at
  S x S -> {"image": image in [-1, 1]}), the given mask gating its L* change: what
  full_resolution.harmonise_uint8 runs for `harmonise_with_mask`."""
  image = keras.Input((size, size, 3), name="image")
  mask = keras.Input((size, size, 1), name="mask")
  unit = (image + 1.0) / 2.0
  out = model(unit)
  shifted = joint_lib.LightnessShift(dtype="float32", name="given_mask_shift")(
      unit, out["delta_l"], mask)
  return keras.Model({"image": image, "mask": mask}, {"image": shifted * 2.0 - 1.0},
                     name="joint_mask_harmoniser")


@keras.saving.register_keras_serializable(package="tfharm")
class JointPipeline(keras.Model):
  """One network for detection and harmonisation; inference mode only (trained by
  `python -m tfharm.train --model=joint`)."""

  def __init__(self, joint: joint_lib.JointModel, image_size: int = 256,
               correction: str = correction_lib.DEFAULT_CORRECTION,
               mask_source: str = "predicted", **kwargs):
    super().__init__(**kwargs)
    if image_size % joint_lib.STRIDE:
      raise ValueError(f"image_size must be a multiple of {joint_lib.STRIDE}, got {image_size}")
    self.joint = joint
    self.size = int(image_size)
    self.correction = correction_lib.check_correction(correction)
    self.mask_source = _check_source(mask_source)
    self.harmoniser = mask_harmoniser(joint, self.size)
    self._shift = joint_lib.LightnessShift(dtype="float32", name="given_mask_shift")

  def build(self, input_shape=None):
    """Nothing to create: the joint network and the mask harmoniser are functional models,
    built when made, and the shift has no weights. (Keras's default build() warns "may cause
    failures down the line" on the first call of every cache-filling run.)"""
    del input_shape
    self.built = True

  @property
  def image_size(self) -> int:
    return self.size

  def _unpack(self, inputs, source):
    image = inputs["image"] if isinstance(inputs, dict) else inputs
    gt = inputs.get("mask") if isinstance(inputs, dict) else None
    if source == "ground_truth" and gt is None:
      raise ValueError('mask_source="ground_truth" needs inputs {"image": ..., "mask": ...}')
    image = detector_lib.as_rgb(image)
    if image.shape.rank != 4:
      raise ValueError(f"expected a batch (B, H, W, C), got shape {image.shape}")
    return image, None if gt is None else correction_lib.sanitise_mask(tf.cast(gt, tf.float32))

  def _at_size(self, image, gt, source):
    joint_lib.check_size(image)
    out = self.joint(image, training=False)
    detection = detector_lib.detection_channels(tf.cast(out["probs"], tf.float32))
    if source == "predicted":
      return {"harmonised": tf.cast(out["harmonised"], tf.float32), "detection": detection,
              "mask": detector_lib.soft_mask(detection)}
    shifted = self._shift(image, out["delta_l"], gt)
    return {"harmonised": shifted, "detection": detection, "mask": gt}

  def call(self, inputs, mask_source: str | None = None, training=None):
    """inputs: (B, S, S, 3) in [0, 1] (any multiple of the stride), or {"image", "mask"}."""
    del training
    source = _check_source(mask_source or self.mask_source)
    image, gt = self._unpack(inputs, source)
    return self._at_size(image, gt, source)

  def any_size(self, inputs, mask_source: str | None = None) -> dict[str, tf.Tensor]:
    """(B, H, W, C) of any size: the model at S, the correction at H x W (module docstring)."""
    source = _check_source(mask_source or self.mask_source)
    image, gt = self._unpack(inputs, source)
    full_hw = tf.shape(image)[1:3]
    image_s = tf.clip_by_value(full_resolution.shrink(image, self.size), 0.0, 1.0)
    gt_s = None if gt is None else tf.clip_by_value(full_resolution.shrink(gt, self.size), 0, 1)
    at_s = self._at_size(image_s, gt_s, source)
    if source == "ground_truth":
      mask = gt
    else:
      mask = tf.clip_by_value(tf.image.resize(at_s["mask"], full_hw, method="bilinear"), 0.0, 1.0)
    harmonised = correction_lib.apply_correction(self.correction, image, mask, image_s,
                                                 at_s["mask"], at_s["harmonised"])
    return {"harmonised": harmonised, "mask": mask,
            "detection": tf.image.resize(at_s["detection"], full_hw, method="bilinear")}

  def get_config(self):
    return {"joint": keras.saving.serialize_keras_object(self.joint), "image_size": self.size,
            "correction": self.correction, "mask_source": self.mask_source, "name": self.name}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(keras.saving.deserialize_keras_object(config.pop("joint")), **config)


def load_joint_pipeline(path: str, image_size: int = 256,
                        correction: str = correction_lib.DEFAULT_CORRECTION) -> JointPipeline:
  """The pipeline of a joint model file (any `load_joint` format)."""
  return JointPipeline(joint_lib.load_joint(path), image_size=image_size, correction=correction)
