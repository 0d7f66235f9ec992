"""`TrainOptions`: what the loop reads, one field per flag of `python -m tfharm.train`."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """The run, independent of the model: data, schedule, checkpoints, distribution, precision.
  The command line fills it from its flags (same names, these defaults); tests build it."""

  workdir: str
  data_dir: str
  dataset_config: str = "256"
  train_split: str = "train"
  eval_split: str = "validation"
  train_source: str = "tfds"  # "tfds": the built train_split; "generator": an online stream
  max_train_examples: int = 0
  max_eval_examples: int = 0
  augment: bool = True
  batch_size: int = 8
  eval_batch_size: int = 8
  steps: int = 50_000
  learning_rate: float = 1e-4
  seed: int = 0
  ema_decay: float = 0.0
  log_every: int = 50
  eval_every: int = 2000
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  checkpoint_data_iterator: bool = False
  strategy: str = "default"
  precision: str = "float32"
  jit_compile: bool = False
  export: bool = True
