"""Shared by the serving tests: non-trivial weight files, real images, the uint8 comparison.

The committed checkpoints may not exist yet, so the tests save a randomly initialised 256x256
harmoniser and an ImageNet-backbone detector, both moved off their initial values (so their
outputs are not trivial), and pass the paths explicitly.
"""
import contextlib
import os
import signal
import subprocess
import sys

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL2017 = os.path.join(REPO, "data_builders", "luminance_composites", "dummy_data", "val2017")
PYTHON = sys.executable


def save_weights(directory: str) -> tuple[str, str]:
  """(detector head file, harmoniser .weights.h5) of perturbed random models."""
  from tests.models.trained_weights import perturb_trained_layers  # pylint: disable=g-import-not-at-top
  from tfharm.models import detector as det  # pylint: disable=g-import-not-at-top
  from tfharm.models import layer_files  # pylint: disable=g-import-not-at-top
  from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig  # pylint: disable=g-import-not-at-top
  detector = det.Detector(det.DetectorConfig())
  perturb_trained_layers(detector, 0)
  harmoniser = Harmoniser(HarmoniserConfig(image_size=256))
  rng = np.random.default_rng(1)
  for v in harmoniser.weights:
    if "variance" in v.path:
      v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    else:
      v.assign(v.numpy() + rng.normal(0, 0.01, v.shape).astype("float32"))
  paths = (os.path.join(directory, "detector.head.weights.h5"),
           os.path.join(directory, "harmoniser.weights.h5"))
  layer_files.save_head_weights(detector, paths[0])
  harmoniser.save_weights(paths[1])
  return paths


def val_image(name: str) -> np.ndarray:
  """A COCO val2017 photo of the embedded sample as RGB uint8 (H, W, 3)."""
  return cv2.imread(os.path.join(VAL2017, name), cv2.IMREAD_COLOR)[..., ::-1].copy()


def box_mask(h: int, w: int) -> np.ndarray:
  """(H, W, 1) float32: 0 outside a box, a soft ramp 0.25..1 inside (not a binary mask)."""
  mask = np.zeros((h, w, 1), np.float32)
  y0, y1, x0, x1 = h // 4, 3 * h // 4, w // 5, 3 * w // 5
  mask[y0:y1, x0:x1, 0] = np.linspace(0.25, 1.0, x1 - x0, dtype=np.float32)[None, :]
  return mask


def assert_uint8_matches(got: np.ndarray, reference01: np.ndarray, max_ties: float = 1e-3):
  """got (uint8) equals round(clip(reference01, 0, 1) * 255), except where the reference
  lies within 1e-3 of a rounding tie (k + 0.5): graph and eager float32 differ by ~1e-6,
  which can flip those. Such flips must be rare and at most 1 step."""
  scaled = np.clip(reference01, 0.0, 1.0) * 255.0
  expected = np.round(scaled).astype(np.uint8)
  assert got.dtype == np.uint8 and got.shape == expected.shape
  diff = got.astype(int) - expected.astype(int)
  near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
  assert np.all(diff[~near_tie] == 0), f"{np.count_nonzero(diff[~near_tie])} pixels differ"
  assert np.abs(diff).max() <= 1 and np.mean(diff != 0) <= max_ties


def _env() -> dict:
  """The commands' own environment: no TF_CPP_MIN_LOG_LEVEL, so the tests see what a user
  sees. Read at each start, not at import: conftest sets the session's private
  TFHARM_CACHE_DIR after this module is imported, and a copy taken earlier sent the
  commands' graph cache to the user's ~/.cache."""
  return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


# Lines that must never reach a user's terminal on a CPU machine (tfharm.cli.quiet).
NOISE = ("cudart_stub", "cpu_feature_guard", "absl::InitializeLog", "cuInit", "cuda_",
         "To enable the following instructions")


def run(args, program: str = PYTHON, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
  """A fresh process (by default Python: `-m ...` or a script), output captured."""
  return subprocess.run([program, *args], cwd=REPO, env={**_env(), **(env or {})},
                        capture_output=True, text=True, timeout=600, **kwargs)


def ctrl_c_default() -> None:
  """Popen's preexec_fn for a child that a test stops with SIGINT: a shell starts background
  jobs with SIGINT ignored, Python keeps an ignored SIGINT (no KeyboardInterrupt), and the
  child would then never see the test's Ctrl-C. A user's terminal gives the default."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, program: str = PYTHON) -> subprocess.Popen:
  """Like run() but in the background; collect with .communicate()."""
  return subprocess.Popen([program, *args], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default)


def noise_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if any(n in line for n in NOISE)]


@contextlib.contextmanager
def tmpfs(path, options: str):
  """A tmpfs mounted at `path` (e.g. "size=1m,ro" for a read-only file system, which stops
  even root); skips the test where mounting is not allowed."""
  import pytest  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                        capture_output=True, text=True)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:100]})")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def full_disk(path):
  """A tiny tmpfs at `path`, filled to the last byte."""
  with tmpfs(path, "size=256k") as mounted:
    fd = os.open(os.path.join(mounted, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
      while True:
        os.write(fd, b"\0" * 4096)
    except OSError:
      pass
    finally:
      os.close(fd)
    yield mounted


def fill_inodes(directory, leave: int) -> None:
  """Creates empty files in `directory` until its file system has `leave` inodes free: on a
  tmpfs mounted with a small `nr_inodes`, writing a new file then fails with ENOSPC whatever
  the free bytes, so a full disk can strike after the commands' free-space checks."""
  os.makedirs(directory)
  i = 0
  while True:
    try:
      open(os.path.join(directory, str(i)), "w").close()
    except OSError:
      break
    i += 1
  for name in sorted(os.listdir(directory))[:leave]:
    os.remove(os.path.join(directory, name))
