"""Harmonise image files: decoding, channel conversion, atomic writes, folders with skips.

The library part of `python -m tfharm.harmonise`. It runs the in-process pipeline through the
same `ServingModule` functions that are exported, so a file harmonised here gets exactly the
served model's pixels (uint8 in, uint8 out). Decoding and writing need no TensorFlow (imported
only by FileHarmoniser), so a bad file is reported in a second.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
from typing import TYPE_CHECKING

from absl import logging
import cv2
import numpy as np

if TYPE_CHECKING:
  from tfharm.serving.signatures import ServingModule

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_WRITE_PARAMS = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
                 ".png": [cv2.IMWRITE_PNG_COMPRESSION, 3]}


class HarmoniseError(ValueError):
  """A file that cannot be harmonised (unreadable, bad mask, ...); a skip in folder mode."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason  # the skip counter's key


@dataclasses.dataclass
class Decoded:
  rgb: np.ndarray  # (H, W, 3) uint8
  alpha: np.ndarray | None  # (H, W) of the input, re-attached to PNG outputs
  notes: list[str]  # conversions made (logged)


def is_image_path(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def to_rgb(image: np.ndarray) -> np.ndarray:
  """(H, W, C) uint8, C = 1 / 3 / 4 -> (H, W, 3): grey repeated, alpha dropped. The numpy twin
  of tfharm.models.detector.as_rgb (equal on uint8 images, tested), kept TF-free."""
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  if image.shape[-1] == 4:
    return image[..., :3]
  if image.shape[-1] != 3:
    raise HarmoniseError("unreadable", f"expected 1, 3 or 4 channels, got {image.shape[-1]}")
  return image


def read_image(path: str) -> Decoded:
  """JPEG/PNG -> RGB uint8. Grey is repeated, alpha dropped (kept aside), 16 bit scaled to 8;
  every conversion is noted. EXIF orientation is not applied: the output keeps the stored
  pixel order."""
  data = np.fromfile(path, np.uint8) if os.path.isfile(path) else None
  image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
  if image is None or image.size == 0:
    raise HarmoniseError("unreadable", f"{path}: not a readable JPEG or PNG image")
  notes = []
  if image.dtype == np.uint16:
    image = np.round(image / 257.0).astype(np.uint8)
    notes.append("16-bit image scaled to 8 bits")
  elif image.dtype != np.uint8:
    raise HarmoniseError("unreadable", f"{path}: unsupported pixel type {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
    notes.append("grayscale converted to RGB (channel repeated)")
  alpha = None
  if image.shape[-1] == 3:
    image = image[..., ::-1]  # BGR -> RGB
  elif image.shape[-1] == 4:
    alpha = image[..., 3]
    image = image[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    notes.append("alpha channel dropped for the model (kept for PNG output)")
  return Decoded(np.ascontiguousarray(to_rgb(image)), alpha, notes)  # (H, W, 3)


def read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
  """Grey (or colour: converted) 8/16-bit PNG/JPEG -> (H, W, 1) float32 in [0, 1];
  its size must equal the image's."""
  data = np.fromfile(path, np.uint8) if os.path.isfile(path) else None
  mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
  if mask is None or mask.size == 0:
    raise HarmoniseError("unreadable_mask", f"{path}: not a readable mask image")
  if mask.ndim == 3:
    mask = cv2.cvtColor(mask[..., :3], cv2.COLOR_BGR2GRAY)
  if mask.shape[:2] != tuple(shape):
    raise HarmoniseError("mask_size_mismatch", f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                         f"the image {shape[1]}x{shape[0]} (width x height); they must match")
  scale = 65535.0 if mask.dtype == np.uint16 else 255.0
  return (mask.astype(np.float32) / scale)[..., None]


def write_image(path: str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
  """Encodes by extension and writes to a temporary file in the same folder, then renames:
  an interrupted run never leaves a half-written output."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in _WRITE_PARAMS:
    raise HarmoniseError("bad_output", f"{path}: output must end in {', '.join(IMAGE_EXTENSIONS)}")
  bgr = rgb[..., ::-1] if rgb.ndim == 3 else rgb
  if alpha is not None and ext == ".png":
    bgr = np.concatenate([bgr, alpha[..., None]], axis=-1)
  ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr), _WRITE_PARAMS[ext])
  if not ok:
    raise HarmoniseError("write_failed", f"{path}: could not encode")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(buf.tobytes())
    # mkstemp makes the file 0600; give the output the permissions of any file the user makes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class FileHarmoniser:
  """Runs the serving functions of `module` on decoded files."""

  def __init__(self, module: "ServingModule"):
    self.module = module

  def harmonise(self, rgb: np.ndarray, mask: np.ndarray | None = None):
    """(H, W, 3) uint8 [+ (H, W, 1) mask] -> (harmonised uint8 (H, W, 3), mask (H, W) float)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    image = tf.constant(rgb[None])
    if mask is None:
      out = self.module.serving_default(image)
      return out["harmonised"].numpy()[0], out["mask"].numpy()[0, ..., 0]
    out = self.module.harmonise_with_mask(image, tf.constant(mask[None], tf.float32))
    return out["harmonised"].numpy()[0], np.clip(np.nan_to_num(mask[..., 0]), 0.0, 1.0)

  def harmonise_file(self, src: str, dst: str, mask_path: str | None = None,
                     save_mask: str | None = None) -> None:
    self.write(*load_inputs(src, mask_path), dst, save_mask)

  def write(self, decoded: Decoded, mask: np.ndarray | None, dst: str,
            save_mask: str | None = None) -> None:
    """Harmonises decoded input and writes dst (and the mask used), each atomically."""
    out, used_mask = self.harmonise(decoded.rgb, mask)
    write_image(dst, out, decoded.alpha)
    if save_mask:
      write_image(save_mask, np.round(used_mask * 255.0).astype(np.uint8))


def load_inputs(src: str, mask_path: str | None = None) -> tuple[Decoded, np.ndarray | None]:
  """Decodes an image (logging its conversions) and its optional mask; HarmoniseError if bad."""
  decoded = read_image(src)
  for note in decoded.notes:
    logging.info("%s: %s", src, note)
  mask = None if mask_path is None else read_mask(mask_path, decoded.rgb.shape[:2])
  return decoded, mask


def _same_path(a: str, b: str) -> bool:
  return os.path.realpath(a) == os.path.realpath(b)


def harmonise_folder(harmoniser: FileHarmoniser, src_dir: str, dst_dir: str,
                     mask_dir: str | None = None, save_mask_dir: str | None = None,
                     progress: bool = True) -> collections.Counter:
  """Every JPEG/PNG directly in src_dir -> dst_dir/<same name>. Masks (optional) are
  mask_dir/<stem>.png; saved masks save_mask_dir/<stem>.png. Returns counts: `done`, and
  one key per skip reason (unreadable, missing_mask, mask_size_mismatch, ...; each logged)
  and `not_an_image` for other files (ignored)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if _same_path(src_dir, dst_dir):
    raise HarmoniseError("bad_output", "--output must differ from --input (inputs are never replaced)")
  names = sorted(n for n in os.listdir(src_dir) if os.path.isfile(os.path.join(src_dir, n)))
  counts = collections.Counter()
  images = []
  for n in names:
    if is_image_path(n):
      images.append(n)
    else:
      counts["not_an_image"] += 1
      logging.info("ignored (not .jpg/.jpeg/.png): %s", os.path.join(src_dir, n))
  os.makedirs(dst_dir, exist_ok=True)
  for name in tqdm(images, unit="image", disable=not progress):
    stem = os.path.splitext(name)[0]
    mask_path = None
    if mask_dir is not None:
      mask_path = os.path.join(mask_dir, stem + ".png")
      if not os.path.isfile(mask_path):
        counts["missing_mask"] += 1
        logging.warning("skipped %s: no mask %s", name, mask_path)
        continue
    save_mask = None if save_mask_dir is None else os.path.join(save_mask_dir, stem + ".png")
    try:
      harmoniser.harmonise_file(os.path.join(src_dir, name), os.path.join(dst_dir, name),
                                mask_path, save_mask)
      counts["done"] += 1
    except HarmoniseError as e:
      counts[e.reason] += 1
      logging.warning("skipped: %s", e)
  return counts
