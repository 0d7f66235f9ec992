"""Apply a fixed-size harmoniser to images of any size (docs/architecture.md, "The pipeline").

DIH's FC bottleneck ties it to S x S. We run it at S and bring back only a *correction*
(tfharm.models.correction): by default the object's L* moments read off the prediction and
applied to the full-resolution composite (Reinhard on L*); or the residual
clip(C + m * upsample(H_S - C_S), 0, 1). Either way full-resolution texture survives and pixels
outside the mask are returned bit-identical, which the network's own reconstruction blur would
not do. Pure TF ops with static rank: usable inside tf.function(jit_compile=True); each new
(H, W) traces once.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfharm import colour
from tfharm.models import correction as correction_lib
from tfharm.models import harmoniser as harmoniser_lib


def resize_matrix(n_in, n_out, antialias: bool = True) -> tf.Tensor:
  """(n_out, n_in) row-stochastic matrix of 1-D bilinear resampling, half-pixel centres.

  With `antialias` the triangle widens by the shrink factor, which reproduces
  tf.image.resize(..., antialias=True) (checked in tests); unlike that op
  (ScaleAndTranslate) a matmul compiles under XLA.
  """
  scale = tf.cast(n_out, tf.float32) / tf.cast(n_in, tf.float32)  # < 1 when shrinking
  width = tf.minimum(scale, 1.0) if antialias else tf.constant(1.0)
  centre = (tf.range(n_out, dtype=tf.float32) + 0.5) / scale - 0.5  # (n_out,) input coords
  taps = tf.range(n_in, dtype=tf.float32)
  w = tf.nn.relu(1.0 - tf.abs(taps[None, :] - centre[:, None]) * width)  # (n_out, n_in)
  return w / tf.reduce_sum(w, axis=1, keepdims=True)


def shrink(x: tf.Tensor, size: int) -> tf.Tensor:
  """Antialiased bilinear resize of NHWC `x` to size x size, as two matmuls."""
  shape = tf.shape(x)
  rows = resize_matrix(shape[1], size)  # (S, H)
  cols = resize_matrix(shape[2], size)  # (S, W)
  x = tf.einsum("sh,bhwc->bswc", rows, x)  # (B, S, W, C)
  return tf.einsum("tw,bswc->bstc", cols, x)  # (B, S, S, C)


def _input_size(model: keras.Model) -> int:
  return int(model.input["image"].shape[1]) if isinstance(model.input, dict) else int(
      model.input[0].shape[1])


def any_size(at_s, image: tf.Tensor, mask: tf.Tensor | None, size: int,
             correction: str = correction_lib.DEFAULT_CORRECTION) -> dict[str, tf.Tensor]:
  """The full-resolution path, the one copy every system and signature runs in float.

  image (B, H, W, 3) in [0, 1]; mask (B, H, W, 1) already sanitised, or None (the system finds
  it). Both are shrunk to S (antialiased: a thin object keeps its area-weighted presence);
  `at_s(image_s, mask_s)` runs the networks at S and returns {"harmonised", "mask"[,
  "detection"]}; only the correction comes back to H x W (tfharm.models.correction), gated by
  the given mask or by the upsampled predicted one, so pixels with mask 0 are unchanged.
  """
  full_hw = tf.shape(image)[1:3]
  image_s = tf.clip_by_value(shrink(image, size), 0.0, 1.0)  # (B, S, S, 3)
  mask_s = None if mask is None else tf.clip_by_value(shrink(mask, size), 0.0, 1.0)
  at = at_s(image_s, mask_s)
  if mask is None:
    mask = tf.clip_by_value(tf.image.resize(at["mask"], full_hw, method="bilinear"), 0.0, 1.0)
  out = {"harmonised": correction_lib.apply_correction(correction, image, mask, image_s,
                                                       at["mask"], at["harmonised"]),
         "mask": mask}
  if "detection" in at:
    out["detection"] = tf.image.resize(at["detection"], full_hw, method="bilinear")
  return out


def harmonise_any_size(model: keras.Model, image: tf.Tensor, mask: tf.Tensor,
                       size: int | None = None,
                       correction: str = correction_lib.DEFAULT_CORRECTION) -> tf.Tensor:
  """Harmonise (B, H, W, 3) images in [0, 1] with soft (B, H, W, 1) masks, any H and W, with
  a harmoniser alone (`any_size` with the given mask).

  `size` defaults to the model's input size; `correction` is one of correction.CORRECTIONS.
  The mask is clipped to [0, 1] (NaN -> 0) before it gates anything, so the output stays in
  [0, 1] and equals `image` wherever the mask is 0.
  """
  correction_lib.check_correction(correction)
  image = tf.convert_to_tensor(image, tf.float32)
  mask = tf.convert_to_tensor(mask, tf.float32)
  if image.shape.rank != 4 or mask.shape.rank != 4:
    raise ValueError(f"expected NHWC image and mask, got {image.shape} and {mask.shape}")
  at_s = lambda image_s, mask_s: {"harmonised": harmoniser_lib.harmonise(model, image_s, mask_s),
                                  "mask": mask_s}
  return any_size(at_s, image, correction_lib.sanitise_mask(mask), size or _input_size(model),
                  correction)["harmonised"]


# ----------------------------------------------------------------------------- in bands
# The path above holds several float32 copies of the full-size image at once (the image, its
# L*a*b*, the moved L*, ...: ~116 bytes per pixel at the served signature). The functions below
# compute the same values with only uint8 images and the small S x S tensors at full size:
# the shrink reads the uint8 image a block of columns at a time (each block's contraction over
# H is complete, as in `shrink`), and the correction, element-wise, a block of rows at a time.
BAND_PIXELS = 1 << 19  # pixels per block (about 25 MB of float32 temporaries in the correction)


def _band_count(total, step):
  return (total + step - 1) // step


def resize_rows(x: tf.Tensor, out_h, out_w, y0, y1) -> tf.Tensor:
  """Rows [y0, y1) of tf.image.resize(x, (out_h, out_w), "bilinear") (half-pixel centres, no
  antialiasing), computed with the same float32 operations as TensorFlow's kernel, so the
  values are bit-identical (tested) without building the (B, out_h, out_w, C) tensor."""
  def taps(start, stop, in_size, out_size):
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    pos = (tf.cast(tf.range(start, stop), tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(pos)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(pos), tf.int32), in_size - 1)
    return lower, upper, pos - floor

  y_lo, y_hi, y_lerp = taps(y0, y1, tf.shape(x)[1], out_h)
  x_lo, x_hi, x_lerp = taps(0, out_w, tf.shape(x)[2], out_w)
  x_lerp = x_lerp[None, None, :, None]

  def across(rows):  # (B, h, in_w, C) -> (B, h, out_w, C)
    left, right = tf.gather(rows, x_lo, axis=2), tf.gather(rows, x_hi, axis=2)
    return left + (right - left) * x_lerp

  top, bottom = across(tf.gather(x, y_lo, axis=1)), across(tf.gather(x, y_hi, axis=1))
  return top + (bottom - top) * y_lerp[None, :, None, None]


def shrink_in_bands(x: tf.Tensor, size: int, prepare, band_pixels: int = BAND_PIXELS):
  """`clip(shrink(prepare(x), size), 0, 1)` for a (B, H, W, C) tensor (e.g. uint8) read a block
  of columns at a time: `prepare` (element-wise, e.g. uint8 -> [0, 1]) never sees more than
  ~band_pixels pixels per image."""
  h, w = tf.shape(x)[1], tf.shape(x)[2]
  rows = resize_matrix(h, size)  # (S, H)
  cols = resize_matrix(w, size)  # (S, W)
  step = tf.maximum(band_pixels // h, 1)
  n = _band_count(w, step)
  parts = tf.TensorArray(tf.float32, size=n, infer_shape=False)

  def body(i, parts):
    block = prepare(x[:, :, i * step:tf.minimum((i + 1) * step, w), :])  # (B, H, wb, C)
    part = tf.einsum("sh,bhwc->bswc", rows, block)  # (B, S, wb, C)
    return i + 1, parts.write(i, tf.transpose(part, [2, 0, 1, 3]))  # (wb, B, S, C)

  _, parts = tf.while_loop(lambda i, _: i < n, body, (0, parts), parallel_iterations=1)
  channels = x.shape[-1]
  x = tf.transpose(parts.concat(), [1, 2, 0, 3])  # (B, S, W, C)
  out = tf.clip_by_value(tf.einsum("tw,bswc->bstc", cols, x), 0.0, 1.0)  # (B, S, S, C)
  # The static shape is lost in the loop; Keras's convolution needs the channels (without them
  # it falls back to an XLA-compiled kernel).
  out.set_shape([None, size, size, channels])
  return out


def uint8_to_unit(image: tf.Tensor) -> tf.Tensor:
  """uint8 -> float32 [0, 1] as u / 255 (the served signatures' conversion)."""
  return tf.cast(image, tf.float32) / 255.0


unit_to_uint8 = colour.to_uint8  # [0, 1] -> round(clip(x, 0, 1) * 255), ties to even


def correct_in_bands(correction: str, image: tf.Tensor, mask_rows, parameters: dict,
                     band_pixels: int = BAND_PIXELS, mask_out: bool = False):
  """The full-resolution correction of a uint8 (B, H, W, 3) image, a block of rows at a time,
  returned as uint8: equal to unit_to_uint8(correction.apply_correction(...)) on the float
  image (the same element-wise operations per pixel, tested).

  mask_rows(y0, y1) gives the sanitised gating mask of rows [y0, y1), (B, h, W, 1) float32.
  With mask_out, also returns that mask as uint8 (B, H, W, 1).
  """
  h, w = tf.shape(image)[1], tf.shape(image)[2]
  step = tf.maximum(band_pixels // w, 1)
  n = _band_count(h, step)
  delta_s = parameters.get("delta_s")
  out = tf.TensorArray(tf.uint8, size=n, infer_shape=False)
  masks = tf.TensorArray(tf.uint8, size=n, infer_shape=False)

  def body(i, out, masks):
    y0, y1 = i * step, tf.minimum((i + 1) * step, h)
    mask = mask_rows(y0, y1)  # (B, h, W, 1)
    delta = None if delta_s is None else resize_rows(delta_s, h, w, y0, y1)
    band = correction_lib.correct_pixels(correction, uint8_to_unit(image[:, y0:y1]), mask,
                                         parameters, delta)
    out = out.write(i, tf.transpose(unit_to_uint8(band), [1, 0, 2, 3]))  # (h, B, W, 3)
    if mask_out:
      masks = masks.write(i, tf.transpose(unit_to_uint8(mask), [1, 0, 2, 3]))
    return i + 1, out, masks

  _, out, masks = tf.while_loop(lambda i, *_: i < n, body, (0, out, masks),
                                parallel_iterations=1)
  harmonised = tf.transpose(out.concat(), [1, 0, 2, 3])  # (B, H, W, 3)
  harmonised.set_shape(image.shape)  # lost in the loop; the signatures declare it
  if not mask_out:
    return harmonised
  mask = tf.transpose(masks.concat(), [1, 0, 2, 3])  # (B, H, W, 1)
  mask.set_shape(image.shape[:-1].concatenate([1]))
  return harmonised, mask


def any_size_uint8(at_s, image: tf.Tensor, mask: tf.Tensor | None, size: int,
                   correction: str = correction_lib.DEFAULT_CORRECTION,
                   band_pixels: int = BAND_PIXELS, mask_out: bool = True
                   ) -> tuple[dict[str, tf.Tensor], dict]:
  """`any_size` for a uint8 (B, H, W, 3) image, in bands: equal to
  unit_to_uint8(any_size(at_s, image / 255, sanitise(mask), ...)) (tested), holding only uint8
  images at full size. Returns ({"harmonised": uint8 (B, H, W, 3)[, "mask": the gating mask
  as uint8 (B, H, W, 1) with mask_out]}, at_s's dict at S). A given float mask is sanitised
  here."""
  h, w = tf.shape(image)[1], tf.shape(image)[2]
  image_s = shrink_in_bands(image, size, uint8_to_unit, band_pixels)  # (B, S, S, 3)
  mask_s = (None if mask is None else
            shrink_in_bands(mask, size, correction_lib.sanitise_mask, band_pixels))
  at = at_s(image_s, mask_s)
  parameters = correction_lib.correction_parameters(
      correction, image_s, correction_lib.sanitise_mask(at["mask"]), at["harmonised"])
  if mask is None:  # as any_size's upsampled mask
    gating = lambda y0, y1: correction_lib.sanitise_mask(tf.clip_by_value(
        resize_rows(at["mask"], h, w, y0, y1), 0.0, 1.0))
  else:
    gating = lambda y0, y1: correction_lib.sanitise_mask(mask[:, y0:y1])
  if not mask_out:
    return {"harmonised": correct_in_bands(correction, image, gating, parameters,
                                           band_pixels)}, at
  harmonised, used = correct_in_bands(correction, image, gating, parameters, band_pixels,
                                      mask_out=True)
  return {"harmonised": harmonised, "mask": used}, at


def harmonise_uint8(model: keras.Model, image: tf.Tensor, mask: tf.Tensor,
                    correction: str = correction_lib.DEFAULT_CORRECTION,
                    band_pixels: int = BAND_PIXELS) -> tf.Tensor:
  """`unit_to_uint8(harmonise_any_size(model, image / 255, mask))` for a uint8 (B, H, W, 3)
  image and a float (B, H, W, 1) mask, in bands (a harmoniser alone)."""
  correction_lib.check_correction(correction)
  at_s = lambda image_s, mask_s: {"harmonised": harmoniser_lib.harmonise(model, image_s, mask_s),
                                  "mask": mask_s}
  return any_size_uint8(at_s, image, mask, _input_size(model), correction, band_pixels,
                        mask_out=False)[0]["harmonised"]
