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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's files (checkpoints, summaries, exports, flags.txt):
  TF_CONFIG's chief, or worker 0 of a cluster without one; a single process always."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (resolver.task_type == "worker" and
                                            resolver.task_id == 0 and
                                            "chief" not in resolver.cluster_spec().as_dict())


def train(opts: TrainOptions, task: Task, dataset_fn: data_lib.DatasetFn | None = None,
          stream: data_lib.StreamFn | None = None,
          strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
  """Trains `task` until opts.steps, resuming from opts.workdir; returns final logs.

  dataset_fn: the built splits (default tfharm.data.pipeline.make_dataset). stream: train on
  it instead of the built train split (exactly when opts.train_source == "generator").
  strategy: default make_strategy(opts.strategy); a program that runs TF ops before training
  must make it first (MultiWorkerMirroredStrategy refuses to start after any TF op).
  Raises DataError for missing data, DivergedError for a non-finite loss."""
  if (stream is None) != (opts.train_source == "tfds"):
    raise ValueError(f"train_source={opts.train_source!r} needs a stream exactly when it is "
                     "'generator'")
  if opts.checkpoint_data_iterator and opts.strategy == "multi_worker":
    raise ValueError("--checkpoint_data_iterator does not work with --strategy=multi_worker: "
                     "every worker restores from the chief's checkpoint, which holds only the "
                     "chief's iterator. Leave it off: the online stream resumes at "
                     "data_position, the built split reshuffles with seed + step.")
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(opts.precision)
  try:
    return _train(opts, task, dataset_fn or data_lib.default_dataset_fn(), stream,
                  strategy or make_strategy(opts.strategy))
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
    # Workers split the examples, not the files: a validation split is often one file, and
    # tf.distribute refuses to shard fewer files than workers.
    by_example = tf.data.Options()
    by_example.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    ds = strategy.experimental_distribute_dataset(ds.map(task.transform).with_options(by_example))
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


def moving_statistics(model: keras.Model) -> list[keras.Variable]:
  """The moving means and variances of the model's trained BatchNormalization layers.

  Keras updates them per replica (aggregation "none"), each from its own examples, so the
  workers' copies drift apart and the chief would checkpoint and export statistics of its
  share of the data alone (seen: 64 of 64 values differed after one step on two workers). The
  loop averages them over the replicas after every step; the moving average being linear, that
  is the moving average of the replicas' mean batch statistics."""
  return [v for layer in model._flatten_layers()  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
          for v in (layer.moving_mean, layer.moving_variance)]


def distribute_training_data(strategy: tf.distribute.Strategy, opts: TrainOptions, task: Task,
                             dataset_fn: data_lib.DatasetFn, data_seed: int,
                             stream: data_lib.StreamFn | None, position: int):
  """The training batches, spread over the strategy's replicas. tf.distribute shards the built
  split between workers by file (it needs at least as many files as workers); the stream is
  sharded explicitly, so that each worker makes only its own examples (data_lib.training_data)."""
  if stream is None:
    return strategy.experimental_distribute_dataset(
        data_lib.training_data(opts, task, dataset_fn, data_seed, None, position))

  def worker_data(context: tf.distribute.InputContext) -> tf.data.Dataset:
    if context.num_input_pipelines > 1:
      k, n = context.input_pipeline_id, context.num_input_pipelines
      logging.info("Online stream, worker %d of %d: examples %d, %d, ... (its share from "
                   "data_position %d).", k, n, position + k, position + k + n, position)
    return data_lib.training_data(opts, task, dataset_fn, data_seed, stream, position, context)
  return strategy.distribute_datasets_from_function(worker_data)


def _train(opts: TrainOptions, task: Task, dataset_fn: data_lib.DatasetFn,
           stream: data_lib.StreamFn | None, strategy: tf.distribute.Strategy) -> dict[str, Any]:
  keras.utils.set_random_seed(opts.seed)
  chief = is_chief(strategy)
  ckpt_dir = os.path.join(opts.workdir, "checkpoints")
  # MultiWorkerMirrored: every worker saves (TF's rule for multi-worker checkpoints), only the
  # chief's copy is kept; every worker restores the chief's, so a restarted cluster resumes at
  # one step (a worker's own copy may be older, or gone after a finished run).
  write_dir = ckpt_dir if chief else os.path.join(
      opts.workdir, f"tmp_worker_{strategy.cluster_resolver.task_id}")
  tf.io.gfile.makedirs(write_dir)

  state = checkpointing.create_state(opts, task, strategy, write_dir, restore_dir=ckpt_dir)
  model, optimizer, step, average = state.model, state.optimizer, state.step, state.average
  start = int(step.numpy())
  if start >= opts.steps:
    logging.info("Already at step %d >= --steps=%d; nothing to train.", start, opts.steps)
  # Without a checkpointed iterator, a resumed run reseeds the data order with seed + step.
  data_seed = opts.seed if opts.checkpoint_data_iterator else opts.seed + start
  iterator = iter(distribute_training_data(strategy, opts, task, dataset_fn, data_seed, stream,
                                           int(state.position.numpy())))
  if opts.checkpoint_data_iterator:
    checkpointing.checkpoint_iterator(state, opts, iterator, write_dir)
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
  statistics = moving_statistics(model) if strategy.num_replicas_in_sync > 1 else []

  def average_statistics():
    means = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in statistics])
    for var, mean in zip(statistics, means):
      var.assign(mean)

  @tf.function
  def train_step(it):
    logs = strategy.run(inner, args=(next(it),))
    if statistics:
      strategy.run(average_statistics)
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
    tf.io.gfile.rmtree(write_dir)
  logs["step"] = int(step.numpy())
  logs["optimizer_iterations"] = int(optimizer.iterations.numpy())
  return logs
