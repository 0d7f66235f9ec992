"""Apply a fixed-size harmoniser to images of any size (architectures.md section 1.3).

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

from tfharm.models import correction as correction_lib


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


def resize_to(image: tf.Tensor, mask: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(B, H, W, 3) image and (B, H, W, 1) soft mask -> both at size x size.

  Both antialiased: the image so that downscaling does not alias, the mask so that a thin
  or small object keeps its area-weighted presence instead of being sampled away.
  """
  return (tf.clip_by_value(shrink(image, size), 0.0, 1.0),
          tf.clip_by_value(shrink(mask, size), 0.0, 1.0))


def harmonise_any_size(model: keras.Model, image: tf.Tensor, mask: tf.Tensor,
                       size: int | None = None,
                       correction: str = correction_lib.DEFAULT_CORRECTION) -> tf.Tensor:
  """Harmonise (B, H, W, 3) images in [0, 1] with soft (B, H, W, 1) masks, any H and W.

  `size` defaults to the model's input size; `correction` is one of correction.CORRECTIONS.
  The mask is clipped to [0, 1] (NaN -> 0) before it gates anything, so the output stays in
  [0, 1] and equals `image` wherever the mask is 0.
  """
  correction_lib.check_correction(correction)
  image = tf.convert_to_tensor(image, tf.float32)
  mask = tf.convert_to_tensor(mask, tf.float32)
  if image.shape.rank != 4 or mask.shape.rank != 4:
    raise ValueError(f"expected NHWC image and mask, got {image.shape} and {mask.shape}")
  mask = tf.clip_by_value(tf.where(tf.math.is_nan(mask), 0.0, mask), 0.0, 1.0)
  if size is None:
    size = int(model.input["image"].shape[1]) if isinstance(model.input, dict) else int(
        model.input[0].shape[1])
  image_s, mask_s = resize_to(image, mask, size)  # (B, S, S, 3), (B, S, S, 1)
  out_s = model({"image": image_s * 2.0 - 1.0, "mask": mask_s}, training=False)
  if isinstance(out_s, dict):
    out_s = out_s["image"]
  pred_s = tf.clip_by_value((tf.cast(out_s, tf.float32) + 1.0) / 2.0, 0.0, 1.0)
  return correction_lib.apply_correction(correction, image, mask, image_s, mask_s, pred_s)
