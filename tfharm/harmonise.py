"""Harmonise one image or a folder of images (JPEG/PNG) with the end-to-end model: by default
the joint model (one network, preset joint_256), or with --model=pipeline the paper's two
networks (detector + harmoniser); which is default and why: tfharm/presets/README.md.

  python -m tfharm.harmonise --input=photo.jpg --output=out.jpg [--mask=m.png] [--save_mask=p.png]
  python -m tfharm.harmonise --input=photos/ --output=harmonised/ [--mask=masks/] [--save_mask=masks_out/]
  python -m tfharm.harmonise --flagfile=configs/harmonise.flags --input=... --output=...

Without --mask the detection finds the region (soft mask = max of its two channels); with one
(grey image, 0 = leave alone, 255 = harmonise, or a 0/1 binary mask: see --mask_scale; a colour
mask counts each pixel as its largest channel; in folder mode masks/<stem>.png) the mask replaces it (the pipeline runs only its harmoniser; the joint
model's L* change is applied through the given mask). Any size; the networks run at 256x256
and the correction is brought back to full resolution. The EXIF orientation is applied (outputs are
written upright), pixels with alpha 0 are returned unchanged and alpha is kept in PNG outputs.
Runs the same functions as the exported SavedModel (README "Serving"), so results equal the
served model's.

Nothing is started if an output or saved mask would replace an input or another output, if a
file is already where one would be written (unless --overwrite; folder mode: any of the files
the run writes, so a re-run into the same folders needs it), or if an output folder cannot be
written. Exit status: 0 all done, 1 some images skipped (reasons
logged, counts at the end), 2 usage or setup error (nothing done), 3 internal error.
"""
import os

from absl import flags, logging

from tfharm.cli import program


def _define_flags() -> None:
  """Flags exist only when this runs as a program (BUILD_NOTES.md, "Rules the code follows")."""
  global _INPUT, _OUTPUT, _MASK, _SAVE_MASK, _WEIGHTS, _JIT, _CORRECTION
  global _MASK_SCALE, _CACHE, _MODEL, _OVERWRITE
  _INPUT = flags.DEFINE_string("input", None, "An image (.jpg/.jpeg/.png) or a folder of them.")
  _OUTPUT = flags.DEFINE_string("output", None, "Output image (format from its extension), or "
                                "a folder when --input is one (same file names).")
  _MASK = flags.DEFINE_string("mask", None, "Optional mask image (folder mode: a folder of "
                              "<stem>.png); skips the detector.")
  _MASK_SCALE = flags.DEFINE_enum(
      "mask_scale", "auto", ["auto", "1", "255", "65535"],
      "The mask value meaning 'harmonise fully'. auto: 255 (8-bit) or 65535 (16-bit), except "
      "that an integer mask whose maximum is 1 is a 0/1 binary mask, and that a float mask "
      "(TIFF) with values in [0, 1] holds weights (each logged).")
  _SAVE_MASK = flags.DEFINE_string("save_mask", None, "Also write the mask used as an 8-bit PNG "
                                   "(folder mode: a folder).")
  _OVERWRITE = flags.DEFINE_boolean(
      "overwrite", False, "Replace files already at --output / --save_mask (folder mode: the "
      "files of this run's images; other files in the folders stay). Without it, any such file "
      "stops the run before it starts (exit 2).")
  from tfharm import systems  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  _MODEL, _WEIGHTS, _JIT = program.define_model_flags(__name__, systems.DEFAULT,
                                                      systems.weight_flags())
  # Literal choices: importing tfharm.models would start TensorFlow before the cheap checks
  # (tests/models/correction_test.py checks they equal correction.CORRECTIONS).
  _CORRECTION = flags.DEFINE_enum(
      "correction", "l_moments", ["l_moments", "residual"],
      "How the 256x256 prediction corrects the full-size image (tfharm/models/correction.py).")
  _CACHE = flags.DEFINE_boolean(
      "cache", True, "Keep the traced model in $TFHARM_CACHE_DIR (default "
      "~/.cache/tfharm/harmonise) so later runs start in a few seconds (docs/cli.md).")
  flags.mark_flags_as_required(["input", "output"])


def _plan(src: str, dst: str):
  """(jobs, ignored files, output folders), or UsageError/SetupError; no TensorFlow."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  mask, save_mask = _MASK.value, _SAVE_MASK.value
  if not os.path.exists(src):
    raise app.UsageError(f"--input {src} does not exist"
                         + (" (a broken symbolic link)" if os.path.islink(src) else ""))
  folder = os.path.isdir(src)
  if mask and not os.path.exists(mask):
    raise app.UsageError(f"--mask {mask} does not exist")
  if mask and folder != os.path.isdir(mask):
    raise app.UsageError(f"--mask must be a {'folder' if folder else 'file'} like --input")
  if folder:
    if os.path.isfile(dst):
      raise app.UsageError(f"--input is a folder, so --output must be one; {dst} is a file")
    if save_mask and os.path.isfile(save_mask):
      raise app.UsageError(f"--input is a folder, so --save_mask must be one; {save_mask} is a file")
    jobs, ignored = files.plan_folder(src, dst, mask, save_mask)
    if not jobs:
      raise program.SetupError(f"--input {src} holds no .jpg, .jpeg or .png file")
    folders = [("--output", dst)] + ([("--save_mask", save_mask)] if save_mask else [])
  else:
    if os.path.isdir(dst):
      dst = os.path.join(dst, os.path.basename(src))
    if not files.is_image_path(dst):
      raise app.UsageError(f"--output {dst} must end in .jpg, .jpeg or .png")
    if save_mask and os.path.isdir(save_mask):
      save_mask = os.path.join(save_mask, os.path.splitext(os.path.basename(src))[0] + ".png")
    if save_mask and not files.is_image_path(save_mask):
      raise app.UsageError(f"--save_mask {save_mask} must end in .png, .jpg or .jpeg")
    jobs, ignored = [files.Job(src, dst, mask, save_mask)], []
    folders = [("--output", os.path.dirname(os.path.abspath(dst)))]
    if save_mask:
      folders.append(("--save_mask", os.path.dirname(os.path.abspath(save_mask))))
  files.check_collisions(jobs)
  files.check_existing(jobs, _OVERWRITE.value)
  return jobs, ignored, folders


def _runner(weights: dict[str, str], verbose: bool, built: dict):
  """The Runner: from the cache if there is an entry for these weights and this code, else
  built in-process. A model built in-process (also when the cache entry turns out to be
  damaged) is put in built["module"], with its cache key in built["key"], for main to cache."""
  from tfharm.cli import quiet  # pylint: disable=g-import-not-at-top
  from tfharm.serving import cache  # pylint: disable=g-import-not-at-top
  quiet.start_tensorflow(verbose, keras=False)
  from tfharm.metrics.device import default_jit_compile  # pylint: disable=g-import-not-at-top
  jit = default_jit_compile() if _JIT.value is None else bool(_JIT.value)
  key = cache.key(weights, _CORRECTION.value, jit) if _CACHE.value else None

  def build():
    from tfharm import systems  # pylint: disable=g-import-not-at-top
    from tfharm.serving.signatures import ServingModule  # pylint: disable=g-import-not-at-top
    built["module"] = ServingModule(systems.load(_MODEL.value, weights, _CORRECTION.value),
                                    jit_compile=jit)
    built["key"] = key
    return cache.runner_from_module(built["module"])

  if key:
    runner = cache.load(key, rebuild=build)
    if runner is not None:
      logging.info("model from the cache %s", runner.source)
      return runner
  return build()


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tfharm.cli import outputs  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  from tfharm import systems  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  src, dst = _INPUT.value, _OUTPUT.value
  folder = os.path.isdir(src)
  jobs, ignored, folders = _plan(src, dst)
  try:
    weights = systems.weight_files(_MODEL.value, {k: h.value for k, h in _WEIGHTS.items()})
  except (FileNotFoundError, ValueError) as e:
    raise program.SetupError(str(e)) from e
  need = files.input_bytes(jobs)  # outputs are about the inputs' size
  for flag, directory in folders:
    outputs.check_directory(directory, flag, need)
    files.clean_stale_temporaries(directory)
  for path in ignored:
    logging.info("ignored (not .jpg/.jpeg/.png): %s", path)

  decoded = None
  if not folder:  # decode first: a bad file is reported before TensorFlow starts
    try:
      decoded = files.load_inputs(jobs[0].src, jobs[0].mask, _MASK_SCALE.value)
    except files.HarmoniseError as e:
      logging.error("skipped: %s", e)
      logging.info("harmonised 0 image(s); skipped 1 {'%s': 1}", e.reason)
      return program.SKIPPED
  started = {}

  def harmoniser():  # models are loaded once an image has been decoded
    if "harmoniser" not in started:
      started["harmoniser"] = files.FileHarmoniser(
          _runner(weights, flags.FLAGS.verbosity >= 1, started))
    return started["harmoniser"]

  if folder:
    counts = files.harmonise_jobs(harmoniser, jobs, _MASK_SCALE.value, progress=True)
  else:
    counts = {"done": 0}
    try:
      harmoniser().write(*decoded, jobs[0].dst, jobs[0].save_mask)
      counts["done"] = 1
      logging.info("wrote %s", jobs[0].dst)
    except files.HarmoniseError as e:
      logging.error("skipped: %s", e)
      counts[e.reason] = 1
  if started.get("module") is not None and started.get("key"):
    from tfharm.serving import cache  # pylint: disable=g-import-not-at-top
    cache.save(started["module"], started["key"])
  skipped = {k: v for k, v in counts.items() if k != "done"}
  if folder or skipped:
    logging.info("harmonised %d image(s)%s; skipped %d %s; ignored %d non-image file(s)",
                 counts["done"], f" into {dst}" if folder else "", sum(skipped.values()),
                 dict(sorted(skipped.items())), len(ignored))
  return program.SKIPPED if skipped else program.SUCCESS


if __name__ == "__main__":
  _define_flags()
  program.run(main, fast_exit=True)
