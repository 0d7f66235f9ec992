"""The served model: a `tf.Module` with the two SavedModel signatures.

  module = ServingModule(load_pipeline(detector_path, harmoniser_path))
  tf.saved_model.save(module, path, signatures=module.signatures())

Signatures (TF Serving / `saved_model_cli` names):
  serving_default      image uint8 (B, H, W, 3), any H, W >= 1
                       -> harmonised uint8 (B, H, W, 3), mask float32 (B, H, W, 1) in [0, 1]
                          (max of the two detection channels), detection float32 (B, H, W, 2)
                          (ch0 p_negative, ch1 p_positive)
  harmonise_with_mask  image uint8 (B, H, W, 3), mask float32 (B, H, W, 1) in [0, 1]
                       -> harmonised uint8 (B, H, W, 3)

The module serves any tfharm.systems System (the joint model, the paper's pipeline, ...) through
its two uint8 methods: `predicted_uint8` and `with_mask_uint8` (tfharm.systems.base), the
full-resolution path in bands (tfharm.models.full_resolution.any_size_uint8): the networks
see an antialiased S x S shrink, and only the correction comes back (the system's
`correction`, fixed at export), applied to the full-resolution image through the mask, so
pixels with mask 0 are returned unchanged (bit-identical in uint8). uint8 out is
round(clip(x, 0, 1) * 255) with round-half-to-even (tf.round, as np.round). Only uint8 images
are ever held at full size, so a 24-megapixel photo needs far less memory (bench/RESULTS.md).

Bad input fails at the signature, before either network runs: the dtype by the signature
itself; rank and channels by EnsureShape ("Shape of tensor image [..] is not compatible with
expected shape [?,?,?,3]"); an empty batch, zero-sized images and a mask whose (B, H, W)
differs from the image's by assertions whose messages say what was expected.
"""
from __future__ import annotations

import tensorflow as tf

from tfharm.metrics.device import default_jit_compile
from tfharm.systems.base import System

IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")
MASK_SPEC = tf.TensorSpec([None, None, None, 1], tf.float32, name="mask")


def _checked_image(image: tf.Tensor) -> tf.Tensor:
  """The uint8 image, after checking rank, channels and non-empty sizes at run time.

  A loaded signature does not enforce its TensorSpec's shape (only its dtype): a rank-3 or
  4-channel tensor would reach the networks and fail deep inside, or run. EnsureShape checks
  it at run time (a static assert_rank would be folded away, the rank being known)."""
  image = tf.ensure_shape(image, IMAGE_SPEC.shape, name="check_image_shape")  # rank 4, 3 ch
  shape = tf.shape(image)
  checks = [
      tf.debugging.assert_positive(
          shape[0], message="image: the batch is empty (expected uint8 [batch >= 1, H, W, 3])"),
      tf.debugging.assert_positive(
          shape[1:3], message="image: zero-sized image (expected height and width >= 1)"),
  ]
  with tf.control_dependencies(checks):  # nothing downstream runs on bad input
    return tf.identity(image)  # (B, H, W, 3) uint8


def _checked_mask(image: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  mask = tf.ensure_shape(mask, MASK_SPEC.shape, name="check_mask_shape")  # rank 4, 1 ch
  same = tf.debugging.assert_equal(
      tf.shape(mask)[:3], tf.shape(image)[:3],
      message="mask: its batch, height and width must equal those of the image (mask float32 "
              "[batch, H, W, 1] in [0, 1])")
  with tf.control_dependencies([same]):
    return tf.identity(mask)


class ServingModule(tf.Module):
  """Holds the system's variables and the traced signature functions.

  jit_compile applies to the network part only: the input checks stay outside XLA
  (XLA compiles tf.debugging assertions away). None: the device default.
  """

  def __init__(self, system: System, jit_compile: bool | None = None):
    super().__init__(name="tfharm_serving")
    self.system = system  # tracked: its Keras variables are saved with the module
    jit = default_jit_compile() if jit_compile is None else bool(jit_compile)
    self._predicted = tf.function(system.predicted_uint8, jit_compile=jit)
    self._with_mask = tf.function(system.with_mask_uint8, jit_compile=jit)

  @tf.function(input_signature=[IMAGE_SPEC])
  def serving_default(self, image):
    image = _checked_image(image)
    out = self._predicted(image)
    full_hw = tf.shape(image)[1:3]
    mask = tf.clip_by_value(tf.image.resize(out["mask_s"], full_hw, method="bilinear"), 0.0, 1.0)
    return {"harmonised": out["harmonised"], "mask": mask,
            "detection": tf.image.resize(out["detection_s"], full_hw, method="bilinear")}

  @tf.function(input_signature=[IMAGE_SPEC, MASK_SPEC])
  def harmonise_with_mask(self, image, mask):
    image = _checked_image(image)
    return {"harmonised": self._with_mask(image, _checked_mask(image, mask))}

  @tf.function(input_signature=[IMAGE_SPEC])
  def harmonise_uint8(self, image):
    """What `tfharm.harmonise` runs without a mask: serving_default's `harmonised`, and the
    gating mask as uint8 instead of float32, without the full-size detection map."""
    out = self._predicted(_checked_image(image))
    return {"harmonised": out["harmonised"], "mask": out["mask"]}

  def signatures(self) -> dict:
    """The concrete functions to pass to tf.saved_model.save(signatures=...)."""
    return {"serving_default": self.serving_default.get_concrete_function(),
            "harmonise_with_mask": self.harmonise_with_mask.get_concrete_function()}
