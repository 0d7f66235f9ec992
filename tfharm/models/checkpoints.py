"""Weight files from training runs: compact float16 storage and restoring a training checkpoint.

The shipped presets (tfharm.presets) are float16 `.weights.h5` files (half the size of float32;
a test checks that they reproduce the float32 validation numbers recorded beside them). Keras
casts each stored array to its variable's dtype on load, so the model runs in float32.
"""

from __future__ import annotations

import os

from absl import logging
import h5py
import keras
import numpy as np
import tensorflow as tf

from tfharm.models import layer_files
from tfharm.weight_average import WeightAverage


def save_float16_weights(model: keras.Model, path: str) -> None:
  """`model.save_weights` with every float32 array stored as float16; atomic
  (tfharm.models.layer_files.atomic_path)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with layer_files.atomic_path(path, ".h5") as out:
    scratch = out + ".weights.h5"  # Keras's own file, converted in place, then compacted to `out`
    try:
      model.save_weights(scratch)
      with h5py.File(scratch, "r+") as f:
        arrays = []
        f.visititems(lambda name, obj: arrays.append(name)
                     if isinstance(obj, h5py.Dataset) and obj.dtype == np.float32 else None)
        for name in arrays:
          value = f[name][()]
          if np.any(np.abs(value) > np.finfo(np.float16).max):
            raise ValueError(f"{name} does not fit in float16 (max |x| = {np.abs(value).max()})")
          del f[name]
          f.create_dataset(name, data=value.astype(np.float16))
      # h5py leaves the freed space inside the file; copying it out compacts it.
      with h5py.File(scratch, "r") as src, h5py.File(out, "w") as dst:
        for key in src:
          src.copy(src[key], dst, name=key)
        for key, value in src.attrs.items():
          dst.attrs[key] = value
    finally:
      if os.path.exists(scratch):
        os.remove(scratch)


def restore_training_checkpoint(model: keras.Model, checkpoint_dir: str,
                                name: str | None = None, use_average: bool = True) -> str:
  """Loads the model weights of a `tfharm.train` checkpoint (optimizer state ignored): the
  newest, or the one called `name` (e.g. "ckpt-3750"). If the run kept a weight average
  (--ema_decay) and `use_average`, the model gets the average: that is what the run
  validated and exported."""
  if name:
    latest = os.path.join(checkpoint_dir, name)
    if not tf.io.gfile.exists(latest + ".index"):
      raise FileNotFoundError(f"no checkpoint {name} in {checkpoint_dir}")
  else:
    latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest is None:
    raise FileNotFoundError(f"no training checkpoint in {checkpoint_dir}")
  tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
  if use_average and checkpoint_has_average(latest):
    average = WeightAverage(model.trainable_variables, decay=0.5)  # decay unused here
    tf.train.Checkpoint(ema=average).restore(latest).expect_partial(
        ).assert_existing_objects_matched()
    average.copy_to_variables()
    logging.info("Loaded the weight average of %s.", latest)
  return latest


def checkpoint_has_average(path: str) -> bool:
  """Whether a `tfharm.train` checkpoint holds an initialised weight average."""
  names = {n for n, _ in tf.train.list_variables(path)}
  key = "ema/initialised/.ATTRIBUTES/VARIABLE_VALUE"
  return key in names and bool(tf.train.load_variable(path, key))
