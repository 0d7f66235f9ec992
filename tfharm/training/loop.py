"""The training loop every tfharm model shares.

`train(opts, task)` trains until `opts.steps` and returns the final logs. Shared by every
task: tf.distribute strategy, dtype policy, checkpoints with resume (tfharm.training.
checkpointing; re-running after a crash or a SIGKILL continues from the last complete one),
SIGTERM/SIGINT (save, then stop), a NaN guard (stop before a non-finite step is saved),
TensorBoard, periodic validation, and the export of <name>.weights.h5 / <name>.keras.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import signal
import sys
import threading
import time
from typing import Any

from absl import logging
import keras
import tensorflow as tf

from tfharm.metrics import aggregate
from tfharm.models import layer_files
from tfharm.training import checkpointing
from tfharm.training import data as data_lib
from tfharm.training.options import TrainOptions
from tfharm.training.task import Task


class DivergedError(RuntimeError):
  """Raised when the loss is not finite; the last good checkpoint is left in place."""


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"unknown strategy {name!r}")


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (resolver.task_type == "worker" and
                                            resolver.task_id == 0 and
                                            "chief" not in resolver.cluster_spec().as_dict())


def train(opts: TrainOptions, task: Task, dataset_fn: data_lib.DatasetFn | None = None,
          stream: data_lib.StreamFn | None = None) -> dict[str, Any]:
  """Trains `task` until opts.steps, resuming from opts.workdir; returns final logs.

  dataset_fn: the built splits (default tfharm.data.pipeline.make_dataset). stream: train on
  it instead of the built train split (exactly when opts.train_source == "generator").
  Raises DataError for missing data, DivergedError for a non-finite loss."""
  if (stream is None) != (opts.train_source == "tfds"):
    raise ValueError(f"train_source={opts.train_source!r} needs a stream exactly when it is "
                     "'generator'")
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(opts.precision)
  try:
    return _train(opts, task, dataset_fn or data_lib.default_dataset_fn(), stream)
  finally:  # the policy is process-global: do not leak it to the caller
    keras.mixed_precision.set_global_policy(previous)


def _summary_writers(workdir: str, chief: bool):
  if chief and importlib.util.find_spec("tensorboard") is not None:
    return (tf.summary.create_file_writer(os.path.join(workdir, "logs", "train")),
            tf.summary.create_file_writer(os.path.join(workdir, "logs", "eval")))
  if chief:  # tf.summary needs the tensorboard package; train on without summaries
    logging.warning("tensorboard is not installed: no TensorBoard summaries.")
  noop = tf.summary.create_noop_writer()
  return noop, noop


def _validate(opts: TrainOptions, task: Task, dataset_fn: data_lib.DatasetFn,
              strategy: tf.distribute.Strategy, state: checkpointing.RunState, eval_step,
              writer, at_step: int, log_baseline: bool) -> dict[str, float]:
  """Means of task.metrics over the eval split (with the weight average, if kept), written to
  TensorBoard with sample images and weight histograms."""
  with state.average.swapped_in() if state.average is not None else contextlib.nullcontext():
    ds = data_lib.open_dataset(dataset_fn, opts, opts.eval_split, batch_size=opts.eval_batch_size,
                               shuffle=False, augment=False, repeat=False, seed=opts.seed,
                               max_examples=opts.max_eval_examples or None)
    ds = strategy.experimental_distribute_dataset(ds.map(task.transform))
    acc, base_acc, first_images = {}, {}, None
    for batch in ds:
      metrics, base, images = eval_step(batch)
      for k, v in metrics.items():
        acc.setdefault(k, []).append(v.numpy())
      for k, v in base.items():
        base_acc.setdefault(k, []).append(v.numpy())
      first_images = first_images or images
    means = aggregate.nanmeans(acc)
    with writer.as_default(step=at_step):
      for k, v in means.items():
        tf.summary.scalar(f"eval/{k}", v)
      if log_baseline:
        base_means = aggregate.nanmeans(base_acc)
        for k, v in base_means.items():
          tf.summary.scalar(f"eval/unchanged_{k}", v)
        logging.info("unchanged composites: %s",
                     ", ".join(f"{k}={v:.4g}" for k, v in base_means.items()))
      for k, v in (first_images or {}).items():
        tf.summary.image(f"eval/{k}", tf.cast(v, tf.float32), max_outputs=4)
      for var in state.model.weights:
        tf.summary.histogram(f"weights/{var.path}", var)
  writer.flush()
  logging.info("step %d validation: %s", at_step,
               ", ".join(f"{k}={v:.4g}" for k, v in means.items()))
  return means


def _export(opts: TrainOptions, task: Task, state: checkpointing.RunState) -> None:
  """<name>.weights.h5 and .keras (the weight average, if kept), plus the task's own files."""
  if state.average is not None:
    state.average.copy_to_variables()
    logging.info("Exporting the weight average (decay %g).", opts.ema_decay)
  stem = os.path.join(opts.workdir, task.name)
  with layer_files.atomic_path(f"{stem}.weights.h5", ".weights.h5") as tmp:
    state.model.save_weights(tmp)
  with layer_files.atomic_path(f"{stem}.keras", ".keras") as tmp:
    state.model.save(tmp)
  task.export(state.model, opts.workdir)


def _train(opts: TrainOptions, task: Task, dataset_fn: data_lib.DatasetFn,
           stream: data_lib.StreamFn | None) -> dict[str, Any]:
  keras.utils.set_random_seed(opts.seed)
  strategy = make_strategy(opts.strategy)
  chief = _is_chief(strategy)
  ckpt_dir = os.path.join(opts.workdir, "checkpoints")
  if not chief:  # MultiWorkerMirrored: every worker saves, only the chief's copy is kept
    ckpt_dir = os.path.join(opts.workdir, f"tmp_worker_{strategy.cluster_resolver.task_id}")
  tf.io.gfile.makedirs(ckpt_dir)

  state = checkpointing.create_state(opts, task, strategy, ckpt_dir)
  model, optimizer, step, average = state.model, state.optimizer, state.step, state.average
  start = int(step.numpy())
  if start >= opts.steps:
    logging.info("Already at step %d >= --steps=%d; nothing to train.", start, opts.steps)
  # Without a checkpointed iterator, a resumed run reseeds the data order with seed + step.
  data_seed = opts.seed if opts.checkpoint_data_iterator else opts.seed + start
  iterator = iter(strategy.experimental_distribute_dataset(data_lib.training_data(
      opts, task, dataset_fn, data_seed, stream, int(state.position.numpy()))))
  if opts.checkpoint_data_iterator:
    checkpointing.checkpoint_iterator(state, opts, iterator, ckpt_dir)
  checkpointing.set_learning_rate(optimizer, opts.learning_rate)

  def step_fn(batch):
    with tf.GradientTape() as tape:
      outputs = model(task.inputs(batch), training=True)
      per_example = task.loss(batch, outputs)
      loss = tf.nn.compute_average_loss(per_example["loss"])
      scaled = optimizer.scale_loss(loss) if opts.precision == "mixed_float16" else loss
    grads = tape.gradient(scaled, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return {k: tf.nn.compute_average_loss(v) for k, v in per_example.items()}

  inner = tf.function(step_fn, jit_compile=True) if opts.jit_compile else step_fn

  @tf.function
  def train_step(it):
    logs = strategy.run(inner, args=(next(it),))
    step.assign_add(1)
    state.position.assign_add(opts.batch_size)
    if average is not None:
      average.update()
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in logs.items()}

  @tf.function
  def eval_step(batch):
    def fn(b):
      outputs = model(task.inputs(b), training=False)
      return task.metrics(b, outputs), task.baseline(b), task.images(b, outputs)
    metrics, base, images = strategy.run(fn, args=(batch,))
    gather = lambda d: {k: strategy.gather(v, axis=0) for k, v in d.items()}
    return gather(metrics), gather(base), gather(images)

  train_writer, eval_writer = _summary_writers(opts.workdir, chief)
  evaluate = functools.partial(_validate, opts, task, dataset_fn, strategy, state, eval_step,
                               eval_writer)

  stop_signal = []
  def _request_stop(signum, _):
    stop_signal.append(signum)
  main_thread = threading.current_thread() is threading.main_thread()
  previous = {s: signal.signal(s, _request_stop) for s in (signal.SIGTERM, signal.SIGINT)
              } if chief and main_thread else {}

  bar = keras.utils.Progbar(opts.steps, verbose=1 if sys.stdout.isatty() else 2,
                            stateful_metrics=["loss", "img/s"])
  logs: dict[str, Any] = {"step": start}
  last_saved = int(state.restored.rsplit("-", 1)[-1]) if state.restored else None
  t0, seen = time.perf_counter(), 0
  try:
    while int(step.numpy()) < opts.steps:
      current = int(step.numpy())
      out = train_step(iterator)
      values = {k: float(v.numpy()) for k, v in out.items()}
      if not all(math.isfinite(v) for v in values.values()):
        raise DivergedError(
            f"non-finite loss {values} at step {current + 1}; stopping. The last good "
            f"checkpoint is {state.manager.latest_checkpoint or 'none (no checkpoint yet)'}.")
      current += 1
      seen += opts.batch_size
      rate = seen / (time.perf_counter() - t0)
      bar.update(current, values=[("loss", values["loss"]), ("img/s", rate)])
      if current % opts.log_every == 0 or current == opts.steps:
        with train_writer.as_default(step=current):
          for k, v in values.items():
            tf.summary.scalar(f"train/{k}", v)
          tf.summary.scalar("train/images_per_second", rate)
          tf.summary.scalar("train/learning_rate", float(optimizer.learning_rate.numpy()))
        if not sys.stdout.isatty():
          logging.info("step %d loss %.5f (%.1f img/s)", current, values["loss"], rate)
      if current % opts.checkpoint_every == 0 or current == opts.steps or stop_signal:
        state.manager.save(checkpoint_number=current)
        last_saved = current
      if opts.eval_every and current % opts.eval_every == 0 and current < opts.steps:
        logs.update(evaluate(current, log_baseline=current == opts.eval_every))
      logs.update(values, step=current)
      if stop_signal:
        logging.warning("Signal %d: saved step %d, exiting.", stop_signal[0], current)
        return logs
    logs.update(evaluate(int(step.numpy()), log_baseline=True))
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    train_writer.flush()
  if last_saved != int(step.numpy()):
    state.manager.save(checkpoint_number=int(step.numpy()))
  if opts.export and chief:
    _export(opts, task, state)
  if not chief:
    tf.io.gfile.rmtree(ckpt_dir)
  logs["step"] = int(step.numpy())
  logs["optimizer_iterations"] = int(optimizer.iterations.numpy())
  return logs
