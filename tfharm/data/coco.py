"""Reading a COCO-format root: instance annotations, images and object masks.

Any segmentation dataset in the MSCOCO 2017 layout is a root (LVIS, Objects365, an in-house
set): categories come from each root's own annotation file, and objects are paired across
roots by category *name*, so a "car" of COCO and a "car" of another root pair. Names are
compared as written (case and spaces trimmed): two roots that use one name for different
things cannot be told apart.

No TensorFlow here: this runs in builder worker processes and Beam workers, where importing
TensorFlow would cost seconds and memory per worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

SPLIT_DIRS = {"train": "train2017", "test": "val2017"}
# The dataset's splits and the COCO folder each is drawn from: `validation` is whole photos held
# back from train2017 (`is_held_out`), so train, validation and test never share a photo.
DATASET_SPLITS = {"train": "train", "validation": "train", "test": "test"}

# The 80 COCO 2017 categories in the official id order: the first ClassLabel names of the
# dataset; every other root's category is OTHER in the ClassLabel and keeps its name in the
# `category_name` feature.
CATEGORY_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush")
OTHER = "other"
CLASS_NAMES = CATEGORY_NAMES + (OTHER,)  # the dataset's `category` ClassLabel


def class_index(name: str) -> int:
  """The ClassLabel index of a category name: COCO's own index, else OTHER's."""
  try:
    return CATEGORY_NAMES.index(name)
  except ValueError:
    return len(CATEGORY_NAMES)


def normalise_name(name) -> str:
  return " ".join(str(name).split()).lower()


class AnnotationError(ValueError):
  """The annotation file is missing or malformed: fail before anything is written."""


class SkipError(Exception):
  """One image or object cannot be used; the build counts it under `reason` and goes on."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  id: int
  file_name: str
  height: int
  width: int
  image_dir: str = ""  # the folder holding file_name (roots differ when several are merged)
  root: int = 0  # index of its root in the build's list of roots (the `root` feature)


@dataclasses.dataclass(frozen=True)
class ObjectRecord:
  id: int
  image_id: int
  category_id: int
  area: float
  iscrowd: bool
  segmentation: Any
  category: str = ""  # the category's name in its root's annotation file (normalise_name)


@dataclasses.dataclass(frozen=True)
class CocoSplit:
  """One split's annotations, indexed for the builder. Category ids are per root (two roots may
  use one id for different things), so each object carries its category's name."""
  image_dir: str
  images: dict[int, ImageRecord]
  objects: dict[int, ObjectRecord]

  def object_labels(self) -> dict[int, tuple[int, str]]:
    """Object id -> (image id, category name): all that pairing needs, small enough to ship."""
    return {o.id: (o.image_id, o.category) for o in self.objects.values()}

  def root_of(self, image_id: int) -> str:
    """The name of the root folder a photo comes from (per-root reports)."""
    return root_name(self.images[image_id].image_dir)


def root_name(image_dir: str) -> str:
  return os.path.basename(os.path.dirname(os.path.normpath(image_dir)))


def _is_remote(path: str) -> bool:
  return "://" in path


def _read_bytes(path: str) -> bytes:
  """Local files with plain open (no TensorFlow in workers); gs://, s3://... through tf.io.gfile."""
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(path)
    return tf.io.gfile.GFile(path, "rb").read()
  with open(path, "rb") as f:
    return f.read()


def _exists(path: str, directory: bool = False) -> bool:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.isdir(path) if directory else tf.io.gfile.exists(path)
  return os.path.isdir(path) if directory else os.path.isfile(path)


def annotation_path(root: str, split: str) -> str:
  return os.path.join(root, "annotations", f"instances_{SPLIT_DIRS[split]}.json")


def load_split(root: str, split: str, root_index: int = 0) -> CocoSplit:
  """Parses `annotations/instances_{train,val}2017.json`; raises AnnotationError naming the file."""
  if split not in SPLIT_DIRS:
    raise AnnotationError(f"unknown split {split!r}; expected one of {sorted(SPLIT_DIRS)}")
  path = annotation_path(root, split)
  image_dir = os.path.join(root, SPLIT_DIRS[split])
  if not _exists(path):
    raise AnnotationError(f"annotation file not found: {path} (manual_dir must be a COCO 2017 "
                          "root holding annotations/, train2017/ and val2017/)")
  if not _exists(image_dir, directory=True):
    raise AnnotationError(f"image folder not found: {image_dir}")
  try:
    data = json.loads(_read_bytes(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise AnnotationError(f"malformed annotation file {path}: {e}") from e
  try:
    categories = data["categories"]
    if not categories:
      raise AnnotationError(f"{path}: the annotation file defines no categories "
                            "(\"categories\" is empty)")
    names = {int(c["id"]): normalise_name(c["name"]) for c in categories}
    images = {i["id"]: ImageRecord(int(i["id"]), str(i["file_name"]), int(i["height"]),
                                   int(i["width"]), image_dir, root_index)
              for i in data["images"]}
    annotations = data["annotations"]
    missing = sorted({int(a["category_id"]) for a in annotations} - set(names))
    if missing:
      raise AnnotationError(f"{path}: annotations use undefined category ids {missing[:10]}")
    objects = {a["id"]: ObjectRecord(int(a["id"]), int(a["image_id"]), int(a["category_id"]),
                                     float(a["area"]), bool(a.get("iscrowd", 0)), a["segmentation"],
                                     names[int(a["category_id"])])
               for a in annotations}
  except (KeyError, TypeError, ValueError) as e:
    if isinstance(e, AnnotationError):
      raise
    raise AnnotationError(f"{path}: malformed annotation file: missing or bad field {e}") from e
  orphans = [o.id for o in objects.values() if o.image_id not in images]
  if orphans:
    raise AnnotationError(f"{path}: annotations {orphans[:5]} refer to images not in the file")
  for o in objects.values():
    size = o.segmentation.get("size") if isinstance(o.segmentation, dict) else None
    image = images[o.image_id]
    if size is not None and list(size) != [image.height, image.width]:
      raise AnnotationError(f"{path}: annotation {o.id}: RLE mask size {list(size)} differs from "
                            f"its image {image.file_name} ({image.height}x{image.width}, HxW)")
  return CocoSplit(image_dir, images, objects)


def has_split(root: str, split: str) -> bool:
  """Whether `root` provides `split` at all (coco128, e.g., has train2017 only)."""
  return _exists(annotation_path(root, split)) or _exists(
      os.path.join(root, SPLIT_DIRS[split]), directory=True)


def coco_roots(manual_dir: str) -> list[str]:
  """The COCO roots under `manual_dir`: itself if it holds `annotations/`, else its subfolders
  that do (sorted by name), so one TFDS manual_dir can hold several roots."""
  if _exists(os.path.join(manual_dir, "annotations"), directory=True):
    return [manual_dir]
  if not _is_remote(manual_dir) and os.path.isdir(manual_dir):
    roots = [os.path.join(manual_dir, d) for d in sorted(os.listdir(manual_dir))
             if os.path.isdir(os.path.join(manual_dir, d, "annotations"))]
    if roots:
      return roots
  raise AnnotationError(f"{manual_dir} is not a COCO 2017 root (no annotations/ folder) and holds "
                        "no subfolder that is one")


def merge_splits(parts: Sequence[CocoSplit], name: str) -> CocoSplit:
  """One split from several roots. Image and annotation ids must be distinct across roots: COCO's
  are globally unique, so a clash means the same photo (or a copy) twice, and pairing and the
  split hash would silently treat two photos as one."""
  images, objects = {}, {}
  for part in parts:
    clash = sorted(set(images) & set(part.images))
    if clash:
      raise AnnotationError(f"{name}: image ids {clash[:5]} occur in two roots ({part.image_dir} and "
                            f"{images[clash[0]].image_dir}); each photo must come from one root")
    clash = sorted(set(objects) & set(part.objects))
    if clash:
      raise AnnotationError(f"{name}: annotation ids {clash[:5]} occur in two roots "
                            f"(one is {part.image_dir})")
    images.update(part.images)
    objects.update(part.objects)
  return CocoSplit(parts[0].image_dir if parts else "", images, objects)


def is_held_out(image_id: int, fraction: float) -> bool:
  """Whether a train2017 photo belongs to the validation split: a hash of its id, so the choice
  does not depend on which roots are merged or in what order, and never changes for a photo."""
  digest = hashlib.sha256(f"tfharm-validation:{image_id}".encode()).digest()
  return int.from_bytes(digest[:8], "big") < fraction * 2.0**64


def subset(split: CocoSplit, keep) -> CocoSplit:
  """The images for which keep(image_id) holds, with their objects."""
  images = {i: r for i, r in split.images.items() if keep(i)}
  objects = {o: r for o, r in split.objects.items() if r.image_id in images}
  return CocoSplit(split.image_dir, images, objects)


def load_dataset_splits(roots: Sequence[str], validation_fraction: float) -> dict[str, CocoSplit]:
  """train / validation / test from one or more roots (see DATASET_SPLITS).

  A root may lack a COCO split (coco128 has no val2017): it then adds nothing to the dataset
  splits drawn from it. Every dataset split needs at least one root that provides its source.
  """
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}: the "
                     "validation split is what checkpoints and thresholds are chosen on")
  merged = {}
  for source in SPLIT_DIRS:
    parts = [load_split(r, source, k) for k, r in enumerate(roots) if has_split(r, source)]
    if not parts:
      raise AnnotationError(f"none of the roots {list(roots)} has {SPLIT_DIRS[source]} "
                            f"({annotation_path('ROOT', source)} and its image folder)")
    merged[source] = merge_splits(parts, SPLIT_DIRS[source])
  overlap = sorted(set(merged["train"].images) & set(merged["test"].images))
  if overlap:
    raise AnnotationError(f"image ids {overlap[:5]} are in both train2017 and val2017")
  train = merged["train"]
  return {"train": subset(train, lambda i: not is_held_out(i, validation_fraction)),
          "validation": subset(train, lambda i: is_held_out(i, validation_fraction)),
          "test": merged["test"]}


def _looks_truncated(data: bytes) -> bool:
  # libjpeg decodes a truncated JPEG into grey rows with only a warning, so check the EOI marker.
  if data[:2] == b"\xff\xd8":
    return b"\xff\xd9" not in data[-1024:]
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return b"IEND" not in data[-64:]
  return False


def read_image(image_dir: str, image: ImageRecord) -> np.ndarray:
  """Decodes an image as (H, W, 3) uint8 RGB, checking it against its annotation.

  Grayscale JPEGs (COCO has some) are expanded to three equal channels and used: L* transfer is
  defined for them and a* = b* = 0 stays so. Raises SkipError for missing, corrupt or truncated
  files and for a size that disagrees with the annotation.
  """
  path = os.path.join(image_dir, image.file_name)
  try:
    data = _read_bytes(path)
  except OSError as e:
    raise SkipError("missing_image", f"{path}: {e.strerror or 'not found'}") from e
  if _looks_truncated(data):
    raise SkipError("corrupt_image", f"{path}: truncated file (no end-of-image marker)")
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if bgr is None:
    raise SkipError("corrupt_image", f"{path}: not a decodable image")
  if bgr.shape[:2] != (image.height, image.width):
    raise SkipError("size_mismatch", f"{path}: decoded {bgr.shape[1]}x{bgr.shape[0]}, annotation "
                    f"says {image.width}x{image.height}")
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_mask(obj: ObjectRecord, height: int, width: int) -> np.ndarray:
  """Rasterises polygons, uncompressed RLE or compressed RLE into an (H, W) uint8 {0, 1} mask."""
  seg = obj.segmentation
  try:
    if isinstance(seg, list):  # polygons
      polygons = [p for p in seg if len(p) >= 6]
      if not polygons:
        raise SkipError("empty_mask", f"annotation {obj.id}: no polygon with 3 or more points")
      rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
      rle = mask_utils.frPyObjects(seg, height, width)
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):  # compressed RLE
      if list(seg.get("size", [])) != [height, width]:
        raise SkipError("bad_annotation", f"annotation {obj.id}: RLE size {seg.get('size')} is "
                        f"not the image size {[height, width]}")
      counts = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]
      rle = {"size": [height, width], "counts": counts}
    else:
      raise SkipError("bad_annotation", f"annotation {obj.id}: unknown segmentation format")
    return mask_utils.decode(rle)
  except SkipError:
    raise
  except Exception as e:  # pycocotools raises bare Exceptions on bad input
    raise SkipError("bad_annotation", f"annotation {obj.id}: {e}") from e
