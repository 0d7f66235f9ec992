"""The split an evaluation reads: checked before any work (a missing build, split or config
is an EvaluationError), read in a fixed order, and a damaged record named by its file."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import tensorflow as tf

from tfharm.data import pipeline as data_pipeline
from tfharm.evaluation.config import EvalConfig, EvaluationError


def open_dataset(cfg: EvalConfig) -> tuple[Any, int, int]:
  """(builder, image size S, number of examples to score); EvaluationError on bad data."""
  try:
    builder = data_pipeline.load_builder(cfg.data_dir, cfg.dataset_config)
  except FileNotFoundError as e:
    raise EvaluationError(str(e)) from e
  except (ValueError, KeyError) as e:  # an unknown config name
    raise EvaluationError(f"dataset config {cfg.dataset_config!r}: {e}") from e
  splits = builder.info.splits
  if cfg.split not in splits:
    raise EvaluationError(f"split {cfg.split!r} is not in {data_pipeline.DATASET}/"
                          f"{cfg.dataset_config} under {os.path.abspath(cfg.data_dir)}; "
                          f"available: {sorted(splits)}")
  size = int(builder.info.features["composite"].shape[0])
  n = int(splits[cfg.split].num_examples)
  if cfg.max_examples is not None:
    n = min(n, cfg.max_examples)
  if n <= 0:
    raise EvaluationError(f"nothing to evaluate: split {cfg.split!r} has "
                          f"{splits[cfg.split].num_examples} examples, max_examples="
                          f"{cfg.max_examples}")
  return builder, size, n


def damaged_file(builder, split: str) -> str | None:
  """The first TFRecord file of `split` whose records fail TensorFlow's checks (a checksum,
  a truncated record); None if every one reads."""
  for path in builder.info.splits[split].filepaths:
    try:
      for _ in tf.data.TFRecordDataset(os.fspath(path)).batch(256):
        pass
    except tf.errors.DataLossError:
      return os.fspath(path)
  return None


@contextlib.contextmanager
def reading(builder, split: str):
  """A DataLossError while the split is read becomes an EvaluationError naming the damaged
  file (TensorFlow's message names only the offset, "corrupted record at 12")."""
  try:
    yield
  except tf.errors.DataLossError as e:
    detail = re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:.*$", "", e.message, flags=re.DOTALL).strip()
    path = damaged_file(builder, split) or f"split {split!r} under {builder.data_dir}"
    raise EvaluationError(f"{path}: a damaged record ({detail}); rebuild the dataset "
                          "(python -m tfharm.data.build)") from e


def make_eval_dataset(cfg: EvalConfig) -> tf.data.Dataset:
  """Deterministic order (no shuffle), so a second pass meets the same examples."""
  return data_pipeline.make_dataset(cfg.data_dir, cfg.split, config=cfg.dataset_config,
                                    batch_size=cfg.batch_size, shuffle=False,
                                    max_examples=cfg.max_examples)
