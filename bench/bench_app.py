"""The web page's two times: start-up, and upload to result for a 1024x768 photo.

  python bench/bench_app.py [--runs=3] [--startups=2] [--screenshot=docs/app.png]

Start-up: from spawning `python -m tfharm.app --flagfile=configs/app.flags` to its "serving on
URL" line (models loaded, every signature traced, page served), and the phases it logs.
Upload to result: headless Chromium (tests/browser.py) uploads a 1024x768 JPEG (a COCO
photo of the embedded sample, resized), clicks Harmonise and waits until the result's images
are on the page; median of --runs, mask-free and with a mask. Also the handler's own time (the
page's summary line), the server's CPU seconds per request (stable when neighbours load the
cores; includes its idle rate, printed too), and `python -m tfharm.harmonise` on the same photo (one process per photo) to compare.

Breakdown (issue 27), each also as a ratio to `python -c "import tensorflow"` timed in the same
run: the start-up's phases as the app logs them (imports, weights, graph = tracing, page), the
first request's upload to result, and the first request with the other model (the page loads
it then).
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import measure  # bench/measure.py

sys.path.insert(0, measure.REPO)  # the page's driver is test support: tests/browser.py
from tests import browser  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfharm.app import examples  # pylint: disable=g-import-not-at-top,wrong-import-position
from tfharm.cli import program

_RUNS = flags.DEFINE_integer("runs", 3, "Timed uploads per system (after one untimed).")
_STARTUPS = flags.DEFINE_integer("startups", 2, "App start-ups timed.")
_SCREENSHOT = flags.DEFINE_string("screenshot", None, "Also save the page, with a demo "
                                  "composite harmonised, to this PNG (docs/app.png).")
_APP_FLAGS = ("--flagfile=configs/app.flags",)


def _photo(directory: str) -> tuple[str, str]:
  """A 1024x768 JPEG of a COCO photo and a box mask of its size."""
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  src = os.path.join(measure.REPO, "data_builders", "luminance_composites", "dummy_data",
                     "val2017", "000000092660.jpg")
  photo = cv2.resize(cv2.imread(src), (1024, 768), interpolation=cv2.INTER_AREA)
  path = os.path.join(directory, "photo_1024x768.jpg")
  cv2.imwrite(path, photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
  mask = np.zeros((768, 1024), np.uint8)
  mask[200:600, 300:700] = 255
  mask_path = os.path.join(directory, "photo_1024x768.mask.png")
  cv2.imwrite(mask_path, mask)
  return path, mask_path


def _cpu_seconds(pid: int) -> float:
  """utime + stime of a process, from /proc."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _startup(phases: list[dict], cpu: list[float]) -> float:
  with browser.Server(_APP_FLAGS, cwd=measure.REPO) as server:
    cpu.append(_cpu_seconds(server.proc.pid))  # the whole start-up's CPU, whatever the load
    found = [line for line in server.log if "ready: imports" in line]
    # "ready: imports 5.6 s, weights 0.5 s, graph 1.2 s, page 0.3 s, total 7.6 s (...)"
    phases.append({k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", found[-1])}
                  if found else {})
    return server.startup_seconds


def _upload_to_result(page: browser.Page, pid: int, photo: str, mask: str | None) -> dict:
  """One upload + Harmonise; seconds from the upload to the result on the page."""
  page.choose("system", "with the uploaded mask" if mask else "mask-free")
  cpu = _cpu_seconds(pid)
  start = time.perf_counter()
  page.upload_photo(photo)
  if mask:
    page.upload_mask(mask)
  page.harmonise()
  total = time.perf_counter() - start
  if page.errors():
    raise RuntimeError(page.errors())
  handler = float(re.search(r", ([\d.]+) s", page.summary()).group(1))
  return {"total": total, "handler": handler, "cpu": _cpu_seconds(pid) - cpu}


def main(argv):
  del argv
  print(f"# {os.cpu_count()} CPUs, load average %.2f %.2f %.2f at start" % os.getloadavg())
  imports = measure.tensorflow_import_seconds(3)
  tf_import = statistics.median(imports)
  ratio = lambda seconds: f"{seconds / tf_import:.2f}x import tensorflow"
  print(f"app.import_tensorflow {tf_import:.2f} s (runs: {', '.join(f'{s:.2f}' for s in imports)})"
        ': python -c "import tensorflow", the floor')
  phases, cpu = [], []
  startups = [_startup(phases, cpu) for _ in range(_STARTUPS.value)]
  for phase in phases:
    print("# start-up phases (after Python started): " + ", ".join(
        f"{k} {v:.1f} s ({v / tf_import:.2f}x)" for k, v in phase.items()))
  if startups:
    print(f"app.startup_seconds {statistics.median(startups):.1f} s = "
          f"{ratio(statistics.median(startups))} (runs: {', '.join(f'{s:.1f}' for s in startups)})")
    print(f"app.startup_cpu {statistics.median(cpu):.1f} CPU-s "
          f"(runs: {', '.join(f'{c:.1f}' for c in cpu)})")
  with tempfile.TemporaryDirectory() as tmp:
    photo, mask = _photo(tmp)
    with browser.Server(_APP_FLAGS, cwd=measure.REPO) as server, \
         browser.Page(server.url, os.path.join(tmp, "downloads")) as page:
      cpu, start = _cpu_seconds(server.proc.pid), time.perf_counter()
      time.sleep(10)  # the server's own background work (queue, heartbeats), in every request too
      idle = (_cpu_seconds(server.proc.pid) - cpu) / (time.perf_counter() - start)
      print(f"app.idle_cpu {idle:.3f} CPU-s/s (page open, no request)")
      for name, m in (("mask_free", None), ("with_mask", mask)):
        first = _upload_to_result(page, server.proc.pid, photo, m)  # the first request
        print(f"app.{name}.first_request_total_1024x768 {first['total']:.2f} s = "
              f"{ratio(first['total'])}" + (" (traces its signature)" if m else ""))
        runs = [_upload_to_result(page, server.proc.pid, photo, m) for _ in range(_RUNS.value)]
        for key, unit in (("total", "s"), ("handler", "s"), ("cpu", "CPU-s")):
          values = [r[key] for r in runs]
          print(f"app.{name}.{key}_1024x768 {statistics.median(values):.2f} {unit} "
                f"(runs: {', '.join(f'{v:.2f}' for v in values)})")
      page.choose("model", "detector + harmoniser")  # the other system: loaded now
      other = _upload_to_result(page, server.proc.pid, photo, None)
      print(f"app.other_model.first_request_total_1024x768 {other['total']:.2f} s = "
            f"{ratio(other['total'])} (loads and traces the pipeline)")
      page.choose("model", "joint model")
      if _SCREENSHOT.value:
        page.choose("system", "mask-free")
        page.load_example(1)
        page.harmonise()
        page.screenshot(_SCREENSHOT.value)
        print(f"# screenshot: {_SCREENSHOT.value}")
    cli = []
    for i in range(_RUNS.value):
      start = time.perf_counter()
      subprocess.run([sys.executable, "-m", "tfharm.harmonise", "--flagfile=configs/harmonise.flags",
                      f"--input={photo}", f"--output={tmp}/cli_{i}.png"], cwd=measure.REPO,
                     check=True, capture_output=True,
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
      cli.append(time.perf_counter() - start)
    print(f"app.cli_process_per_photo_1024x768 {statistics.median(cli):.1f} s "
          f"(runs: {', '.join(f'{s:.1f}' for s in cli)})")
  print("# load average %.2f %.2f %.2f at end" % os.getloadavg())


if __name__ == "__main__":
  program.run(main)
