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

The module serves either pipeline: the detector and harmoniser (HarmonisationPipeline) or the
joint model (tfharm.models.joint_pipeline.JointPipeline, `--model=joint`; with a mask, the given
mask gates its L* change). Both run `HarmonisationPipeline.any_size`'s method: the networks see an antialiased S x S
shrink, and only a correction comes back (the pipeline's `correction`, fixed at export:
tfharm.models.correction), applied to the full-resolution image through the mask, so
pixels with mask 0 are returned unchanged (bit-identical in uint8). uint8 out is
round(clip(x, 0, 1) * 255) with round-half-to-even (tf.round, as np.round). The full-size
part runs in blocks of pixels (tfharm.models.full_resolution, "in bands"): only uint8 images
are ever held at full size, so a 24-megapixel photo needs far less memory (bench/RESULTS.md).

Bad input fails at the signature, before either network runs: the dtype by the signature
itself; rank and channels by EnsureShape ("Shape of tensor image [..] is not compatible with
expected shape [?,?,?,3]"); an empty batch, zero-sized images and a mask whose (B, H, W)
differs from the image's by assertions whose messages say what was expected.
"""
from __future__ import annotations

import tensorflow as tf

from tfharm.metrics.device import default_jit_compile
from tfharm.models import correction as correction_lib
from tfharm.models import full_resolution
from tfharm.models.joint_pipeline import JointPipeline
from tfharm.models.pipeline import HarmonisationPipeline

IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")
MASK_SPEC = tf.TensorSpec([None, None, None, 1], tf.float32, name="mask")
to_uint8 = full_resolution.unit_to_uint8  # [0, 1] -> round(clip(x, 0, 1) * 255), ties to even


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


def predicted_uint8(pipeline: HarmonisationPipeline | JointPipeline, image: tf.Tensor,
                    band_pixels: int = full_resolution.BAND_PIXELS) -> dict[str, tf.Tensor]:
  """`pipeline.any_size(image / 255, mask_source="predicted")` for a uint8 image, with the
  full-resolution part in bands (full_resolution.correct_in_bands): the detector and the
  harmoniser at S, the correction gated by the upsampled soft mask. Returns "harmonised"
  uint8 (B, H, W, 3), "mask_s" (B, S, S, 1) and "detection_s" (B, S, S, 2)."""
  h, w = tf.shape(image)[1], tf.shape(image)[2]
  s = pipeline.image_size
  image_s = full_resolution.shrink_in_bands(image, s, full_resolution.uint8_to_unit, band_pixels)
  at_s = pipeline(image_s, mask_source="predicted")  # the networks at S (either pipeline)
  detection_s, mask_s = at_s["detection"], at_s["mask"]  # (B, S, S, 2), (B, S, S, 1)
  pred_s = at_s["harmonised"]  # (B, S, S, 3) in [0, 1]
  parameters = correction_lib.correction_parameters(
      pipeline.correction, image_s, correction_lib.sanitise_mask(mask_s), pred_s)
  gating = lambda y0, y1: correction_lib.sanitise_mask(tf.clip_by_value(
      full_resolution.resize_rows(mask_s, h, w, y0, y1), 0.0, 1.0))  # as any_size's mask
  harmonised, mask = full_resolution.correct_in_bands(pipeline.correction, image, gating,
                                                      parameters, band_pixels, mask_out=True)
  return {"harmonised": harmonised, "mask": mask, "mask_s": mask_s, "detection_s": detection_s}


class ServingModule(tf.Module):
  """Holds the pipeline's variables and the traced signature functions.

  jit_compile applies to the network part only: the input checks stay outside XLA
  (XLA compiles tf.debugging assertions away). None: the device default.
  """

  def __init__(self, pipeline: HarmonisationPipeline | JointPipeline,
               jit_compile: bool | None = None):
    super().__init__(name="tfharm_serving")
    self.pipeline = pipeline  # tracked: its Keras variables are saved with the module
    jit = default_jit_compile() if jit_compile is None else bool(jit_compile)
    self._predicted = tf.function(lambda image: predicted_uint8(pipeline, image),
                                  jit_compile=jit)
    # The harmoniser alone: pipeline.any_size(mask_source="ground_truth") would also run the
    # detector (~75 GFLOP per image) only to discard its map. Same method, same numbers
    # (tested against any_size for masks in [0, 1]).
    self._with_mask = tf.function(
        lambda image, mask: full_resolution.harmonise_uint8(
            pipeline.harmoniser, image, mask, correction=pipeline.correction),
        jit_compile=jit)

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
