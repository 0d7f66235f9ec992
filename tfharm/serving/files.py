"""Harmonise image files: the plan (which file goes where, refused if anything collides),
decoding (EXIF orientation, corrupt data, masks' scale, alpha), atomic writes, folders with
counted skips.

The library part of `python -m tfharm.harmonise`. It runs the same functions as the exported
SavedModel (uint8 in, uint8 out: tfharm.serving.signatures), in-process or from the cached
SavedModel (tfharm.serving.cache). Everything here but `FileHarmoniser.harmonise` works without
TensorFlow, so a bad file, a collision or an unwritable folder is reported in a second.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import re
import stat
import tempfile
from typing import Iterable
import warnings

from absl import logging
import cv2
import numpy as np

from tfharm import colour
from tfharm.cli import inputs, outputs, program
from tfharm.serving import image_header

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# What the reader decodes, by content (image_header.content_format), whatever the name: JPEG or
# PNG, and for masks also TIFF (float weights). Other formats are refused, not converted: a
# folder run lists only .jpg/.jpeg/.png names, so a GIF named .jpg must not be the one GIF
# that is harmonised.
IMAGE_FORMATS = ("JPEG", "PNG")
MASK_FORMATS = ("JPEG", "PNG", "TIFF")
_WRITE_PARAMS = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
                 ".png": [cv2.IMWRITE_PNG_COMPRESSION, 3]}
# Temporary files of write_image: ".tfharm-<pid>-<random>.tmp" (hidden; the pid tells a later
# run whether the writer is gone, so it can remove what a killed run left). Without the
# output's name: that made a 255-character name ~25 too long. Older versions wrote
# ".<name>.tfharm-<pid>-<random>.tmp"; those are recognised too.
_TEMP_RE = re.compile(r"^\.(?:.+\.)?tfharm-(\d+)-[^.]+\.tmp$")
MASK_SCALES = ("auto", "1", "255", "65535")
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS = {  # EXIF value -> (what is done to the stored pixels, the numpy transform)
    2: ("mirrored left-right", lambda a: a[:, ::-1]),
    3: ("rotated 180 degrees", lambda a: a[::-1, ::-1]),
    4: ("mirrored top-bottom", lambda a: a[::-1]),
    5: ("transposed", lambda a: a.swapaxes(0, 1)),
    6: ("rotated 90 degrees clockwise", lambda a: np.rot90(a, -1)),
    7: ("transversed", lambda a: a[::-1, ::-1].swapaxes(0, 1)),
    8: ("rotated 90 degrees counter-clockwise", lambda a: np.rot90(a, 1)),
}


class HarmoniseError(ValueError):
  """A file that cannot be harmonised (unreadable, bad mask, ...): a counted skip."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason  # the skip counter's key


@dataclasses.dataclass
class Decoded:
  rgb: np.ndarray  # (H, W, 3) uint8, in the orientation the user sees
  alpha: np.ndarray | None  # (H, W) of the input, re-attached to PNG outputs
  notes: list[str]  # conversions made (logged)


@dataclasses.dataclass(frozen=True)
class Job:
  """One image to harmonise: where it is read and where its results go."""
  src: str
  dst: str
  mask: str | None = None  # the mask to use (else the detector's)
  save_mask: str | None = None  # where the mask used goes


def is_image_path(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------- the plan
def _identity(path: str):
  """What makes two paths the same file: the device and inode when it exists (hard links,
  symlinks), else the resolved path (case kept: Linux file systems are case-sensitive)."""
  try:
    st = os.stat(path)
    return ("inode", st.st_dev, st.st_ino)
  except OSError:
    return ("path", os.path.realpath(path))


def check_collisions(jobs: list[Job], other_inputs: Iterable[str] = ()) -> None:
  """Refuses (SetupError) a plan in which a file written (output or saved mask) is also read
  (an image or a mask), or two written files are one. Names the colliding files."""
  reads: dict = {}
  for job in jobs:
    for path in (job.src, job.mask):
      if path:
        reads.setdefault(_identity(path), path)
  for path in other_inputs:
    reads.setdefault(_identity(path), path)
  writes: dict = {}
  problems = []
  for job in jobs:
    for what, path in (("output", job.dst), ("mask", job.save_mask)):
      if not path:
        continue
      ident = _identity(path)
      if ident in reads:
        problems.append(f"{what} {path} would replace the input {reads[ident]}")
      if ident in writes:
        problems.append(f"{what} {path} would overwrite the {writes[ident][0]} of "
                        f"{writes[ident][1]}")
      else:
        writes[ident] = (what, job.src)
  if problems:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise program.SetupError("refusing to run, files would collide: " + "; ".join(problems[:5])
                             + more + ". Nothing was written; choose other --output/--save_mask "
                             "paths.")


def check_existing(jobs: list[Job], overwrite: bool = False) -> None:
  """Refuses (SetupError) a plan that would replace a file that is already there (an output
  or saved mask: a file this run did not create) unless `overwrite`; a folder in the place of
  an output is refused either way. Folder mode too: a re-run into the same folders needs
  --overwrite, and then replaces only the files it writes."""
  found = [(flag, path) for job in jobs
           for flag, path in (("--output", job.dst), ("--save_mask", job.save_mask))
           if path and os.path.lexists(path)]
  folders = [path for _, path in found if os.path.isdir(path)]
  if folders:
    raise program.SetupError(f"{folders[0]} is a folder where this run would write a file; "
                             "choose other --output/--save_mask paths. Nothing was written.")
  if not found or overwrite:
    return
  if len(jobs) == 1 and len(found) == 1:
    flag, path = found[0]
    raise program.SetupError(f"{flag} {path} exists; pass --overwrite to replace it, or choose "
                             "another path. Nothing was written.")
  names = ", ".join(path for _, path in found[:3]) + (
      f" and {len(found) - 3} more" if len(found) > 3 else "")
  what = "1 file this run would write exists" if len(found) == 1 else (
      f"{len(found)} files this run would write exist")
  raise program.SetupError(f"{what} already ({names}); pass --overwrite to replace them, or "
                           "choose other --output/--save_mask folders. Nothing was written.")


def plan_folder(src_dir: str, dst_dir: str, mask_dir: str | None = None,
                save_mask_dir: str | None = None) -> tuple[list[Job], list[str]]:
  """Every JPEG/PNG name directly in src_dir -> dst_dir/<same name>; masks
  mask_dir/<stem>.png; saved masks save_mask_dir/<stem>.png. Returns (jobs, ignored non-image
  entries; sub-folders are not listed). An image name is a job whatever the entry is (a broken
  link, a FIFO, a folder): reading it is then a counted skip naming the cause, never a silent
  drop."""
  jobs, ignored = [], []
  for name in sorted(os.listdir(src_dir)):
    if not is_image_path(name):
      if not os.path.isdir(os.path.join(src_dir, name)):
        ignored.append(os.path.join(src_dir, name))
      continue
    stem = os.path.splitext(name)[0]
    jobs.append(Job(os.path.join(src_dir, name), os.path.join(dst_dir, name),
                    None if mask_dir is None else os.path.join(mask_dir, stem + ".png"),
                    None if save_mask_dir is None else os.path.join(save_mask_dir, stem + ".png")))
  return jobs, ignored


def input_bytes(jobs: list[Job]) -> int:
  """The size of the jobs' regular input files (the outputs take about as much); entries
  that are not regular files count 0 (they are skipped when read)."""
  total = 0
  for job in jobs:
    try:
      st = os.stat(job.src)
    except OSError:
      continue
    if stat.S_ISREG(st.st_mode):
      total += st.st_size
  return total


# ----------------------------------------------------------------------------- reading
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


def _read_bytes(path: str, what: str, mask: bool = False) -> np.ndarray:
  """The file's bytes, or HarmoniseError naming the cause (tfharm.cli.inputs: nothing blocks
  on a FIFO). The skip reason is the cause's kind (missing, broken_link, not_a_file,
  unreadable); for a mask missing_mask or unreadable_mask."""
  try:
    data = inputs.read_bytes(path)
  except inputs.InputError as e:
    reason = e.kind
    if mask:
      gone = e.kind in (inputs.MISSING, inputs.BROKEN_LINK)
      reason = "missing_mask" if gone else "unreadable_mask"
    raise HarmoniseError(reason, str(e)) from None
  if not data:
    raise HarmoniseError("unreadable_mask" if mask else "unreadable",
                         f"{path}: not a readable {what} (the file is empty)")
  return np.frombuffer(data, np.uint8)


def max_pixels() -> int:
  """The reader's pixel cap: Pillow's own limit (twice Image.MAX_IMAGE_PIXELS: 178,956,970),
  past which Pillow refuses to open a file; every file is also decoded by Pillow, so nothing
  larger could be read. Harmonising costs ~56 bytes per pixel (docs/cli.md): ~10 GB there."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return 2 * Image.MAX_IMAGE_PIXELS


def _check_pixels(path: str, data: np.ndarray, reason: str) -> None:
  """The page's cap rule (image_header.check_pixels) with the CLI's cap, from the header
  before any decoder allocates what it declares (OpenCV took 1.3 GB for a 7 MB HDR declaring
  108 MP). HarmoniseError `too_large`, or `reason` for a file whose size cannot be read."""
  try:
    image_header.check_pixels(data.data, max_pixels())
  except image_header.TooLarge as e:
    raise HarmoniseError("too_large", f"{path}: {e}; harmonise reads up to "
                         f"{max_pixels() / 1e6:.3g} megapixels (Pillow's limit)") from None
  except image_header.UnsizedImage as e:
    raise HarmoniseError(reason, f"{path}: {e}; harmonise reads JPEG or PNG images") from None


def _check_format(path: str, data: np.ndarray, formats: tuple[str, ...], what: str) -> None:
  """HarmoniseError `unsupported_format` unless the content is one of `formats` (whatever
  the file's name) with one frame: an APNG, an animated GIF or a multi-page TIFF would be
  harmonised from its first frame only, without a word. A JPEG's extra pictures (MPO: a
  camera's preview) are not frames. A file of no known format passes, for the decoders to
  report."""
  found = image_header.content_format(data)
  ext = os.path.splitext(path)[1]
  article = "an" if found and found[0] in "AEIOU" else "a"
  named = f" named {ext}" if ext.lower() in IMAGE_EXTENSIONS + (".tif", ".tiff") else ""
  accepted = f"{', '.join(formats[:-1])} or {formats[-1]}"
  if found is not None and found not in formats:
    raise HarmoniseError("unsupported_format", f"{path}: {article} {found} image{named}; "
                         f"harmonise reads {accepted} {what}s (convert it first)")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap decides
      with Image.open(io.BytesIO(data.tobytes())) as im:  # the header only
        frames = 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1))
  except Exception:  # pylint: disable=broad-except  (reported by the decoding that follows)
    return
  if frames > 1:
    if found == "PNG":
      raise HarmoniseError("unsupported_format", f"{path}: an animated PNG ({frames} frames); "
                           f"harmonise reads still {what}s (save the frame you want as PNG)")
    raise HarmoniseError("unsupported_format", f"{path}: {article} {found} image{named} with "
                         f"{frames} frames; harmonise reads still {what}s (save the frame you "
                         "want as PNG)")


def _check_and_orientation(path: str, data: np.ndarray, reason: str, what: str) -> int:
  """Decodes the file once more with Pillow, which turns libjpeg's warnings about corrupt
  data (that OpenCV decodes past, silently) into errors; JPEGs at 1/8 scale (the entropy-coded
  data is read in full, the inverse DCT is cheap). Returns the EXIF orientation (1 if none)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with warnings.catch_warnings():
      # Pillow warns of "decompression bombs" from 90 MP; the cap (max_pixels) decides here.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data.tobytes())) as im:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        if im.format == "JPEG":
          im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
  except Image.UnidentifiedImageError:  # its message names the BytesIO, not the file
    raise HarmoniseError(reason, f"{path}: not a readable {what} (no decoder of Pillow's "
                         "recognises its content)") from None
  except (OSError, SyntaxError, ValueError) as e:  # Pillow's "broken data stream", truncation
    raise HarmoniseError(reason, f"{path}: not a readable {what} (corrupt data: {e})") from e
  return orientation if orientation in _ORIENTATIONS or orientation == 1 else 1


def _orient(image: np.ndarray, orientation: int, notes: list[str]) -> np.ndarray:
  if orientation in _ORIENTATIONS:
    what, transform = _ORIENTATIONS[orientation]
    notes.append(f"EXIF orientation {orientation} applied (stored pixels {what}); the output is "
                 "written upright, without the tag")
    image = transform(image)
  return image


def read_image(path: str) -> Decoded:
  """JPEG/PNG -> RGB uint8 as the user sees it: the EXIF orientation is applied, grey is
  repeated, alpha dropped (kept aside), 16 bit scaled to 8; every conversion is noted. A file
  with corrupt data (any decoder warning) is unreadable."""
  data = _read_bytes(path, "JPEG or PNG image")
  _check_format(path, data, IMAGE_FORMATS, "image")
  _check_pixels(path, data, "unreadable")
  image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # no EXIF rotation with IMREAD_UNCHANGED
  if image is None or image.size == 0:
    raise HarmoniseError("unreadable", f"{path}: not a readable JPEG or PNG image")
  orientation = _check_and_orientation(path, data, "unreadable", "JPEG or PNG image")
  del data
  notes = []
  if image.dtype == np.uint16:
    image = np.round(image / 257.0).astype(np.uint8)
    notes.append("16-bit image scaled to 8 bits")
  elif image.dtype != np.uint8:
    raise HarmoniseError("unreadable", f"{path}: unsupported pixel type {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
    notes.append("grayscale converted to RGB (channel repeated)")
  image = _orient(image, orientation, notes)
  alpha = None
  if image.shape[-1] == 3:
    image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)
  elif image.shape[-1] == 4:
    image = np.ascontiguousarray(image)
    alpha = image[..., 3].copy()
    image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    transparent = int(np.count_nonzero(alpha == 0))
    notes.append("alpha channel kept aside (re-attached to PNG output"
                 + (f"; its {transparent} fully transparent pixel(s) are returned unchanged"
                    if transparent else "") + ")")
  else:
    image = to_rgb(image)
  return Decoded(np.ascontiguousarray(image), alpha, notes)  # (H, W, 3)


def read_mask(path: str, shape: tuple[int, int], scale: str = "auto") -> tuple[np.ndarray, list[str]]:
  """Grey 8/16-bit PNG/JPEG (or float TIFF) -> ((H, W, 1) float32 in [0, 1], notes). A colour
  mask counts each pixel as its largest channel (noted).

  scale: the value that means "harmonise fully". "auto": 255 for 8-bit and 65535 for 16-bit
  files, except that an integer mask whose maximum is 1 (a 0/1 binary mask, common) is read as
  0/1, with a note; a float mask (TIFF) by its range: values in [0, 1] are weights, larger
  ones levels of 0-255 or 0-65535 (noted). Values outside [0, scale] are clipped. The EXIF orientation is applied, as to
  the image; its size must then equal the image's."""
  if scale not in MASK_SCALES:
    raise ValueError(f"mask scale must be one of {MASK_SCALES}, got {scale!r}")
  data = _read_bytes(path, "mask image", mask=True)
  _check_format(path, data, MASK_FORMATS, "mask")
  _check_pixels(path, data, "unreadable_mask")
  mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
  if mask is None or mask.size == 0:
    raise HarmoniseError("unreadable_mask", f"{path}: not a readable mask image")
  orientation = _check_and_orientation(path, data, "unreadable_mask", "mask image")
  notes = []
  if mask.ndim == 3:
    mask = _colour_mask_to_grey(mask, notes)
  mask = np.ascontiguousarray(_orient(mask, orientation, notes))
  if mask.shape[:2] != tuple(shape):
    raise HarmoniseError("mask_size_mismatch", f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                         f"the image {shape[1]}x{shape[0]} (width x height); they must match")
  floating = np.issubdtype(mask.dtype, np.floating)
  if floating:
    bad = mask.size - int(np.count_nonzero(np.isfinite(mask)))
    if bad:  # NaN would reach the model as NaN pixels; no scale can read it
      raise HarmoniseError("bad_mask", f"{path}: mask has {bad} NaN or infinite value(s); a "
                           "mask must hold finite weights")
  if scale != "auto":
    full = int(scale)
  elif floating:
    full = _float_mask_scale(path, mask, notes)
  else:
    full = 65535 if mask.dtype == np.uint16 else 255
    if int(mask.max()) == 1:
      full = 1
      notes.append("binary 0/1 mask: 1 read as 'harmonise fully' (pass --mask_scale=255 if it "
                   "was meant as 1/255)")
  out = mask.astype(np.float32)
  out /= np.float32(full)
  np.clip(out, 0.0, 1.0, out=out)
  return out[..., None], notes


def _colour_mask_to_grey(mask: np.ndarray, notes: list[str]) -> np.ndarray:
  """(H, W, C) -> (H, W): each pixel counts as its largest colour channel, so a region marked
  in pure red, green or blue is harmonised fully (luminance would give red 30 % and blue
  11 %); a grey mask saved in colour is unchanged. A 4th channel (alpha) is not read."""
  colour = mask[..., :3] if mask.shape[-1] >= 3 else mask[..., :1]
  grey = colour.max(axis=-1)
  if all(np.array_equal(colour[..., c], grey) for c in range(colour.shape[-1])):
    note = "grey mask stored as colour (equal channels): read as grey"
  else:
    note = ("colour mask: each pixel counts as its largest channel (pure red, green or blue = "
            "harmonise fully)")
  if mask.shape[-1] in (2, 4):
    note += "; its alpha channel is ignored"
  notes.append(note)
  return grey


def _float_mask_scale(path: str, mask: np.ndarray, notes: list[str]) -> int:
  """The "harmonise fully" value of a float mask (a TIFF), from its range: a float mask has
  no bit depth to go by, and values in [0, 1] are weights (dividing 0.8 by 255 would
  harmonise nothing); larger values are taken as 0-255 or 0-65535 levels."""
  peak = float(mask.max())
  if peak <= 1.0:
    notes.append("float mask with values in [0, 1]: read as weights (1 = harmonise fully)")
    return 1
  for full in (255, 65535):
    if peak <= full:
      notes.append(f"float mask with values up to {peak:.4g}: read on a 0-{full} scale (pass "
                   "--mask_scale to choose another)")
      return full
  raise HarmoniseError("bad_mask", f"{path}: float mask with values up to {peak:.4g}; expected "
                       "weights in [0, 1] (or levels up to 255 or 65535)")


# ----------------------------------------------------------------------------- writing
def clean_stale_temporaries(directory: str) -> int:
  """Removes the temporary files that write_image left in `directory` when its process was
  killed (the pid in the name is gone); returns how many."""
  removed = 0
  try:
    names = os.listdir(directory)
  except OSError:
    return 0
  for name in names:
    m = _TEMP_RE.match(name)
    if m and not outputs.pid_alive(int(m.group(1))):
      try:
        os.remove(os.path.join(directory, name))
        removed += 1
      except OSError:
        pass
  if removed:
    logging.info("removed %d temporary file(s) of an interrupted run from %s", removed, directory)
  return removed


def write_image(path: str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
  """Encodes by extension and writes to a temporary file in the same folder, then renames:
  an interrupted run never leaves a half-written output."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in _WRITE_PARAMS:
    raise HarmoniseError("bad_output", f"{path}: output must end in {', '.join(IMAGE_EXTENSIONS)}")
  if rgb.ndim == 3:
    code = cv2.COLOR_RGB2BGRA if alpha is not None and ext == ".png" else cv2.COLOR_RGB2BGR
    bgr = cv2.cvtColor(rgb, code)
    if code == cv2.COLOR_RGB2BGRA:
      bgr[..., 3] = alpha
  else:
    bgr = rgb
  ok, buf = cv2.imencode(ext, bgr, _WRITE_PARAMS[ext])
  del bgr
  if not ok:
    raise HarmoniseError("write_failed", f"{path}: could not encode")
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tfharm-{os.getpid()}-", suffix=".tmp", dir=directory)
  except OSError as e:
    raise HarmoniseError("write_failed", f"{path}: cannot write ({e.strerror})") from e
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(buf.tobytes())
    # mkstemp makes the file 0600; give the output the permissions of any file the user makes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise HarmoniseError("write_failed", f"{path}: cannot write ({e.strerror})") from e
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


# ----------------------------------------------------------------------------- running
class FileHarmoniser:
  """Runs the serving functions on decoded files: a tfharm.serving.cache.Runner, or anything
  with a ServingModule's `serving_default` and `harmonise_with_mask` (e.g. a ServingModule)."""

  def __init__(self, runner):
    if not hasattr(runner, "predicted"):
      from tfharm.serving import cache  # pylint: disable=g-import-not-at-top
      runner = cache.runner_from_signatures(runner)
    self.runner = runner

  def harmonise(self, rgb: np.ndarray, mask: np.ndarray | None = None,
                alpha: np.ndarray | None = None):
    """(H, W, 3) uint8 [+ (H, W, 1) float mask] -> (harmonised (H, W, 3) uint8, mask used
    (H, W) uint8). Pixels whose alpha is 0 are returned unchanged (and get mask 0): a given
    mask is zeroed there before the harmoniser sees it; the detector's mask after."""
    transparent = None if alpha is None else alpha == 0
    if transparent is not None and not transparent.any():
      transparent = None
    if mask is None:
      out, used = self.runner.predicted(rgb)
    else:
      if transparent is not None:
        mask = np.where(transparent[..., None], np.float32(0.0), mask)
      out = self.runner.with_mask(rgb, mask)
      used = colour.to_uint8(np.nan_to_num(mask[..., 0]))
    if transparent is not None:
      out = np.where(transparent[..., None], rgb, out)
      used = np.where(transparent, np.uint8(0), used)
    return out, used

  def write(self, decoded: Decoded, mask: np.ndarray | None, dst: str,
            save_mask: str | None = None) -> None:
    """Harmonises decoded input and writes dst (and the mask used), each atomically."""
    out, used_mask = self.harmonise(decoded.rgb, mask, decoded.alpha)
    if decoded.alpha is not None and os.path.splitext(dst)[1].lower() != ".png":
      logging.warning("%s: JPEG output has no alpha channel; the input's is dropped (write "
                      ".png to keep it)", dst)
    write_image(dst, out, decoded.alpha)
    del out
    if save_mask:
      write_image(save_mask, used_mask)


def load_inputs(src: str, mask_path: str | None = None,
                mask_scale: str = "auto") -> tuple[Decoded, np.ndarray | None]:
  """Decodes an image (logging its conversions) and its optional mask; HarmoniseError if bad."""
  decoded = read_image(src)
  for note in decoded.notes:
    logging.info("%s: %s", src, note)
  mask = None
  if mask_path is not None:
    if not os.path.lexists(mask_path):  # else read_mask names the cause (a FIFO, a bad link)
      raise HarmoniseError("missing_mask", f"{src}: no mask {mask_path}")
    mask, notes = read_mask(mask_path, decoded.rgb.shape[:2], mask_scale)
    for note in notes:
      logging.info("%s: %s", mask_path, note)
  return decoded, mask


def harmonise_jobs(harmoniser, jobs: list[Job], mask_scale: str = "auto",
                   progress: bool = True) -> collections.Counter:
  """Runs every job; returns counts: `done` and one key per skip reason (unreadable,
  missing, broken_link, not_a_file, missing_mask, mask_size_mismatch, bad_mask, write_failed,
  ...; each logged). `harmoniser` is a
  FileHarmoniser or a function returning one, called when the first image has been decoded
  (a folder of unreadable files never starts TensorFlow)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  counts = collections.Counter()
  bar = tqdm(jobs, unit="image", disable=not progress)
  try:
    for job in bar:
      try:
        decoded, mask = load_inputs(job.src, job.mask, mask_scale)
        if not isinstance(harmoniser, FileHarmoniser):
          harmoniser = harmoniser()
        harmoniser.write(decoded, mask, job.dst, job.save_mask)
        del decoded, mask
        counts["done"] += 1
      except HarmoniseError as e:
        counts[e.reason] += 1
        logging.warning("skipped: %s", e)
  except KeyboardInterrupt:  # Ctrl-C: say what was done (write_image left no temporary)
    bar.close()
    into = f" into {os.path.dirname(jobs[0].dst) or '.'}" if jobs else ""
    skipped = sum(n for reason, n in counts.items() if reason != "done")
    raise program.Interrupted(
        f"harmonised {counts['done']} of {len(jobs)} image(s){into}"
        + (f" (skipped {skipped})" if skipped else "")
        + "; the others were not started, no file is half-written") from None
  return counts
