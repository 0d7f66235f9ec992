"""Serving cost on this machine: one `name value unit` line per figure.

  python bench/bench_serving.py                     # exports a model to a temp dir, then times it
  python bench/bench_serving.py --saved_model=out/serving/tfharm/1 --batch_size=4

Times the exported signatures as a server would run them: `tf.saved_model.load` in this process,
then calls of the concrete functions on uint8 images (1024x768 by default). Latency is the median
of repeated calls after warm-up; throughput is images per second at --batch_size. Also reports
process CPU seconds per image, which is less sensitive to neighbours than wall time.

Without --saved_model the weights are random (timing does not depend on their values): the
committed checkpoints may not exist yet, and the bench must run anywhere `make weights` ran.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time

from absl import flags

import measure  # bench/measure.py
from tfharm.cli import program

_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "An exported version dir (default: export one).")
_HEIGHT = flags.DEFINE_integer("height", 768, "Image height.")
_WIDTH = flags.DEFINE_integer("width", 1024, "Image width.")
_BATCH = flags.DEFINE_integer("batch_size", 4, "Images per call for the throughput figure.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed calls per figure (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls per figure.")
_CORRECTION = flags.DEFINE_enum("correction", "l_moments", ["l_moments", "residual"],
                                "The exported model's correction (without --saved_model).")


def _export(directory: str) -> str:
  from tfharm.models.detector import Detector  # pylint: disable=g-import-not-at-top
  from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig  # pylint: disable=g-import-not-at-top
  from tfharm.systems.pipeline import PipelineSystem  # pylint: disable=g-import-not-at-top
  from tfharm.serving import exporter  # pylint: disable=g-import-not-at-top
  pipe = PipelineSystem(Detector(), Harmoniser(HarmoniserConfig(image_size=256)),
                               correction=_CORRECTION.value)
  t = time.perf_counter()
  path = exporter.export(pipe, directory, version=1)
  print(f"# correction {_CORRECTION.value}")
  print(f"serving.export_seconds {time.perf_counter() - t:.1f} s")
  return path


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
        "load average %.2f %.2f %.2f at start" % os.getloadavg())
  with tempfile.TemporaryDirectory() as tmp:
    path = _SAVED_MODEL.value or _export(os.path.join(tmp, "tfharm"))
    t = time.perf_counter()
    model = tf.saved_model.load(path)
    print(f"serving.load_seconds {time.perf_counter() - t:.1f} s")
    sd, hm = model.signatures["serving_default"], model.signatures["harmonise_with_mask"]
    h, w, b = _HEIGHT.value, _WIDTH.value, _BATCH.value
    rng = np.random.default_rng(0)
    one = tf.constant(rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8))
    batch = tf.constant(rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8))
    mask = tf.constant(rng.uniform(0, 1, (1, h, w, 1)).astype(np.float32))
    size = f"{w}x{h}"

    wall, cpu = measure.median_time(lambda: sd(image=one)["harmonised"].numpy(), _WARMUP.value, _ITERS.value)
    print(f"serving.serving_default.latency_{size}_b1 {wall * 1e3:.0f} ms")
    print(f"serving.serving_default.cpu_seconds_{size}_b1 {cpu:.2f} CPU-s")
    wall, cpu = measure.median_time(lambda: sd(image=batch)["harmonised"].numpy(), 1, max(2, _ITERS.value // 2))
    print(f"serving.serving_default.throughput_{size}_b{b} {b / wall:.2f} images/s")
    print(f"serving.serving_default.cpu_seconds_per_image_{size}_b{b} {cpu / b:.2f} CPU-s")
    wall, cpu = measure.median_time(lambda: hm(image=one, mask=mask)["harmonised"].numpy(),
                      _WARMUP.value, _ITERS.value)
    print(f"serving.harmonise_with_mask.latency_{size}_b1 {wall * 1e3:.0f} ms")
    print(f"serving.harmonise_with_mask.cpu_seconds_{size}_b1 {cpu:.2f} CPU-s")
  print("# load average %.2f %.2f %.2f at end" % os.getloadavg())


if __name__ == "__main__":
  program.run(main)
