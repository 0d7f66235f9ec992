"""The online generator's throughput against what the fastest trainer consumes, in one run.

  python bench/bench_generator.py --roots=COCO_MINI,COCO128 [--examples=300]

Prints `name value unit` lines: the source's set-up time, composites/s made sequentially by one
Python thread (one core: `tfharm.data.generator.CompositeSource.example`), batches through the
tf.data pipeline with its default parallelism, and the harmoniser's training images/s at batch 8
(256x256, float32, no XLA: bench_models.py's variant, in a subprocess), the fastest consumer.
"""
from __future__ import annotations

import os
import time

from absl import flags

import measure  # bench/measure.py
from tfharm.cli import program

_ROOTS = flags.DEFINE_list("roots", None, "COCO roots (their train2017 photos are drawn).")
_EXAMPLES = flags.DEFINE_integer("examples", 300, "Examples timed sequentially.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches of 8 timed through tf.data.")
_TRAINER = flags.DEFINE_bool("trainer", True, "Also time the harmoniser's training step.")
flags.mark_flags_as_required(["roots"])


def main(argv):
  del argv
  from tfharm.data import generator  # pylint: disable=g-import-not-at-top
  print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  t = time.perf_counter()
  source = generator.CompositeSource(_ROOTS.value)
  print(f"generator.setup {time.perf_counter() - t:.1f} s")
  print(f"generator.photos {len(source.images)} count")
  print(f"generator.objects {len(source.objects)} count")
  t, c = time.perf_counter(), time.process_time()
  for i in range(_EXAMPLES.value):
    source.example(i)
  wall, cpu = time.perf_counter() - t, time.process_time() - c
  print(f"generator.sequential.composites_per_s {_EXAMPLES.value / wall:.1f} composites/s")
  print(f"generator.sequential.composites_per_cpu_s {_EXAMPLES.value / cpu:.1f} composites/CPU-s")
  print(f"generator.fallbacks {source.fallbacks} count")
  it = iter(source.dataset(10_000, batch_size=8))
  next(it)  # tracing and the first prefetch
  t = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(it)
  print(f"generator.tf_data.composites_per_s {8 * _BATCHES.value / (time.perf_counter() - t):.1f} "
        "composites/s")
  if _TRAINER.value:
    spec = dict(model="harmoniser", mode="train", precision="float32", xla=False, batch=8,
                size=256, warmup=2, iters=5)
    r = measure.spawn_variant(os.path.join(os.path.dirname(__file__), "bench_models.py"), spec)
    print(f"harmoniser.train.float32.noxla.b8.images_per_s {r['images_per_s']:.2f} img/s")
    print(f"harmoniser.train.float32.noxla.b8.images_per_cpu_s {r['images_per_cpu_s']:.2f} "
          "img/CPU-s")
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
  program.run(main)
