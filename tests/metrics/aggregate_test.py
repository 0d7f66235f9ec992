"""The NaN-aware means of per-example metrics (tfharm/metrics/aggregate.py)."""
import math

import numpy as np
import tensorflow as tf

from tfharm.metrics import aggregate


def test_nan_entries_are_left_out_and_no_value_gives_nan():
  assert aggregate.nanmean([np.array([1.0, np.nan]), np.array([3.0])]) == 2.0
  assert math.isnan(aggregate.nanmean([np.array([np.nan, np.nan])]))
  assert aggregate.nanmeans({"fmse": [np.array([1.0, np.nan, 3.0])], "mse": [np.ones(2)]}) == {
      "fmse": 2.0, "mse": 1.0}


def test_nan_where_marks_what_does_not_apply():
  out = aggregate.nan_where(tf.constant([True, False]), tf.constant([5, 7])).numpy()
  assert out.dtype == np.float32 and math.isnan(out[0]) and out[1] == 7.0


def test_mean_with_standard_error_leaves_nan_out():
  out = aggregate.mean_se(np.array([1.0, np.nan, 2.0, 6.0]))
  assert out["n"] == 3 and out["mean"] == 3.0
  assert out["se"] == np.std([1.0, 2.0, 6.0], ddof=1) / np.sqrt(3)
  one = aggregate.mean_se(np.array([np.nan, 4.0]))
  assert one["mean"] == 4.0 and one["n"] == 1 and math.isnan(one["se"])
  assert aggregate.mean_se(np.array([]))["n"] == 0
