"""Where a run's batches come from: the built splits, or the online composite stream.

The built splits are read through a `DatasetFn` with the signature of
tfharm.data.pipeline.make_dataset (tests pass synthetic ones); the stream is a `StreamFn`,
(start example, batch_size=, augment=, seed=, shard=(k, n)) -> endless batches of worker k's
share (examples start+k, start+k+n, ...), e.g. tfharm.data.generator.CompositeSource.dataset,
restarted at the checkpointed position.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from tfharm.training.options import TrainOptions
from tfharm.training.task import Task

DatasetFn = Callable[..., tf.data.Dataset]
StreamFn = Callable[..., tf.data.Dataset]


class DataError(ValueError):
  """The data the options name is not there, or cannot be used; says how to fix it."""


def default_dataset_fn() -> DatasetFn:
  try:
    from tfharm.data import pipeline  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f"tfharm.data.pipeline.make_dataset is not importable: {e}") from e
  return pipeline.make_dataset


def _build_command(opts: TrainOptions) -> str:
  return (f"python -m tfharm.data.build --manual_dir=COCO_ROOT --data_dir={opts.data_dir} "
          f"--dataset_config={opts.dataset_config}")


def no_data_dir(opts: TrainOptions) -> str:
  return f"--data_dir={opts.data_dir!r} does not exist. Build the data first: {_build_command(opts)}"


def open_dataset(dataset_fn: DatasetFn, opts: TrainOptions, split: str, **kwargs):
  """Calls the data contract and turns 'no dataset there' into one clear message."""
  if not opts.data_dir or not tf.io.gfile.exists(opts.data_dir):
    raise DataError(no_data_dir(opts))
  try:
    return dataset_fn(opts.data_dir, split, config=opts.dataset_config, **kwargs)
  except (FileNotFoundError, tf.errors.NotFoundError, AssertionError, ValueError) as e:
    raise DataError(
        f"No luminance_composites/{opts.dataset_config} split {split!r} under "
        f"--data_dir={opts.data_dir}: {type(e).__name__}: {e}. Build it with "
        f"`{_build_command(opts)}`.") from e


def training_data(opts: TrainOptions, task: Task, dataset_fn: DatasetFn, data_seed: int,
                  stream: StreamFn | None = None, position: int = 0,
                  context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
  """The built split (reshuffled by data_seed), or the stream from `position` on, through
  `task.train_transform` with a per-batch seed that a resumed stream continues (or through
  `task.transform`, for a task that keeps the default training view).

  context: this worker's place in a tf.distribute cluster (stream only). The worker then draws
  only its shard of the stream, in per-replica batches: every step takes examples
  position .. position + batch_size - 1 across the cluster, as one process would."""
  first_batch = 0
  context = context or tf.distribute.InputContext()
  if stream is not None:
    ds = stream(position, batch_size=context.get_per_replica_batch_size(opts.batch_size),
                augment=opts.augment, seed=opts.seed,
                shard=(context.input_pipeline_id, context.num_input_pipelines))
    first_batch = position // opts.batch_size  # crops etc. continue their seeds too
  else:
    ds = open_dataset(dataset_fn, opts, opts.train_split, batch_size=opts.batch_size,
                      shuffle=True, augment=opts.augment, repeat=True, seed=data_seed,
                      max_examples=opts.max_train_examples or None)
  if type(task).train_transform is Task.train_transform:
    # No seed needed, and the tf.data graph stays the one of earlier versions: a checkpointed
    # iterator (--checkpoint_data_iterator) only restores into the same graph.
    ds = ds.map(task.transform, num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = ds.enumerate(start=first_batch).map(
        lambda i, b: task.train_transform(
            b, tf.stack([tf.cast(data_seed, tf.int64), _batch_index(i, first_batch, context)])),
        num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def _batch_index(i: tf.Tensor, first_batch: int, context: tf.distribute.InputContext):
  """A seed index distinct for every per-replica batch of the cluster: step s's R batches
  (R replicas) are s*R .. s*R + R-1, this worker's the ones of its replicas. One replica: the
  step itself, as before there were clusters."""
  replicas = context.num_replicas_in_sync
  if replicas == 1:
    return i
  local = replicas // context.num_input_pipelines  # replicas this worker feeds
  step, replica = (i - first_batch) // local + first_batch, (i - first_batch) % local
  return step * replicas + context.input_pipeline_id * local + replica


def composite_stream(opts: TrainOptions, dataset_fn: DatasetFn, roots: Sequence[str],
                     weights: str, image_size: int, max_photos: int | None = None,
                     balance_roots: bool = False) -> StreamFn:
  """The online generator over `roots` (tfharm.data.generator; `weights` as
  'reinhard=0.5,...'), holding out the built dataset's validation photos (same fraction),
  checked against the validation split's own image ids."""
  from tfharm.data import generator, pipeline  # pylint: disable=g-import-not-at-top
  if not roots:
    raise DataError("--train_source=generator needs --generator_roots=COCO_ROOT[,...]")
  try:
    fraction = pipeline.load_builder(opts.data_dir, opts.dataset_config
                                     ).builder_config.validation_fraction
    options = generator.GeneratorOptions(
        image_size=image_size, seed=opts.seed, validation_fraction=fraction,
        weights=generator.parse_weights(weights), max_photos=max_photos,
        balance_roots=balance_roots)
    source = generator.CompositeSource(list(roots), options)
  except (ValueError, FileNotFoundError) as e:  # AnnotationError is a ValueError
    raise DataError(f"--train_source=generator: {e}") from e
  held_out = set()
  for batch in open_dataset(dataset_fn, opts, opts.eval_split, batch_size=64, shuffle=False,
                            augment=False, repeat=False, seed=0):
    held_out.update(int(i) for i in batch["image_id"].numpy())
  shared = sorted(source.image_ids & held_out)
  if shared:
    raise DataError(f"the generator's training photos include {len(shared)} photos of the "
                    f"{opts.eval_split!r} split (e.g. {shared[:3]}): train and validate on "
                    "disjoint photos (same --generator_roots as the build?)")
  return source.dataset
