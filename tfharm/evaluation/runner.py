"""The evaluation graph and loop: every method and metric on every example, one tf.function.

Per batch of `make_dataset` examples (composite, real, mask in [0, 1], S x S):
  detector once -> 2-channel map -> soft mask max(p_neg, p_pos) and its binarisation;
  harmoniser once on a 4B batch (masks: ground truth, soft, binarised, empty);
  pixel metrics (MSE, PSNR, fMSE, SSIM) on all methods stacked (kB images);
  LPIPS: the ground truth's features once, every method's images through the trunk once;
  detector localisation (IoU, F1, AP) of the soft mask against the ground-truth mask.
Methods are named as in the paper's Table 1 (C_s = harmoniser_gt_mask, C_p =
detector_harmoniser); harmonised outputs are the network's raw output at S (paper section 3),
the `*_gated` rows paste it into the composite through the mask, C + m * (H - C), and the
`*_l_moments` rows are what tfharm returns by default (harmonise_any_size, the served model):
the composite's object moved onto the prediction's L* mean/std (tfharm.models.correction).
Every system scored (tfharm.systems: by default all of them, so the default system, the joint
model, is in every table) adds its rows through `System.rows`; this graph only stacks them and
scores them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import re
import time
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf

from tfharm import colour
from tfharm import presets
from tfharm import systems
from tfharm.data import pipeline as data_pipeline
from tfharm.evaluation.methods import (  # pylint: disable=unused-import  (re-exported)
    DETECTOR_METRICS, IMAGE_METRICS, JOINT_MASK_FREE_METHODS, JOINT_METHODS, LOWER_IS_BETTER,
    METHODS, REAL_PHOTO_METHODS, detectors_in, methods_in)
from tfharm.metrics import image as image_metrics
from tfharm.metrics import localisation
from tfharm.metrics import lpips as lpips_lib
from tfharm.metrics.device import default_jit_compile
from tfharm.models import abstention
from tfharm.models import detector as detector_lib
from tfharm.models import detector_labels

ID_FIELDS = ("image_id", "object_id", "reference_image_id", "reference_object_id")

GATE_256 = presets.GATE_256


def load_gate(path: str | None, weights_sha256: dict[str, str]) -> tuple[abstention.Gate, str | None]:
  """The gate for these weights; EvaluationError when a given or default file does not match."""
  if path is None:  # the shipped gate, only for the weights it was calibrated for
    if not os.path.exists(GATE_256):
      return abstention.Gate(), None
    try:
      return abstention.load_gate(GATE_256, weights_sha256), GATE_256
    except ValueError as e:
      logging.warning("not using the shipped gate: %s", e)
      return abstention.Gate(), None
  try:
    return abstention.load_gate(path, weights_sha256), os.path.abspath(path)
  except (OSError, ValueError, KeyError) as e:
    raise EvaluationError(f"gate file: {e}") from e


class EvaluationError(Exception):
  """Bad input to the evaluation (data, weights, output dir), with what to do about it."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What to evaluate and where to write it; weights are paths or preset names (tfharm.presets),
  None means the default presets."""
  data_dir: str
  output_dir: str
  dataset_config: str = "256"
  split: str = "test"
  detector_weights: str | None = None
  harmoniser_weights: str | None = None
  joint_weights: str | None = None  # the joint model's file or preset (default: joint_256)
  # The systems scored (tfharm.systems names); None: every one. The pipeline always is: its
  # rows are the paper's Table 1 and the figures'. ("pipeline",) scores it alone.
  systems: tuple[str, ...] | None = None
  max_examples: int | None = None
  batch_size: int = 8
  lpips_net: str = "alex"
  jit_compile: bool | None = None  # None: tfharm.metrics.device.default_jit_compile()
  threshold: float = 0.5  # binarised mask and IoU/F1
  # The abstaining rows' gate (scripts/calibrate_gate.py); None: tfharm/presets/gate_256.json
  # when it exists (it must match the weights), else no gate.
  gate_file: str | None = None
  real_photos: bool = True  # also score the split's unedited photos (do-no-harm)
  overwrite: bool = False
  progress: bool = True

  def weights(self) -> dict[str, str | None]:
    """{weight flag: value} of every system (tfharm.systems.weight_flags)."""
    return {f: getattr(self, f, None) for f in systems.weight_flags()}


# --------------------------------------------------------------------------- systems
def scored_systems(cfg: EvalConfig) -> tuple[str, ...]:
  """The paper's pipeline (its rows are the paper's Table 1), then the other systems of
  `cfg.systems` (default: all, so the default system's rows are in every table without a
  flag). EvaluationError for an unknown name, or for weights given to a system left out (the
  user would get a table without the model they named)."""
  wanted = tuple(systems.SYSTEMS) if cfg.systems is None else tuple(cfg.systems)
  unknown = [name for name in wanted if name not in systems.SYSTEMS]
  if unknown:
    raise EvaluationError(f"unknown system {', '.join(map(repr, unknown))} in --systems; "
                          f"the systems are {', '.join(systems.SYSTEMS)}")
  scored = ("pipeline",) + tuple(name for name in systems.SYSTEMS
                                 if name != "pipeline" and name in wanted)
  given = cfg.weights()
  for name, spec in systems.SYSTEMS.items():
    named = [f"--{flag}" for flag in spec.weights if given.get(flag)]
    if name not in scored and named:
      raise EvaluationError(f"{' and '.join(named)} given, but --systems={','.join(wanted)} "
                            f"leaves out {name}; add {name} to --systems or drop "
                            f"{' and '.join(named)}")
  return scored


def open_system(name: str, cfg: EvalConfig, image_size: int):
  """(system at S = image_size, {weight flag: file}); EvaluationError for missing files, a
  file its network cannot take, or a preset of another kind."""
  spec = systems.spec(name)
  given = {flag: value for flag, value in cfg.weights().items() if flag in spec.weights}
  try:
    files = systems.weight_files(name, given)
    return systems.load(name, files, image_size=image_size), files
  except (ValueError, RuntimeError, FileNotFoundError) as e:  # RuntimeError: weights.WeightsError
    raise EvaluationError(str(e)) from e


# --------------------------------------------------------------------------- graph
class EvalGraph:
  """The batched evaluation graph; `step(composite, real, mask)` is one tf.function.

  Returns {"metrics": {method: {metric: (B,)}}, <detector>: {metric: (B,)} per system,
  "extra": {"mask_fraction", "luminance_ratio": (B,)}, "images": {method: (B, S, S, 3),
  "detection": (B, S, S, 2), "soft_mask": (B, S, S, 1)}} (the detection of the first system).
  """

  def __init__(self, scored: list, lpips_model: lpips_lib.LPIPS,
               threshold: float = 0.5, jit_compile: bool | None = None,
               gate: abstention.Gate = abstention.Gate()):
    self.systems, self.lpips = list(scored), lpips_model
    self.specs = [systems.spec(s.SYSTEM) for s in self.systems]
    self.methods = tuple(row for spec in self.specs for row in spec.rows)
    self.threshold = float(threshold)
    self.gate = gate
    self.jit_compile = default_jit_compile() if jit_compile is None else bool(jit_compile)
    self.step = tf.function(self.compute, jit_compile=self.jit_compile, reduce_retracing=True)
    self.real_photo_step = tf.function(self.compute_real_photos, jit_compile=self.jit_compile,
                                       reduce_retracing=True)

  def compute_real_photos(self, photo: tf.Tensor) -> dict:
    """Unedited (B, S, S, 3) photos through each system's mask-free rows: PSNR of output vs
    input, and the fraction of pixels its detection fires on (soft mask > 0.5)."""
    out = {}
    for system, spec in zip(self.systems, self.specs):
      rows = system.rows(photo, None, self.threshold, self.gate)
      for name in spec.photo_rows:
        mse = image_metrics.mse(rows["images"][name], photo, value_range=(0.0, 1.0))
        out[f"{name}/psnr"] = image_metrics.psnr_from_mse(mse, max_db=100.0)
      soft = detector_lib.soft_mask(rows["detection"])
      out[f"{spec.detector}/fire_fraction"] = tf.reduce_mean(tf.cast(soft > 0.5, tf.float32),
                                                             axis=[1, 2, 3])
      out.update(rows["values"])
    return out

  def compute(self, composite: tf.Tensor, real: tf.Tensor, mask: tf.Tensor) -> dict:
    """Pure TF; composite/real (B, S, S, 3) and mask (B, S, S, 1), all in [0, 1]."""
    b = tf.shape(composite)[0]
    images, detectors, first = {}, {}, None
    for system, spec in zip(self.systems, self.specs):
      rows = system.rows(composite, mask, self.threshold, self.gate)
      images.update(rows["images"])
      soft = detector_lib.soft_mask(rows["detection"])  # (B, S, S, 1)
      detectors[spec.detector] = localisation.localisation_metrics(soft, mask, self.threshold)
      first = first or {"detection": rows["detection"], "soft_mask": soft}

    k = len(self.methods)
    stacked = tf.concat([images[m] for m in self.methods], axis=0)  # (kB, S, S, 3)
    pixel = image_metrics.image_metrics(stacked, tf.tile(real, [k, 1, 1, 1]),
                                        tf.tile(mask, [k, 1, 1, 1]), value_range=(0.0, 1.0))
    target = self.lpips.normalised_features(real * 2.0 - 1.0)  # ground truth: once
    pixel["lpips"] = self.lpips.distance_to_features(
        stacked * 2.0 - 1.0, [tf.tile(f, [k, 1, 1, 1]) for f in target])  # (kB,)
    metrics = {m: {name: pixel[name][i * b:(i + 1) * b] for name in IMAGE_METRICS}
               for i, m in enumerate(self.methods)}
    return {
        "metrics": metrics,
        **detectors,
        "extra": {"mask_fraction": tf.reduce_mean(mask, axis=[1, 2, 3]),
                  "luminance_ratio": detector_labels.luminance_ratio(composite, real, mask)},
        "images": {**images, **first},
    }


# --------------------------------------------------------------------------- data
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


# --------------------------------------------------------------------------- loop
@dataclasses.dataclass
class Results:
  """Per-image values (numpy, one entry per example) and run information."""
  per_image: dict[str, np.ndarray]  # "method/metric", "detector/metric", ids, category, ...
  category_names: list[str]
  timing: dict[str, float]
  num_examples: int
  images: dict[str, np.ndarray] | None = None  # uint8, when run(keep_images=True)

  def example(self, i: int) -> dict[str, np.ndarray]:
    """The figure images of example i as float [0, 1] (needs keep_images=True)."""
    return {k: v[i].astype(np.float32) / 255.0 for k, v in self.images.items()}


# Up to this many examples, the figure images are kept from the main pass (~1 MB each as
# uint8); above it, the few chosen examples are recomputed in a second pass instead.
KEEP_IMAGES_MAX_EXAMPLES = 64
_KEPT_IMAGES = ("composite", "harmoniser_gt_mask", "detector_harmoniser", "detection")


def _to_uint8(x) -> np.ndarray:
  return colour.to_uint8(np.asarray(x))


def run(graph: EvalGraph, dataset: tf.data.Dataset, num_examples: int,
        category_names: list[str], progress: bool = True, keep_images: bool = False) -> Results:
  """Scores every example of `dataset`; a tqdm bar shows examples/s. keep_images: also
  return the figure images of every example (uint8) in `Results.images`."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  columns: dict[str, list[np.ndarray]] = {}
  kept: dict[str, list[np.ndarray]] = {}
  bar = tqdm(total=num_examples, unit="ex", disable=not progress, dynamic_ncols=True,
             desc="evaluating")
  start = time.perf_counter()
  first_batch, first_batch_size = None, 0
  data_wait = 0.0
  iterator = iter(dataset)
  while True:
    t = time.perf_counter()
    try:
      batch = next(iterator)
    except StopIteration:
      break
    data_wait += time.perf_counter() - t
    out = graph.step(batch["composite"], batch["real"], batch["mask"])
    values = {f"{m}/{k}": v for m, d in out["metrics"].items() for k, v in d.items()}
    for name in detectors_in(out):
      values.update({f"{name}/{k}": v for k, v in out[name].items()})
    values.update(out["extra"])
    values.update({k: batch[k] for k in ID_FIELDS + ("category",)})
    for k, v in values.items():
      columns.setdefault(k, []).append(np.asarray(v))  # blocks until the batch is done
    if keep_images:
      for k in _KEPT_IMAGES:
        kept.setdefault(k, []).append(_to_uint8(out["images"][k]))
      kept.setdefault("real", []).append(_to_uint8(batch["real"]))
      kept.setdefault("mask", []).append(_to_uint8(batch["mask"]))
    if first_batch is None:
      first_batch = time.perf_counter() - start
      first_batch_size = int(batch["composite"].shape[0])
    bar.update(int(batch["composite"].shape[0]))
  bar.close()
  total = time.perf_counter() - start
  per_image = {k: np.concatenate(v) for k, v in columns.items()}
  n = len(per_image["composite/mse"]) if per_image else 0
  return Results(per_image, category_names, {
      "loop_s": total, "first_batch_s (includes tracing)": first_batch or 0.0,
      "data_wait_s": data_wait, "examples_per_s": n / total if total > 0 else 0.0,
      # Without the first batch (graph tracing / XLA compilation): the rate of a long run.
      "examples_per_s_after_first_batch": ((n - first_batch_size) / (total - first_batch)
                                           if n > first_batch_size else None)}, n,
      {k: np.concatenate(v) for k, v in kept.items()} if keep_images else None)


def run_real_photos(graph: EvalGraph, dataset: tf.data.Dataset,
                    batch_size: int) -> dict[str, np.ndarray]:
  """Every distinct photo of the split (its `real` image, by image id) through
  `graph.real_photo_step`; per-photo arrays, plus "image_id"."""
  seen, pending, columns = set(), [], {}

  def flush():
    out = graph.real_photo_step(tf.stack([p for _, p in pending]))
    columns.setdefault("image_id", []).append(np.array([i for i, _ in pending], np.int64))
    for k, v in out.items():
      columns.setdefault(k, []).append(np.asarray(v))
    pending.clear()

  for batch in dataset:
    for image_id, photo in zip(batch["image_id"].numpy(), batch["real"]):
      if int(image_id) not in seen:
        seen.add(int(image_id))
        pending.append((int(image_id), photo))
      if len(pending) == batch_size:
        flush()
  if pending:
    flush()
  return {k: np.concatenate(v) for k, v in columns.items()}


def select_examples(per_image: dict[str, np.ndarray], metric: str = "mse") -> dict[str, int]:
  """Indices of the best, median and worst examples by C_p - C_s on `metric` (best = where
  the detector's mask helps most / hurts least relative to the ground-truth mask)."""
  diff = per_image[f"detector_harmoniser/{metric}"] - per_image[f"harmoniser_gt_mask/{metric}"]
  if not LOWER_IS_BETTER[metric]:
    diff = -diff
  order = np.argsort(np.where(np.isfinite(diff), diff, np.inf), kind="stable")
  return {"best": int(order[0]), "median": int(order[len(order) // 2]), "worst": int(order[-1])}


def gather_examples(graph: EvalGraph, dataset: tf.data.Dataset, indices: list[int]) -> dict:
  """Re-reads the dataset (same order) and recomputes the images of the chosen examples."""
  wanted = sorted(set(indices))
  found: dict[int, dict[str, np.ndarray]] = {}
  offset = 0
  for batch in dataset:
    b = int(batch["composite"].shape[0])
    rows = [i - offset for i in wanted if offset <= i < offset + b]
    if rows:
      pick = lambda x: tf.gather(x, rows)
      out = graph.step(pick(batch["composite"]), pick(batch["real"]), pick(batch["mask"]))
      for j, r in enumerate(rows):
        item = {k: np.asarray(out["images"][k][j]) for k in _KEPT_IMAGES}
        item["real"] = np.asarray(batch["real"][r])
        item["mask"] = np.asarray(batch["mask"][r])
        found[offset + r] = item
    offset += b
    if offset > wanted[-1]:
      break
  return {i: found[i] for i in indices}


def environment() -> dict[str, str]:
  gpus = tf.config.list_physical_devices("GPU")
  return {"tensorflow": tf.__version__, "python": platform.python_version(),
          "device": "GPU" if gpus else f"CPU ({os.cpu_count()} cores)",
          "machine": platform.machine(), "load_average": " ".join(
              f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""}
