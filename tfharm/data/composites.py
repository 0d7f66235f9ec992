"""Luminance composites from COCO: same-category pairing and Reinhard transfer on L* only.

The build runs in two passes so that every JPEG is decoded once per pass:
1. `object_statistics`: per image, the L* mean/std of each eligible object at the output size.
2. `plan_composites` pairs targets with references (pure bookkeeping, deterministic from the seed),
   then `image_composites` decodes each target image once and writes all of its composites.
Both passes are plain functions of one image, so a multiprocessing pool or a Beam pipeline can
run them. No TensorFlow here (see coco.py).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Mapping

import cv2
import numpy as np

from tfharm import colour
from tfharm.data import coco

# Paper scale (Dolhasz et al., VISAPP 2020): 68128 composites in total.
PAPER_NUM_COMPOSITES = 68128
_SPLIT_CODES = {"train": 0, "test": 1, "validation": 2}
# What changed the object, in the order of the `corruption` ClassLabel (shared with the online
# generator): the paper's Reinhard transfer, the authors' detector generator's L* factor, none.
CORRUPTIONS = ("reinhard", "offset", "identity")
# The luminance ratio's epsilon, in L* units (as tfharm.models.detector_labels): a black object
# gives a ratio near 1, not 0/0.
RATIO_EPSILON = 1e-3
# The perceptual thresholds on the ratio of mean L* (composite over real) inside the object:
# below TAU_NEG it looks darker than the real object, above TAU_POS brighter. They are the means
# of the per-image 2AFC thresholds of Dolhasz et al. (learning-to-observe data/dataset_fold_*.csv).
# The one definition: tfharm.models.detector_labels.LabelConfig and the online generator take
# their defaults from here.
TAU_NEG, TAU_POS = 0.845, 1.174
# The plausibility bound of the one-per-object configs (`max_luminance_ratio`): see the dataset
# README for the distribution it cuts.
PLAUSIBLE_RATIO: float | None = 3.0


@dataclasses.dataclass(frozen=True)
class CompositeOptions:
  """What a build makes. `num_composites=None`: one composite per eligible target object."""
  image_size: int = 256
  # 1 % of the image: smaller objects shrink to a few pixels at 256x256, where neither the L*
  # statistics nor a human observer's judgement of the shift mean much.
  min_area_fraction: float = 0.01
  seed: int = 0
  num_composites: int | None = None
  png_compression: int = 1  # zlib level: the files are lossless at any level; 1 is fastest.
  # Whole train2017 photos held back as the validation split (coco.is_held_out).
  validation_fraction: float = 0.2
  # An L*-only corruption: a composite whose a* or b* moved by more than this on average inside
  # the object (the 8-bit rounding and the gamut mapping's chroma loss) is not made.
  max_chroma_change: float = 1.0
  # Optional plausibility bound: the achieved mean-L* ratio must lie in [1/r, r] (None: off).
  max_luminance_ratio: float | None = None
  # References tried per target, in a seeded order, until one meets both bounds (one composite
  # per target); the paper configs try exactly their planned pair.
  max_reference_attempts: int = 8
  # Composites per validation target in the one-per-target configs, each from its own share of
  # the target's references: more held-back composites without more held-back photos, so the
  # split separates checkpoints ~0.1 dB apart (its standard error is reported).
  validation_references: int = 1


@dataclasses.dataclass(frozen=True)
class CompositeSpec:
  """One composite: the target object whose L* moves and the references to try, in order.

  One-per-target plans carry several candidates (the first that meets the chroma and ratio
  bounds is used); the paper plans carry exactly one, so every (target, reference) pair of a
  split is emitted at most once.
  """
  target_id: int
  target_image_id: int
  candidates: tuple[tuple[int, int], ...]  # (reference object id, its image id)
  index: int  # k-th composite of this target
  category: str  # the category's name (coco.class_index gives the ClassLabel)

  @property
  def key(self) -> str:
    return f"{self.target_image_id:012d}_{self.target_id}_{self.index}"


@dataclasses.dataclass(frozen=True)
class PlanSummary:
  """How many composites a split asked for and could have: a shortfall is recorded, never padded."""
  requested: int | None
  distinct_pairs: int
  planned: int

  @property
  def shortfall(self) -> int:
    return max(0, (self.requested or 0) - self.planned)


def eligible_objects(split: coco.CocoSplit, options: CompositeOptions) -> dict[int, list[int]]:
  """Non-crowd objects covering at least `min_area_fraction` of their image, by image id."""
  by_image: dict[int, list[int]] = collections.defaultdict(list)
  for obj in sorted(split.objects.values(), key=lambda o: o.id):
    image = split.images[obj.image_id]
    if not obj.iscrowd and obj.area >= options.min_area_fraction * image.height * image.width:
      by_image[obj.image_id].append(obj.id)
  return dict(sorted(by_image.items()))


def resize(array: np.ndarray, size: int) -> np.ndarray:
  """To size x size, ignoring aspect (the iHarmony4 convention); area filter when shrinking."""
  h, w = array.shape[:2]
  shrink = h >= size and w >= size
  return cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclasses.dataclass(frozen=True)
class ImageTask:
  """Everything a worker needs for one image, and nothing more: a full COCO index is too big to
  ship to every process, so a task carries just its image and its eligible objects."""
  image_dir: str
  image: coco.ImageRecord
  objects: tuple[coco.ObjectRecord, ...]

  def object(self, object_id: int) -> coco.ObjectRecord:
    return next(o for o in self.objects if o.id == object_id)


def image_tasks(split: coco.CocoSplit, options: CompositeOptions) -> list[ImageTask]:
  """One task per image that has at least one eligible object, in image-id order."""
  return [ImageTask(split.images[image_id].image_dir or split.image_dir, split.images[image_id],
                    tuple(split.objects[i] for i in object_ids))
          for image_id, object_ids in eligible_objects(split, options).items()]


def object_mask(obj: coco.ObjectRecord, image: coco.ImageRecord, size: int) -> np.ndarray:
  """The object's mask at size x size, bool; SkipError if nothing is left after resizing."""
  full = coco.decode_mask(obj, image.height, image.width).astype(np.float32)
  mask = resize(full, size) >= 0.5
  if not mask.any():
    raise coco.SkipError("empty_mask", f"annotation {obj.id} (image {obj.image_id}): no pixel "
                         f"left at {size}x{size}")
  return mask


@dataclasses.dataclass
class ImageStatistics:
  """Pass-1 result for one image: L* statistics of its usable objects and the skips it caused."""
  image_id: int
  stats: dict[int, colour.LStatistics]
  skips: list[tuple[str, str]]  # (reason, detail)


def object_statistics(task: ImageTask, options: CompositeOptions) -> ImageStatistics:
  """L* mean/std of each object at the output size. Never raises on bad data: it records skips."""
  result = ImageStatistics(task.image.id, {}, [])
  try:
    rgb = resize(coco.read_image(task.image_dir, task.image), options.image_size)
  except coco.SkipError as e:
    result.skips.append((e.reason, e.detail))
    result.skips.extend(("object_in_skipped_image", f"annotation {o.id}") for o in task.objects)
    return result
  lab = colour.u8_to_lab(rgb)
  for obj in task.objects:
    try:
      result.stats[obj.id] = colour.l_statistics(lab, object_mask(obj, task.image,
                                                                   options.image_size))
    except coco.SkipError as e:
      result.skips.append((e.reason, e.detail))
  return result


def plan_composites(objects: dict[int, tuple[int, str]], split_name: str, usable: Iterable[int],
                    options: CompositeOptions, num_composites: int | None = None,
                    extra_references: Iterable[int] = ()
                    ) -> tuple[list[CompositeSpec], list[tuple[str, str]], PlanSummary]:
  """Pairs targets with same-category references from other images, deterministically.

  Each target's references are put in an order seeded by (seed, split, target), so the plan does
  not depend on iteration order or on how many workers run. Without `num_composites`: one
  composite per target, trying its references in that order. With it: the k-th composite of a
  target uses its k-th reference, targets cycled in a seeded order, so no (target, reference)
  pair is planned twice; when the split has fewer distinct pairs than asked for, all of them are
  planned once and the shortfall is reported. `objects` maps object id -> (image id, category
  name: pairing is by name, across roots), for the targets and for `extra_references`: objects that may serve as references but
  are never targets (validation takes its references from all of train2017: a reference gives
  only its L* mean and std, never a pixel). Returns the specs, the targets skipped for want of a
  reference, and a summary.
  """
  usable = sorted(usable)
  by_category: dict[str, list[int]] = collections.defaultdict(list)
  for object_id in sorted(set(usable) | set(extra_references)):
    by_category[objects[object_id][1]].append(object_id)
  targets, skips = [], []
  code = _SPLIT_CODES[split_name]
  for object_id in usable:
    image_id, label = objects[object_id]
    pool = [r for r in by_category[label] if objects[r][0] != image_id]
    if pool:
      order = np.random.default_rng([options.seed, code, object_id]).permutation(len(pool))
      targets.append((object_id, [(pool[i], objects[pool[i]][0]) for i in order]))
    else:
      skips.append(("no_reference", f"annotation {object_id}: no other image has a usable "
                    f"{label!r} object"))
  distinct = sum(len(refs) for _, refs in targets)
  spec = lambda t, k, cands: CompositeSpec(targets[t][0], objects[targets[t][0]][0], tuple(cands),
                                           k, objects[targets[t][0]][1])
  if num_composites is None:
    per = options.validation_references if split_name == "validation" else 1
    specs = [spec(t, j, refs[j::per][:options.max_reference_attempts])
             for t, (_, refs) in enumerate(targets) for j in range(min(per, len(refs)))]
  else:
    wanted = min(num_composites, distinct)
    cycle = np.random.default_rng([options.seed, code]).permutation(len(targets))
    specs, k = [], 0
    while len(specs) < wanted:
      for t in cycle:
        if k < len(targets[t][1]) and len(specs) < wanted:
          specs.append(spec(int(t), k, targets[t][1][k:k + 1]))
      k += 1
  return specs, skips, PlanSummary(num_composites, distinct, len(specs))


def _png(array: np.ndarray, level: int) -> bytes:
  if array.ndim == 3 and array.shape[-1] == 3:
    array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
  ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, level])
  if not ok:
    raise RuntimeError("PNG encoding failed")
  return buf.tobytes()


@dataclasses.dataclass(frozen=True)
class MovedObject:
  """A composite and what its L* move achieved, measured on the 8-bit pixels it stores."""
  composite: np.ndarray
  l_clipped_fraction: float  # object pixels whose intended L* fell outside [0, 100]
  luminance_ratio: float  # (mean L* composite + eps) / (mean L* real + eps) inside the mask
  chroma_change: float  # max(mean |da*|, mean |db*|) inside the mask, composite vs real


def move_lightness(real: np.ndarray, mask: np.ndarray, l_map) -> MovedObject:
  """Applies `l_map` (L* -> L*, float64 arrays) to the object's pixels, nothing else.

  L* is clipped to [0, 100]; colours that leave the sRGB gamut keep their L* and hue and lose
  chroma (`colour.gamut_map_chroma`) instead of being clipped per channel, which would move
  a*, b* and L* itself. Pixels outside the mask are the real image's, bit for bit.
  """
  lab = colour.u8_to_lab(real[mask][:, None, :])  # (N, 1, 3): only the object goes through Lab
  moved = np.asarray(l_map(lab[..., 0].astype(np.float64)))
  clipped = float(np.mean((moved < colour.L_RANGE[0]) | (moved > colour.L_RANGE[1])))
  target = lab.copy()
  target[..., 0] = np.clip(moved, *colour.L_RANGE)
  pixels = colour.lab_to_u8_in_gamut(target)
  composite = real.copy()
  composite[mask] = pixels[:, 0, :]
  achieved = colour.u8_to_lab(pixels).astype(np.float64)
  ratio = ((achieved[..., 0].mean() + RATIO_EPSILON) / (lab[..., 0].mean() + RATIO_EPSILON))
  chroma = max(float(np.abs(achieved[..., 1] - lab[..., 1]).mean()),
               float(np.abs(achieved[..., 2] - lab[..., 2]).mean()))
  return MovedObject(composite, clipped, float(ratio), chroma)


def reinhard_map(target: colour.LStatistics, reference: colour.LStatistics):
  """L* -> L* of Reinhard's transfer (unclipped); a flat target is only shifted."""
  scale = reference.std / target.std if target.std > 0 else 0.0
  return lambda l: (l - target.mean) * scale + reference.mean


def make_composite(real: np.ndarray, mask: np.ndarray, target: colour.LStatistics,
                   reference: colour.LStatistics) -> np.ndarray:
  """Reinhard L* transfer inside `mask`; pixels outside it are the real image's, bit for bit."""
  return move_lightness(real, mask, reinhard_map(target, reference)).composite


def rejection(moved: MovedObject, options: CompositeOptions) -> str | None:
  """Why a composite is not made (a skip reason), or None if it meets the builder's bounds."""
  if moved.chroma_change > options.max_chroma_change:
    return "chroma_change"
  r = options.max_luminance_ratio
  if r is not None and not 1.0 / r <= moved.luminance_ratio <= r:
    return "implausible_ratio"
  return None


def example_features(moved: MovedObject, real_png: bytes, mask_png: bytes, *, category: str,
                     root: int, image_id: int, object_id: int, reference_image_id: int,
                     reference_object_id: int, target: colour.LStatistics,
                     reference: colour.LStatistics, corruption: str, png_compression: int) -> dict:
  """The feature dict of one example (the TFDS build's and the online generator's)."""
  return {
      "composite": _png(moved.composite, png_compression),
      "real": real_png,
      "mask": mask_png,
      "category": coco.class_index(category),
      "root": root,
      "image_id": image_id,
      "object_id": object_id,
      "reference_image_id": reference_image_id,
      "reference_object_id": reference_object_id,
      "target_l_mean": target.mean,
      "target_l_std": target.std,
      "reference_l_mean": reference.mean,
      "reference_l_std": reference.std,
      "corruption": corruption,
      "l_clipped_fraction": moved.l_clipped_fraction,
      "luminance_ratio": moved.luminance_ratio,
      "chroma_change": moved.chroma_change,
  }


def image_composites(task: ImageTask, specs: list[CompositeSpec],
                     stats: Mapping[int, colour.LStatistics], options: CompositeOptions
                     ) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
  """Decodes the target image once and returns ((key, example) for each of its composites, skips).

  A spec whose candidate references all break the chroma or ratio bound is skipped and counted.
  Images and masks are PNG-encoded here, in the worker, so the writer only copies bytes.
  """
  real = resize(coco.read_image(task.image_dir, task.image), options.image_size)
  examples, skips = [], []
  real_png = _png(real, options.png_compression)
  masks: dict[int, tuple[np.ndarray, bytes]] = {}
  for spec in specs:
    if spec.target_id not in masks:
      mask = object_mask(task.object(spec.target_id), task.image, options.image_size)
      masks[spec.target_id] = (mask, _png(mask.astype(np.uint8)[..., None] * 255,
                                          options.png_compression))
    mask, mask_png = masks[spec.target_id]
    target, reason = stats[spec.target_id], None
    for reference_id, reference_image_id in spec.candidates:
      reference = stats[reference_id]
      moved = move_lightness(real, mask, reinhard_map(target, reference))
      reason = rejection(moved, options)
      if reason is None:
        examples.append((spec.key, example_features(
            moved, real_png, mask_png, category=spec.category, root=task.image.root,
            image_id=spec.target_image_id,
            object_id=spec.target_id, reference_image_id=reference_image_id,
            reference_object_id=reference_id, target=target, reference=reference,
            corruption="reinhard", png_compression=options.png_compression)))
        break
    if reason is not None:
      skips.append((reason, f"annotation {spec.target_id}: {len(spec.candidates)} reference(s) "
                    f"tried, the last gave {reason}"))
  return examples, skips
