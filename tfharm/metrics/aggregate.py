"""Means over a split of per-example metrics that do not apply to every example.

A metric with no value for an example (fMSE of an empty mask, IoU of an image without a
suprathreshold object, silence of one with such an object) is NaN there (`nan_where`), and
the split's mean leaves those entries out (`nanmean`); the mean of no value at all is NaN.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf


def nan_where(cond, value) -> tf.Tensor:
  """`value` as float32, NaN where `cond`."""
  return tf.where(cond, tf.fill(tf.shape(value), float("nan")), tf.cast(value, tf.float32))


def nanmean(chunks: Sequence[np.ndarray]) -> float:
  """Mean of the non-NaN entries of 1-D arrays (e.g. one per batch); NaN if there are none."""
  values = np.concatenate(chunks)
  values = values[~np.isnan(values)]
  return float(np.mean(values)) if values.size else float("nan")


def nanmeans(chunks: Mapping[str, Sequence[np.ndarray]]) -> dict[str, float]:
  """`nanmean` per metric name."""
  return {k: nanmean(v) for k, v in chunks.items()}
