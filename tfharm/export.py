"""Export the default mask-free system, the joint model (or, with --model=pipeline, detector +
harmoniser), as a SavedModel for TensorFlow Serving.

  python -m tfharm.export --output_dir=out/serving/tfharm [--version=N] [--overwrite]
  python -m tfharm.export --flagfile=configs/export.flags

Writes `<output_dir>/<N>/` with the signatures `serving_default` (uint8 image -> harmonised,
mask, detection) and `harmonise_with_mask`; see tfharm/serving/signatures.py and README.md,
"Serving" (REST and gRPC examples). The export directory is checked (created, written to,
free space) before any model is loaded; temporaries of a killed export are removed.
Exit status: 0 exported, 2 usage or setup error (nothing written), 3 internal error.
"""
import os

from absl import flags, logging

from tfharm.cli import program


def _define_flags() -> None:
  """Flags exist only when this runs as a program (BUILD_NOTES.md, "Rules the code follows")."""
  global _OUTPUT_DIR, _VERSION, _WEIGHTS, _OVERWRITE, _JIT, _CORRECTION, _MODEL
  _OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Model base path; writes "
                                    "<output_dir>/<version>/.")
  _VERSION = flags.DEFINE_integer("version", None, "Version number (default: 1 + the largest there).")
  from tfharm import systems  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  _MODEL, _WEIGHTS, _JIT = program.define_model_flags(__name__, systems.DEFAULT,
                                                      systems.weight_flags())
  _OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace an existing version.")
  # Literal choices: importing tfharm.models would start TensorFlow before the cheap checks
  # (tests/models/correction_test.py checks they equal correction.CORRECTIONS).
  _CORRECTION = flags.DEFINE_enum(
      "correction", "l_moments", ["l_moments", "residual"],
      "How the 256x256 prediction corrects the full-size image (tfharm/models/correction.py).")
  from tfharm.cli import aliases  # pylint: disable=g-import-not-at-top
  aliases.define_deprecated("export_dir", "output_dir", __name__)
  flags.mark_flag_as_required("output_dir")


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tfharm.cli import outputs  # pylint: disable=g-import-not-at-top
  from tfharm import systems  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  from tfharm.serving import paths as paths_lib  # pylint: disable=g-import-not-at-top
  export_dir = os.path.abspath(_OUTPUT_DIR.value)  # "x/new/.." is x: it makes no x/new
  # Cheap checks before TensorFlow is imported: weights, the directory, the version.
  try:
    weights = systems.weight_files(_MODEL.value, {k: h.value for k, h in _WEIGHTS.items()})
  except (FileNotFoundError, ValueError) as e:
    raise program.SetupError(str(e)) from e
  with outputs.removed_if_left_empty(export_dir):  # a failed export leaves no empty folder
    # At least the weight files' bytes; the estimate of what is written follows once loaded.
    outputs.check_directory(export_dir, "--output_dir",
                            sum(os.path.getsize(p) for p in weights.values()))
    # A killed export's version is put back before the next version is chosen: chosen first,
    # a plain export took the missing version's number, then found it restored.
    paths_lib.clean_interrupted(export_dir)
    try:
      version, _ = paths_lib.target(export_dir, _VERSION.value, _OVERWRITE.value)
    except (paths_lib.VersionExistsError, ValueError) as e:
      raise program.SetupError(str(e)) from e
    from tfharm.cli import quiet  # pylint: disable=g-import-not-at-top
    quiet.start_tensorflow(flags.FLAGS.verbosity >= 1)
    from tfharm.serving import exporter  # pylint: disable=g-import-not-at-top
    try:
      system = systems.load(_MODEL.value, weights, _CORRECTION.value)
      outputs.check_directory(export_dir, "--output_dir", exporter.export_bytes(system))
      path = exporter.export(system, export_dir, version, overwrite=_OVERWRITE.value,
                             jit_compile=_JIT.value)
    except (FileNotFoundError, exporter.VersionExistsError, ValueError) as e:
      raise program.SetupError(str(e)) from e
    except program.SetupError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if outputs.is_disk_full(e):  # TensorFlow's ResourceExhaustedError, or an OSError
        raise program.SetupError(f"--output_dir {export_dir}: no space left on the device "
                                 "while writing the SavedModel; the existing versions are "
                                 "unchanged") from e
      raise
  logging.info("Exported %s (%s; signatures serving_default, harmonise_with_mask)", path,
               _MODEL.value)
  print(path)
  return program.SUCCESS


if __name__ == "__main__":
  _define_flags()
  program.run(main, fast_exit=True)
