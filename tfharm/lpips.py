"""LPIPS distance between two images or two folders of images (tfharm.metrics.lpips), like the
official lpips_2imgs.py / lpips_2dirs.py.

  python -m tfharm.lpips IMG0 IMG1 [--net=alex|vgg] [--mode=exact|fast]
  python -m tfharm.lpips DIR0 DIR1 [--output=dists.txt]   # one "name: distance" per pair
  python -m tfharm.lpips --flagfile=configs/lpips.flags DIR0 DIR1 --output=dists.txt

Exit status: 0 all pairs scored; 1 some pairs skipped (unreadable, not a regular file, sizes
differ, too small, no partner; each logged with its cause, counts at the end); 2 usage or setup
error (bad arguments, --output not writable, already there without --overwrite or one of the
images compared, weights not set up), found before TensorFlow starts where possible; 3
internal error.
"""
from __future__ import annotations

import os

from absl import flags
import numpy as np

from tfharm.cli import program

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _define_flags() -> None:
  """Flags exist only when this runs as a program (BUILD_NOTES.md, "Rules the code follows")."""
  global _NET, _MODE, _OUTPUT, _OVERWRITE
  from tfharm.cli import aliases  # pylint: disable=g-import-not-at-top
  _NET = flags.DEFINE_enum("net", "alex", ["alex", "vgg"], "Backbone.")
  # Literal choices: importing tfharm.metrics.lpips would start TensorFlow before the checks.
  _MODE = flags.DEFINE_enum("mode", "exact", ["exact", "fast"],
                            "exact: float32; fast: bfloat16 convolutions where faster.")
  _OUTPUT = flags.DEFINE_string("output", None, "Directory mode: also write the lines to this "
                                "file.")
  _OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace an existing --output file.")
  aliases.define_deprecated("out", "output", __name__)


def _check_output(out: str, dirs: tuple[str, str], overwrite: bool) -> None:
  """--output may replace only what the user allows: never a compared image, and an existing
  file only with --overwrite (SetupError otherwise)."""
  if not os.path.lexists(out):
    return
  try:
    st = os.stat(out)
  except OSError:
    st = None
  for d in dirs:
    for name in os.listdir(d):
      path = os.path.join(d, name)
      try:
        same = st is not None and os.path.samestat(st, os.stat(path))
      except OSError:
        same = False
      if (same or os.path.abspath(path) == os.path.abspath(out)) and (
          name.lower().endswith(IMAGE_EXTS)):
        raise program.SetupError(f"--output {out} is one of the images compared ({path}); "
                                 "choose another file")
  if not overwrite:
    raise program.SetupError(f"--output {out} exists; pass --overwrite to replace it, or "
                             "choose another file")


def load_image(path: str) -> np.ndarray:
  """Any PNG/JPEG/... -> uint8 (H, W, 3) RGB; grayscale and RGBA are converted with a warning,
  16-bit grayscale by its range (levels / 257, as the harmonise reader), not clipped.
  Only a regular file is opened (tfharm.cli.inputs: a FIFO would block forever); otherwise an
  InputError (an OSError) names the cause."""
  import io  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  from PIL import Image  # only the CLI and tests read files
  from absl import logging
  from tfharm.cli import inputs  # pylint: disable=g-import-not-at-top
  data = inputs.read_bytes(path)
  try:
    with warnings.catch_warnings():  # its cap is Pillow's limit (179 MP): past it, an error
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      im = Image.open(io.BytesIO(data))
      im.load()
  except Image.DecompressionBombError:  # not an OSError: it would stop a directory run
    raise OSError(f"{path}: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.3g} megapixels, Pillow's "
                  "limit") from None
  except Image.UnidentifiedImageError:  # its message names the BytesIO, not the file
    raise OSError(f"{path}: not a readable image (no decoder of Pillow's recognises its "
                  "content)") from None
  except (OSError, SyntaxError, ValueError) as e:  # unreadable, truncated or corrupt data
    raise OSError(f"{path}: not a readable image ({e})") from e
  frames = 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1))
  if frames > 1:  # only the first frame would be scored
    im.close()
    raise OSError(f"{path}: {im.format} with {frames} frames (an animation or several pages); "
                  "LPIPS compares still images")
  with im:
    if im.mode.startswith("I"):  # 16-bit grey (I;16...), or 32-bit integers holding such levels
      levels = np.asarray(im)
      if levels.min() < 0 or levels.max() > 65535:
        raise OSError(f"{path}: {im.mode} image with values outside 0-65535; expected 8- or "
                      "16-bit levels")
      logging.warning("%s is 16-bit grayscale -> scaled to 8 bits (/257), replicated to 3 "
                      "channels", path)
      # convert("RGB") would clip the 16-bit levels at 255 (a white image).
      grey = np.round(levels.astype(np.float64) / 257.0).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    if im.mode != "RGB":
      note = {"L": "grayscale, replicated to 3 channels", "RGBA": "RGBA, alpha dropped",
              "LA": "grayscale+alpha, alpha dropped", "P": "palette, expanded"}.get(im.mode, im.mode)
      if im.mode != "P":
        logging.warning("%s is %s -> converted to RGB", path, note)
      im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def _pairs(dir0: str, dir1: str) -> tuple[list[tuple[str, str, str]], list[str]]:
  """(name, path0, path1) for every image of dir0 with a partner of the same name in dir1,
  and the names without one."""
  names0 = sorted(n for n in os.listdir(dir0) if n.lower().endswith(IMAGE_EXTS))
  names1 = set(os.listdir(dir1))
  return ([(n, os.path.join(dir0, n), os.path.join(dir1, n)) for n in names0 if n in names1],
          [n for n in names0 if n not in names1])


class _Skip(ValueError):
  """A pair that cannot be scored, with its skip counter's key."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def _distance(model, p0: str, p1: str) -> float:
  """The pair's distance; _Skip names why a readable pair cannot be scored (the model's own
  checks would say so too, but as plain ValueErrors)."""
  a, b = load_image(p0), load_image(p1)
  if a.shape != b.shape:
    raise _Skip("size_mismatch", f"image shapes differ: {p0} is {a.shape[1]}x{a.shape[0]}, "
                f"{p1} {b.shape[1]}x{b.shape[0]}")
  if min(a.shape[:2]) < model.min_size:
    raise _Skip("too_small", f"{p0} is {a.shape[1]}x{a.shape[0]}, smaller than LPIPS-"
                f"{model.net}'s minimum {model.min_size}x{model.min_size} (its last layer "
                "would be empty)")
  from tfharm.metrics import lpips  # pylint: disable=g-import-not-at-top (imported by main)
  return float(model(lpips.from_uint8(a), lpips.from_uint8(b)))


def main(argv: list[str]) -> int:
  """Usage errors and --output checked first, then TensorFlow started quietly and the pairs
  scored; returns the exit code."""
  from absl import app, logging  # pylint: disable=g-import-not-at-top
  from tfharm.cli import inputs, outputs, quiet  # pylint: disable=g-import-not-at-top
  if len(argv) != 3:
    raise app.UsageError("expected two images or two directories: python -m tfharm.lpips "
                         "IMG0 IMG1 | DIR0 DIR1 [--net=alex|vgg] [--mode=exact|fast] "
                         "[--output=FILE]")
  a, b = argv[1], argv[2]
  for path in (a, b):
    if not os.path.exists(path):
      raise app.UsageError(f"{path} does not exist")
  if os.path.isdir(a) != os.path.isdir(b):
    raise app.UsageError("give two images or two directories")
  out = _OUTPUT.value
  if out:
    if not os.path.isdir(a):
      raise app.UsageError("--output is for directory mode")
    _check_output(out, (a, b), _OVERWRITE.value)
    outputs.check_file(out, "--output")
  quiet.start_tensorflow(flags.FLAGS.verbosity >= 1)
  from tfharm.metrics import lpips  # pylint: disable=g-import-not-at-top (after the checks)
  from tfharm.weights import store  # pylint: disable=g-import-not-at-top
  try:
    model = lpips.LPIPS(_NET.value, mode=_MODE.value)
  except store.WeightsError as e:
    raise program.SetupError(str(e)) from e
  if not os.path.isdir(a):
    try:
      print(f"Distance: {_distance(model, a, b):.6f}")
    except (ValueError, OSError) as e:  # unreadable, corrupt, sizes differ
      logging.error("skipped: %s", e)
      return program.SKIPPED
    return program.SUCCESS
  pairs, unpaired = _pairs(a, b)
  skipped = {"no_partner": len(unpaired)} if unpaired else {}
  for n in unpaired:
    logging.warning("skipped %s: no %s", n, os.path.join(b, n))
  lines = []
  for name, p0, p1 in pairs:
    try:
      d = _distance(model, p0, p1)
    except (ValueError, OSError) as e:
      if isinstance(e, inputs.InputError):  # missing, broken_link, not_a_file, unreadable
        reason = e.kind
      else:  # size_mismatch, too_small; else a file Pillow cannot decode
        reason = e.reason if isinstance(e, _Skip) else "unreadable"
      skipped[reason] = skipped.get(reason, 0) + 1
      logging.warning("skipped %s: %s", name, e)
      continue
    lines.append(f"{name}: {d:.6f}")
    print(lines[-1], flush=True)
  if out:  # atomically; a short temporary name, so any valid --out name fits
    import tempfile  # pylint: disable=g-import-not-at-top
    fd, tmp = tempfile.mkstemp(prefix=".tfharm-lpips-", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(out)))
    try:
      with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
      umask = os.umask(0)  # mkstemp makes the file 0600; give it a new file's permissions
      os.umask(umask)
      os.chmod(tmp, 0o666 & ~umask)
      os.replace(tmp, out)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
  logging.info("scored %d pair(s); skipped %d %s", len(lines), sum(skipped.values()),
               dict(sorted(skipped.items())))
  return program.SKIPPED if skipped else program.SUCCESS


if __name__ == "__main__":
  _define_flags()
  program.run(main, fast_exit=True)
