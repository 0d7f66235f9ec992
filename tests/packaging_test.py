"""A plain (non-editable) install carries the shipped weights: build a wheel from the working
tree, install it into a fresh venv, load the pipeline from another directory.

Slow (~2-4 min: the wheel build, a venv, loading both networks): `make test-slow`. The fresh
venv borrows the current environment's dependencies through a .pth file instead of downloading
TensorFlow; .pth files inside that borrowed directory are not processed, so an editable tfharm
installed there cannot shadow the wheel (the test checks where tfharm was imported from).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_WHEEL_BYTES = 100 * 10**6  # PyPI's default file size limit


def _source_tree(dst: str) -> None:
  """The repository's files (tracked and untracked-but-not-ignored) without out/ or builds."""
  names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, check=True, capture_output=True).stdout.decode().split("\0")
  for name in filter(None, names):
    src = os.path.join(REPO, name)
    if os.path.isfile(src):
      os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
      shutil.copy2(src, os.path.join(dst, name))


@pytest.mark.slow
def test_wheel_installs_without_editable_and_loads_the_shipped_pipeline(tmp_path):
  src, dist, venv, elsewhere = (str(tmp_path / d) for d in ("src", "dist", "venv", "elsewhere"))
  _source_tree(src)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--no-build-isolation", "-w", dist, src], check=True)
  (wheel,) = [os.path.join(dist, n) for n in os.listdir(dist) if n.endswith(".whl")]
  size = os.path.getsize(wheel)
  print(f"wheel {os.path.basename(wheel)}: {size / 1e6:.1f} MB")
  assert size < MAX_WHEEL_BYTES
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
  assert {"tfharm/presets/harmoniser_256.weights.h5", "tfharm/presets/detector_256.head.weights.h5",
          "tfharm/presets/gate_256.json"} <= names
  assert not any(n.startswith(("tests/", "out/")) for n in names)
  # One top-level package: the builder and its description are tfharm's (tfharm.data), and
  # data_builders/ (the `tfds build` registration) stays in the repository.
  assert {n.split("/")[0] for n in names if not n.startswith("tfharm-")} == {"tfharm"}
  assert {"tfharm/data/luminance_composites.py",
          "tfharm/data/luminance_composites_metadata/README.md",
          "tfharm/data/luminance_composites_metadata/CITATIONS.bib"} <= names

  subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
  python = os.path.join(venv, "bin", "python")
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        check=True, capture_output=True, text=True).stdout.strip()
  with open(os.path.join(site, "_borrowed_dependencies.pth"), "w") as f:
    f.write(sysconfig.get_path("purelib") + "\n")
  subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                  "--no-deps", "--no-index", wheel], check=True)
  os.makedirs(elsewhere)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  code = ("import tfharm, tfharm.systems as s; p = s.load('pipeline'); "
          "print(tfharm.__file__); print(p.image_size)")
  out = subprocess.run([python, "-c", code], cwd=elsewhere, env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out[-2].startswith(site), out  # the wheel's tfharm, not a checkout's
  assert out[-1] == "256"
