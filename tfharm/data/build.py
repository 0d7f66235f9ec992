"""Builds `luminance_composites` without the tfds command line (and without Beam).

  python -m tfharm.data.build --manual_dir=COCO_ROOT --data_dir=OUT [--config=256]
  python -m tfharm.data.build --flagfile=configs/build_demo.flags

Same builder, same records as `tfds build data_builders/luminance_composites --config=...`.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: importing the library part
  must not claim flag names (e.g. --data_dir) that other programs define too."""
  global _MANUAL_DIR, _DATA_DIR, _CONFIG, _WORKERS, _BEAM_OPTIONS
  _MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "COCO 2017 root (annotations/, train2017/, "
                                    "val2017/).")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir to write into.")
  _CONFIG = flags.DEFINE_string("config", "256", "Builder config: 256, 512, paper_256, paper_512.")
  _WORKERS = flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
  _BEAM_OPTIONS = flags.DEFINE_string(
      "beam_pipeline_options", None,
      "Build with Apache Beam instead of the local pool, e.g. 'runner=DirectRunner'.")
  flags.mark_flags_as_required(["manual_dir", "data_dir"])


def build(manual_dir: str, data_dir: str, config: str = "256", workers: int | None = None,
          beam_pipeline_options: str | None = None):
  """Prepares the dataset and returns its builder. Raises on a bad root or an unknown config."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_builders.luminance_composites import luminance_composites_dataset_builder as lcb  # pylint: disable=g-import-not-at-top

  names = [c.name for c in lcb.Builder.BUILDER_CONFIGS]
  if config not in names:
    raise ValueError(f"unknown config {config!r}; choose one of {names}")
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"manual_dir {manual_dir!r} does not exist (a COCO 2017 root)")
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
