"""Harmonise one image or a folder of images (JPEG/PNG) with the end-to-end model.

  python -m tfharm.harmonise --input=photo.jpg --output=out.jpg [--mask=m.png] [--save_mask=p.png]
  python -m tfharm.harmonise --input=photos/ --output=harmonised/ [--mask=masks/] [--save_mask=masks_out/]
  python -m tfharm.harmonise --flagfile=configs/harmonise.flags --input=... --output=...

Without --mask the detector finds the region (soft mask = max of its two channels); with one
(grey image, 0 = leave alone, 255 = harmonise; in folder mode masks/<stem>.png) only the
harmoniser runs. Any size; the networks run at 256x256 and the correction is brought back to
full resolution (notes/serving.md). Runs the in-process pipeline through the same functions as
the exported SavedModel, so results equal the served model's.
"""
import os
import sys

from absl import app, flags, logging


def _define_flags() -> None:
  """Flags exist only when this runs as a program (BUILD_NOTES: "Flags live only in programs")."""
  global _INPUT, _OUTPUT, _MASK, _SAVE_MASK, _DETECTOR, _HARMONISER, _JIT, _CORRECTION
  _INPUT = flags.DEFINE_string("input", None, "An image (.jpg/.jpeg/.png) or a folder of them.")
  _OUTPUT = flags.DEFINE_string("output", None, "Output image (format from its extension), or "
                                "a folder when --input is one (same file names).")
  _MASK = flags.DEFINE_string("mask", None, "Optional mask image (folder mode: a folder of "
                              "<stem>.png); skips the detector.")
  _SAVE_MASK = flags.DEFINE_string("save_mask", None, "Also write the mask used as an 8-bit PNG "
                                   "(folder mode: a folder).")
  _DETECTOR = flags.DEFINE_string(
      "detector_weights", None, "Detector file (default: checkpoints/detector_256.head.weights.h5).")
  _HARMONISER = flags.DEFINE_string(
      "harmoniser_weights", None, "Harmoniser file (default: checkpoints/harmoniser_256.weights.h5).")
  _JIT = flags.DEFINE_boolean(
      "jit_compile", None, "XLA for the networks (default: on with a GPU, off on CPU).")
  # Literal choices: importing tfharm.models would start TensorFlow before the cheap checks
  # (tests/models/correction_test.py checks they equal correction.CORRECTIONS).
  _CORRECTION = flags.DEFINE_enum(
      "correction", "l_moments", ["l_moments", "residual"],
      "How the 256x256 prediction corrects the full-size image (tfharm/models/correction.py).")
  flags.mark_flags_as_required(["input", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  src, dst = _INPUT.value, _OUTPUT.value
  if not os.path.exists(src):
    raise app.UsageError(f"--input {src} does not exist")
  folder = os.path.isdir(src)
  if folder and os.path.isfile(dst):
    raise app.UsageError(f"--input is a folder, so --output must be one; {dst} is a file")
  if _MASK.value and folder != os.path.isdir(_MASK.value):
    raise app.UsageError(f"--mask must be a {'folder' if folder else 'file'} like --input")
  from tfharm.serving import paths as paths_lib  # pylint: disable=g-import-not-at-top
  try:
    paths = paths_lib.resolve_weights(_DETECTOR.value, _HARMONISER.value)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  try:
    if not folder:  # decode first: a bad file fails before TensorFlow starts
      if os.path.isdir(dst):
        dst = os.path.join(dst, os.path.basename(src))
      if os.path.realpath(dst) == os.path.realpath(src):
        raise files.HarmoniseError("bad_output", "--output must differ from --input")
      if not files.is_image_path(dst):
        raise files.HarmoniseError("bad_output", f"--output {dst} must end in .jpg, .jpeg or .png")
      inputs = files.load_inputs(src, _MASK.value)
    # Heavy imports after the cheap checks: TensorFlow takes seconds to start.
    from tfharm.serving import exporter  # pylint: disable=g-import-not-at-top
    from tfharm.serving.signatures import ServingModule  # pylint: disable=g-import-not-at-top
    harmoniser = files.FileHarmoniser(
        ServingModule(exporter.load_serving_pipeline(*paths, correction=_CORRECTION.value),
                      jit_compile=_JIT.value))
    if folder:
      counts = files.harmonise_folder(harmoniser, src, dst, _MASK.value, _SAVE_MASK.value,
                                      progress=True)
      skipped = {k: v for k, v in counts.items() if k not in ("done", "not_an_image")}
      logging.info("harmonised %d image(s) into %s; skipped %d %s; ignored %d non-image file(s)",
                   counts["done"], dst, sum(skipped.values()), dict(sorted(skipped.items())),
                   counts["not_an_image"])
    else:
      harmoniser.write(*inputs, dst, _SAVE_MASK.value)
      logging.info("wrote %s", dst)
  except files.HarmoniseError as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
