"""Training-free harmonisers: what a network must beat to be worth its cost.

`ring_l_mean`: with the object's mask, move the object's L* mean onto that of a ring of
background around it and keep its L* spread (Reinhard on L* with target (mu_ring, sigma_object)).
It needs no training and no data, and it is what the surroundings give for free: a harmoniser
that does not beat it has learnt nothing beyond "objects look like their neighbourhood".
Pure TF ops, usable under tf.function(jit_compile=True).
"""
from __future__ import annotations

import tensorflow as tf

from tfharm.models import correction

RING_WIDTH = 15  # pixels at the 256x256 evaluation size


def ring(mask: tf.Tensor, width: int = RING_WIDTH) -> tf.Tensor:
  """The background pixels within `width` pixels (Chebyshev distance) of the object."""
  inside = tf.cast(mask >= 0.5, tf.float32)
  grown = tf.nn.max_pool2d(inside, ksize=2 * width + 1, strides=1, padding="SAME")
  return grown * (1.0 - inside)


def ring_l_mean(image: tf.Tensor, mask: tf.Tensor, width: int = RING_WIDTH) -> tf.Tensor:
  """(B, H, W, 3) in [0, 1] and a (B, H, W, 1) mask -> the object's L* mean moved onto its
  ring's, std kept; pixels outside the mask are returned unchanged. An object with no ring (it
  fills the image) is left as it is."""
  inside = tf.cast(mask >= 0.5, tf.float32)
  around = ring(mask, width)
  source = correction.weighted_l_moments(image, inside)
  ring_mean, _ = correction.weighted_l_moments(image, around)
  has_ring = tf.reduce_sum(around, axis=[1, 2, 3], keepdims=True) > 0
  target = (tf.where(has_ring, ring_mean, source[0]), source[1])
  return tf.clip_by_value(correction.reinhard_l_transfer_tf(image, inside, source, target),
                          0.0, 1.0)
