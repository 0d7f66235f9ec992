"""Timing pieces every benchmark here shares (`import measure` from a bench/ script)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A bench measures the tfharm of its own checkout, as the commands it spawns there (cwd first)
# do, even when the installed (editable) tfharm is another checkout's.
sys.path.insert(0, REPO)


def median_time(fn: Callable[[], object], warmup: int, iters: int) -> tuple[float, float]:
  """Median wall seconds and median process CPU seconds per call of fn (fn must block).

  CPU seconds say what the work costs when other jobs share the two cores; wall time alone
  then mostly measures the neighbours.
  """
  for _ in range(warmup):
    fn()
  wall, cpu = [], []
  for _ in range(iters):
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def tensorflow_import_seconds(repeats: int = 3) -> list[float]:
  """Wall seconds of `python -c "import tensorflow"` in fresh processes: the floor of any
  command that uses TensorFlow, measured in the same run as the figures it is compared with
  (on shared cores, only such ratios hold)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  runs = []
  for _ in range(repeats):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, env=env, cwd=REPO,
                   capture_output=True)
    runs.append(time.perf_counter() - t)
  return runs


def peak_conv_flops(precision: str = "float32", iters: int = 3) -> float:
  """FLOP/s of one large 3x3 convolution (16x64x64x256 -> 256) in this precision: the
  reachable peak every throughput is compared with, measured in the same run."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dtype = tf.bfloat16 if "bfloat16" in precision else tf.float32
  x = tf.random.normal((16, 64, 64, 256), dtype=dtype)
  k = tf.random.normal((3, 3, 256, 256), dtype=dtype) * 0.01
  conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
  return 2 * 16 * 64 * 64 * 256 * 256 * 9 / median_time(lambda: conv().numpy(), 2, iters)[0]


def spawn_variant(script: str, spec: dict) -> dict:
  """Runs `script --one=<spec as JSON>` in a fresh process (its own dtype policy, XLA cache
  and peak RSS) and returns the JSON dict it prints last."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.abspath(script), f"--one={json.dumps(spec)}"],
                        capture_output=True, text=True, env=env, check=False, cwd=REPO)
  if proc.returncode != 0:
    raise RuntimeError(f"variant {spec} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])
