"""Builds `luminance_composites` without the tfds command line (and without Beam).

  python -m tfharm.data.build --manual_dir=COCO_ROOT --data_dir=OUT [--config=256]
  python -m tfharm.data.build --flagfile=configs/build_demo.flags

Same builder, same records as `tfds build data_builders/luminance_composites --config=...`.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app, flags, logging

def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: importing the library part
  must not claim flag names (e.g. --data_dir) that other programs define too."""
  global _MANUAL_DIR, _DATA_DIR, _CONFIG, _WORKERS, _BEAM_OPTIONS
  _MANUAL_DIR = flags.DEFINE_list(
      "manual_dir", None, "COCO 2017 root (annotations/, train2017/, val2017/), or several, "
      "comma-separated (merged; e.g. coco_mini,coco128: a root may lack val2017).")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir to write into.")
  _CONFIG = flags.DEFINE_string("config", "256", "Builder config: 256, 512, paper_256, paper_512.")
  _WORKERS = flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
  _BEAM_OPTIONS = flags.DEFINE_string(
      "beam_pipeline_options", None,
      "Build with Apache Beam instead of the local pool, e.g. 'runner=DirectRunner'.")
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


def build(manual_dir: str | Sequence[str], data_dir: str, config: str = "256",
          workers: int | None = None, beam_pipeline_options: str | None = None):
  """Prepares the dataset and returns its builder. Raises on a bad root or an unknown config.

  `manual_dir`: one COCO root, a folder of roots, or a list of roots (merged)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_builders.luminance_composites import luminance_composites_dataset_builder as lcb  # pylint: disable=g-import-not-at-top

  names = [c.name for c in lcb.Builder.BUILDER_CONFIGS]
  if config not in names:
    raise ValueError(f"unknown config {config!r}; choose one of {names}")
  roots = [manual_dir] if isinstance(manual_dir, str) else list(manual_dir)
  if not roots:
    raise ValueError("manual_dir: no COCO root given")
  for root in roots:
    if not os.path.isdir(root):
      raise FileNotFoundError(f"manual_dir {root!r} does not exist (a COCO 2017 root)")
  manual_dir = manual_dir_for(roots, data_dir)
  if workers is not None:
    os.environ["TFHARM_BUILD_WORKERS"] = str(workers)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  if beam_pipeline_options:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    download_config.beam_options = beam.options.pipeline_options.PipelineOptions(
        flags=[f"--{opt}" for opt in beam_pipeline_options.split(",")])
  builder = lcb.Builder(config=config, data_dir=data_dir)
  builder.download_and_prepare(download_config=download_config)
  return builder


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  builder = build(_MANUAL_DIR.value, _DATA_DIR.value, _CONFIG.value, _WORKERS.value,
                  _BEAM_OPTIONS.value)
  for name, split in builder.info.splits.items():
    logging.info("%s: %d examples", name, split.num_examples)
  logging.info("written to %s; skipped: %s", builder.data_dir, builder.info.metadata.get("skipped"))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
