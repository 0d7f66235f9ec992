"""Builds `luminance_composites` without the tfds command line (and without Beam).

  python -m tfharm.data.build --manual_dir=COCO_ROOT --data_dir=OUT [--dataset_config=256]
  python -m tfharm.data.build --flagfile=configs/build_demo.flags

Same builder, same records as `tfds build data_builders/luminance_composites --config=...`.
Exit status (tfharm.cli.program): 0 built; 2 usage or setup error (a missing root, an unknown
config, bad annotations, a full disk), in one line; 3 internal error. A failed build removes
what it created under --data_dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Sequence

from absl import app, flags, logging

from tfharm.cli import program

# What a build creates in a TFDS data_dir (the manual_roots symlink folder, TFDS's downloads/
# and the dataset's folder), and how deep it writes in them.
_BUILD_FOLDERS = ("manual_roots", "downloads", "luminance_composites")
_BUILD_DEPTH = 4  # luminance_composites/<config>/<version>/<file>

def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: importing the library part
  must not claim flag names (e.g. --data_dir) that other programs define too."""
  global _MANUAL_DIR, _DATA_DIR, _CONFIG, _WORKERS, _BEAM_OPTIONS
  _MANUAL_DIR = flags.DEFINE_list(
      "manual_dir", None, "COCO 2017 root (annotations/, train2017/, val2017/), or several, "
      "comma-separated (merged; e.g. coco_mini,coco128: a root may lack val2017).")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir to write into.")
  _CONFIG = flags.DEFINE_string("dataset_config", "256", "Builder config: 256, 512, paper_256, "
                                "paper_512.")
  _WORKERS = flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
  _BEAM_OPTIONS = flags.DEFINE_string(
      "beam_pipeline_options", None,
      "Build with Apache Beam instead of the local pool, e.g. 'runner=DirectRunner'.")
  from tfharm.cli import aliases  # pylint: disable=g-import-not-at-top
  aliases.define_deprecated("config", "dataset_config", __name__)
  flags.mark_flags_as_required(["manual_dir", "data_dir"])


def manual_dir_for(roots: Sequence[str], data_dir: str) -> str:
  """TFDS takes one manual_dir: several roots become a folder of symlinks to them (named by
  position and basename, so the merge order is the order given) under data_dir."""
  if len(roots) == 1:
    return roots[0]
  for root in roots:
    if not os.path.isdir(root):
      raise FileNotFoundError(f"manual_dir {root!r} does not exist (a COCO 2017 root)")
  folder = os.path.join(data_dir, "manual_roots",
                        "+".join(os.path.basename(os.path.normpath(r)) for r in roots))
  os.makedirs(folder, exist_ok=True)
  for i, root in enumerate(roots):
    link = os.path.join(folder, f"{i}_{os.path.basename(os.path.normpath(root))}")
    target = os.path.abspath(root)
    if os.path.islink(link) and os.readlink(link) != target:
      os.remove(link)
    if not os.path.islink(link):
      os.symlink(target, link)
  return folder


def _build_entries(data_dir: str) -> set[str]:
  """The paths in the folders a build writes (_BUILD_FOLDERS), down to _BUILD_DEPTH."""
  found = set()
  for folder in _BUILD_FOLDERS:
    top = os.path.join(data_dir, folder)
    if not os.path.lexists(top):
      continue
    found.add(top)
    for directory, dirs, files in os.walk(top):  # symlinks (manual_roots) are not followed
      if directory.count(os.sep) - data_dir.count(os.sep) >= _BUILD_DEPTH:
        dirs[:] = []
        continue
      found.update(os.path.join(directory, n) for n in dirs + files)
  return found


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)


@contextlib.contextmanager
def _removed_on_failure(data_dir: str):
  """A build that fails (or is interrupted) removes what it created under data_dir: the
  data_dir itself and its missing parents, else the manual_roots symlink folder and TFDS's
  downloads/, .config/ and <config>/ folders (TFDS removes its own incomplete.* folder). What
  was there before stays."""
  created = data_dir
  while not os.path.exists(os.path.dirname(created)):
    created = os.path.dirname(created)
  if os.path.lexists(created):
    created = None
  before = _build_entries(data_dir)
  try:
    yield
  except BaseException:
    if created:
      _remove(created)
    else:
      for path in sorted(_build_entries(data_dir) - before, key=len):  # parents first
        _remove(path)
    raise


class ArgumentError(ValueError):
  """An unknown config or no root given (a setup error of the command, exit 2)."""


def check_arguments(manual_dir: str | Sequence[str], config: str) -> list[str]:
  """The roots, as a list; ArgumentError for an unknown config or no root, FileNotFoundError
  for a root that is not a folder."""
  from tfharm.data import luminance_composites as lcb  # pylint: disable=g-import-not-at-top
  names = [c.name for c in lcb.LuminanceComposites.BUILDER_CONFIGS]
  if config not in names:
    raise ArgumentError(f"unknown config {config!r}; choose one of {names}")
  roots = [manual_dir] if isinstance(manual_dir, str) else list(manual_dir)
  if not roots:
    raise ArgumentError("manual_dir: no COCO root given")
  for root in roots:
    if not os.path.isdir(root):
      raise FileNotFoundError(f"manual_dir {root!r} does not exist (a COCO 2017 root)")
  return roots


def build(manual_dir: str | Sequence[str], data_dir: str, config: str = "256",
          workers: int | None = None, beam_pipeline_options: str | None = None):
  """Prepares the dataset and returns its builder. Raises on a bad root or an unknown config
  (check_arguments) and on bad annotations (coco.AnnotationError); a failed build removes
  what it created under data_dir.

  `manual_dir`: one COCO root, a folder of roots, or a list of roots (merged)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfharm.data import luminance_composites as lcb  # pylint: disable=g-import-not-at-top

  roots = check_arguments(manual_dir, config)
  data_dir = os.path.abspath(data_dir)  # "new/.." is the folder it names, not a new folder
  with _removed_on_failure(data_dir):
    manual_dir = manual_dir_for(roots, data_dir)
    if workers is not None:
      os.environ["TFHARM_BUILD_WORKERS"] = str(workers)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    if beam_pipeline_options:
      import apache_beam as beam  # pylint: disable=g-import-not-at-top
      download_config.beam_options = beam.options.pipeline_options.PipelineOptions(
          flags=[f"--{opt}" for opt in beam_pipeline_options.split(",")])
    builder = lcb.LuminanceComposites(config=config, data_dir=data_dir)
    builder.download_and_prepare(download_config=download_config)
  return builder


def _start_tensorflow(verbose: bool) -> None:
  """TFDS imports TensorFlow mid-build (its writer), whose start-up lines (tfharm.cli.quiet's
  NOISE: `failed call to cuInit`, cpu_feature_guard, ...) then reach the user between the
  progress bars. Imported here, they are filtered as in the other commands; only during the
  import: the whole run's filter would hold back the progress bars, whose updates end in a
  carriage return, not a newline."""
  from tfharm.cli import quiet  # pylint: disable=g-import-not-at-top
  with contextlib.nullcontext() if verbose else quiet.filtered_stderr():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # the CUDA plugin's own start-up lines come here


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tfharm.cli import outputs  # pylint: disable=g-import-not-at-top
  from tfharm.data import coco  # pylint: disable=g-import-not-at-top
  try:
    check_arguments(_MANUAL_DIR.value, _CONFIG.value)  # the cheap checks, before TensorFlow
    _start_tensorflow(flags.FLAGS.verbosity >= 1)
    builder = build(_MANUAL_DIR.value, _DATA_DIR.value, _CONFIG.value, _WORKERS.value,
                    _BEAM_OPTIONS.value)
  except (ArgumentError, FileNotFoundError, coco.AnnotationError) as e:
    raise program.SetupError(str(e)) from e
  except Exception as e:  # pylint: disable=broad-except
    if outputs.is_disk_full(e):
      raise program.SetupError(f"--data_dir {os.path.abspath(_DATA_DIR.value)}: no space left "
                               "on the device while writing the build; nothing was kept") from e
    raise
  for name, split in builder.info.splits.items():
    logging.info("%s: %d examples", name, split.num_examples)
  logging.info("written to %s; skipped: %s", builder.data_dir, builder.info.metadata.get("skipped"))


if __name__ == "__main__":
  _define_flags()
  program.run(main)  # exit codes and --help as the other programs (tfharm.cli.program)
