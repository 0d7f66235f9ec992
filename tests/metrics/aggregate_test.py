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
