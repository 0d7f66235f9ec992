"""Means over a split of per-example metrics that do not apply to every example.

A metric with no value for an example (fMSE of an empty mask, IoU of an image without a
suprathreshold object, silence of one with such an object) is NaN there (`nan_where`), and
the split's mean leaves those entries out (`nanmean`, and `mean_se` with its standard error);
the mean of no value at all is NaN. The evaluation's tables, its quick scores and the training
loop's validation all average through here, so one split's mean is one number everywhere.
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


def mean_se(values: np.ndarray) -> dict:
  """{"mean", "se", "n"} of the non-NaN entries: the standard error (sample std / sqrt(n)) says
  whether two checkpoints' means differ by more than chance; NaN where n is too small."""
  values = np.asarray(values)
  kept = values[~np.isnan(values)]
  n = len(kept)
  return {"mean": nanmean([kept]),
          "se": float(np.std(kept, ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "n": n}
