"""Quick scores: one network's means on a split, without the full evaluation's LPIPS, tables
and figures; what checkpoints and recipes are chosen on (`python -m tfharm.validation`,
scripts/select_checkpoint.py, scripts/ship_*.py, the shipped-weight tests).

- `harmoniser_scores`: MSE / PSNR / fMSE / SSIM of these images, each against the real photo:
  `composite` (no harmonisation), `harmoniser_gt_mask` (C_s, the network's output as it is),
  `harmoniser_gt_mask_gated` (the same, pasted into the composite through the mask),
  `harmoniser_gt_mask_l_moments` (what `harmonise_any_size` returns by default: the composite's
  object moved onto the L* mean/std of the prediction, tfharm.models.correction),
  `harmoniser_empty_mask` (does the network change images it should leave alone?) and
  `harmoniser_empty_mask_l_moments`, and how far the last two moved away from their input
  (`empty_mask_change`, `empty_mask_change_l_moments`).
- `joint_scores`: the same metrics of the joint model's rows (the pixels `tfharm.eval` scores).
- `joint_per_image` and `joint_summary`: the joint model's per-image PSNR gains over the
  composite (mask-free, and through the true mask), their means with standard errors, the shares
  improved / worse by > 1 dB and the detection's AP / IoU, overall and per root of the build
  (what scripts/scaling_curve.py plots).
- `detector_scores`: the detector task's own metrics.

Every mean leaves out NaN entries (a metric that does not apply to an image) through
tfharm.metrics.aggregate, as the full evaluation does.
"""

from __future__ import annotations

import sys
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
import tqdm

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

# The joint model's per-image rows: what tfharm.harmonise returns at S (mask-free), and the same
# L* change through the true mask (the reference the mask-free row is judged against).
JOINT_ROWS = {"mask_free": "joint_l_moments", "gt_mask": "joint_gt_mask"}


def _collect(score: Callable, dataset: tf.data.Dataset, fields=()) -> dict[str, list]:
  """Per-batch numpy values of `score(batch)` ({name: (B,)}, or {row: {metric: (B,)}} flattened
  to (row, metric) keys) and of the batch's own `fields`, with a progress bar."""
  chunks: dict = {}
  # On stderr, and only on a terminal: stdout carries the command's JSON, and a log file would
  # collect every redraw of the bar.
  bar = tqdm.tqdm(unit="batch", file=sys.stderr, disable=None, dynamic_ncols=True)
  for batch in dataset:
    for k, v in score(batch).items():
      for m, x in v.items() if isinstance(v, dict) else [(None, v)]:
        chunks.setdefault(k if m is None else (k, m), []).append(x.numpy())
    for k in fields:
      if k in batch:
        chunks.setdefault(k, []).append(batch[k].numpy())
    bar.update(1)
  bar.close()
  return chunks


def _row_means(score: Callable, dataset: tf.data.Dataset) -> dict:
  """{"num_examples", row: {metric: mean}} of `score`'s per-example {row: {metric: (B,)}}."""
  chunks = _collect(score, dataset)
  out: dict = {"num_examples": int(sum(len(c) for c in next(iter(chunks.values()))))}
  for (row, metric), values in chunks.items():
    out.setdefault(row, {})[metric] = aggregate.nanmean(values)
  return out


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

  return _row_means(score, dataset)


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

  return _row_means(score, dataset)


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

  chunks = _collect(score, dataset, fields=("root", "corruption", "image_id"))
  return {k: np.concatenate(v) for k, v in chunks.items()}


def joint_summary(per_image: dict, root_names=None) -> dict:
  """Means with standard errors of the PSNR gains over the composite (paired, per image), the
  shares improved / worse by > 1 dB, and AP / IoU: overall and per root."""
  rows = [k[len("psnr_"):] for k in per_image if k.startswith("psnr_") and k != "psnr_composite"]

  def summarise(keep):
    out = {"num_examples": int(keep.sum()),
           "psnr_composite": aggregate.mean_se(per_image["psnr_composite"][keep])}
    for k in rows:
      gain = per_image[f"psnr_{k}"][keep] - per_image["psnr_composite"][keep]
      out[f"psnr_{k}"] = aggregate.mean_se(per_image[f"psnr_{k}"][keep])
      out[f"gain_{k}"] = aggregate.mean_se(gain)
      out[f"improved_{k}"] = float(np.mean(gain > 0)) if len(gain) else float("nan")
      out[f"worse_by_1db_{k}"] = float(np.mean(gain < -1.0)) if len(gain) else float("nan")
    out["ap"] = aggregate.mean_se(per_image["ap"][keep])
    out["iou"] = aggregate.mean_se(per_image["iou"][keep])
    return out

  everything = np.ones(len(per_image["psnr_composite"]), bool)
  result = {"overall": summarise(everything)}
  if "root" in per_image:
    for r in sorted(set(int(v) for v in per_image["root"])):
      name = root_names[r] if root_names and r < len(root_names) else str(r)
      result[f"root:{name}"] = summarise(per_image["root"] == r)
  return result


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

  chunks = _collect(score, dataset)
  out: dict = {"num_examples": int(sum(len(v) for v in chunks["pixel_accuracy"]))}
  for metric, values in chunks.items():
    out[metric] = aggregate.nanmean(values)
    out[f"{metric}_count"] = int(sum(np.count_nonzero(~np.isnan(c)) for c in values))
  return out
