"""tf.data loading: float ranges, shapes, aligned augmentation, clear errors."""

import numpy as np
import pytest
import tensorflow as tf

from tfharm.data import pipeline


def _data_dir(builder):
  return builder.data_dir.split("/luminance_composites/")[0]


def test_batches_are_float_in_range_and_match_the_records(demo_build):
  ds = pipeline.make_dataset(_data_dir(demo_build), "test", batch_size=5)
  batch = next(iter(ds))
  assert batch["composite"].shape == (5, 256, 256, 3) and batch["mask"].shape == (5, 256, 256, 1)
  for key in ("composite", "real", "mask"):
    assert batch[key].dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(batch[key])) and float(tf.reduce_max(batch[key])) <= 1.0
  raw = next(iter(demo_build.as_dataset(split="test").batch(5)))
  np.testing.assert_array_equal(np.rint(batch["real"].numpy() * 255), raw["real"].numpy())
  total = sum(int(b["mask"].shape[0]) for b in ds)
  assert total == demo_build.info.splits["test"].num_examples


def test_augmentation_keeps_composite_real_and_mask_aligned(demo_build):
  ds = pipeline.make_dataset(_data_dir(demo_build), "train", batch_size=8, shuffle=True,
                             augment=True, seed=3)
  batch = next(iter(ds))
  assert set(np.unique(batch["mask"].numpy())) <= {0.0, 1.0}
  # Outside a dilated mask, composite and real went through the same warp, so they are equal.
  near = tf.nn.max_pool2d(batch["mask"], ksize=7, strides=1, padding="SAME")
  diff = tf.abs(batch["composite"] - batch["real"]) * (1.0 - near)
  assert float(tf.reduce_max(diff)) < 1e-6
  # ...and inside it they differ: the shift survived augmentation.
  assert float(tf.reduce_max(tf.abs(batch["composite"] - batch["real"]) * batch["mask"])) > 0.02


def test_augmentation_is_deterministic_for_a_seed(demo_build):
  make = lambda: next(iter(pipeline.make_dataset(_data_dir(demo_build), "train", batch_size=4,
                                                 augment=True, seed=7)))["composite"].numpy()
  np.testing.assert_array_equal(make(), make())


def test_missing_build_and_split_are_clear_errors(demo_build, tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m tfharm.data.build"):
    pipeline.make_dataset(str(tmp_path), "train")
  with pytest.raises(ValueError, match="split 'holdout'"):
    pipeline.make_dataset(_data_dir(demo_build), "holdout")
