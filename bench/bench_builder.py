"""Composite build throughput on a COCO root, and where the time goes.

  python bench/bench_builder.py [--coco_root=COCO_MINI] [--paper_count=4000]

Prints one line per figure, `name value unit`:
- whole builds (TFDS writing included) at 256 and 512, one composite per eligible object;
- a paper-style build at 256 with target reuse (`--paper_count` composites), the rate that decides
  whether the 68128-composite paper set builds in 30 minutes;
- a single-process breakdown of one composite: decode, resize, mask, Lab + transfer, PNG encode.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import app, flags, logging
import numpy as np

from tfharm.data import luminance_composites as lcb
from tfharm import colour
from tfharm.data import coco, composites, generation
from tfharm.cli import program

_ROOT = flags.DEFINE_string("coco_root", None, "COCO 2017 root (e.g. a coco_mini download).")
_PAPER_COUNT = flags.DEFINE_integer("paper_count", 4000, "Composites in the paper-style build.")
_WORKERS = flags.DEFINE_integer("workers", None, "Build processes (default: all cores).")


def _timed_build(config: lcb.LuminanceCompositesConfig) -> tuple[int, float]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as data_dir:
    builder = lcb.LuminanceComposites(config=config, data_dir=data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=_ROOT.value))
    seconds = time.perf_counter() - start
    return sum(s.num_examples for s in builder.info.splits.values()), seconds


def _breakdown(size: int, repeats: int = 60) -> dict[str, float]:
  """Milliseconds per composite for each stage, one process, on the test split's first objects."""
  split = coco.load_split(_ROOT.value, "test")
  tasks = composites.image_tasks(split, composites.CompositeOptions(image_size=size))[:repeats]
  times = {k: 0.0 for k in ("decode", "resize", "mask", "lab_transfer", "png_encode")}
  n = 0
  for task in tasks:
    t0 = time.perf_counter()
    full = coco.read_image(task.image_dir, task.image)
    t1 = time.perf_counter()
    real = composites.resize(full, size)
    t2 = time.perf_counter()
    try:
      mask = composites.object_mask(task.objects[0], task.image, size)
    except coco.SkipError:
      continue
    t3 = time.perf_counter()
    stats = colour.l_statistics(colour.u8_to_lab(real), mask)
    comp = composites.make_composite(real, mask, stats, colour.LStatistics(stats.mean * 1.2,
                                                                           stats.std))
    t4 = time.perf_counter()
    for image in (comp, real, mask.astype(np.uint8)[..., None] * 255):
      composites._png(image, 1)  # pylint: disable=protected-access
    t5 = time.perf_counter()
    for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
      times[key] += dt
    n += 1
  return {k: 1000.0 * v / max(n, 1) for k, v in times.items()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)
  if not _ROOT.value or not os.path.isdir(_ROOT.value):
    print(f"# no COCO root at {_ROOT.value}: pass --coco_root")
    return
  if _WORKERS.value:
    os.environ["TFHARM_BUILD_WORKERS"] = str(_WORKERS.value)
  print(f"build_workers {generation.default_workers()} processes")
  for size in (256, 512):
    n, seconds = _timed_build(lcb.LuminanceCompositesConfig(name=f"bench_{size}", image_size=size))
    print(f"build_default_{size}_composites {n} composites")
    print(f"build_default_{size}_throughput {n / seconds:.1f} composites/s")
  n, seconds = _timed_build(lcb.LuminanceCompositesConfig(
      name="bench_paper_256", num_composites=_PAPER_COUNT.value))
  rate = n / seconds
  print(f"build_paper_style_256_throughput {rate:.1f} composites/s")
  print(f"build_paper_68128_estimate {composites.PAPER_NUM_COMPOSITES / rate / 60:.1f} minutes")
  for size in (256, 512):
    for stage, ms in _breakdown(size).items():
      print(f"composite_{size}_{stage} {ms:.2f} ms/composite (one process)")


if __name__ == "__main__":
  program.run(main)
