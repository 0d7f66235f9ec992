"""Validation of a harmoniser or joint checkpoint on a `luminance_composites` split.

  python -m tfharm.validation --data_dir=DATA --dataset_config=256 --split=test \
      [--weights=tfharm/presets/harmoniser_256.weights.h5] [--output=out.json]
  python -m tfharm.validation --data_dir=DATA --split=validation --joint_weights=RUN/joint.keras \
      --output=out.json

With --joint_weights: the joint model's per-image PSNR gains over the composite (mask-free, as
tfharm.harmonise returns it at S, and through the true mask), their means with standard errors,
the shares improved / worse by > 1 dB, and the detection's AP / IoU, overall and per root of
the build (`joint_summary`): what checkpoints and recipes are chosen on, and what
scripts/scaling_curve.py plots.

Scores these ways of producing an image, each against the real photograph: `composite` (no
harmonisation), `harmoniser_gt_mask` (C_s, the network's output as it is),
`harmoniser_gt_mask_gated` (the same, pasted into the composite through the mask),
`harmoniser_gt_mask_l_moments` (what `harmonise_any_size` returns by default: the composite's
object moved onto the L* mean/std of the prediction, tfharm.models.correction),
`harmoniser_empty_mask` (does the network change images it should leave alone?) and
`harmoniser_empty_mask_l_moments` (the same through the correction), and how far each moved
away from its input composite (`empty_mask_change`, `empty_mask_change_l_moments`).
These are the numbers in tfharm/presets/README.md.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf

from tfharm.data import pipeline
from tfharm.metrics import aggregate
from tfharm.metrics import image as image_metrics
from tfharm.models import correction
from tfharm.models import detector as detector_lib
from tfharm.models import joint as joint_lib
from tfharm.models import methods

# The gated row is reported beside the network's own output, never instead of it.
VALIDATION_METHODS = ("composite", "harmoniser_gt_mask", "harmoniser_gt_mask_gated",
                      "harmoniser_gt_mask_l_moments", "harmoniser_empty_mask",
                      "harmoniser_empty_mask_l_moments")

def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: importing the library part
  must not claim flag names (e.g. --data_dir) that other programs define too."""
  global _WEIGHTS, _DATA_DIR, _CONFIG, _SPLIT, _BATCH, _OUTPUT
  _WEIGHTS = flags.DEFINE_string("weights", None, "Harmoniser weights (default: the shipped one).")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir with luminance_composites.")
  _CONFIG = flags.DEFINE_string("dataset_config", "256", "luminance_composites config.")
  _SPLIT = flags.DEFINE_string("split", "test", "Split to score.")
  _BATCH = flags.DEFINE_integer("batch_size", 16, "Batch size.")
  _OUTPUT = flags.DEFINE_string("output", None, "Also write the scores here (JSON).")
  global _JOINT, _MAX
  _JOINT = flags.DEFINE_string("joint_weights", None, "Score this joint model (a file or a preset "
                               "name) instead of a harmoniser.")
  _MAX = flags.DEFINE_integer("max_examples", None, "Score at most this many examples.")
  global _OVERWRITE, _GAINS
  _GAINS = flags.DEFINE_list("gate_gains", [], "With --joint_weights: also score the mask-free "
                             "row with its soft mask m scaled to min(1, g * m), for each g.")
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
  from tfharm.cli import aliases  # pylint: disable=g-import-not-at-top
  aliases.define_deprecated("config", "dataset_config", __name__)
  aliases.define_deprecated("output_json", "output", __name__)
  flags.mark_flag_as_required("data_dir")


def harmoniser_scores(model: keras.Model, dataset: tf.data.Dataset) -> dict:
  """Mean MSE / PSNR / fMSE / SSIM per method over `dataset` (make_dataset batches)."""

  @tf.function
  def score(batch):
    comp, real, mask = batch["composite"], batch["real"], batch["mask"]
    masks = {"harmoniser_gt_mask": mask, "harmoniser_empty_mask": tf.zeros_like(mask)}
    outputs = methods.method_images(comp, methods.harmonise_masks(model, comp, masks), masks,
                                    VALIDATION_METHODS)
    result = {name: image_metrics.image_metrics(out, real, mask, value_range=(0.0, 1.0))
              for name, out in outputs.items()}
    for name in ("harmoniser_empty_mask", "harmoniser_empty_mask_l_moments"):
      change = name.replace("harmoniser_empty_mask", "empty_mask_change")
      result[change] = {"mse": image_metrics.mse(outputs[name], comp, value_range=(0.0, 1.0))}
    return result

  return _means(score, dataset)


def joint_scores(model: keras.Model, dataset: tf.data.Dataset) -> dict:
  """Mean MSE / PSNR / fMSE / SSIM of a joint model's rows (models.methods.joint_images: the
  pixels `tfharm.eval --joint_weights` scores) over `dataset` (make_dataset batches)."""
  shift = joint_lib.LightnessShift(dtype="float32", name="gt_mask_shift")

  @tf.function
  def score(batch):
    images, _ = methods.joint_images(model, batch["composite"], batch["mask"], shift)
    return {name: image_metrics.image_metrics(out, batch["real"], batch["mask"],
                                              value_range=(0.0, 1.0))
            for name, out in images.items()}

  return _means(score, dataset)


# The joint model's per-image rows: what tfharm.harmonise returns at S (mask-free), and the same
# L* change through the true mask (the reference the mask-free row is judged against).
JOINT_ROWS = {"mask_free": "joint_l_moments", "gt_mask": "joint_gt_mask"}


def gain_row(gain: float) -> str:
  """The name of the mask-free row whose soft mask is min(1, gain * m)."""
  return f"mask_free_gain{gain:g}"


def joint_per_image(model: keras.Model, dataset: tf.data.Dataset, task=None,
                    gate_gains=()) -> dict:
  """Per-image arrays over `dataset` (make_dataset batches): PSNR of the composite and of each
  JOINT_ROWS image against the real photo, the detection's AP / IoU against the suprathreshold
  object (the joint task's definitions; NaN where an image has no such object), and the
  image's root, corruption and id, for means with standard errors and per-root rows.

  `gate_gains`: also the mask-free row with the soft mask m scaled to min(1, g * m), one row
  (`gain_row(g)`) per g: whether the detection's confidence, not its place, limits the gain."""
  from tfharm.training.tasks import joint as joint_task  # pylint: disable=g-import-not-at-top
  task = task or joint_task.JointTask(joint_task.JointTaskConfig(image_size=None))
  shift = joint_lib.LightnessShift(dtype="float32", name="gt_mask_shift")

  @tf.function
  def score(batch):
    batch = task.transform(batch)
    out = model(batch["composite"], training=False)
    images, _ = methods.joint_images(model, batch["composite"], batch["mask"], shift, out)
    psnr = lambda x: image_metrics.image_metrics(x, batch["real"], batch["mask"],  # noqa: E731
                                                 value_range=(0.0, 1.0))["psnr"]
    det = task.detection.metrics(batch, out["probs"])
    values = {"psnr_composite": psnr(batch["composite"]), "ap": det["ap"], "iou": det["iou"]}
    values.update({f"psnr_{k}": psnr(images[row]) for k, row in JOINT_ROWS.items()})
    composite = tf.cast(batch["composite"], tf.float32)
    m = detector_lib.soft_mask(tf.cast(out["probs"], tf.float32))
    for g in gate_gains:
      mg = tf.minimum(1.0, g * m)
      own = shift(composite, out["delta_l"], mg)
      values[f"psnr_{gain_row(g)}"] = psnr(correction.apply_correction(
          "l_moments", composite, mg, composite, mg, own))
    return values

  columns: dict[str, list[np.ndarray]] = {}
  bar = keras.utils.Progbar(None, unit_name="batch")
  for i, batch in enumerate(dataset):
    for k, v in score(batch).items():
      columns.setdefault(k, []).append(v.numpy())
    for k in ("root", "corruption", "image_id"):
      if k in batch:
        columns.setdefault(k, []).append(batch[k].numpy())
    bar.update(i + 1)
  return {k: np.concatenate(v) for k, v in columns.items()}


def _mean_se(x: np.ndarray) -> dict:
  x = x[~np.isnan(x)]
  n = len(x)
  return {"mean": float(np.mean(x)) if n else float("nan"),
          "se": float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "n": int(n)}


def joint_summary(per_image: dict, root_names=None) -> dict:
  """Means with standard errors of the PSNR gains over the composite (paired, per image), the
  shares improved / worse by > 1 dB, and AP / IoU: overall and per root."""
  rows = [k[len("psnr_"):] for k in per_image if k.startswith("psnr_") and k != "psnr_composite"]

  def summarise(keep):
    out = {"num_examples": int(keep.sum()),
           "psnr_composite": _mean_se(per_image["psnr_composite"][keep])}
    for k in rows:
      gain = per_image[f"psnr_{k}"][keep] - per_image["psnr_composite"][keep]
      out[f"psnr_{k}"] = _mean_se(per_image[f"psnr_{k}"][keep])
      out[f"gain_{k}"] = _mean_se(gain)
      out[f"improved_{k}"] = float(np.mean(gain > 0)) if len(gain) else float("nan")
      out[f"worse_by_1db_{k}"] = float(np.mean(gain < -1.0)) if len(gain) else float("nan")
    out["ap"] = _mean_se(per_image["ap"][keep])
    out["iou"] = _mean_se(per_image["iou"][keep])
    return out

  everything = np.ones(len(per_image["psnr_composite"]), bool)
  result = {"overall": summarise(everything)}
  if "root" in per_image:
    for r in sorted(set(int(v) for v in per_image["root"])):
      name = root_names[r] if root_names and r < len(root_names) else str(r)
      result[f"root:{name}"] = summarise(per_image["root"] == r)
  return result


def _means(score, dataset: tf.data.Dataset) -> dict:
  """{"num_examples", method: {metric: mean}} of `score`'s per-example values over `dataset`."""
  sums: dict[str, dict[str, list[np.ndarray]]] = {}
  bar = keras.utils.Progbar(None, unit_name="batch")
  for i, batch in enumerate(dataset):
    for method, values in score(batch).items():
      for metric, v in values.items():
        sums.setdefault(method, {}).setdefault(metric, []).append(v.numpy())
    bar.update(i + 1)
  first = next(iter(sums.values()))
  out = {"num_examples": int(sum(len(v) for v in first["mse"]))}
  for method, metrics in sums.items():
    out[method] = {m: float(np.mean(np.concatenate(v))) for m, v in metrics.items()}
  return out


def detector_scores(model: keras.Model, dataset: tf.data.Dataset, task=None) -> dict:
  """Mean detector metrics over `dataset` (make_dataset batches), with the training task's
  labels and definitions (`DetectorTask.metrics`: IoU/F1/AP against the suprathreshold object,
  sign accuracy, silence on subthreshold composites); NaN entries (a metric that does not apply
  to an image) are left out of each mean, and the counts behind each mean are reported."""
  from tfharm.training.tasks import detector as task_lib  # pylint: disable=g-import-not-at-top
  task = task or task_lib.DetectorTask(task_lib.DetectorTaskConfig(image_size=None))

  @tf.function
  def score(batch):
    batch = task.transform(batch)
    return task.metrics(batch, model(batch["composite"], training=False))

  values: dict[str, list[np.ndarray]] = {}
  bar = keras.utils.Progbar(None, unit_name="batch")
  for i, batch in enumerate(dataset):
    for metric, v in score(batch).items():
      values.setdefault(metric, []).append(v.numpy())
    bar.update(i + 1)
  out: dict = {"num_examples": int(sum(len(v) for v in values["pixel_accuracy"]))}
  for metric, chunks in values.items():
    out[metric] = aggregate.nanmean(chunks)
    out[f"{metric}_count"] = int(sum(np.count_nonzero(~np.isnan(c)) for c in chunks))
  return out


def main(argv):
  from tfharm.cli import program  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  out = _OUTPUT.value
  if out and os.path.exists(out) and not _OVERWRITE.value:
    raise program.SetupError(f"--output {out} exists (--overwrite replaces it)")
  if out and os.path.isdir(out):
    raise program.SetupError(f"--output {out} is a folder")
  try:
    gains = [float(g) for g in _GAINS.value]
  except ValueError:
    gains = [float("nan")]
  if any(not np.isfinite(g) or g <= 0 for g in gains):
    raise program.SetupError(f"--gate_gains must be positive numbers, got {_GAINS.value}")
  try:
    pipeline.load_builder(_DATA_DIR.value, _CONFIG.value)
  except FileNotFoundError as e:
    raise program.SetupError(str(e)) from None
  dataset = pipeline.make_dataset(_DATA_DIR.value, _SPLIT.value, config=_CONFIG.value,
                                  batch_size=_BATCH.value, max_examples=_MAX.value)
  if _JOINT.value:
    scores = _joint_main(dataset, gains)
  else:
    from tfharm.models import presets as model_presets  # pylint: disable=g-import-not-at-top
    scores = harmoniser_scores(model_presets.load(_WEIGHTS.value, "harmoniser"), dataset)
  text = json.dumps(scores, indent=2, sort_keys=True)
  print(text)
  if out:  # atomically: a killed run leaves the old file or none, never half a file
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tfharm-{os.getpid()}.tmp")
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, out)
  logging.info("scored %d examples", scores["num_examples"])


def _joint_main(dataset, gains) -> dict:
  import hashlib  # pylint: disable=g-import-not-at-top
  from tfharm import presets  # pylint: disable=g-import-not-at-top
  path = presets.weight_files({"joint_weights": _JOINT.value},
                              {"joint_weights": "joint"})["joint_weights"]
  model = joint_lib.load_joint(path)
  builder = pipeline.load_builder(_DATA_DIR.value, _CONFIG.value)
  roots = builder.info.metadata.get("roots")
  summary = joint_summary(joint_per_image(model, dataset, gate_gains=gains), roots)
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  return {"num_examples": summary["overall"]["num_examples"], **summary,
          "provenance": {"weights": _JOINT.value, "file": os.path.abspath(path), "sha256": digest,
                         "dataset": f"{pipeline.DATASET}/{_CONFIG.value} {builder.version}",
                         "split": _SPLIT.value, "roots": roots}}


if __name__ == "__main__":
  from tfharm.cli import program as _program  # pylint: disable=g-import-not-at-top
  _define_flags()
  _program.run(main)
