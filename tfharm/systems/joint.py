"""The joint model as a system: one network finds and fixes the composite (docs/joint.md).

At S the output is the network's own (the composite with L* += m * delta_l). At any size the
network runs on the S x S shrink and the correction carries its prediction to the photo
through the upsampled m (tfharm.systems.base). With a given mask ("ground_truth"), that mask
gates the network's L* change instead of m.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfharm import systems
from tfharm.models import correction as correction_lib
from tfharm.models import detector as detector_lib
from tfharm.models import joint as joint_lib
from tfharm.models import methods
from tfharm.systems import base



@keras.saving.register_keras_serializable(package="tfharm")
class JointSystem(base.System):
  """One network for detection and harmonisation (trained by tfharm.train --model=joint)."""

  SYSTEM = "joint"

  def __init__(self, joint: joint_lib.JointModel, image_size: int = 256,
               correction: str = correction_lib.DEFAULT_CORRECTION,
               mask_source: str = "predicted", **kwargs):
    super().__init__(correction=correction, mask_source=mask_source, **kwargs)
    if image_size % joint_lib.STRIDE:
      raise ValueError(f"image_size must be a multiple of {joint_lib.STRIDE}, got {image_size}")
    self.joint = joint
    self.size = int(image_size)
    self._shift = joint_lib.LightnessShift(dtype="float32", name="given_mask_shift")

  @property
  def image_size(self) -> int:
    return self.size

  def at_size(self, image, mask, mask_source, detect=True):
    del detect  # one network: the detection comes with the output
    joint_lib.check_size(image)
    out = self.joint(image, training=False)
    detection = detector_lib.detection_channels(tf.cast(out["probs"], tf.float32))
    if mask_source == "predicted":
      return {"harmonised": tf.cast(out["harmonised"], tf.float32), "detection": detection,
              "mask": detector_lib.soft_mask(detection)}
    return {"harmonised": self._shift(image, out["delta_l"], mask), "detection": detection,
            "mask": mask}

  def with_correction(self, correction):
    return JointSystem(self.joint, self.size, correction, self.mask_source)

  def rows(self, composite, mask=None, threshold=0.5, gate=None):
    del threshold, gate  # no binarised rows, no abstention gate
    out = self.joint(composite, training=False)
    images, _ = methods.joint_images(self.joint, composite, mask, self._shift, outputs=out)
    detection = detector_lib.detection_channels(tf.cast(out["probs"], tf.float32))
    return {"images": images, "detection": detection, "values": {}}

  def get_config(self):
    return {"joint": keras.saving.serialize_keras_object(self.joint), "image_size": self.size,
            "correction": self.correction, "mask_source": self.mask_source, "name": self.name}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(keras.saving.deserialize_keras_object(config.pop("joint")), **config)


def load(files: dict[str, str], correction: str = correction_lib.DEFAULT_CORRECTION,
         image_size: int | None = None) -> JointSystem:
  """From systems.weight_files' files; image_size: S (default 256)."""
  with systems.loading("joint_weights", files["joint_weights"], "joint model"):
    model = joint_lib.load_joint(files["joint_weights"])
  return JointSystem(model, image_size=image_size or 256, correction=correction)
