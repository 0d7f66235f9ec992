"""One training command for every tfharm model.

  python -m tfharm.train --flagfile=configs/train_harmoniser.flags \
      --data_dir=out/tfds --workdir=out/train/harmoniser256

The command line over tfharm.training: its flags become a `TrainOptions` and, by `--model`,
one task's config (tfharm.training.tasks); nothing else reads them. Re-running the same
command after a crash or a SIGKILL continues from the last complete checkpoint. Flags are
defined only when this module runs as a program (`run`), with the configs' defaults.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys

from absl import app, flags, logging
import tensorflow as tf

from tfharm import training
from tfharm.cli import program
from tfharm.models.detector import DetectorConfig
from tfharm.models.detector_labels import LabelConfig
from tfharm.models.harmoniser import HarmoniserConfig
from tfharm.models.joint import CORRECTIONS as JOINT_CORRECTIONS, TRUNKS, JointConfig
from tfharm.training import data as data_lib
from tfharm.training import run_flags
from tfharm.training.tasks import detector, detector_aet, harmoniser, joint

_OPTS = training.TrainOptions(workdir="", data_dir="")
_H = harmoniser.HarmoniserTaskConfig()
_D = detector.DetectorTaskConfig()
_A = detector_aet.DetectorAETTaskConfig()
_J = joint.JointTaskConfig()


def _define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Every flag of the command, into `fv` (tests parse the shipped flagfiles into a fresh one)."""
  from tfharm.data import generator  # pylint: disable=g-import-not-at-top
  o = _OPTS
  d = functools.partial
  string, integer, boolean, real, enum = (
      d(flags.DEFINE_string, flag_values=fv), d(flags.DEFINE_integer, flag_values=fv),
      d(flags.DEFINE_bool, flag_values=fv), d(flags.DEFINE_float, flag_values=fv),
      d(flags.DEFINE_enum, flag_values=fv))
  enum("model", "harmoniser", list(_TASKS), "Which network to train (tfharm.training.tasks).")
  string("workdir", None, "Checkpoints, TensorBoard logs, exported weights.")
  string("data_dir", None, "TFDS data_dir holding luminance_composites.")
  string("dataset_config", o.dataset_config, "luminance_composites config.")
  string("train_split", o.train_split, "Split to train on (--train_source=tfds).")
  string("eval_split", o.eval_split,
         "Split for periodic validation. Choices are made on `validation` (photos held out of "
         "train2017); `test` is for reporting only.")
  enum("train_source", o.train_source, ["tfds", "generator"],
       "tfds: the built --train_split; generator: fresh composites drawn online from "
       "--generator_roots (tfharm.data.generator), resumed where the checkpoint stopped.")
  flags.DEFINE_list(
      "generator_roots", [], "COCO roots for --train_source=generator (their train2017 photos "
      "minus the built dataset's validation hold-out), e.g. COCO_MINI,COCO128.", flag_values=fv)
  integer("generator_max_photos", None, "Train on at most this many of the generator's photos "
          "(a fixed hash order of their ids, so smaller sets are nested in larger ones): the "
          "data-scaling curve. Default: all.")
  boolean("generator_balance_roots", False, "Draw the generator's targets so that each root "
          "gives the same share (default: each object equally, so the root with the most "
          "objects dominates).")
  string("generator_weights", ",".join(f"{n}={w:g}" for n, w in generator.DEFAULT_WEIGHTS),
         "Corruption weights of the online generator (reinhard, offset, identity).")
  integer("max_train_examples", o.max_train_examples, "Use at most this many (0: all).")
  integer("max_eval_examples", o.max_eval_examples, "Validate on at most this many (0: all).")
  boolean("augment", o.augment, "Geometric augmentation (composite/real/mask aligned).")
  integer("batch_size", o.batch_size, "Global batch size (split across replicas).")
  integer("eval_batch_size", o.eval_batch_size, "Validation batch size.")
  integer("steps", o.steps, "Total optimiser steps (resume counts from the checkpoint).")
  real("learning_rate", o.learning_rate, "Adam learning rate.")
  integer("seed", o.seed, "Seed for initialisation and data order.")
  real("ema_decay", o.ema_decay,
       "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0: off). "
       "Validation and the exported weights then use the average; it is checkpointed, and a "
       "run resumed from a checkpoint without one seeds it from the restored weights.")
  integer("log_every", o.log_every, "Write training scalars every N steps.")
  integer("eval_every", o.eval_every, "Validate every N steps (0: only at the end).")
  integer("checkpoint_every", o.checkpoint_every, "Checkpoint every N steps.")
  integer("keep_checkpoints", o.keep_checkpoints, "How many recent checkpoints to keep.")
  boolean("checkpoint_data_iterator", o.checkpoint_data_iterator,
          "Also checkpoint the tf.data iterator (exact data position on resume). Off by default: "
          "its state includes the shuffle buffer, which can be large; when off, a resumed run "
          "reseeds the data order with seed + step instead of replaying the first batches.")
  enum("strategy", o.strategy, ["default", "one_device", "mirrored", "multi_worker"],
       "tf.distribute strategy (multi_worker reads TF_CONFIG).")
  enum("precision", o.precision, ["float32", "mixed_bfloat16", "mixed_float16"],
       "Keras dtype policy (mixed_float16 adds loss scaling).")
  boolean("jit_compile", o.jit_compile,
          "XLA-compile the train step. Off by default: on this CPU TF's oneDNN kernels beat XLA "
          "(bench/RESULTS.md); turn on for GPUs.")
  boolean("export", o.export, "Write <model>.weights.h5 and <model>.keras at the end.")
  # harmoniser (--image_size is every task's static input size)
  integer("image_size", _H.model.image_size,
          "Input size S: harmoniser 4 * 2**n; detector and joint a multiple of 8.")
  enum("loss_region", _H.loss_region, list(harmoniser.LOSS_REGIONS),
       "MSE over the whole image (as DIH), only inside the mask, or the sum of the two (the "
       "object's tone weighs more, the background is still reconstructed: what harmonise() "
       "returns).")
  boolean("semantic", _H.model.semantic, "Add DIH's scene-parsing decoder branch.")
  real("semantic_weight", _H.semantic_weight, "Weight of the parsing CE loss.")
  integer("num_classes", _H.model.num_classes, "Parsing classes (80 COCO + background).")
  string("harmoniser_init", "",
         "Harmoniser: start from these weights (e.g. tfharm/presets/harmoniser_256.weights.h5, to "
         "fine-tune it); a resumed checkpoint overrides them.")
  # detector and its AET pre-training
  boolean("detector_freeze_encoder", _D.model.freeze_encoder,
          "Detector (and detector_aet): keep the VGG16 convs frozen. [L]'s AET recipe trains "
          "them (configs/train_detector_aet.flags sets false).")
  boolean("detector_freeze_multiscale", _D.model.freeze_multiscale,
          "Detector: also freeze the side branches and block-5 head (with "
          "--detector_freeze_encoder: the authors' 'entire encoder', for an AET init).")
  string("detector_init", "",
         "Detector: start from this AET trunk file (<workdir>/detector_aet.trunk.weights.h5 of "
         "--model=detector_aet) or a detector head file (e.g. tfharm/presets/detector_256.head."
         "weights.h5, to fine-tune it); a resumed checkpoint overrides it.")
  real("detector_tau_neg", _D.labels.tau_neg,
       "Detector labels: mean-L* ratio below this is negative.")
  real("detector_tau_pos", _D.labels.tau_pos,
       "Detector labels: mean-L* ratio above this is positive.")
  enum("detector_label_mode", _D.labels.mode, ["object", "pixel"],
       "Detector labels: one ratio per object, or per pixel.")
  string("detector_class_weights", "auto",
         "Detector CE class weights 'neg,pos,none', or 'auto' (per batch, "
         "clip(sqrt(f_none / f_c), 1, max)).")
  real("detector_max_class_weight", _D.max_class_weight,
       "Detector: cap of the 'auto' class weights.")
  integer("detector_train_crop", _D.train_crop or 0,
          "Detector: train on seeded random crops of this size (multiple of 8; 0: whole "
          "images). Labels come from the whole image; validation is uncropped.")
  real("detector_dice_weight", _D.dice_weight,
       "Detector: weight of a soft Dice loss on p_neg + p_pos.")
  real("detector_aet_min_factor", _A.min_factor, "AET: smallest L* factor (log-uniform sampling).")
  real("detector_aet_max_factor", _A.max_factor, "AET: largest L* factor (log-uniform sampling).")
  # joint (also reads --detector_tau_*, --detector_label_mode, --detector_class_weights,
  # --detector_max_class_weight: the detection half is the detector task's)
  real("joint_detection_weight", _J.detection_weight,
       "Joint: weight of the detection cross-entropy in the loss.")
  real("joint_output_weight", _J.output_weight,
       "Joint: weight of MSE(harmonised, real) in [0, 1] RGB in the loss.")
  real("joint_mask_output_weight", _J.mask_output_weight,
       "Joint: weight of MSE(composite shifted by the L* head through the ground-truth mask, "
       "real): trains the correction where the objects are while the detection is silent.")
  real("joint_max_delta_l", _J.model.max_delta_l, "Joint: bound of the L* change (L* units).")
  enum("joint_correction", _J.model.correction, list(JOINT_CORRECTIONS),
       "Joint: pixel (an L* change per pixel) or region (one affine L* map per image from the "
       "region's and its surroundings' statistics; tfharm.models.joint).")
  enum("joint_trunk", _J.model.trunk, list(TRUNKS), "Joint: the frozen ImageNet trunk; "
       "efficientnet_lite0 needs the optional file of `make weights` and is used through the "
       "exported .keras file, which carries it (tfharm.models.joint).")
  string("joint_init", "", "Joint: start from these joint weights (.weights.h5, .keras or a "
         "preset name such as joint_256); a "
         "resumed checkpoint overrides them.")
  flags.mark_flags_as_required(["workdir", "data_dir"], flag_values=fv)


def options_from_flags(fv: flags.FlagValues = flags.FLAGS) -> training.TrainOptions:
  """Every field of TrainOptions is the flag of the same name."""
  return training.TrainOptions(**{f.name: fv[f.name].value
                                  for f in dataclasses.fields(training.TrainOptions)})


def _harmoniser_task(fv: flags.FlagValues) -> training.Task:
  model = HarmoniserConfig(image_size=fv.image_size, semantic=fv.semantic,
                           num_classes=fv.num_classes)
  return harmoniser.HarmoniserTask(harmoniser.HarmoniserTaskConfig(
      model, loss_region=fv.loss_region, semantic_weight=fv.semantic_weight,
      init=fv.harmoniser_init or None))


def _class_weights(text: str) -> tuple[float, float, float] | None:
  if text in ("", "auto"):
    return None
  values = tuple(float(v) for v in text.split(","))
  if len(values) != 3:
    raise app.UsageError(f"--detector_class_weights needs 3 values (neg,pos,none), got {text!r}")
  return values


def _detector_task(fv: flags.FlagValues) -> training.Task:
  model = DetectorConfig(freeze_encoder=fv.detector_freeze_encoder,
                         freeze_multiscale=fv.detector_freeze_multiscale)
  labels = LabelConfig(tau_neg=fv.detector_tau_neg, tau_pos=fv.detector_tau_pos,
                       mode=fv.detector_label_mode)
  return detector.DetectorTask(detector.DetectorTaskConfig(
      model, labels, image_size=fv.image_size,
      class_weights=_class_weights(fv.detector_class_weights),
      max_class_weight=fv.detector_max_class_weight, dice_weight=fv.detector_dice_weight,
      train_crop=fv.detector_train_crop or None, init=fv.detector_init or None))


def _detector_aet_task(fv: flags.FlagValues) -> training.Task:
  return detector_aet.DetectorAETTask(detector_aet.DetectorAETTaskConfig(
      DetectorConfig(freeze_encoder=fv.detector_freeze_encoder), image_size=fv.image_size,
      min_factor=fv.detector_aet_min_factor, max_factor=fv.detector_aet_max_factor))


def _joint_task(fv: flags.FlagValues) -> training.Task:
  labels = LabelConfig(tau_neg=fv.detector_tau_neg, tau_pos=fv.detector_tau_pos,
                       mode=fv.detector_label_mode)
  return joint.JointTask(joint.JointTaskConfig(
      JointConfig(max_delta_l=fv.joint_max_delta_l, correction=fv.joint_correction,
                  trunk=fv.joint_trunk), labels,
      image_size=fv.image_size,
      detection_weight=fv.joint_detection_weight, output_weight=fv.joint_output_weight,
      mask_output_weight=fv.joint_mask_output_weight,
      class_weights=_class_weights(fv.detector_class_weights),
      max_class_weight=fv.detector_max_class_weight, init=fv.joint_init or None))


_TASKS = {"harmoniser": _harmoniser_task, "detector": _detector_task,
          "detector_aet": _detector_aet_task, "joint": _joint_task}


def task_from_flags(fv: flags.FlagValues = flags.FLAGS) -> training.Task:
  return _TASKS[fv.model](fv)


def main(argv, dataset_fn: data_lib.DatasetFn | None = None) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  fv = flags.FLAGS
  opts = options_from_flags(fv)
  if not tf.io.gfile.exists(opts.data_dir):  # fail before creating the workdir
    raise app.UsageError(data_lib.no_data_dir(opts))
  task = task_from_flags(fv)
  # Before any TF op: MultiWorkerMirroredStrategy cannot start after one ("Collective ops must
  # be configured at program startup"), and reading the data runs some.
  strategy = training.make_strategy(opts.strategy)
  try:
    dataset_fn = dataset_fn or data_lib.default_dataset_fn()
    stream = (data_lib.composite_stream(opts, dataset_fn, fv.generator_roots,
                                        fv.generator_weights, fv.image_size,
                                        fv.generator_max_photos, fv.generator_balance_roots)
              if opts.train_source == "generator" else None)
    tf.io.gfile.makedirs(opts.workdir)
    if training.is_chief(strategy):  # one block per start of the run, not one per worker
      fv.append_flags_into_file(run_flags.path(opts.workdir))
    logs = training.train(opts, task, dataset_fn, stream, strategy)
  except training.DataError as e:
    raise app.UsageError(str(e)) from e
  except training.DivergedError as e:
    logging.error("%s", e)
    sys.exit(f"Training diverged: {e}")
  logging.info("Done at step %d: %s", logs["step"], logs)


def run(dataset_fn: data_lib.DatasetFn | None = None) -> None:
  """Entry point; tests pass a synthetic `dataset_fn` with the make_dataset signature."""
  _define_flags()
  program.run(functools.partial(main, dataset_fn=dataset_fn))


if __name__ == "__main__":
  run()
