"""The evaluation loop: the graph over every example into per-image columns (with timing),
the split's unedited photos, and the figure examples (best / median / worst)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf

from tfharm import colour
from tfharm.evaluation.graph import EvalGraph
from tfharm.evaluation import methods
from tfharm.evaluation.methods import LOWER_IS_BETTER, detectors_in

# The per-image columns that identify a composite: its photo, object and reference.
ID_FIELDS = ("image_id", "object_id", "reference_image_id", "reference_object_id")


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


def kept_images(graph: EvalGraph) -> tuple[str, ...]:
  """The figure images of an example: the composite, the two rows the examples compare (the
  pipeline's C_p and C_s when it is scored; methods.compared_system) and their detection."""
  return (methods.COMPOSITE, *methods.compared_system(graph.methods).compared, "detection")


def _to_uint8(x) -> np.ndarray:
  return colour.to_uint8(np.asarray(x))


def run(graph: EvalGraph, dataset: tf.data.Dataset, num_examples: int,
        category_names: list[str], progress: bool = True, keep_images: bool = False) -> Results:
  """Scores every example of `dataset`; a tqdm bar shows examples/s. keep_images: also
  return the figure images of every example (uint8) in `Results.images`."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  columns: dict[str, list[np.ndarray]] = {}
  kept: dict[str, list[np.ndarray]] = {}
  kept_keys = kept_images(graph) if keep_images else ()
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
      for k in kept_keys:
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
  """Indices of the best, median and worst examples by the difference of the two rows the
  figures compare (methods.compared_system: C_p - C_s when the pipeline was scored) on `metric`
  (best = where the system's own mask helps most / hurts least relative to the ground-truth
  mask)."""
  own, given = methods.compared_system(per_image).compared
  diff = per_image[f"{own}/{metric}"] - per_image[f"{given}/{metric}"]
  if not LOWER_IS_BETTER[metric]:
    diff = -diff
  order = np.argsort(np.where(np.isfinite(diff), diff, np.inf), kind="stable")
  return {"best": int(order[0]), "median": int(order[len(order) // 2]), "worst": int(order[-1])}


def gather_examples(graph: EvalGraph, dataset: tf.data.Dataset, indices: list[int]) -> dict:
  """Re-reads the dataset (same order) and recomputes the images of the chosen examples."""
  wanted = sorted(set(indices))
  found: dict[int, dict[str, np.ndarray]] = {}
  offset, keys = 0, kept_images(graph)
  for batch in dataset:
    b = int(batch["composite"].shape[0])
    rows = [i - offset for i in wanted if offset <= i < offset + b]
    if rows:
      pick = lambda x: tf.gather(x, rows)
      out = graph.step(pick(batch["composite"]), pick(batch["real"]), pick(batch["mask"]))
      for j, r in enumerate(rows):
        item = {k: np.asarray(out["images"][k][j]) for k in keys}
        item["real"] = np.asarray(batch["real"][r])
        item["mask"] = np.asarray(batch["mask"][r])
        found[offset + r] = item
    offset += b
    if offset > wanted[-1]:
      break
  return {i: found[i] for i in indices}
