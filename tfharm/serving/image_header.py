"""The pixel count an image file declares, read from its header before any decoder allocates it.

OpenCV allocates what the header says before it reads a pixel: a 7 MB Radiance HDR declaring
9000 x 12000 pixels became 1.3 GB of float32. The size is Pillow's (`Image.open` reads only the
header). OpenCV and Pillow each choose their decoder by the file's first bytes, so Pillow's
size is trusted only when Pillow reads the file as the format OpenCV's signature check picks;
a file OpenCV would decode whose size cannot be read that way (a format Pillow does not know:
Radiance HDR, PAM, colour PFM; or a file the two libraries would read as different formats)
raises UnsizedImage. Such a file could not be harmonised anyway: every decoded file is also
opened with Pillow (tfharm.serving.files). `check_pixels` is the cap every reader applies
with this size (the page with its --max_megapixels, the CLI with Pillow's limit). No TensorFlow.
"""
from __future__ import annotations

import io
import re
import tempfile
import warnings

import cv2
from PIL import Image

# OpenCV's decoders, by their signature checks (modules/imgcodecs/src/grfmt_*.cpp), and the
# names Pillow gives the same format (none: Pillow cannot read it).
_OPENCV_FORMATS = (
    (rb"BM", "BMP", ("BMP", "DIB")),
    (rb"#\?(?:RGBE|RADIANCE)", "Radiance HDR", ()),
    (rb"\xff\xd8\xff", "JPEG", ("JPEG", "MPO")),
    (rb"RIFF....WEBP", "WebP", ("WEBP",)),
    (rb"\x59\xa6\x6a\x95", "Sun raster", ("SUN",)),
    (rb"P[1-6]\s", "PNM", ("PPM",)),
    (rb"P7\s", "PAM", ()),
    (rb"P[Ff]\s", "PFM", ()),
    (rb"II[*+]\x00|MM\x00[*+]", "TIFF", ("TIFF",)),
    (rb"\x89PNG\r\n\x1a\n", "PNG", ("PNG",)),
    (rb"\xff\x4f\xff\x51|\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000", ("JPEG2000",)),
    (rb"....ftyp", "AVIF", ("AVIF",)),
    (rb"GIF8[79]a", "GIF", ("GIF",)),
)
_SIGNATURE_BYTES = 16


class UnsizedImage(ValueError):
  """OpenCV would decode the file, but its pixel count cannot be read before decoding."""


class TooLarge(ValueError):
  """The header declares more pixels than the reader takes; str() is the size, for messages
  ("12000 x 9000 pixels", or "over 179 megapixels" past Pillow's own limit)."""


def _opencv_format(head: bytes) -> tuple[str, tuple[str, ...]] | None:
  for signature, name, pillow_names in _OPENCV_FORMATS:
    if re.match(signature, head, re.DOTALL):
      return name, pillow_names
  return None


def content_format(data: bytes) -> str | None:
  """The format OpenCV would decode `data` (the file's first bytes suffice) as, by its
  signature, whatever the file's name ("JPEG", "PNG", "GIF", "Radiance HDR", ...); None for
  a signature not in the table."""
  found = _opencv_format(bytes(data[:_SIGNATURE_BYTES]))
  return found[0] if found else None


def _opencv_reads(source: str | bytes) -> bool:
  """Whether one of OpenCV's decoders claims the file by its first bytes. OpenCV asks only
  for a path: bytes are given to it as a short temporary file of their start."""
  if isinstance(source, str):
    return cv2.haveImageReader(source)
  with tempfile.NamedTemporaryFile(prefix=".tfharm-header-", suffix=".bin") as f:
    f.write(bytes(source[:4096]))
    f.flush()
    return cv2.haveImageReader(f.name)


def declared_size(source: str | bytes) -> tuple[int, int] | None:
  """(width, height) the file's header declares, without decoding; None when neither OpenCV
  nor Pillow reads the file as an image (a decoder then says so, at no cost). `source`: a
  path, or the file's bytes (the CLI reads each file once, through tfharm.cli.inputs).

  Raises UnsizedImage (see the module's doc), and PIL.Image.DecompressionBombError for a
  header over Pillow's own limit (179 megapixels). Pillow's DecompressionBombWarning (90-179
  megapixels) is not passed on: the callers' cap (check_pixels) decides."""
  if isinstance(source, str):
    with open(source, "rb") as f:
      head = f.read(_SIGNATURE_BYTES)
    fp = source
  else:
    head, fp = bytes(source[:_SIGNATURE_BYTES]), io.BytesIO(source)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(fp) as im:
        pillow_format, size = im.format, im.size
  except Image.DecompressionBombError:
    raise
  except (OSError, ValueError, SyntaxError):  # not a format Pillow knows, or a broken header
    pillow_format, size = None, None
  opencv = _opencv_format(head)
  if opencv is None:
    if _opencv_reads(source):  # a decoder of OpenCV's that the table above lacks
      raise UnsizedImage("an image in a format whose size cannot be read before decoding")
    return size  # Pillow's own formats: OpenCV will not decode them
  name, pillow_names = opencv
  if pillow_format not in pillow_names:
    if not pillow_names:
      raise UnsizedImage(f"a {name} image, whose size cannot be read before decoding")
    read_as = f", which Pillow reads as {pillow_format}" if pillow_format else ""
    raise UnsizedImage(f"a {name} file with a header that cannot be read{read_as}")
  return size


def check_pixels(source: str | bytes, max_pixels: float) -> tuple[int, int] | None:
  """The pixel cap of every reader (the page's upload check, the CLI's tfharm.serving.files),
  before any decoder allocates: the declared (width, height), or None for a file no decoder
  reads (its decoder then says so). Raises TooLarge over `max_pixels` (also for a header
  over Pillow's own limit, which no reader here can go past) and UnsizedImage."""
  try:
    size = declared_size(source)
  except Image.DecompressionBombError:
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # Pillow refuses past twice its warning limit
    raise TooLarge(f"over {limit / 1e6:.3g} megapixels") from None
  if size is not None and size[0] * size[1] > max_pixels:
    raise TooLarge(f"{size[0]} x {size[1]} pixels")
  return size
