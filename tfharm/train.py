"""One training command for every tfharm model.

  python -m tfharm.train --flagfile=configs/train_harmoniser.flags \
      --data_dir=out/tfds --workdir=out/train/harmoniser256

`--model` picks a *task* (model builder, loss, validation metrics, per-batch input
transform) from `TASKS`; everything else (distribution, precision, checkpoints with
resume, TensorBoard, validation, NaN guard, export) is shared. Re-running the same
command after a crash or a SIGKILL continues from the last complete checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import math
import os
import signal
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Protocol

from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf

from tfharm.metrics import image as image_lib
from tfharm.models import correction
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig
from tfharm.weight_average import WeightAverage

Batch = Mapping[str, tf.Tensor]
DatasetFn = Callable[..., tf.data.Dataset]
# An endless training stream: (start example, batch_size=, augment=, seed=) -> batches, e.g.
# tfharm.data.generator.CompositeSource.dataset.
StreamFn = Callable[..., tf.data.Dataset]

# --- flags -------------------------------------------------------------------------
_MODEL = flags.DEFINE_enum("model", "harmoniser", ["harmoniser", "detector", "detector_aet"],
                           "Which network to train (a key of tfharm.train.TASKS).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs, exported weights.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites.")
_DATASET_CONFIG = flags.DEFINE_string("dataset_config", "256", "luminance_composites config.")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train", "Split to train on (--train_source=tfds).")
_EVAL_SPLIT = flags.DEFINE_string(
    "eval_split", "validation",
    "Split for periodic validation. Choices are made on `validation` (photos held out of "
    "train2017); `test` is for reporting only.")
_TRAIN_SOURCE = flags.DEFINE_enum(
    "train_source", "tfds", ["tfds", "generator"],
    "tfds: the built --train_split; generator: fresh composites drawn online from "
    "--generator_roots (tfharm.data.generator), resumed where the checkpoint stopped.")
_GENERATOR_ROOTS = flags.DEFINE_list(
    "generator_roots", [], "COCO roots for --train_source=generator (their train2017 photos "
    "minus the built dataset's validation hold-out), e.g. COCO_MINI,COCO128.")
_GENERATOR_WEIGHTS = flags.DEFINE_string(
    "generator_weights", "reinhard=0.5,offset=0.3,identity=0.2",
    "Corruption weights of the online generator (reinhard, offset, identity).")
_MAX_TRAIN = flags.DEFINE_integer("max_train_examples", 0, "Use at most this many (0: all).")
_MAX_EVAL = flags.DEFINE_integer("max_eval_examples", 0, "Validate on at most this many (0: all).")
_AUGMENT = flags.DEFINE_bool("augment", True, "Geometric augmentation (composite/real/mask aligned).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Global batch size (split across replicas).")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", 8, "Validation batch size.")
_STEPS = flags.DEFINE_integer("steps", 50_000, "Total optimiser steps (resume counts from the checkpoint).")
_LR = flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for initialisation and data order.")
_EMA = flags.DEFINE_float(
    "ema_decay", 0.0,
    "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0: off). "
    "Validation and the exported weights then use the average; it is checkpointed, and a "
    "run resumed from a checkpoint without one seeds it from the restored weights.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Write training scalars every N steps.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 2000, "Validate every N steps (0: only at the end).")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 500, "Checkpoint every N steps.")
_KEEP = flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep.")
_CKPT_DATA = flags.DEFINE_bool(
    "checkpoint_data_iterator", False,
    "Also checkpoint the tf.data iterator (exact data position on resume). Off by default: "
    "its state includes the shuffle buffer, which can be large; when off, a resumed run "
    "reseeds the data order with seed + step instead of replaying the first batches.")
_STRATEGY = flags.DEFINE_enum("strategy", "default",
                              ["default", "one_device", "mirrored", "multi_worker"],
                              "tf.distribute strategy (multi_worker reads TF_CONFIG).")
_PRECISION = flags.DEFINE_enum("precision", "float32",
                               ["float32", "mixed_bfloat16", "mixed_float16"],
                               "Keras dtype policy (mixed_float16 adds loss scaling).")
_JIT = flags.DEFINE_bool("jit_compile", False,
                         "XLA-compile the train step. Off by default: on this CPU TF's oneDNN "
                         "kernels beat XLA (bench/RESULTS.md); turn on for GPUs.")
_EXPORT = flags.DEFINE_bool("export", True, "Write <model>.weights.h5 and <model>.keras at the end.")
# harmoniser task
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256,
                                  "Input size S: harmoniser 4 * 2**n; detector a multiple of 8.")
_LOSS_REGION = flags.DEFINE_enum(
    "loss_region", "image", ["image", "mask", "image_and_mask"],
    "MSE over the whole image (as DIH), only inside the mask, or the sum of the two (the object's "
    "tone weighs more, the background is still reconstructed: what harmonise() returns).")
_SEMANTIC = flags.DEFINE_bool("semantic", False, "Add DIH's scene-parsing decoder branch.")
_SEMANTIC_WEIGHT = flags.DEFINE_float("semantic_weight", 1e-4, "Weight of the parsing CE loss.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 81, "Parsing classes (80 COCO + background).")
# detector task (read by tfharm.models.detector.make_task; --image_size is the static input size)
flags.DEFINE_bool("detector_freeze_encoder", True,
                  "Detector (and detector_aet): keep the VGG16 convs frozen.")
flags.DEFINE_bool("detector_freeze_multiscale", False,
                  "Detector: also freeze the side branches and block-5 head (with "
                  "--detector_freeze_encoder: the authors' 'entire encoder', for an AET init).")
flags.DEFINE_string("detector_init", "",
                    "Detector: start from this AET trunk file (<workdir>/detector_aet.trunk."
                    "weights.h5 of --model=detector_aet) or a detector head file (e.g. "
                    "checkpoints/detector_256.head.weights.h5, to fine-tune it); a resumed "
                    "checkpoint overrides it.")
_HARMONISER_INIT = flags.DEFINE_string(
    "harmoniser_init", "", "Harmoniser: start from these weights (e.g. checkpoints/"
    "harmoniser_256.weights.h5, to fine-tune it); a resumed checkpoint overrides them.")
flags.DEFINE_float("detector_tau_neg", 0.845, "Detector labels: mean-L* ratio below this is negative.")
flags.DEFINE_float("detector_tau_pos", 1.174, "Detector labels: mean-L* ratio above this is positive.")
flags.DEFINE_enum("detector_label_mode", "object", ["object", "pixel"],
                  "Detector labels: one ratio per object, or per pixel.")
flags.DEFINE_string("detector_class_weights", "auto",
                    "Detector CE class weights 'neg,pos,none', or 'auto' (per batch, "
                    "clip(sqrt(f_none / f_c), 1, max)).")
flags.DEFINE_float("detector_max_class_weight", 10.0, "Detector: cap of the 'auto' class weights.")
flags.DEFINE_integer("detector_train_crop", 0,
                     "Detector: train on seeded random crops of this size (multiple of 8; 0: "
                     "whole images). Labels come from the whole image; validation is uncropped.")
flags.DEFINE_float("detector_dice_weight", 0.0, "Detector: weight of a soft Dice loss on p_neg + p_pos.")
# detector AET pre-training (read by tfharm.models.detector_aet.make_task)
flags.DEFINE_float("detector_aet_min_factor", 0.1, "AET: smallest L* factor (log-uniform sampling).")
flags.DEFINE_float("detector_aet_max_factor", 10.0, "AET: largest L* factor (log-uniform sampling).")


# --- tasks -------------------------------------------------------------------------
class Task(Protocol):
  """What train() needs from a model family. All tensors are per-example, shape (B,).

  transform: runs in tf.data on a batch of the dataset contract (composite/real in
    [0, 1], mask in {0, 1}, int64 metadata) and returns what the other methods read.
  inputs: picks the model's inputs from a transformed batch.
  loss: {"loss": (B,), ...components} for the optimiser and TensorBoard.
  metrics: {name: (B,)} validation metrics, averaged over the split.
  baseline: {name: (B,)} metrics of doing nothing (logged once for comparison) or {}.
  images: {name: (B, H, W, C) in [0, 1]} for TensorBoard.
  """

  name: str

  def build_model(self) -> keras.Model: ...
  def transform(self, batch: Batch) -> Batch: ...
  def inputs(self, batch: Batch) -> Any: ...
  def loss(self, batch: Batch, outputs: Any) -> dict[str, tf.Tensor]: ...
  def metrics(self, batch: Batch, outputs: Any) -> dict[str, tf.Tensor]: ...
  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]: ...
  def images(self, batch: Batch, outputs: Any) -> dict[str, tf.Tensor]: ...


def image_metrics(pred: tf.Tensor, real: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
  """MSE, PSNR, fMSE and SSIM per image on the 0-255 scale (tfharm.metrics.image); inputs
  in [0, 1]. PSNR is capped at 100 dB only here, for logging: a composite identical to its
  real image (a zero luminance shift) would otherwise make the mean +inf. fMSE is NaN for an
  empty mask and such images are left out of its mean."""
  m = image_lib.mse(pred, real, value_range=(0.0, 1.0))
  return {"mse": m, "psnr": image_lib.psnr_from_mse(m, max_db=100.0),
          "fmse": image_lib.fmse(pred, real, mask, value_range=(0.0, 1.0)),
          "ssim": image_lib.ssim(pred, real, value_range=(0.0, 1.0))}


@dataclasses.dataclass(frozen=True)
class HarmoniserTask:
  """DIH: whole-image MSE in [-1, 1] (or mask-restricted), optional parsing branch."""

  cfg: HarmoniserConfig = HarmoniserConfig()
  loss_region: str = "image"
  semantic_weight: float = 1e-4
  name: str = "harmoniser"
  init: str | None = None  # weights to start from (a resumed checkpoint overrides them)

  def build_model(self) -> keras.Model:
    model = Harmoniser(self.cfg, name="harmoniser")
    if self.init:
      from tfharm.models.harmoniser import load_harmoniser  # pylint: disable=g-import-not-at-top
      model.set_weights(load_harmoniser(self.init, self.cfg).get_weights())
      logging.info("Harmoniser initialised from %s.", self.init)
    return model

  def transform(self, batch: Batch) -> Batch:
    s = self.cfg.image_size
    message = f"dataset images are not {s}x{s}: make --image_size match --dataset_config"
    static = batch["composite"].shape[1:3]
    if static.is_fully_defined() and tuple(static) != (s, s):
      raise ValueError(f"{message} (got {tuple(static)})")
    check = tf.debugging.assert_equal(tf.shape(batch["composite"])[1:3], [s, s], message=message)
    with tf.control_dependencies([check]):  # static shapes also let XLA compile once
      out = {k: tf.ensure_shape(tf.identity(batch[k]), (None, s, s, c))
             for k, c in (("composite", 3), ("real", 3), ("mask", 1))}
    if self.cfg.semantic:
      # Only the target object's class is known per composite: label it (category + 1,
      # 0 = background) inside the mask; ClassLabel indices are already contiguous 0..79.
      cat = tf.cast(tf.reshape(batch["category"], (-1, 1, 1)), tf.int32) + 1
      out["labels"] = tf.where(batch["mask"][..., 0] > 0.5, cat, 0)  # (B, S, S)
    return out

  def inputs(self, batch: Batch) -> dict[str, tf.Tensor]:
    return {"image": batch["composite"] * 2.0 - 1.0, "mask": batch["mask"]}

  def loss(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    pred = outputs["image"] if isinstance(outputs, dict) else outputs
    err = tf.square(tf.cast(pred, tf.float32) - (batch["real"] * 2.0 - 1.0))  # [-1, 1] space
    image_mse = tf.reduce_mean(err, axis=[1, 2, 3])
    m = batch["mask"]
    mask_mse = tf.math.divide_no_nan(tf.reduce_sum(err * m, axis=[1, 2, 3]),
                                     3.0 * tf.reduce_sum(m, axis=[1, 2, 3]))
    mse = {"image": image_mse, "mask": mask_mse,
           "image_and_mask": image_mse + mask_mse}[self.loss_region]
    losses = {"loss": mse, "mse": mse}
    if self.cfg.semantic:
      ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
          batch["labels"], tf.cast(outputs["semantic"], tf.float32))
      ce = tf.reduce_mean(ce, axis=[1, 2])
      losses.update(loss=mse + self.semantic_weight * ce, semantic_ce=ce)
    return losses

  def _pred01(self, outputs) -> tf.Tensor:
    pred = outputs["image"] if isinstance(outputs, dict) else outputs
    return tf.clip_by_value((tf.cast(pred, tf.float32) + 1.0) / 2.0, 0.0, 1.0)

  def metrics(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    """The raw output's metrics, and (prefix `l_moments_`) those of what tfharm returns: the
    composite moved onto the prediction's L* moments (tfharm.models.correction)."""
    comp, real, mask, pred = batch["composite"], batch["real"], batch["mask"], self._pred01(outputs)
    corrected = correction.apply_correction("l_moments", comp, mask, comp, mask, pred)
    product = image_metrics(corrected, real, mask)
    return {**image_metrics(pred, real, mask),
            **{f"l_moments_{k}": product[k] for k in ("mse", "psnr", "fmse")}}

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    return image_metrics(batch["composite"], batch["real"], batch["mask"])

  def images(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    return {"composite": batch["composite"], "harmonised": self._pred01(outputs),
            "real": batch["real"], "mask": batch["mask"]}


def _harmoniser_task() -> Task:
  cfg = HarmoniserConfig(image_size=_IMAGE_SIZE.value, semantic=_SEMANTIC.value,
                         num_classes=_NUM_CLASSES.value)
  return HarmoniserTask(cfg, loss_region=_LOSS_REGION.value,
                        semantic_weight=_SEMANTIC_WEIGHT.value,
                        init=_HARMONISER_INIT.value or None)


def _module_task(model: str, module_name: str) -> Task:
  # The model module provides make_task() returning a Task; its flags belong in this file
  # (flags must exist before the flagfile is parsed).
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    raise app.UsageError(f"--model={model}: {module_name} is not available yet") from e
  if not hasattr(module, "make_task"):
    raise app.UsageError(f"--model={model}: {module_name} has no make_task()")
  return module.make_task()


TASKS: dict[str, Callable[[], Task]] = {
    "harmoniser": _harmoniser_task,
    "detector": functools.partial(_module_task, "detector", "tfharm.models.detector"),
    "detector_aet": functools.partial(_module_task, "detector_aet", "tfharm.models.detector_aet"),
}


# --- options -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """Everything train() reads; main() fills it from flags, tests build it directly."""

  workdir: str
  data_dir: str
  dataset_config: str = "256"
  train_split: str = "train"
  eval_split: str = "validation"
  train_source: str = "tfds"
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


class DivergedError(RuntimeError):
  """Raised when the loss is not finite; the last good checkpoint is left in place."""


# --- helpers -----------------------------------------------------------------------
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


def _default_dataset_fn() -> DatasetFn:
  try:
    from tfharm.data import pipeline  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise app.UsageError(f"tfharm.data.pipeline.make_dataset is not importable: {e}") from e
  return pipeline.make_dataset


def _build_command(opts: TrainOptions) -> str:
  return (f"python -m tfharm.data.build --manual_dir=COCO_ROOT --data_dir={opts.data_dir} "
          f"--config={opts.dataset_config}")


def _no_data_dir(opts: TrainOptions) -> str:
  return f"--data_dir={opts.data_dir!r} does not exist. Build the data first: {_build_command(opts)}"


def _open_dataset(dataset_fn: DatasetFn, opts: TrainOptions, split: str, **kwargs):
  """Calls the data contract and turns 'no dataset there' into one clear message."""
  if not opts.data_dir or not tf.io.gfile.exists(opts.data_dir):
    raise app.UsageError(_no_data_dir(opts))
  try:
    return dataset_fn(opts.data_dir, split, config=opts.dataset_config, **kwargs)
  except (FileNotFoundError, tf.errors.NotFoundError, AssertionError, ValueError) as e:
    raise app.UsageError(
        f"No luminance_composites/{opts.dataset_config} split {split!r} under "
        f"--data_dir={opts.data_dir}: {type(e).__name__}: {e}. Build it with "
        f"`{_build_command(opts)}`.") from e


def _atomic_save(model: keras.Model, path: str, weights_only: bool) -> None:
  """Writes next to `path`, then renames: a kill never leaves a half-written export."""
  directory = os.path.dirname(path) or "."
  suffix = ".weights.h5" if weights_only else ".keras"
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
  os.close(fd)
  os.remove(tmp)
  try:
    if weights_only:
      model.save_weights(tmp)
    else:
      model.save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def restore_latest(manager: tf.train.CheckpointManager, ckpt: tf.train.Checkpoint) -> str | None:
  """Restores the newest checkpoint that reads back completely; skips damaged ones.

  TF writes checkpoint data to a temporary prefix and updates the `checkpoint` index
  atomically, so a kill cannot make a partial save 'latest'; this also survives a
  later corruption (truncated disk copy, deleted shard) by falling back to an older one.
  """
  for path in reversed(manager.checkpoints):
    try:
      ckpt.restore(path).assert_existing_objects_matched()
      return path
    except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as e:
      logging.warning("Checkpoint %s is unreadable (%s); trying an older one.", path, e)
  if manager.checkpoints:
    raise RuntimeError(f"none of the checkpoints in {manager.directory} could be restored")
  return None


def _mean_dict(acc: dict[str, list[np.ndarray]]) -> dict[str, float]:
  """Means over the split; NaN entries (fMSE of an empty mask) are left out."""
  out = {}
  for k, v in acc.items():
    values = np.concatenate(v)
    values = values[~np.isnan(values)]
    out[k] = float(np.mean(values)) if values.size else float("nan")
  return out


# --- training ----------------------------------------------------------------------
def train(opts: TrainOptions, task: Task, dataset_fn: DatasetFn | None = None,
          stream: StreamFn | None = None) -> dict[str, Any]:
  """Trains `task` until opts.steps, resuming from opts.workdir; returns final logs.

  `stream`: train on it instead of the built train split (opts.train_source == "generator")."""
  if (stream is None) != (opts.train_source == "tfds"):
    raise ValueError(f"train_source={opts.train_source!r} needs a stream exactly when it is "
                     "'generator'")
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(opts.precision)
  try:
    return _train(opts, task, dataset_fn or _default_dataset_fn(), stream)
  finally:  # the policy is process-global: do not leak it to the caller
    keras.mixed_precision.set_global_policy(previous)


@dataclasses.dataclass
class _RunState:
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


def _create_state(opts: TrainOptions, task: Task, strategy: tf.distribute.Strategy,
                  ckpt_dir: str) -> _RunState:
  """Builds model, optimizer and weight average, and restores the newest good checkpoint."""
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
  restored = restore_latest(manager, tf.train.Checkpoint(**core))
  if restored:
    tf.train.Checkpoint(data_position=position).restore(restored).expect_partial()
    if int(position.numpy()) == 0:  # a checkpoint from before the position was kept
      position.assign(step * opts.batch_size)
    logging.info("Resumed from %s at step %d (%d training examples seen).", restored,
                 int(step.numpy()), int(position.numpy()))
  else:
    logging.info("No checkpoint in %s: starting from scratch.", ckpt_dir)
  if average is not None:
    if restored:
      tf.train.Checkpoint(ema=average).restore(restored).expect_partial()
    if not bool(average.initialised.numpy()):
      average.reset()
      logging.info("Weight average (decay %g) seeded from the %s weights.", opts.ema_decay,
                   "restored" if restored else "initial")
  return _RunState(model, optimizer, step, position, average, ckpt, manager, restored)


def _training_data(opts: TrainOptions, task: Task, dataset_fn: DatasetFn, data_seed: int,
                   stream: "StreamFn | None" = None, position: int = 0) -> tf.data.Dataset:
  """The built split (reshuffled by data_seed), or the online stream from `position` on."""
  first_batch = 0
  if stream is not None:
    ds = stream(position, batch_size=opts.batch_size, augment=opts.augment, seed=opts.seed)
    first_batch = position // opts.batch_size  # crops etc. continue their seeds too
  else:
    ds = _open_dataset(dataset_fn, opts, opts.train_split, batch_size=opts.batch_size,
                       shuffle=True, augment=opts.augment, repeat=True, seed=data_seed,
                       max_examples=opts.max_train_examples or None)
  if hasattr(task, "train_transform"):  # a task-specific training view (e.g. seeded crops)
    ds = ds.enumerate(start=first_batch).map(
        lambda i, b: task.train_transform(b, tf.stack([tf.cast(data_seed, tf.int64), i])),
        num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = ds.map(task.transform, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def _checkpoint_iterator(state: _RunState, opts: TrainOptions, iterator, ckpt_dir: str) -> None:
  """--checkpoint_data_iterator: the iterator joins the checkpoint (restored if saved)."""
  state.ckpt = tf.train.Checkpoint(**state.objects, data=iterator)
  state.manager = tf.train.CheckpointManager(state.ckpt, ckpt_dir,
                                             max_to_keep=opts.keep_checkpoints)
  if state.restored:
    tf.train.Checkpoint(data=iterator).restore(state.restored).expect_partial()  # may lack it


def _set_learning_rate(optimizer: keras.optimizers.Optimizer, rate: float) -> None:
  """The rate is checkpointed optimizer state: without this, a resumed run would silently keep
  the old rate whatever --learning_rate says."""
  old = float(optimizer.learning_rate.numpy())
  if not math.isclose(old, rate, rel_tol=1e-6):
    logging.info("Learning rate %g (checkpoint had %g).", rate, old)
    optimizer.learning_rate.assign(rate)


def _summary_writers(workdir: str, chief: bool):
  if chief and importlib.util.find_spec("tensorboard") is not None:
    return (tf.summary.create_file_writer(os.path.join(workdir, "logs", "train")),
            tf.summary.create_file_writer(os.path.join(workdir, "logs", "eval")))
  if chief:  # tf.summary needs the tensorboard package; train on without summaries
    logging.warning("tensorboard is not installed: no TensorBoard summaries.")
  noop = tf.summary.create_noop_writer()
  return noop, noop


def _validate(opts: TrainOptions, task: Task, dataset_fn: DatasetFn,
              strategy: tf.distribute.Strategy, state: _RunState, eval_step, writer,
              at_step: int, log_baseline: bool) -> dict[str, float]:
  """Means of task.metrics over the eval split (with the weight average, if kept), written to
  TensorBoard with sample images and weight histograms."""
  with state.average.swapped_in() if state.average is not None else contextlib.nullcontext():
    ds = _open_dataset(dataset_fn, opts, opts.eval_split, batch_size=opts.eval_batch_size,
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
    means = _mean_dict(acc)
    with writer.as_default(step=at_step):
      for k, v in means.items():
        tf.summary.scalar(f"eval/{k}", v)
      if log_baseline:
        base_means = _mean_dict(base_acc)
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


def _export(opts: TrainOptions, task: Task, state: _RunState) -> None:
  """<model>.weights.h5 and .keras (the weight average, if kept), plus the task's own files."""
  if state.average is not None:
    state.average.copy_to_variables()
    logging.info("Exporting the weight average (decay %g).", opts.ema_decay)
  _atomic_save(state.model, os.path.join(opts.workdir, f"{task.name}.weights.h5"),
               weights_only=True)
  _atomic_save(state.model, os.path.join(opts.workdir, f"{task.name}.keras"), weights_only=False)
  if hasattr(task, "export"):  # task-specific extra files (the detector's head-only weights)
    task.export(state.model, opts.workdir)


def _train(opts: TrainOptions, task: Task, dataset_fn: DatasetFn,
           stream: StreamFn | None) -> dict[str, Any]:
  keras.utils.set_random_seed(opts.seed)
  strategy = make_strategy(opts.strategy)
  chief = _is_chief(strategy)
  ckpt_dir = os.path.join(opts.workdir, "checkpoints")
  if not chief:  # MultiWorkerMirrored: every worker saves, only the chief's copy is kept
    ckpt_dir = os.path.join(opts.workdir, f"tmp_worker_{strategy.cluster_resolver.task_id}")
  tf.io.gfile.makedirs(ckpt_dir)

  state = _create_state(opts, task, strategy, ckpt_dir)
  model, optimizer, step, average = state.model, state.optimizer, state.step, state.average
  start = int(step.numpy())
  if start >= opts.steps:
    logging.info("Already at step %d >= --steps=%d; nothing to train.", start, opts.steps)
  # Without a checkpointed iterator, a resumed run reseeds the data order with seed + step.
  data_seed = opts.seed if opts.checkpoint_data_iterator else opts.seed + start
  iterator = iter(strategy.experimental_distribute_dataset(
      _training_data(opts, task, dataset_fn, data_seed, stream, int(state.position.numpy()))))
  if opts.checkpoint_data_iterator:
    _checkpoint_iterator(state, opts, iterator, ckpt_dir)
  _set_learning_rate(optimizer, opts.learning_rate)

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
  previous = {s: signal.signal(s, _request_stop) for s in (signal.SIGTERM, signal.SIGINT)
              } if chief and _main_thread() else {}

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
    if int(step.numpy()) > start or not logs.get("mse"):
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


def _main_thread() -> bool:
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()


def options_from_flags() -> TrainOptions:
  """TrainOptions from the parsed flags (every field is a flag of the same name)."""
  return TrainOptions(**{f.name: flags.FLAGS[f.name].value
                         for f in dataclasses.fields(TrainOptions)})


def main(argv, dataset_fn: DatasetFn | None = None) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  opts = options_from_flags()
  if not tf.io.gfile.exists(opts.data_dir):  # fail before creating the workdir
    raise app.UsageError(_no_data_dir(opts))
  task = TASKS[_MODEL.value]()
  dataset_fn = dataset_fn or _default_dataset_fn()
  stream = _composite_stream(opts, dataset_fn) if opts.train_source == "generator" else None
  tf.io.gfile.makedirs(opts.workdir)
  flags.FLAGS.append_flags_into_file(os.path.join(opts.workdir, "flags.txt"))
  try:
    logs = train(opts, task, dataset_fn, stream)
  except DivergedError as e:
    logging.error("%s", e)
    sys.exit(f"Training diverged: {e}")
  logging.info("Done at step %d: %s", logs["step"], logs)


def _composite_stream(opts: TrainOptions, dataset_fn: DatasetFn) -> StreamFn:
  """The online generator over --generator_roots, holding out the built dataset's validation
  photos (same fraction), checked against the validation split's own image ids."""
  from tfharm.data import generator, pipeline  # pylint: disable=g-import-not-at-top
  if not _GENERATOR_ROOTS.value:
    raise app.UsageError("--train_source=generator needs --generator_roots=COCO_ROOT[,...]")
  try:
    fraction = pipeline.load_builder(opts.data_dir, opts.dataset_config
                                     ).builder_config.validation_fraction
    options = generator.GeneratorOptions(
        image_size=_IMAGE_SIZE.value, seed=opts.seed, validation_fraction=fraction,
        weights=generator.parse_weights(_GENERATOR_WEIGHTS.value))
    source = generator.CompositeSource(_GENERATOR_ROOTS.value, options)
  except (ValueError, FileNotFoundError) as e:  # AnnotationError is a ValueError
    raise app.UsageError(f"--train_source=generator: {e}") from e
  held_out = set()
  for batch in _open_dataset(dataset_fn, opts, opts.eval_split, batch_size=64, shuffle=False,
                             augment=False, repeat=False, seed=0):
    held_out.update(int(i) for i in batch["image_id"].numpy())
  shared = sorted(source.image_ids & held_out)
  if shared:
    raise app.UsageError(f"the generator's training photos include {len(shared)} photos of the "
                         f"{opts.eval_split!r} split (e.g. {shared[:3]}): train and validate on "
                         "disjoint photos (same --generator_roots as the build?)")
  return source.dataset


def run(dataset_fn: DatasetFn | None = None) -> None:
  """Entry point; tests pass a synthetic `dataset_fn` with the make_dataset signature."""
  flags.mark_flags_as_required(["workdir", "data_dir"])
  app.run(functools.partial(main, dataset_fn=dataset_fn))


if __name__ == "__main__":
  run()
