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
_SPLIT_CODES = {"train": 0, "test": 1}


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


@dataclasses.dataclass(frozen=True)
class CompositeSpec:
  """One composite: the target object whose L* moves, the reference it moves onto, reuse index."""
  target_id: int
  target_image_id: int
  reference_id: int
  reference_image_id: int
  index: int  # k-th composite of this target (paper config reuses targets)
  category: int  # ClassLabel index

  @property
  def key(self) -> str:
    return f"{self.target_image_id:012d}_{self.target_id}_{self.index}"


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
  return [ImageTask(split.image_dir, split.images[image_id],
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


def plan_composites(objects: dict[int, tuple[int, int]], split_name: str, usable: Iterable[int],
                    options: CompositeOptions, num_composites: int | None = None
                    ) -> tuple[list[CompositeSpec], list[tuple[str, str]]]:
  """Pairs targets with same-category references from other images, deterministically.

  Each composite's reference is drawn by a generator seeded with (seed, split, target, k), so the
  plan does not depend on iteration order or on how many workers run. With `num_composites`, the
  targets are cycled in a seeded order (reusing target objects, as the paper did) until the count
  is reached. `objects` maps object id -> (image id, category label). Returns the specs and the
  targets skipped for want of a reference.
  """
  usable = sorted(usable)
  by_category: dict[int, list[int]] = collections.defaultdict(list)
  for object_id in usable:
    by_category[objects[object_id][1]].append(object_id)
  targets, skips = [], []
  for object_id in usable:
    image_id, label = objects[object_id]
    pool = [r for r in by_category[label] if objects[r][0] != image_id]
    if pool:
      targets.append((object_id, pool))
    else:
      skips.append(("no_reference", f"annotation {object_id}: no other image has a usable "
                    f"{coco.CATEGORY_NAMES[label]!r} object"))
  code = _SPLIT_CODES[split_name]
  if num_composites is None:
    order = [(t, 0) for t in range(len(targets))]
  elif not targets:
    order = []
  else:
    perm = np.random.default_rng([options.seed, code]).permutation(len(targets))
    order = [(int(perm[n % len(targets)]), n // len(targets)) for n in range(num_composites)]
  specs = []
  for t, k in order:
    object_id, pool = targets[t]
    rng = np.random.default_rng([options.seed, code, object_id, k])
    reference_id = pool[int(rng.integers(len(pool)))]
    specs.append(CompositeSpec(object_id, objects[object_id][0], reference_id,
                               objects[reference_id][0], k, objects[object_id][1]))
  return specs, skips


def _png(array: np.ndarray, level: int) -> bytes:
  if array.ndim == 3 and array.shape[-1] == 3:
    array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
  ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, level])
  if not ok:
    raise RuntimeError("PNG encoding failed")
  return buf.tobytes()


def make_composite(real: np.ndarray, mask: np.ndarray, target: colour.LStatistics,
                   reference: colour.LStatistics) -> np.ndarray:
  """Reinhard L* transfer inside `mask`; pixels outside it are the real image's, bit for bit."""
  # Only the object's pixels go through Lab: (N, 1, 3) with an all-true mask.
  pixels = colour.u8_to_lab(real[mask][:, None, :])
  moved = colour.reinhard_l_transfer(pixels, np.ones(pixels.shape[:2], bool), target, reference)
  composite = real.copy()
  composite[mask] = colour.lab_to_u8(moved)[:, 0, :]
  return composite


def image_composites(task: ImageTask, specs: list[CompositeSpec],
                     stats: Mapping[int, colour.LStatistics], options: CompositeOptions
                     ) -> list[tuple[str, dict]]:
  """Decodes the target image once and returns (key, example) for each of its composites.

  Images and masks are PNG-encoded here, in the worker, so the writer only copies bytes.
  """
  real = resize(coco.read_image(task.image_dir, task.image), options.image_size)
  examples = []
  real_png = _png(real, options.png_compression)
  masks: dict[int, tuple[np.ndarray, bytes]] = {}
  for spec in specs:
    if spec.target_id not in masks:
      mask = object_mask(task.object(spec.target_id), task.image, options.image_size)
      masks[spec.target_id] = (mask, _png(mask.astype(np.uint8)[..., None] * 255,
                                          options.png_compression))
    mask, mask_png = masks[spec.target_id]
    target, reference = stats[spec.target_id], stats[spec.reference_id]
    composite = make_composite(real, mask, target, reference)
    examples.append((spec.key, {
        "composite": _png(composite, options.png_compression),
        "real": real_png,
        "mask": mask_png,
        "category": spec.category,
        "image_id": spec.target_image_id,
        "object_id": spec.target_id,
        "reference_image_id": spec.reference_image_id,
        "reference_object_id": spec.reference_id,
        "target_l_mean": target.mean,
        "target_l_std": target.std,
        "reference_l_mean": reference.mean,
        "reference_l_std": reference.std,
    }))
  return examples
