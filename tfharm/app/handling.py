"""One request of the web page: check the upload, harmonise it, write the files to download.

Every step is the harmonise CLI's own (tfharm/harmonise.py): the upload is decoded by
`files.load_inputs`, harmonised and written by `files.FileHarmoniser.write` through the
`ServingModule` signatures, so the harmonised PNG and the mask PNG offered for download are
the files `python -m tfharm.harmonise --input=PHOTO [--mask=MASK] --output=X.png
--save_mask=Y.png` writes. What the page adds: size limits checked before decoding, the
detector's map (which FileHarmoniser computes but does not return), messages fit for a page,
every system of tfharm.systems on offer (the default loaded at start, another when first asked
for: the page answers sooner) and each system's own words. No Gradio here (page.py), and
TensorFlow only inside `load_modules`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np

from tfharm import systems as systems_lib
from tfharm.app.overlay import overlay_detection
from tfharm.serving import files, image_header

# Where the mask comes from (the page's "system" choice; its labels: `Words`).
MASK_FREE = "mask-free"
WITH_MASK = "with the uploaded mask"
SYSTEMS = (MASK_FREE, WITH_MASK)
# Kept request folders: the page's files stay downloadable for the last few results only.
_KEEP_REQUESTS = 8


class UploadError(ValueError):
  """Something the user can fix (not an image, too large, no mask, ...): shown on the page."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """Refused before decoding: a 10 kB PNG can declare 30000 x 30000 pixels, and the full-size
  correction holds several float32 copies of the image (docs/app.md, "Limits")."""
  max_megapixels: float = 24.0
  max_megabytes: float = 50.0


@dataclasses.dataclass
class Result:
  before: np.ndarray  # (H, W, 3) uint8: the photo as the model saw it
  after: np.ndarray  # (H, W, 3) uint8: the harmonised pixels, read back from harmonised_path
  overlay: np.ndarray  # (H, W, 3) uint8: the detector's map over the photo
  harmonised_path: str  # PNG, what the CLI writes with --output=...png
  mask_path: str  # 8-bit PNG of the mask the harmoniser used, as the CLI's --save_mask
  before_path: str  # `before` as PNG, for the page
  overlay_path: str  # `overlay` as JPEG (a picture to look at, 10x cheaper to encode than PNG)
  summary: str  # one line for the page


@dataclasses.dataclass(frozen=True)
class Words:
  """What the page says of system `name`, from its spec (tfharm.systems.Spec: title, finder,
  fixer), so the page has no branch per system and a new system brings its own words."""
  name: str
  title: str  # the model choice
  mask_free: str  # the mask-free choice's label (its value stays MASK_FREE)
  detection: str  # the map's label
  used_mask: str  # the used mask's label
  working: str  # the progress line while it runs
  loading: str  # the progress line while it loads (the first request that asks for it)


def words(name: str) -> Words:
  spec = systems_lib.spec(name)
  finder = spec.finder[:1].upper() + spec.finder[1:]
  return Words(
      name=name, title=spec.title, mask_free=f"{MASK_FREE} ({spec.finder} finds the region)",
      detection=f"{finder}'s map: red = darker than it should be, green = brighter",
      used_mask=f"Mask {spec.fixer} used", working=f"{spec.title} at work",
      loading=f"loading the {spec.title} (its first use on this page; a few seconds)")


class _KeepDetection:
  """Stands in for a ServingModule in FileHarmoniser: forwards both signatures unchanged and
  keeps the detection map of the last serving_default call, which FileHarmoniser drops."""

  def __init__(self, module: Any):
    self.module = module
    self.detection = None  # (H, W, 2) float32 [p_negative, p_positive]

  def serving_default(self, image):
    out = self.module.serving_default(image)
    self.detection = out["detection"].numpy()[0]
    return out

  def harmonise_with_mask(self, image, mask):
    return self.module.harmonise_with_mask(image, mask)


def check_size(path: str, what: str, limits: Limits) -> None:
  """UploadError if the file, or the pixel count its header declares, is over the limits, or
  if a decoder would read it but its pixel count cannot be read first (image_header). Reads
  only the header (the rule is image_header.check_pixels, the CLI's too); a file that is not
  an image passes, for the decoder to report."""
  megabytes = os.path.getsize(path) / 1e6
  if megabytes > limits.max_megabytes:
    raise UploadError(f"the {what} is {megabytes:.3g} MB; this page takes up to "
                      f"{limits.max_megabytes:g} MB")
  try:
    image_header.check_pixels(path, limits.max_megapixels * 1e6)
  except image_header.TooLarge as e:
    raise UploadError(f"the {what} is {e}; this page takes up to "
                      f"{limits.max_megapixels:g} megapixels") from None
  except image_header.UnsizedImage as e:
    raise UploadError(f"the {what} is {e}; this page takes JPEG or PNG") from None


def _page_message(error: files.HarmoniseError, *paths: str | None) -> str:
  """The CLI's message with the server's temporary paths cut to the uploaded file names."""
  message = str(error)
  for path in paths:
    if path:
      message = message.replace(path, os.path.basename(path))
  return message


class App:
  """The systems on offer (per system, one ServingModule per correction) and the requests'
  output folder. `modules` are the default system's, loaded; `others` load one more system
  each ({name: () -> its modules}), called on the first request that asks for it: the page
  answers without paying for a system nobody uses (issue 27)."""

  def __init__(self, modules: dict[str, Any], limits: Limits = Limits(),
               work_dir: str | None = None, model: str = "joint",
               others: Mapping[str, Callable[[], dict[str, Any]]] | None = None):
    self.modules = modules  # the default system's: its corrections are the page's choices
    self.model = model  # the default system's name
    self._served = {model: modules}
    self._loaders = dict(others or {})
    self.choices = (model, *[name for name in self._loaders if name != model])
    self.limits = limits
    self.work_dir = work_dir or tempfile.mkdtemp(prefix="tfharm-app-")
    os.makedirs(self.work_dir, exist_ok=True)
    # One request at a time (the models use both cores), and a system loads once: under it.
    self._lock = threading.Lock()
    self._requests: list[str] = []
    self.results = 0  # numbered, so two equal results still read as two on the page

  def loaded(self, model: str) -> bool:
    return model in self._served

  def modules_of(self, model: str) -> dict[str, Any]:
    """System `model`'s modules, loaded now if this is its first request (under the lock)."""
    if model not in self._served:
      self._served[model] = self._loaders[model]()
    return self._served[model]

  def _request_dir(self) -> str:
    self._requests.append(tempfile.mkdtemp(prefix="request-", dir=self.work_dir))
    while len(self._requests) > _KEEP_REQUESTS:
      shutil.rmtree(self._requests.pop(0), ignore_errors=True)
    return self._requests[-1]

  def run(self, image_path: str | None, mask_path: str | None, system: str = MASK_FREE,
          correction: str = "l_moments", model: str | None = None) -> Result:
    """Harmonises one upload with system `model` (default: the default system); UploadError
    with a sentence for the page when it cannot."""
    model = model or self.model
    if model not in self.choices:
      raise UploadError(f"unknown model {model!r}; choose one of {', '.join(self.choices)}")
    if not image_path:
      raise UploadError("upload a photo (JPEG or PNG) or click one of the examples first")
    if system not in SYSTEMS:
      raise UploadError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
    if correction not in self.modules:
      raise UploadError(f"unknown correction {correction!r}; choose one of "
                        f"{', '.join(self.modules)}")
    use_mask = system == WITH_MASK
    if use_mask and not mask_path:
      raise UploadError(f"'{WITH_MASK}' needs a mask: upload one (white = harmonise, black = "
                        f"leave alone, same size as the photo), or choose '{MASK_FREE}'")
    mask_path = mask_path if use_mask else None
    check_size(image_path, "photo", self.limits)
    if mask_path:
      check_size(mask_path, "mask", self.limits)
    try:
      decoded, mask = files.load_inputs(image_path, mask_path)
    except files.HarmoniseError as e:
      raise UploadError(_page_message(e, image_path, mask_path)) from None
    with self._lock:
      start = time.perf_counter()
      out_dir = self._request_dir()
      stem = os.path.splitext(os.path.basename(image_path))[0] or "image"
      harmonised_path = os.path.join(out_dir, f"{stem}_harmonised.png")
      used_mask_path = os.path.join(out_dir, f"{stem}_mask.png")
      served = _KeepDetection(self.modules_of(model)[correction])
      harmoniser = files.FileHarmoniser(served)
      harmoniser.write(decoded, mask, harmonised_path, used_mask_path)  # the CLI's pixels
      if served.detection is None:  # a mask was given, so only the harmoniser ran
        harmoniser.harmonise(decoded.rgb)  # one more pass, for the detector's map only
      # The page shows files written here (cv2, fast) rather than arrays Gradio would encode
      # with Pillow; the "after" it shows is the downloadable PNG itself.
      overlay = overlay_detection(decoded.rgb, served.detection)
      before_path = os.path.join(out_dir, f"{stem}_before.png")
      overlay_path = os.path.join(out_dir, f"{stem}_detector.jpg")
      files.write_image(before_path, decoded.rgb)
      files.write_image(overlay_path, overlay)
      seconds = time.perf_counter() - start
      self.results += 1
      number = self.results
    height, width = decoded.rgb.shape[:2]
    notes = "".join(f"; {n}" for n in decoded.notes)
    return Result(before=decoded.rgb, after=files.read_image(harmonised_path).rgb,
                  overlay=overlay, harmonised_path=harmonised_path, mask_path=used_mask_path,
                  before_path=before_path, overlay_path=overlay_path,
                  summary=f"Result {number}: {width} x {height}, {system}, model {model}, "
                          f"correction {correction}, {seconds:.1f} s{notes}")


def load_modules(model: str = "joint", weights: dict[str, str] | None = None,
                 jit_compile: bool | None = None) -> dict[str, Any]:
  """{correction: ServingModule} for every correction, sharing one copy of the networks of
  system `model` (tfharm.systems; `weights` as systems.weight_files). Each is the system
  `systems.load(model, weights, correction=c)` builds, so every choice gives the CLI's
  `--correction=c` pixels (tested)."""
  from tfharm import systems  # pylint: disable=g-import-not-at-top
  from tfharm.models import correction as correction_lib  # pylint: disable=g-import-not-at-top
  from tfharm.serving.signatures import ServingModule  # pylint: disable=g-import-not-at-top
  default = correction_lib.DEFAULT_CORRECTION
  first = systems.load(model, weights, correction=default)
  return {name: ServingModule(first if name == default else first.with_correction(name),
                              jit_compile=jit_compile)
          for name in (default, *[c for c in correction_lib.CORRECTIONS if c != default])}


def warm_up(modules: dict[str, Any]) -> None:
  """Traces what a first upload runs (the default correction, mask-free) on a tiny image, so it
  does not pay for tracing. The other signatures trace on their first use (+~2.5 s on that
  request here): tracing all four at start was 45 % of the start-up (bench/RESULTS.md,
  "Start-up against ...")."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  next(iter(modules.values())).serving_default(tf.zeros((1, 8, 8, 3), tf.uint8))
