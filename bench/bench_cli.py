"""Start-up time and peak memory of `python -m tfharm.harmonise`, end to end from the shell.

  python bench/bench_cli.py                          # 640x480 start-up + 24-megapixel memory
  python bench/bench_cli.py --reference_repo=/path/to/an/older/checkout   # and its figures

Each figure is a fresh `python -m tfharm.harmonise` process (as a user runs it) with the
committed checkpoints; wall seconds, user+system CPU seconds and peak RSS come from os.wait4
for that process alone. Start-up: one 640x480 JPEG, median of --repeats runs, with the model
cache cold (a new TFHARM_CACHE_DIR: the first run of a user), warm (the cache that run left)
and off (--nocache). Memory: a 6000x4000 JPEG (a COCO photo upscaled, with noise so that it
compresses like a photo), bytes per pixel = peak RSS / pixels, and the part that grows with the
image, (peak - peak at 640x480) / (pixel difference). With --reference_repo the same commands
run in that checkout too, and the outputs are compared pixel for pixel.

Breakdown (issue 27): `python -c "import tensorflow"` is timed in the same run (the floor of
any TensorFlow command), then one start-up is split into its phases in a fresh process doing
what the command does with a clock between the steps: import, weights, graph (trace; with a
warm cache the SavedModel load gives weights and graph at once) and first result (decode,
harmonise, write the 640x480 photo); each phase and the whole command are given as a ratio to
that import. The target: a warm-cache photo within 1.2x of it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags
import numpy as np

import measure  # bench/measure.py
from tfharm.cli import program

_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per start-up figure (median).")
_MEGAPIXELS = flags.DEFINE_boolean("megapixels", True, "Also the 6000x4000 memory figure.")
_REFERENCE = flags.DEFINE_string("reference_repo", None, "Another checkout to compare with.")
_ONE = flags.DEFINE_string("one", None, "Internal: time one start-up's phases in this process "
                           "(JSON: mode, photo, output) and print them as JSON.")
_PHOTO = os.path.join(measure.REPO, "data_builders", "luminance_composites", "dummy_data",
                      "val2017", "000000022892.jpg")


def _make_photo(path: str, width: int, height: int, seed: int = 0) -> None:
  import cv2  # pylint: disable=g-import-not-at-top
  image = cv2.resize(cv2.imread(_PHOTO), (width, height), interpolation=cv2.INTER_CUBIC)
  noise = np.random.default_rng(seed).normal(0, 3, image.shape)
  image = np.clip(image + noise, 0, 255).astype(np.uint8)
  cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 92])


def run_once(args: list[str], cwd: str, env: dict) -> dict:
  """One command; its wall and CPU seconds and peak RSS (bytes), through GNU time: a child's
  ru_maxrss from wait4 starts at the forking parent's high-water mark (Linux copies it into
  the child's mm), so this script's own memory would be counted."""
  t = time.perf_counter()
  proc = subprocess.run(["/usr/bin/time", "-f", "BENCH %e %U %S %M", sys.executable, *args],
                        cwd=cwd, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t
  *stderr, last = proc.stderr.rstrip("\n").split("\n")
  if proc.returncode != 0 or not last.startswith("BENCH "):
    raise RuntimeError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  _, _, user, system, rss_kb = last.split()
  return {"wall": wall, "cpu": float(user) + float(system), "rss": int(rss_kb) * 1024,
          "stderr": "\n".join(stderr)}


def _median(values):
  return sorted(values)[len(values) // 2]


def bench(repo: str, label: str, work: str, photo640: str, photo24: str | None) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the checkouts as they are
  cache = tempfile.mkdtemp(prefix="cache-", dir=work)
  env["TFHARM_CACHE_DIR"] = cache
  harmonise = ["-m", "tfharm.harmonise", f"--input={photo640}"]
  out = lambda name: os.path.join(work, f"{label}_{name}")
  results = {}
  cold = run_once(harmonise + [f"--output={out('cold.png')}"], repo, env)
  results["cold"] = cold
  print(f"cli.{label}.startup_640x480_cache_cold {cold['wall']:.2f} s wall, {cold['cpu']:.2f} "
        f"CPU-s (the first run: builds and caches the model)", flush=True)
  for mode, extra in (("warm", []), ("nocache", ["--nocache"] if label == "this" else [])):
    if mode == "warm" and not os.listdir(cache):
      continue  # a checkout without the cache
    # A new output per run: harmonise refuses to replace a file without --overwrite, a flag the
    # reference checkout may not have.
    runs = [run_once(harmonise + [f"--output={out(f'{mode}_{i}.png')}", *extra], repo, env)
            for i in range(_REPEATS.value)]
    results[mode] = {k: _median([r[k] for r in runs]) for k in ("wall", "cpu", "rss")}
    walls = ", ".join(f"{r['wall']:.2f}" for r in runs)
    print(f"cli.{label}.startup_640x480_{mode} {results[mode]['wall']:.2f} s wall (median of "
          f"{walls}), {results[mode]['cpu']:.2f} CPU-s, peak RSS "
          f"{results[mode]['rss'] / 1e6:.0f} MB", flush=True)
  if photo24:
    big = run_once(["-m", "tfharm.harmonise", f"--input={photo24}", f"--output={out('24mp.png')}"],
                   repo, env)
    small = results.get("warm", results.get("nocache"))
    pixels = 6000 * 4000
    marginal = (big["rss"] - small["rss"]) / (pixels - 640 * 480)
    results["24mp"] = big
    print(f"cli.{label}.peak_rss_6000x4000 {big['rss'] / 1e6:.0f} MB = {big['rss'] / pixels:.1f} "
          f"bytes/pixel; growing with the image: {marginal:.1f} bytes/pixel; {big['wall']:.1f} s "
          f"wall, {big['cpu']:.1f} CPU-s", flush=True)
  return results


def phases(mode: str, photo: str, output: str) -> dict:
  """One start-up of the harmonise command in this (fresh) process, phase by phase: the
  command's own steps (tfharm/harmonise.py `_runner`, the default system, l_moments), timed.
  mode "warm": the cached SavedModel (it must exist), "build": Keras build and trace."""
  t0 = time.perf_counter()
  from tfharm.cli import quiet  # pylint: disable=g-import-not-at-top
  quiet.start_tensorflow(False, keras=mode == "build")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfharm import systems  # pylint: disable=g-import-not-at-top
  from tfharm.metrics.device import default_jit_compile  # pylint: disable=g-import-not-at-top
  from tfharm.serving import cache, files  # pylint: disable=g-import-not-at-top
  if mode == "build":
    from tfharm.serving.signatures import ServingModule  # pylint: disable=g-import-not-at-top
  t_import = time.perf_counter()
  weights = systems.weight_files(systems.DEFAULT)
  jit = default_jit_compile()
  if mode == "warm":  # weights and graph come in one SavedModel load
    path = os.path.join(cache.cache_dir(), cache.key(weights, "l_moments", jit), "harmonise")
    loaded = tf.saved_model.load(path)
    runner = cache.Runner(loaded.signatures["harmonise"], None, path)
    t_weights = t_graph = time.perf_counter()
  else:
    module = ServingModule(systems.load(systems.DEFAULT, weights), jit_compile=jit)
    t_weights = time.perf_counter()
    module.harmonise_uint8.get_concrete_function()
    runner = cache.runner_from_module(module)
    t_graph = time.perf_counter()
  files.FileHarmoniser(runner).write(*files.load_inputs(photo), output, None)
  t_result = time.perf_counter()
  return {"import": t_import - t0, "weights": t_weights - t_import, "graph": t_graph - t_weights,
          "first_result": t_result - t_graph, "total": t_result - t0}


def _breakdown(work: str, photo640: str, tf_import: float) -> None:
  """Each phase of a warm-cache and of a built start-up, in seconds and x the TF import."""
  env = dict(os.environ, TFHARM_CACHE_DIR=os.path.join(work, "breakdown-cache"))
  subprocess.run([sys.executable, "-m", "tfharm.harmonise", f"--input={photo640}",
                  f"--output={work}/breakdown_fill.png"], cwd=measure.REPO, env=env,
                 check=True, capture_output=True)  # fills the cache
  for mode in ("warm", "build"):
    spec = {"mode": mode, "photo": photo640, "output": f"{work}/breakdown_{mode}.png"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__),
                           f"--one={json.dumps(spec)}"], cwd=measure.REPO, env=env, check=True,
                          capture_output=True, text=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    parts = ", ".join(f"{k} {v:.2f} s ({v / tf_import:.2f}x)" for k, v in got.items())
    print(f"cli.this.breakdown_640x480_{mode}: {parts} (after Python started)", flush=True)


def _compare(a: str, b: str, what: str) -> None:
  import cv2  # pylint: disable=g-import-not-at-top
  x, y = cv2.imread(a).astype(int), cv2.imread(b).astype(int)
  diff = np.abs(x - y)
  print(f"cli.compare.{what} max |diff| {diff.max()} levels, {np.mean(diff > 0) * 100:.4f} % of "
        f"values differ ({np.count_nonzero(diff)} of {diff.size})", flush=True)


def main(argv):
  del argv
  if _ONE.value:
    print(json.dumps(phases(**json.loads(_ONE.value))))
    return
  import platform  # pylint: disable=g-import-not-at-top
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  imports = measure.tensorflow_import_seconds(_REPEATS.value)
  tf_import = _median(imports)
  print(f"cli.import_tensorflow {tf_import:.2f} s wall (median of "
        f"{', '.join(f'{s:.2f}' for s in imports)}): python -c \"import tensorflow\"", flush=True)
  with tempfile.TemporaryDirectory() as work:
    photo640 = os.path.join(work, "photo_640x480.jpg")
    _make_photo(photo640, 640, 480)
    photo24 = None
    if _MEGAPIXELS.value:
      photo24 = os.path.join(work, "photo_6000x4000.jpg")
      _make_photo(photo24, 6000, 4000)  # ~1.9 GB here: the figures come from /usr/bin/time
    results = bench(measure.REPO, "this", work, photo640, photo24)
    for mode in ("cold", "warm", "nocache"):
      if mode in results:
        print(f"cli.this.startup_640x480_{mode}_vs_import_tensorflow "
              f"{results[mode]['wall'] / tf_import:.2f}x", flush=True)
    _breakdown(work, photo640, tf_import)
    if _REFERENCE.value:
      bench(os.path.abspath(_REFERENCE.value), "reference", work, photo640, photo24)
      _compare(os.path.join(work, "this_warm.png"), os.path.join(work, "reference_nocache.png")
               if not os.path.exists(os.path.join(work, "reference_warm.png"))
               else os.path.join(work, "reference_warm.png"), "640x480")
      if photo24:
        _compare(os.path.join(work, "this_24mp.png"), os.path.join(work, "reference_24mp.png"),
                 "6000x4000")
  print(f"# load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  program.run(main)
