"""scripts/scaling_curve.py: the table of runs, the log-linear fit and its extrapolation."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _point(tmp_path, photos, gain):
  stat = lambda v: {"mean": v, "se": 0.01, "n": 100}  # noqa: E731
  m = {"overall": {"num_examples": 100, "gain_mask_free": stat(gain), "gain_gt_mask": stat(0.5),
                   "ap": stat(0.4), "improved_mask_free": 0.6, "worse_by_1db_mask_free": 0.02}}
  m["root:lalonde_outdoor"] = dict(m["overall"], num_examples=60)
  path = tmp_path / f"v{photos}.json"
  path.write_text(json.dumps(m))
  return f"{photos}={path}"


def _run(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "scaling_curve.py"), *args],
                        capture_output=True, text=True, timeout=120)


def test_fit_and_extrapolation(tmp_path):
  # gain = 0.25 * log10(photos) - 0.5 exactly: 1.0 dB at 10^6 photos.
  points = [_point(tmp_path, p, 0.25 * __import__("math").log10(p) - 0.5) for p in (100, 1000, 10000)]
  png = tmp_path / "curve.png"
  proc = _run("--points=" + ",".join(points), f"--output={png}", "--target=gain_mask_free=1.0")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "~1e+06 distinct photos" in proc.stdout, proc.stdout
  assert "| 1000 | 100 | +0.250 ± 0.010 |" in proc.stdout
  assert "| 1000 photos | lalonde_outdoor | 60 | +0.250 ± 0.010 | +0.500 ± 0.010 |" in proc.stdout
  assert png.stat().st_size > 1000
  again = _run("--points=" + ",".join(points), f"--output={png}")
  assert again.returncode != 0 and "exists" in again.stderr


def test_a_flat_curve_says_photos_do_not_help(tmp_path):
  points = [_point(tmp_path, p, g) for p, g in ((173, 0.02), (700, 0.01), (1311, 0.0))]
  proc = _run("--points=" + ",".join(points))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "more photos do not raise gain_mask_free" in proc.stdout
  assert "most photos minus fewest: -0.020 ± 0.014 (1.4 standard errors" in proc.stdout


def test_the_sample_axis_gives_the_hours_a_target_needs(tmp_path):
  # AP = 0.1 * log10(samples) - 0.2 exactly: 0.5 at 10^7 samples, 1e7 / 10 / 3600 = 278 hours.
  points = [_point(tmp_path, n, 0.0) for n in (10000, 100000)]
  for spec, n in zip(points, (10000, 100000)):
    path = spec.partition("=")[2]
    m = json.load(open(path))
    m["overall"]["ap"]["mean"] = 0.1 * __import__("math").log10(n) - 0.2
    json.dump(m, open(path, "w"))
  proc = _run("--axis=samples", "--images_per_second=10", "--points=" + ",".join(points),
              "--target=ap=0.5")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "| samples seen | composites |" in proc.stdout
  assert "ap = 0.5 would need ~1e+07 training samples, ~278 hours at 10 images/s" in proc.stdout
