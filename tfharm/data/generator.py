"""Online training composites: a fresh (target, corruption) draw at every step, from COCO roots.

A built split holds one composite per object (or a few thousand distinct pairs); a network that
trains for hours sees each many times. `CompositeSource` instead decodes every training photo
once, keeps it in memory at the training size, and makes example i on demand from a generator
seeded by (seed, i), so the stream is endless, deterministic, and resumable from any position:
`dataset(start=i)` continues exactly where a run that consumed i examples stopped.

Corruptions (drawn per example with the given weights):
- `reinhard`: the builder's transfer of the object's L* onto a same-category reference object's
  L* mean/std (the reference from another training photo);
- `offset`: the authors' detector generator (Dolhasz et al. 2020, learning-to-observe
  `generators/classifier_generator.py`): L* scaled by 2**o, with o drawn in equal shares below,
  between and above the perceptual thresholds, so sub- and suprathreshold cases are controlled;
- `identity`: the real photo with the mask of an untouched object: what needs no change.
Every moved object goes through the builder's own `composites.move_lightness` (L* only, gamut
mapped by chroma, bounded), so online and built examples are made by one definition and carry
the same features (`pipeline.make_dataset`'s element spec). Only train2017 photos outside the
validation hold-out (`coco.is_held_out`) are used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from typing import Mapping, Sequence

from absl import logging
import numpy as np

from tfharm import colour
from tfharm.data import coco
from tfharm.data import composites

DEFAULT_WEIGHTS = (("reinhard", 0.5), ("offset", 0.3), ("identity", 0.2))


@dataclasses.dataclass(frozen=True)
class GeneratorOptions:
  """What the stream draws. Bounds and sizes default to the builder's (`CompositeOptions`)."""
  image_size: int = 256
  min_area_fraction: float = 0.01
  validation_fraction: float = 0.2  # must be the built dataset's: its validation photos are left out
  seed: int = 0
  weights: tuple[tuple[str, float], ...] = DEFAULT_WEIGHTS
  # offset: factors 2**o within [min, max]; the thresholds split sub/suprathreshold. [L] draws
  # over 0.1..10; here the range is the builder's plausibility bound, beyond which a factor's
  # composite would be rejected anyway.
  offset_min_factor: float = 1.0 / composites.PLAUSIBLE_RATIO
  offset_max_factor: float = composites.PLAUSIBLE_RATIO
  tau_neg: float = composites.TAU_NEG
  tau_pos: float = composites.TAU_POS
  max_chroma_change: float = 1.0
  max_luminance_ratio: float | None = composites.PLAUSIBLE_RATIO
  # Draws per example until one meets the bounds; after that the example is an identity one.
  max_attempts: int = 16
  categories: tuple[str, ...] | None = None  # category names to draw targets from (None: all)
  # At most this many training photos, the first in a fixed hash order of their ids (None: all):
  # nested subsets of one mix of roots, for the data-scaling curve.
  max_photos: int | None = None
  # Draw targets so that each root gives the same share of them (None/False: each object
  # equally, so the root with the most objects dominates the stream). The roots' photos differ
  # in kind (indoor COCO scenes, outdoor scene parts), and the test split is one kind.
  balance_roots: bool = False

  def __post_init__(self):
    names = [n for n, _ in self.weights]
    unknown = sorted(set(names) - set(composites.CORRUPTIONS))
    if unknown:
      raise ValueError(f"unknown corruptions {unknown}; choose from {composites.CORRUPTIONS}")
    if len(set(names)) != len(names):
      raise ValueError(f"a corruption is weighted twice: {names}")
    values = [w for _, w in self.weights]
    if any(w < 0 or not math.isfinite(w) for w in values) or sum(values) <= 0:
      raise ValueError(f"corruption weights must be finite, >= 0 and sum to more than 0: "
                       f"{dict(self.weights)}")
    if not 0 < self.offset_min_factor < self.tau_neg < 1 < self.tau_pos < self.offset_max_factor:
      raise ValueError("need 0 < offset_min_factor < tau_neg < 1 < tau_pos < offset_max_factor")

  @property
  def composite_options(self) -> composites.CompositeOptions:
    return composites.CompositeOptions(
        image_size=self.image_size, min_area_fraction=self.min_area_fraction,
        validation_fraction=self.validation_fraction, max_chroma_change=self.max_chroma_change,
        max_luminance_ratio=self.max_luminance_ratio)


def _balanced(roots: np.ndarray) -> np.ndarray:
  """Draw probabilities giving every root present the same total, equal within a root."""
  _, index, counts = np.unique(roots, return_inverse=True, return_counts=True)
  return 1.0 / (len(counts) * counts[index])


def _pick(rng: np.random.Generator, n: int, p: np.ndarray | None) -> int:
  """An index below n: uniform (the stream of unbalanced runs, unchanged) or by p."""
  return int(rng.integers(n)) if p is None else int(rng.choice(n, p=p))


def parse_weights(text: str) -> tuple[tuple[str, float], ...]:
  """'reinhard=0.5,offset=0.3,identity=0.2' -> (("reinhard", 0.5), ...)."""
  out = []
  for item in filter(None, (p.strip() for p in text.split(","))):
    name, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"corruption weight {item!r} is not name=value")
    out.append((name.strip(), float(value)))
  return tuple(out)


def training_photos(roots: Sequence[str], validation_fraction: float,
                    max_photos: int | None = None) -> coco.CocoSplit:
  """train2017 of every root that has it, merged, minus the validation hold-out; with
  `max_photos`, the first that many photos with objects in the order of `photo_rank`."""
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
  parts = [coco.load_split(r, "train", k) for k, r in enumerate(roots) if coco.has_split(r, "train")]
  if not parts:
    raise coco.AnnotationError(f"none of the roots {list(roots)} has train2017")
  merged = coco.merge_splits(parts, "train2017")
  split = coco.subset(merged, lambda i: not coco.is_held_out(i, validation_fraction))
  if max_photos is not None:
    if max_photos < 2:
      raise ValueError(f"max_photos must be at least 2, got {max_photos}")
    with_objects = sorted({o.image_id for o in split.objects.values()}, key=photo_rank)
    keep = set(with_objects[:max_photos])
    split = coco.subset(split, keep.__contains__)
  return split


def photo_rank(image_id: int) -> bytes:
  """A fixed pseudo-random order of photos, independent of roots and of the hold-out's hash."""
  return hashlib.sha256(f"tfharm-photo-order:{image_id}".encode()).digest()


def _toward(low: float, high: float, u: float, power: float = 3.0) -> float:
  """A value in [low, high], denser near `low` ([L]'s rand_exp with power 3)."""
  return low + (power**u - 1.0) / (power - 1.0) * (high - low)


@dataclasses.dataclass(frozen=True)
class _Object:
  id: int
  image_id: int
  label: str  # category name: pairing is by name across roots
  root: int
  mask: np.ndarray  # (S, S) bool
  stats: colour.LStatistics


class CompositeSource:
  """Training photos cached at the training size, and example i of the stream on demand."""

  def __init__(self, roots: Sequence[str], options: GeneratorOptions = GeneratorOptions()):
    self.options = options
    self._opts = options.composite_options
    split = training_photos(roots, options.validation_fraction, options.max_photos)
    wanted = None
    if options.categories is not None:
      wanted = {coco.normalise_name(c) for c in options.categories}
      unknown = sorted(wanted - {o.category for o in split.objects.values()})
      if unknown:
        raise ValueError(f"categories {unknown} name no object of the training photos")
    self.images: dict[int, np.ndarray] = {}
    self.objects: list[_Object] = []
    self.skips: dict[str, int] = {}
    labels = split.object_labels()
    for task in composites.image_tasks(split, self._opts):
      before = len(self.objects)
      try:
        rgb = composites.resize(coco.read_image(task.image_dir, task.image), options.image_size)
      except coco.SkipError as e:
        self._skip(e)
        continue
      lab = colour.u8_to_lab(rgb)
      for obj in task.objects:
        label = labels[obj.id][1]
        if wanted is not None and label not in wanted:
          continue
        try:
          mask = composites.object_mask(obj, task.image, options.image_size)
        except coco.SkipError as e:
          self._skip(e)
          continue
        self.objects.append(_Object(obj.id, obj.image_id, label, task.image.root, mask,
                                    colour.l_statistics(lab, mask)))
      if len(self.objects) > before:
        self.images[task.image.id] = rgb
    if not self.objects:
      raise ValueError(f"no eligible object in the training photos of {list(roots)}"
                       + (f" for categories {list(options.categories)}" if wanted else ""))
    by_label: dict[int, list[int]] = {}
    for i, o in enumerate(self.objects):
      by_label.setdefault(o.label, []).append(i)
    self.pools = [np.array([j for j in by_label[o.label] if self.objects[j].image_id != o.image_id],
                           np.int64) for o in self.objects]
    self.reinhard_targets = np.array([i for i, p in enumerate(self.pools) if len(p)], np.int64)
    names = [n for n, w in options.weights if w > 0]
    if "reinhard" in names:
      paired = {self.objects[i].label for i in self.reinhard_targets}
      lonely = sorted((wanted or set()) - paired)
      if lonely or not paired:
        raise ValueError(f"categories {lonely or 'all'} have eligible objects in fewer than two "
                         "training photos: no same-category reference for the reinhard "
                         "corruption (give it weight 0)")
    self._target_p = self._reinhard_p = None
    if options.balance_roots:
      self._target_p = _balanced(np.array([o.root for o in self.objects]))
      self._reinhard_p = _balanced(np.array([self.objects[i].root
                                             for i in self.reinhard_targets]))
    self._kinds = [n for n, w in options.weights if w > 0]
    total = sum(w for _, w in options.weights)
    self._p = np.array([w / total for n, w in options.weights if w > 0])
    self._lock = threading.Lock()
    self.fallbacks = 0  # examples that became identity after max_attempts rejected draws
    logging.info("composite source: %d photos, %d objects (%d with a reinhard reference); "
                 "skipped %s", len(self.images), len(self.objects), len(self.reinhard_targets),
                 self.skips or "nothing")

  def _skip(self, error: coco.SkipError) -> None:
    self.skips[error.reason] = self.skips.get(error.reason, 0) + 1
    logging.warning("composite source: skipped (%s) %s", error.reason, error.detail)

  @property
  def image_ids(self) -> set[int]:
    return set(self.images)

  def _offset_map(self, rng: np.random.Generator):
    o = self.options
    lo, tn, tp, hi = (math.log2(v) for v in (o.offset_min_factor, o.tau_neg, o.tau_pos,
                                             o.offset_max_factor))
    case, u = int(rng.integers(3)), float(rng.random())
    # [ours] both suprathreshold sides dense near their threshold, where judging is hard ([L]
    # draws its negatives dense near the 0.1 extreme instead).
    offset = {0: tn - _toward(0.0, tn - lo, u), 1: tn + u * (tp - tn), 2: _toward(tp, hi, u)}[case]
    factor = 2.0**offset
    return (lambda l: l * factor), factor

  def _draw(self, rng: np.random.Generator):
    """One draw: (kind, target index, reference index or -1, moved object, reference stats)."""
    kind = self._kinds[int(rng.choice(len(self._kinds), p=self._p))]
    if kind == "reinhard":
      t = int(self.reinhard_targets[_pick(rng, len(self.reinhard_targets), self._reinhard_p)])
      r = int(self.pools[t][rng.integers(len(self.pools[t]))])
      target, reference = self.objects[t], self.objects[r]
      real = self.images[target.image_id]
      moved = composites.move_lightness(real, target.mask,
                                        composites.reinhard_map(target.stats, reference.stats))
      return kind, t, r, moved, reference.stats
    t = _pick(rng, len(self.objects), self._target_p)
    target = self.objects[t]
    real = self.images[target.image_id]
    if kind == "offset":
      l_map, factor = self._offset_map(rng)
      moved = composites.move_lightness(real, target.mask, l_map)
      return kind, t, -1, moved, colour.LStatistics(target.stats.mean * factor,
                                                   target.stats.std * factor)
    return kind, t, t, composites.MovedObject(real, 0.0, 1.0, 0.0), target.stats

  def example(self, index: int) -> dict[str, np.ndarray]:
    """Example `index` of the stream: uint8 images, the TFDS build's scalar features."""
    rng = np.random.default_rng([self.options.seed, int(index)])
    for _ in range(self.options.max_attempts):
      kind, t, r, moved, ref_stats = self._draw(rng)
      if kind == "identity" or composites.rejection(moved, self._opts) is None:
        break
    else:
      with self._lock:
        self.fallbacks += 1
      t = int(rng.integers(len(self.objects)))
      kind, r, ref_stats = "identity", t, self.objects[t].stats
      moved = composites.MovedObject(self.images[self.objects[t].image_id], 0.0, 1.0, 0.0)
    target = self.objects[t]
    reference = self.objects[r] if r >= 0 else None
    return {
        "composite": moved.composite,
        "real": self.images[target.image_id],
        "mask": (target.mask.astype(np.uint8) * 255)[..., None],
        "category": np.int64(coco.class_index(target.label)),
        "root": np.int64(target.root),
        "image_id": np.int64(target.image_id),
        "object_id": np.int64(target.id),
        "reference_image_id": np.int64(reference.image_id if reference else -1),
        "reference_object_id": np.int64(reference.id if reference else -1),
        "target_l_mean": np.float32(target.stats.mean),
        "target_l_std": np.float32(target.stats.std),
        "reference_l_mean": np.float32(ref_stats.mean),
        "reference_l_std": np.float32(ref_stats.std),
        "corruption": np.int64(composites.CORRUPTIONS.index(kind)),
        "l_clipped_fraction": np.float32(moved.l_clipped_fraction),
        "luminance_ratio": np.float32(moved.luminance_ratio),
        "chroma_change": np.float32(moved.chroma_change),
    }

  def dataset(self, start: int = 0, *, batch_size: int = 8, augment: bool = True,
              seed: int = 0, shard: tuple[int, int] = (0, 1)):
    """Batches of examples start, start+1, ... in `pipeline.make_dataset`'s element spec (float
    images in [0, 1], mask in {0, 1}); endless. Augmentation as make_dataset's, seeded by
    (seed, example index), so the batches depend only on where the stream starts.

    shard=(k, n): worker k of n makes only its share, examples start+k, start+k+n, ...; the n
    shards together are the examples from `start` on, so `start` (the checkpoint's
    data_position) counts every worker's examples and a resumed cluster continues the stream,
    whatever its number of workers."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tfharm.data import pipeline  # pylint: disable=g-import-not-at-top

    index, count = shard
    if not 0 <= index < count:
      raise ValueError(f"shard {shard}: need 0 <= index < count")

    s = self.options.image_size
    spec = _feature_spec(s)
    keys = list(spec)

    def make(j):  # one example() per index: it is the whole cost of the stream
      ex = self.example(int(j))
      return tuple(ex[k] for k in keys)

    def load(i):
      values = tf.numpy_function(make, [i], [tf.as_dtype(spec[k][1]) for k in keys],
                                 stateful=False)
      return {k: tf.ensure_shape(v, spec[k][0]) for k, v in zip(keys, values)}

    ds = tf.data.Dataset.range(start + index, 2**62, count)
    ds = ds.map(lambda i: (i, load(i)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda i, ex: (i, pipeline.to_float(ex)), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
      ds = ds.map(lambda i, ex: pipeline.augment_aligned(ex, tf.stack([tf.cast(seed, tf.int64), i])),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
      ds = ds.map(lambda i, ex: ex)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _feature_spec(s: int) -> Mapping[str, tuple[tuple[int, ...], type]]:
  spec = {"composite": ((s, s, 3), np.uint8), "real": ((s, s, 3), np.uint8),
          "mask": ((s, s, 1), np.uint8)}
  for k in ("category", "root", "image_id", "object_id", "reference_image_id", "reference_object_id",
            "corruption"):
    spec[k] = ((), np.int64)
  for k in ("target_l_mean", "target_l_std", "reference_l_mean", "reference_l_std",
            "l_clipped_fraction", "luminance_ratio", "chroma_change"):
    spec[k] = ((), np.float32)
  return spec
