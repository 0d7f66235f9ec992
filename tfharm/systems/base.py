"""`System`: what every end-to-end system does, written once (docs/architecture.md, "Systems").

A system is networks plus what turns their output at S into a harmonised photo. A subclass
writes only `at_size` (its networks at S), `rows` (its evaluation rows at S) and
`with_correction`; the calls at S, at any size (float and uint8, tfharm.models.full_resolution)
and with a given mask are this class's, so every system serves and evaluates alike.

  system(image01)                       # (B, S, S, 3) in [0, 1] -> the networks' own output at S
  system.any_size(photo01)              # any H x W, 1/3/4 channels: the correction at H x W
  system({"image": x, "mask": m}, mask_source="ground_truth")    # a given mask (also any_size)
  system.predicted_uint8(u8) / system.with_mask_uint8(u8, m)     # what the SavedModel runs

Every call returns {"harmonised": (B, H, W, 3) in [0, 1], "mask": (B, H, W, 1), the mask
that gated the change, ["detection": (B, H, W, 2), p_negative and p_positive]}.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfharm.models import correction as correction_lib
from tfharm.models import detector as detector_lib
from tfharm.models import full_resolution


class System(keras.Model):
  """Inference only (both networks run with training=False); trained by tfharm.train."""

  SYSTEM: str = ""  # its name in tfharm.systems.SYSTEMS (its spec: weights, rows)
  MASK_SOURCES: Sequence[str] = ("predicted", "ground_truth")

  def __init__(self, correction: str = correction_lib.DEFAULT_CORRECTION,
               mask_source: str = "predicted", **kwargs):
    super().__init__(**kwargs)
    self.correction = correction_lib.check_correction(correction)
    self.mask_source = self._source(mask_source)

  def build(self, input_shape=None):
    """Nothing to create: the networks are built when made. (Keras's default build() warns
    "may cause failures down the line" on the first call of every cache-filling run.)"""
    del input_shape
    self.built = True

  # --------------------------------------------------------------- what a subclass writes
  @property
  def image_size(self) -> int:
    raise NotImplementedError

  def at_size(self, image: tf.Tensor, mask: tf.Tensor | None, mask_source: str,
              detect: bool = True) -> dict[str, tf.Tensor]:
    """The networks on (B, S, S, 3) in [0, 1]; `mask` (B, S, S, 1) sanitised, for
    mask_source "ground_truth". detect=False: "detection" may be left out (the served
    with-mask path, where a separate detector would run only to be discarded)."""
    raise NotImplementedError

  def with_correction(self, correction: str) -> "System":
    """The same networks (shared, not copied) with another correction."""
    raise NotImplementedError

  def rows(self, composite: tf.Tensor, mask: tf.Tensor | None = None, threshold: float = 0.5,
           gate=None) -> tuple[dict[str, tf.Tensor], tf.Tensor, dict[str, tf.Tensor]]:
    """Its evaluation rows at S: ({row: (B, S, S, 3) image in [0, 1]}, its soft mask m
    (B, S, S, 1), {name: (B,) extra per-image values}). With the ground-truth `mask`: its spec's
    `rows`; without (unedited photos): its `photo_rows`. `gate`: the abstention gate, for a
    system whose rows use one."""
    raise NotImplementedError

  @property
  def mask_path_variables(self) -> list:
    """The variables `with_mask_uint8` reads (what a cache of that function must hold)."""
    return list(self.variables)

  # --------------------------------------------------------------- the same for every system
  def _source(self, mask_source: str | None) -> str:
    source = mask_source or getattr(self, "mask_source", "predicted")
    if source not in self.MASK_SOURCES:
      raise ValueError(f"{type(self).__name__}'s mask_source is one of {tuple(self.MASK_SOURCES)},"
                       f" got {source!r}")
    return source

  def _unpack(self, inputs, source: str) -> tuple[tf.Tensor, tf.Tensor | None]:
    image = inputs["image"] if isinstance(inputs, dict) else inputs
    mask = inputs.get("mask") if isinstance(inputs, dict) else None
    if source == "ground_truth" and mask is None:
      raise ValueError('mask_source="ground_truth" needs inputs {"image": ..., "mask": ...}')
    image = detector_lib.as_rgb(image)
    if image.shape.rank != 4:
      raise ValueError(f"expected a batch (B, H, W, C), got shape {image.shape}")
    if mask is None:
      return image, None
    mask = tf.cast(mask, tf.float32)
    if mask.shape.rank != 4 or mask.shape[-1] != 1:
      raise ValueError(f"the given mask must be (B, H, W, 1), got {mask.shape}")
    return image, correction_lib.sanitise_mask(mask)

  def call(self, inputs, mask_source: str | None = None, training=None):
    """(B, S, S, C) in [0, 1] (or uint8), or {"image", "mask"}: the networks' output at S."""
    del training  # inference only
    source = self._source(mask_source)
    image, mask = self._unpack(inputs, source)
    return self.at_size(image, mask if source == "ground_truth" else None, source)

  def any_size(self, inputs, mask_source: str | None = None) -> dict[str, tf.Tensor]:
    """(B, H, W, C) of any size: the networks at S, `self.correction` at H x W
    (full_resolution.any_size); a given mask is at H x W and gates the change as it is."""
    source = self._source(mask_source)
    image, mask = self._unpack(inputs, source)
    return full_resolution.any_size(lambda i, m: self.at_size(i, m, source), image,
                                    mask if source == "ground_truth" else None,
                                    self.image_size, self.correction)

  def predicted_uint8(self, image: tf.Tensor, band_pixels: int = full_resolution.BAND_PIXELS
                      ) -> dict[str, tf.Tensor]:
    """any_size(image / 255) for a uint8 (B, H, W, 3) image, in bands (only uint8 images at
    full size): "harmonised" and "mask" uint8 at H x W, "mask_s" and "detection_s" at S."""
    out, at = full_resolution.any_size_uint8(
        lambda i, _: self.at_size(i, None, "predicted"), image, None, self.image_size,
        self.correction, band_pixels)
    return {**out, "mask_s": at["mask"], "detection_s": at["detection"]}

  def with_mask_uint8(self, image: tf.Tensor, mask: tf.Tensor,
                      band_pixels: int = full_resolution.BAND_PIXELS) -> tf.Tensor:
    """any_size({"image": image / 255, "mask": mask}, "ground_truth") as uint8, in bands."""
    return full_resolution.any_size_uint8(
        lambda i, m: self.at_size(i, m, "ground_truth", detect=False), image, mask,
        self.image_size, self.correction, band_pixels, mask_out=False)[0]["harmonised"]


def inference_fn(system: System, mask_source: str | None = None,
                 jit_compile: bool | None = None, any_size: bool = False):
  """One `tf.function` for the whole graph. jit_compile None: the device default
  (tfharm.metrics.device: XLA on GPU, off on this CPU, where oneDNN wins; bench/RESULTS.md).
  any_size: trace `any_size` (images of any size) instead of the S x S call."""
  from tfharm.metrics.device import default_jit_compile  # pylint: disable=g-import-not-at-top
  source = system._source(mask_source)  # pylint: disable=protected-access
  jit = default_jit_compile() if jit_compile is None else bool(jit_compile)
  method = system.any_size if any_size else system
  return tf.function(lambda inputs: method(inputs, mask_source=source), jit_compile=jit)
