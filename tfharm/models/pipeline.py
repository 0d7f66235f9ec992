"""End-to-end mask-free harmonisation: detector -> soft mask -> harmoniser (docs/architecture.md).

  pipe = HarmonisationPipeline(load_detector(...), load_harmoniser(...))
  out = pipe(image01)                       # (B, S, S, 3) in [0, 1], S = harmoniser size: the
                                            # network's raw output, as in the paper's Table 1
  out = pipe.any_size(image01_any_size)     # any H x W, 1/3/4 channels (full-resolution path,
                                            # the composite corrected by `correction`)
  fn = make_inference_fn(pipe, "predicted")  # one tf.function graph (XLA per device default)

Every call returns a dict:
  "harmonised": (B, H, W, 3) float32 in [0, 1]
  "detection":  (B, H, W, 2) float32, ch0 p_negative, ch1 p_positive
  "mask":       (B, H, W, 1) float32 in [0, 1], the mask the harmoniser was given

Mask sources (`mask_source`, a Python string fixed per graph):
  "predicted"    max(p_negative, p_positive), soft (default; section 2.5)
  "binarised"    1 where max(p_negative, p_positive) > threshold (0.5), else 0
  "ground_truth" the given mask (the paper's C_s run); inputs must be {"image", "mask"}
  "empty"        all zeros (the harmoniser told "nothing to fix")
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfharm import presets
from tfharm.metrics.device import default_jit_compile
from tfharm.models import correction as correction_lib
from tfharm.models import detector as detector_lib
from tfharm.models import full_resolution
from tfharm.models.harmoniser import harmonise

MASK_SOURCES = ("predicted", "binarised", "ground_truth", "empty")


def _check_source(mask_source: str) -> str:
  if mask_source not in MASK_SOURCES:
    raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
  return mask_source


def _unpack(inputs, mask_source):
  if isinstance(inputs, dict):
    image, gt = inputs["image"], inputs.get("mask")
  else:
    image, gt = inputs, None
  if mask_source == "ground_truth" and gt is None:
    raise ValueError('mask_source="ground_truth" needs inputs {"image": ..., "mask": ...}')
  image = detector_lib.as_rgb(image)
  if image.shape.rank != 4:
    raise ValueError(f"expected a batch (B, H, W, C), got shape {image.shape}")
  if gt is not None:
    gt = tf.cast(gt, tf.float32)
    if gt.shape.rank != 4 or gt.shape[-1] != 1:
      raise ValueError(f"the ground-truth mask must be (B, H, W, 1), got {gt.shape}")
  return image, gt


@keras.saving.register_keras_serializable(package="tfharm")
class HarmonisationPipeline(keras.Model):
  """Detector and harmoniser in one model. Both are used in inference mode (training=False):
  they are trained separately (section 3); this model has no training step of its own."""

  def __init__(self, detector: keras.Model, harmoniser: keras.Model,
               mask_source: str = "predicted", threshold: float = 0.5,
               correction: str = correction_lib.DEFAULT_CORRECTION, **kwargs):
    super().__init__(**kwargs)
    self.detector = detector
    self.harmoniser = harmoniser
    self.mask_source = _check_source(mask_source)
    self.threshold = float(threshold)
    self.correction = correction_lib.check_correction(correction)

  @property
  def image_size(self) -> int:
    return int(self.harmoniser.input["image"].shape[1])

  def _mask(self, detection, gt, mask_source):
    if mask_source == "predicted":
      return detector_lib.soft_mask(detection)
    if mask_source == "binarised":
      return tf.cast(detector_lib.soft_mask(detection) > self.threshold, tf.float32)
    if mask_source == "ground_truth":
      return tf.clip_by_value(gt, 0.0, 1.0)
    return tf.zeros_like(detection[..., :1])

  def call(self, inputs, mask_source: str | None = None, training=None):
    """inputs: (B, S, S, 3) image in [0, 1], or {"image", "mask"}; S = harmoniser size."""
    del training  # both networks always run in inference mode here
    source = _check_source(mask_source or self.mask_source)
    image, gt = _unpack(inputs, source)  # (B, S, S, 3)
    probs = self.detector(image, training=False)  # (B, S, S, 3)
    detection = detector_lib.detection_channels(tf.cast(probs, tf.float32))  # (B, S, S, 2)
    mask = self._mask(detection, gt, source)  # (B, S, S, 1)
    return {"harmonised": harmonise(self.harmoniser, image, mask),
            "detection": detection, "mask": mask}

  def any_size(self, inputs, mask_source: str | None = None) -> dict[str, tf.Tensor]:
    """The full-resolution path (section 3 steps 2-9) for (B, H, W, C) images of any size.

    The image is shrunk to S (antialiased, full_resolution.shrink); detector and harmoniser
    run at S; the detection and the mask are upsampled bilinearly to H x W; the output is the
    composite with the prediction's correction (`self.correction`, tfharm.models.correction)
    applied through m, so pixels with m = 0 are returned unchanged.
    A ground-truth mask is given at H x W: it is shrunk for the harmoniser and used as is
    for gating.
    """
    source = _check_source(mask_source or self.mask_source)
    image, gt = _unpack(inputs, source)  # (B, H, W, 3), (B, H, W, 1) or None
    s = self.image_size
    full_hw = tf.shape(image)[1:3]
    image_s = tf.clip_by_value(full_resolution.shrink(image, s), 0.0, 1.0)  # (B, S, S, 3)
    gt_s = None if gt is None else tf.clip_by_value(full_resolution.shrink(gt, s), 0.0, 1.0)
    probs = self.detector(image_s, training=False)
    detection_s = detector_lib.detection_channels(tf.cast(probs, tf.float32))  # (B, S, S, 2)
    mask_s = self._mask(detection_s, gt_s, source)  # (B, S, S, 1)
    pred_s = harmonise(self.harmoniser, image_s, mask_s)  # (B, S, S, 3) in [0, 1]
    if source == "ground_truth":
      mask = tf.clip_by_value(tf.where(tf.math.is_nan(gt), 0.0, gt), 0.0, 1.0)
    else:
      mask = tf.clip_by_value(tf.image.resize(mask_s, full_hw, method="bilinear"), 0.0, 1.0)
    detection = tf.image.resize(detection_s, full_hw, method="bilinear")
    harmonised = correction_lib.apply_correction(self.correction, image, mask, image_s, mask_s,
                                                 pred_s)
    return {"harmonised": harmonised, "detection": detection, "mask": mask}

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


def make_inference_fn(pipeline: HarmonisationPipeline, mask_source: str | None = None,
                      jit_compile: bool | None = None, full_resolution_path: bool = False):
  """One `tf.function` for the whole graph. jit_compile None: the device default
  (tfharm.metrics.device: XLA on GPU, off on this CPU, where oneDNN wins; bench/RESULTS.md).
  full_resolution_path: trace `any_size` (images of any size) instead of the S x S call."""
  source = _check_source(mask_source or pipeline.mask_source)
  jit = default_jit_compile() if jit_compile is None else bool(jit_compile)
  if full_resolution_path:
    fn = lambda inputs: pipeline.any_size(inputs, mask_source=source)
  else:
    fn = lambda inputs: pipeline(inputs, mask_source=source)
  return tf.function(fn, jit_compile=jit)


def load_pipeline(detector_path: str | None = None, harmoniser_path: str | None = None,
                  **kwargs: Any) -> HarmonisationPipeline:
  """Pipeline from a detector and a harmoniser, each a file (any `load_detector` /
  `load_harmoniser` format) or a preset name (tfharm.presets); left out: the default presets."""
  from tfharm.models import presets as presets_lib  # pylint: disable=g-import-not-at-top
  from tfharm.models.harmoniser import load_harmoniser  # pylint: disable=g-import-not-at-top

  def load(path_or_name, default, load_file):
    name = path_or_name or default
    return presets_lib.from_preset(name) if name in presets.PRESETS else load_file(name)

  return HarmonisationPipeline(load(detector_path, presets.DEFAULT_DETECTOR,
                                    detector_lib.load_detector),
                               load(harmoniser_path, presets.DEFAULT_HARMONISER, load_harmoniser),
                               **kwargs)
