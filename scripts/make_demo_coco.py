"""Regenerates the embedded demo sample from a COCO 2017 root.

  python scripts/make_demo_coco.py --coco_root=COCO_MINI \
      --output_dir=data_builders/luminance_composites/dummy_data

Takes up to 16 annotated val2017 photographs, downscales them to at most 320 px on the long side,
rescales their instance annotations to match and writes a COCO-layout root (annotations/,
train2017/, val2017/) that the builder reads like any COCO download. The images are chosen so
that each demo split has at least three categories with eligible objects in two or more images
(the builder needs a same-category reference from another image). Licences and URLs are kept.
Some non-crowd objects are stored as compressed RLE and crowd objects as uncompressed RLE, so the
demo exercises every segmentation format. Demo data only: never train or report on it.
"""

from __future__ import annotations

import collections
import json
import os

from absl import app, flags
import cv2
import numpy as np
from pycocotools import mask as mask_utils

from tfharm.cli import program

_COCO_ROOT = flags.DEFINE_string("coco_root", None, "COCO 2017 root with annotations/ and val2017/.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "data_builders/luminance_composites/dummy_data",
                                  "Where the demo COCO root is written.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 16, "Images to take (at most 16).")
_MAX_SIDE = flags.DEFINE_integer("max_side", 320, "Long side of the downscaled images.")
_NUM_CATEGORIES = flags.DEFINE_integer("num_categories", 4, "Categories the sample is built around.")
_MIN_AREA_FRACTION = flags.DEFINE_float("min_area_fraction", 0.01, "As the builder's default.")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the downscaled images.")
flags.mark_flag_as_required("coco_root")


def _eligible_categories(data: dict, min_area_fraction: float) -> dict[int, set[int]]:
  images = {i["id"]: i for i in data["images"]}
  per_image = collections.defaultdict(set)
  for a in data["annotations"]:
    i = images[a["image_id"]]
    if not a["iscrowd"] and a["area"] >= min_area_fraction * i["height"] * i["width"]:
      per_image[a["image_id"]].add(a["category_id"])
  return per_image


def choose_images(data: dict, num_images: int, num_categories: int,
                  min_area_fraction: float) -> tuple[list[int], list[int]]:
  """Greedy, deterministic: images covering the most common categories, split alternately."""
  per_image = _eligible_categories(data, min_area_fraction)
  counts = collections.Counter(c for cats in per_image.values() for c in cats)
  # Prefer categories other than the ubiquitous first one, so the demo is not all people.
  focus = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:num_categories]
  ranked = sorted(per_image, key=lambda i: (-len(per_image[i] & set(focus)), i))
  chosen, need = [], collections.Counter({c: 4 for c in focus})
  for image_id in ranked:
    gain = [c for c in per_image[image_id] & set(focus) if need[c] > 0]
    if gain and len(chosen) < num_images:
      chosen.append(image_id)
      need.subtract(gain)
  for image_id in ranked:  # fill up to num_images with the next best
    if len(chosen) >= num_images:
      break
    if image_id not in chosen:
      chosen.append(image_id)
  crowd = sorted({a["image_id"] for a in data["annotations"] if a["iscrowd"]} & set(per_image))
  if crowd and not set(crowd) & set(chosen):  # one crowd (uncompressed RLE) object at least
    chosen[-1] = crowd[0]
  train, val = [], []
  for category in focus:  # deal each category's images alternately into the two splits
    for image_id in sorted(i for i in chosen if category in per_image[i]):
      if image_id in train or image_id in val:
        continue
      (train if len(train) <= len(val) else val).append(image_id)
  for image_id in chosen:
    if image_id not in train and image_id not in val:
      (train if len(train) <= len(val) else val).append(image_id)
  return sorted(train), sorted(val)


def _scale_segmentation(ann: dict, scale: float, src_hw: tuple[int, int],
                        dst_hw: tuple[int, int], as_compressed_rle: bool):
  h, w = src_hw
  if isinstance(ann["segmentation"], list) and not as_compressed_rle:
    return [[float(round(v * scale, 2)) for v in poly] for poly in ann["segmentation"]]
  if isinstance(ann["segmentation"], list):
    rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
  elif isinstance(ann["segmentation"]["counts"], list):
    rle = mask_utils.frPyObjects(ann["segmentation"], h, w)
  else:
    rle = ann["segmentation"]
  full = mask_utils.decode(rle)
  small = cv2.resize(full, (dst_hw[1], dst_hw[0]), interpolation=cv2.INTER_NEAREST)
  if as_compressed_rle:
    encoded = mask_utils.encode(np.asfortranarray(small))
    return {"size": list(dst_hw), "counts": encoded["counts"].decode("ascii")}
  # Uncompressed RLE (as COCO stores crowds): run lengths in column-major order, starting with 0s.
  flat = small.flatten(order="F")
  changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
  counts = np.diff(np.concatenate([[0], changes])).tolist()
  return {"size": list(dst_hw), "counts": [int(c) for c in counts]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  src = os.path.join(_COCO_ROOT.value, "annotations", "instances_val2017.json")
  with open(src) as f:
    data = json.load(f)
  train, val = choose_images(data, min(_NUM_IMAGES.value, 16), _NUM_CATEGORIES.value,
                             _MIN_AREA_FRACTION.value)
  images = {i["id"]: i for i in data["images"]}
  os.makedirs(os.path.join(_OUTPUT_DIR.value, "annotations"), exist_ok=True)
  rle_every = 5  # every 5th non-crowd object is stored as compressed RLE
  for split_dir, ids in (("train2017", train), ("val2017", val)):
    os.makedirs(os.path.join(_OUTPUT_DIR.value, split_dir), exist_ok=True)
    out_images, out_anns = [], []
    for image_id in ids:
      info = dict(images[image_id])
      rgb = cv2.imread(os.path.join(_COCO_ROOT.value, "val2017", info["file_name"]),
                       cv2.IMREAD_COLOR)
      h, w = rgb.shape[:2]
      scale = min(1.0, _MAX_SIDE.value / max(h, w))
      dh, dw = max(1, round(h * scale)), max(1, round(w * scale))
      small = cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_AREA)
      cv2.imwrite(os.path.join(_OUTPUT_DIR.value, split_dir, info["file_name"]), small,
                  [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY.value])
      info.update(height=dh, width=dw)
      out_images.append(info)
      for ann in sorted((a for a in data["annotations"] if a["image_id"] == image_id),
                        key=lambda a: a["id"]):
        ann = dict(ann)
        compressed = not ann["iscrowd"] and ann["id"] % rle_every == 0
        ann["segmentation"] = _scale_segmentation(ann, scale, (h, w), (dh, dw), compressed)
        ann["area"] = round(ann["area"] * scale * scale, 2)
        ann["bbox"] = [round(v * scale, 2) for v in ann["bbox"]]
        out_anns.append(ann)
    out = {"info": dict(data["info"], description="tfharm demo sample of COCO 2017 val "
                        "(downscaled; see scripts/make_demo_coco.py)"),
           "licenses": data["licenses"], "images": out_images, "annotations": out_anns,
           "categories": data["categories"]}
    with open(os.path.join(_OUTPUT_DIR.value, "annotations", f"instances_{split_dir}.json"),
              "w") as f:
      json.dump(out, f, separators=(",", ":"))
    print(f"{split_dir}: {len(out_images)} images, {len(out_anns)} annotations")


if __name__ == "__main__":
  program.run(main)
