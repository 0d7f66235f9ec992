"""tf.data input from a built `luminance_composites` dataset: float batches for training and eval.

Each element is a dict: "composite" and "real" float32 (B, S, S, 3) in [0, 1], "mask" float32
(B, S, S, 1) in {0, 1}, plus int64 "category", "image_id", "object_id" and the float32 Reinhard
statistics. Augmentation is geometric only and applied to composite, real and mask together, so
the three stay aligned and the composite's luminance shift is left as the builder made it.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

DATASET = "luminance_composites"
_IMAGE_KEYS = ("composite", "real", "mask")


def load_builder(data_dir: str, config: str = "256") -> tfds.core.DatasetBuilder:
  """The prepared builder; FileNotFoundError naming data_dir and the build command otherwise."""
  from tfharm.data import luminance_composites as lcb  # pylint: disable=g-import-not-at-top
  builder = lcb.LuminanceComposites(config=config, data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"no prepared {DATASET}/{config} under {os.path.abspath(data_dir)}; build it with "
        f"`python -m tfharm.data.build --manual_dir=COCO_ROOT --data_dir={data_dir} "
        f"--dataset_config={config}`")
  return builder


def to_float(example: dict) -> dict:
  """uint8 images -> float32 in [0, 1] (the mask's 0/255 -> {0, 1}); other features as they are."""
  out = {k: v for k, v in example.items() if k not in _IMAGE_KEYS}
  for key in _IMAGE_KEYS:
    out[key] = tf.image.convert_image_dtype(example[key], tf.float32)  # uint8 -> [0, 1]
  return out


def augment_aligned(example: dict, seed: tf.Tensor, min_crop: float = 0.6) -> dict:
  """Random horizontal flip and random square crop resized back to S, same for all three images."""
  size = tf.shape(example["real"])[0]
  stacked = tf.concat([example[k] for k in _IMAGE_KEYS], axis=-1)  # (S, S, 7)
  seeds = tf.random.split(seed, 2)
  stacked = tf.image.stateless_random_flip_left_right(stacked, seeds[0])
  fraction = tf.random.stateless_uniform([], seeds[1], min_crop, 1.0)
  crop = tf.cast(tf.round(fraction * tf.cast(size, tf.float32)), tf.int32)
  stacked = tf.image.stateless_random_crop(stacked, [crop, crop, 7], tf.random.split(seeds[1])[0])
  stacked = tf.image.resize(stacked, [size, size], method="bilinear")
  out = dict(example)
  out["composite"], out["real"] = stacked[..., 0:3], stacked[..., 3:6]
  # The mask stays binary: resize blurs its edge, so threshold it back.
  out["mask"] = tf.cast(stacked[..., 6:7] >= 0.5, tf.float32)
  return out


def make_dataset(data_dir: str, split: str, *, config: str = "256", batch_size: int = 8,
                 shuffle: bool = False, augment: bool = False, repeat: bool = False,
                 seed: int | None = 0, max_examples: int | None = None,
                 drop_remainder: bool = False) -> tf.data.Dataset:
  """Batches of float images from a prepared build (see module docstring for the element spec)."""
  builder = load_builder(data_dir, config)
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} not in {DATASET}/{config}: {sorted(builder.info.splits)}")
  read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=4)
  ds = builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
  if max_examples is not None:
    ds = ds.take(max_examples)
  if repeat:
    ds = ds.repeat()
  if shuffle:
    ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
  ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
  if augment:
    counter = tf.data.Dataset.counter()
    ds = tf.data.Dataset.zip((ds, counter)).map(
        lambda ex, i: augment_aligned(ex, tf.stack([tf.cast(seed or 0, tf.int64), i])),
        num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
