"""What a run trains and checkpoints, and how it resumes.

The checkpoint's objects are the on-disk format (runs resume from checkpoints written by
earlier versions, and tfharm.models.checkpoints reads them): `model`, `optimizer`, `step`,
`data_position` (training examples consumed: where an online stream restarts), `ema` (with
--ema_decay) and `data` (the tf.data iterator, with --checkpoint_data_iterator).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from absl import logging
import keras
import tensorflow as tf

from tfharm.training.options import TrainOptions
from tfharm.training.task import Task
from tfharm.weight_average import WeightAverage


@dataclasses.dataclass
class RunState:
  """What a run trains and checkpoints; `restored` is the checkpoint it resumed from."""

  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  position: tf.Variable  # training examples consumed: where a stream resumes
  average: WeightAverage | None
  ckpt: tf.train.Checkpoint
  manager: tf.train.CheckpointManager
  restored: str | None

  @property
  def objects(self) -> dict[str, Any]:
    core = dict(model=self.model, optimizer=self.optimizer, step=self.step,
                data_position=self.position)
    return core if self.average is None else dict(core, ema=self.average)


def restore_latest(manager: tf.train.CheckpointManager, ckpt: tf.train.Checkpoint) -> str | None:
  """Restores the newest checkpoint that reads back completely; skips damaged ones.

  TF writes checkpoint data to a temporary prefix and updates the `checkpoint` index
  atomically, so a kill cannot make a partial save 'latest'; this also survives a
  later corruption (truncated disk copy, deleted shard) by falling back to an older one.
  """
  for path in reversed(manager.checkpoints):
    try:
      # The caller restores the rest (position, average) from the same path in parts.
      ckpt.restore(path).assert_existing_objects_matched().expect_partial()
      return path
    except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as e:
      logging.warning("Checkpoint %s is unreadable (%s); trying an older one.", path, e)
  if manager.checkpoints:
    raise RuntimeError(f"none of the checkpoints in {manager.directory} could be restored")
  return None


def create_state(opts: TrainOptions, task: Task, strategy: tf.distribute.Strategy,
                 ckpt_dir: str, restore_dir: str | None = None) -> RunState:
  """Builds model, optimizer and weight average, and restores the newest good checkpoint of
  `restore_dir` (default `ckpt_dir`, where this process saves; a non-chief worker saves
  elsewhere but restores the chief's)."""
  with strategy.scope():
    model = task.build_model()
    optimizer = keras.optimizers.Adam(opts.learning_rate)
    if opts.precision == "mixed_float16":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    position = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_position")
    average = (WeightAverage(model.trainable_variables, opts.ema_decay)
               if opts.ema_decay else None)
  core = dict(model=model, optimizer=optimizer, step=step)
  ckpt = tf.train.Checkpoint(**core, data_position=position,
                             **({"ema": average} if average is not None else {}))
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=opts.keep_checkpoints)
  # The core state must match exactly; the weight average may be missing (a run that turned
  # it on later). The iterator, if checkpointed, is restored later (its dataset is seeded by
  # the step restored here).
  source = manager if restore_dir in (None, ckpt_dir) else tf.train.CheckpointManager(
      ckpt, restore_dir, max_to_keep=None)  # only read
  restored = restore_latest(source, tf.train.Checkpoint(**core))
  if restored:
    tf.train.Checkpoint(data_position=position).restore(restored).expect_partial()
    if int(position.numpy()) == 0:  # a checkpoint from before the position was kept
      position.assign(step * opts.batch_size)
    logging.info("Resumed from %s at step %d (%d training examples seen).", restored,
                 int(step.numpy()), int(position.numpy()))
  else:
    logging.info("No checkpoint in %s: starting from scratch.", source.directory)
  if average is not None:
    if restored:
      tf.train.Checkpoint(ema=average).restore(restored).expect_partial()
    if not bool(average.initialised.numpy()):
      average.reset()
      logging.info("Weight average (decay %g) seeded from the %s weights.", opts.ema_decay,
                   "restored" if restored else "initial")
  return RunState(model, optimizer, step, position, average, ckpt, manager, restored)


def checkpoint_iterator(state: RunState, opts: TrainOptions, iterator, ckpt_dir: str) -> None:
  """--checkpoint_data_iterator: the iterator joins the checkpoint (restored if saved)."""
  state.ckpt = tf.train.Checkpoint(**state.objects, data=iterator)
  state.manager = tf.train.CheckpointManager(state.ckpt, ckpt_dir,
                                             max_to_keep=opts.keep_checkpoints)
  if state.restored:
    tf.train.Checkpoint(data=iterator).restore(state.restored).expect_partial()  # may lack it


def set_learning_rate(optimizer: keras.optimizers.Optimizer, rate: float) -> None:
  """The rate is checkpointed optimizer state: without this, a resumed run would silently keep
  the old rate whatever --learning_rate says."""
  old = float(optimizer.learning_rate.numpy())
  if not math.isclose(old, rate, rel_tol=1e-6):
    logging.info("Learning rate %g (checkpoint had %g).", rate, old)
    optimizer.learning_rate.assign(rate)
