"""Throughput of the tfharm metrics, next to the official PyTorch LPIPS in the same run.

  python bench/bench_metrics.py [--official_python=../benchenv/bin/python] [--rounds=5]

Prints one `name value unit` line per figure. The official package runs in its own venv (it is
not a tfharm dependency), as a worker subprocess fed the same inputs and the same converted
backbone weights; the implementations are timed in interleaved rounds (so both see the same
machine load). Throughputs and speed-ups use the best call time of each implementation over all
rounds (the usual estimator on a machine shared with other jobs); `_median` / `_median_round`
lines give the median call time and the median over rounds of the ratio of adjacent timings. Without the official package the TF figures are still printed, with
the command that installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

INSTALL_HINT = ("python3.11 -m venv ../benchenv && ../benchenv/bin/pip install "
                "torch==2.14.1 torchvision==0.29.1 lpips==0.1.4")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- official worker
def _worker() -> None:
  """Runs under the official package's python: JSON commands on stdin, JSON answers on stdout."""
  import importlib.metadata
  import warnings
  warnings.filterwarnings("ignore")
  import numpy as np
  import torch
  import lpips
  torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
  models = {}
  for line in sys.stdin:
    req = json.loads(line)
    if req["cmd"] == "load":
      w = np.load(req["weights"])
      m = lpips.LPIPS(net=req["net"], version="0.1", pretrained=True, pnet_rand=True,
                      verbose=False).eval()
      convs = [c for c in m.net.modules() if isinstance(c, torch.nn.Conv2d)]
      with torch.no_grad():
        for i, conv in enumerate(convs):  # HWIO -> OIHW, as the official lpips package stores them
          conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w[f"k{i}"].transpose(3, 2, 0, 1))))
          conv.bias.copy_(torch.from_numpy(w[f"b{i}"]))
      models[req["net"]] = m
      out = {"ok": True, "versions": {"torch": torch.__version__, "lpips": importlib.metadata.version("lpips"),
                                      "threads": torch.get_num_threads()}}
    elif req["cmd"] == "run":
      data = np.load(req["inputs"])
      x0 = torch.from_numpy(np.ascontiguousarray(data["x"].transpose(0, 3, 1, 2)))
      x1 = torch.from_numpy(np.ascontiguousarray(data["y"].transpose(0, 3, 1, 2)))
      m = models[req["net"]]
      times = []
      with torch.no_grad():
        for _ in range(req["reps"]):
          t = time.perf_counter()
          d = m(x0, x1)
          times.append(time.perf_counter() - t)
      out = {"times": times, "values": d.flatten().tolist()}
    else:
      out = {"error": req["cmd"]}
    print(json.dumps(out), flush=True)


class Official:
  """The official lpips in a subprocess; None-like when not installed."""

  def __init__(self, python: str):
    self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--official_worker"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def ask(self, **req):
    self.proc.stdin.write(json.dumps(req) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError("official worker died")
    return json.loads(line)

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def _official_available(python: str) -> str | None:
  if not python or not os.path.exists(python):
    return f"{python or '(none)'} not found"
  res = subprocess.run([python, "-c", "import torch, lpips"], capture_output=True, text=True)
  return None if res.returncode == 0 else res.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- main
def main(argv) -> None:
  from absl import flags
  import numpy as np
  import tensorflow as tf
  from tfharm.metrics import image
  from tfharm.metrics import lpips as lp
  from tfharm.weights import store

  fl = flags.FLAGS
  rounds, reps = fl.rounds, fl.reps

  def emit(name, value, unit):
    print(f"{name} {value:.4g} {unit}", flush=True)

  def load1():
    return os.getloadavg()[0]

  print(f"# cpu: {_cpu_name()}, {os.cpu_count()} cores, flags: {_cpu_flags()}")
  print(f"# tensorflow {tf.__version__}, loadavg(1 min) at start {load1():.2f}")
  emit("loadavg_start", load1(), "procs")

  def timeit(fn, *args, n=reps):  # -> list of seconds per call
    ts = []
    for _ in range(n):
      t = time.perf_counter()
      out = fn(*args)
      (out if isinstance(out, tf.Tensor) else next(iter(out.values()))).numpy()
      ts.append(time.perf_counter() - t)
    return ts

  # --- float32 / bfloat16 convolution peak (same run)
  rng = np.random.default_rng(0)
  a = tf.constant(rng.normal(size=(8, 56, 56, 256)).astype(np.float32))
  k = tf.constant(rng.normal(size=(3, 3, 256, 256)).astype(np.float32) * 0.02)
  flop = 2 * 8 * 56 * 56 * 256 * 256 * 9
  peaks = {"float32": 0.0, "bfloat16": 0.0}
  peak_fns = {}
  for dt in (tf.float32, tf.bfloat16):
    a_, k_ = tf.cast(a, dt), tf.cast(k, dt)
    peak_fns[dt.name] = (tf.function(lambda v, k_=k_: tf.nn.conv2d(v, k_, 1, "SAME")), a_)
    timeit(peak_fns[dt.name][0], a_, n=1)

  def measure_peaks():  # called between LPIPS rounds too: the peak is the best seen in the run
    for name, (f, a_) in peak_fns.items():
      peaks[name] = max(peaks[name], flop / min(timeit(f, a_, n=2)) / 1e9)

  measure_peaks()

  # --- official worker
  why = _official_available(fl.official_python)
  official = None
  tmp = tempfile.mkdtemp(prefix="bench_metrics_")
  if why is None:
    convs, _ = store.load_lpips_arrays("alex")
    wpath = os.path.join(tmp, "alex.npz")
    np.savez(wpath, **{f"k{i}": kk for i, (kk, _) in enumerate(convs)},
             **{f"b{i}": bb for i, (_, bb) in enumerate(convs)})
    official = Official(fl.official_python)
    info = official.ask(cmd="load", net="alex", weights=wpath)
    print(f"# official: {info['versions']}")
  else:
    print(f"# official lpips not available ({why}); install it with: {INSTALL_HINT} "
          "and pass --official_python=../benchenv/bin/python")

  # --- LPIPS-alex throughput
  alex_flop_per_pair = None
  configs = [(256, 16), (512, 4)] if not fl.quick else [(256, 16)]
  variants = {"exact": lp.LPIPS("alex", check_inputs=False),
              "fast": lp.LPIPS("alex", mode="fast", check_inputs=False),
              "exact_jit": lp.LPIPS("alex", jit_compile=True, check_inputs=False),
              "fast_jit": lp.LPIPS("alex", mode="fast", jit_compile=True, check_inputs=False)}
  for size, batch in configs:
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    x = tf.image.resize(tf.image.resize(x, (size // 8, size // 8)), (size, size)).numpy()
    y = np.clip(x + rng.normal(0, 0.1, x.shape), -1, 1).astype(np.float32)
    xt, yt = tf.constant(x), tf.constant(y)
    for m in variants.values():
      m(xt, yt).numpy()  # compile / warm up
    times = {name: [] for name in variants}
    if official:
      ipath = os.path.join(tmp, f"in_{size}.npz")
      np.savez(ipath, x=x, y=y)
      res = official.ask(cmd="run", net="alex", inputs=ipath, reps=1)  # warm up
      dev = np.abs(np.array(res["values"]) - variants["exact"](xt, yt).numpy()).max()
      emit(f"lpips_exact_vs_official_random_max_deviation_{size}", dev, "abs")
      times["official"] = []
    ratios = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved: every implementation once per round
      per_round = {}
      for name, m in variants.items():
        per_round[name] = timeit(m, xt, yt)
      if official:
        per_round["official"] = official.ask(cmd="run", net="alex", inputs=ipath, reps=reps)["times"]
        for name in variants:
          ratios[name].append(np.median(per_round["official"]) / np.median(per_round[name]))
      for name, ts in per_round.items():
        times[name].extend(ts)
      measure_peaks()
    best = {name: min(ts) for name, ts in times.items()}
    if size == configs[0][0]:
      for name, value in peaks.items():
        emit(f"conv3x3_peak_{name}", value, "GFLOP/s")
    for name, ts in times.items():
      emit(f"lpips_{name}_pairs_per_s_{size}_b{batch}", batch / best[name], "pairs/s")
      emit(f"lpips_{name}_pairs_per_s_{size}_b{batch}_median", batch / np.median(ts), "pairs/s")
    if size == 256:
      alex_flop_per_pair = _alex_flops(size)
      for name in ("exact", "exact_jit", "fast") + (("official",) if official else ()):
        achieved = alex_flop_per_pair * batch / best[name] / 1e9
        emit(f"lpips_{name}_gflops_{size}", achieved, "GFLOP/s")
        emit(f"lpips_{name}_fraction_of_fp32_peak_{size}", achieved / peaks["float32"], "ratio")
    if official:
      for name in variants:  # headline: best time vs best time; also the per-round median ratio
        emit(f"lpips_{name}_speedup_vs_official_{size}", best["official"] / best[name], "x")
        emit(f"lpips_{name}_speedup_vs_official_{size}_median_round", np.median(ratios[name]), "x")
  # The figures named by the issue: exact / fast with the per-device default (jit off on CPU).
  if official:
    print("# lpips_exact_speedup_vs_official_256 and lpips_fast_speedup_vs_official_256 are the "
          "'exact'/'fast' lines above (jit_compile default for this device: "
          f"{lp.default_jit_compile()})")

  # --- fast mode deviation from the golden values (and exact mode's, for scale)
  golden = os.path.join(REPO, "tests", "metrics", "testdata", "lpips", "reference.json")
  if os.path.isfile(golden):
    from PIL import Image
    with open(golden) as f:
      ref = json.load(f)
    root = os.path.dirname(golden)
    load = lambda p: lp.from_uint8(np.asarray(Image.open(os.path.join(root, p)).convert("RGB")))
    for net in ("alex", "vgg"):
      for mode in ("exact", "fast"):
        m = lp.LPIPS(net, mode=mode)
        dev = max(abs(float(m(load(p["file_a"]), load(p["file_b"]))) - p[net]) for p in ref["pairs"])
        name = f"lpips_{mode}_max_deviation" + ("" if net == "alex" else "_vgg")
        emit(name, dev, "abs")
  else:
    print(f"# golden values not found at {golden}: deviation lines skipped")

  # --- pixel metrics (memory-bound)
  x = tf.constant(rng.uniform(0, 255, (16, 256, 256, 3)).astype(np.float32))
  y = tf.constant(rng.uniform(0, 255, (16, 256, 256, 3)).astype(np.float32))
  mask = tf.constant((rng.uniform(size=(16, 256, 256, 1)) > 0.5).astype(np.float32))
  nbytes = 2 * 16 * 256 * 256 * 3 * 4
  for jit in (False, True):
    fns = {"mse_psnr": lambda a, b: {"psnr": image.psnr(a, b)},
           "fmse": lambda a, b: image.fmse(a, b, mask),
           "ssim": image.ssim}
    for name, fn in fns.items():
      f = tf.function(fn, jit_compile=jit)
      timeit(f, x, y, n=2)
      t = min(timeit(f, x, y, n=7))
      tag = "jit" if jit else "nojit"
      emit(f"{name}_pairs_per_s_256_b16_{tag}", 16 / t, "pairs/s")
      emit(f"{name}_input_GBps_256_b16_{tag}", nbytes / t / 1e9, "GB/s")
  emit("loadavg_end", load1(), "procs")
  if official:
    official.close()


def _alex_flops(size: int) -> float:
  """Multiply-adds x 2 of the AlexNet trunk on both images of one pair."""
  from tfharm.weights import nets
  s, total, cin = size, 0, 3
  for spec in nets.ALEX:
    if spec.pool_before:
      s = (s - 3) // 2 + 1
    s = (s + 2 * spec.pad - spec.kernel) // spec.stride + 1
    total += 2 * s * s * spec.kernel ** 2 * cin * spec.filters
    cin = spec.filters
  return 2 * total


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "unknown"


def _cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      flags_ = next(l for l in f if l.startswith("flags")).split()
  except (OSError, StopIteration):
    return "unknown"
  keep = [f for f in flags_ if f.startswith(("avx", "amx", "fma"))]
  return " ".join(keep) or "none of avx/amx/fma"


if __name__ == "__main__":
  if "--official_worker" in sys.argv:
    _worker()
  else:
    from absl import flags
    from tfharm.cli import program
    flags.DEFINE_string("official_python", "../benchenv/bin/python",
                        "Python of a venv with torch==2.14.1 torchvision==0.29.1 lpips==0.1.4.")
    flags.DEFINE_integer("rounds", 5, "Interleaved rounds per configuration.")
    flags.DEFINE_integer("reps", 3, "Timed calls per implementation per round.")
    flags.DEFINE_bool("quick", False, "Only 256x256.")
    program.run(main)
