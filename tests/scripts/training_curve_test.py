"""scripts/training_curve.py: chained runs' samples, the values from the logs, the extrapolation."""
import json
import os
import subprocess
import sys

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(workdir, batch, points, unchanged=None):
  os.makedirs(workdir / "logs" / "eval")
  (workdir / "flags.txt").write_text(f"--model=joint\n--batch_size={batch}\n")
  writer = tf.summary.create_file_writer(str(workdir / "logs" / "eval"))
  with writer.as_default():
    for step, ap in points:
      tf.summary.scalar("eval/ap", ap, step=step)
      tf.summary.image("eval/images", tf.zeros((1, 4, 4, 3)), step=step)  # skipped
      if unchanged is not None:
        tf.summary.scalar("eval/unchanged_ap", unchanged, step=step)
  writer.close()


def test_chained_runs_and_a_log_linear_extrapolation(tmp_path):
  # ap = 0.1 * log10(samples) - 0.1 exactly: 0.2 at 1e3, 0.3 at 1e4, ...
  _run(tmp_path / "a", 10, [(100, 0.2), (1000, 0.3)], unchanged=0.05)
  _run(tmp_path / "b", 100, [(0, 0.3), (990, 0.4)])  # continues a: 1e4 + 99,000 = 1.09e5
  png = tmp_path / "curve.png"
  cmd = [sys.executable, os.path.join(REPO, "scripts", "training_curve.py"),
         f"--runs={tmp_path / 'a'},{tmp_path / 'b'}", "--metrics=ap", "--target=ap=0.6",
         "--fit_points=2", f"--output={png}"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
  rows = [line for line in out.splitlines() if line.startswith("| ") and "samples" not in line]
  assert [r.split("|")[1].strip() for r in rows] == ["1000", "10000", "109000"]  # b's step 0 dropped
  assert "doing nothing: ap 0.05" in out
  assert "ap = 0.6 needs" in out and png.exists()
  proc = subprocess.run(cmd, capture_output=True, text=True)
  assert proc.returncode != 0 and "--overwrite" in proc.stderr  # the PNG is not replaced


def test_a_run_resumed_with_another_batch_size_is_refused(tmp_path):
  """Samples seen = step * batch: one run with two batch sizes has no such axis."""
  _run(tmp_path / "a", 10, [(100, 0.2)])
  with open(tmp_path / "a" / "flags.txt", "a") as f:
    f.write("--model=joint\n--batch_size=20\n")  # resumed with another batch
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "training_curve.py"),
                         f"--runs={tmp_path / 'a'}", "--metrics=ap",
                         f"--output={tmp_path / 'c.png'}"], capture_output=True, text=True)
  assert proc.returncode != 0 and "expected one --batch_size" in proc.stderr
  assert not (tmp_path / "c.png").exists()


def _extrapolate(samples, values, target, points):
  code = ("import importlib.util, json, numpy as np\n"
          "spec = importlib.util.spec_from_file_location('s', "
          f"{os.path.join(REPO, 'scripts', 'training_curve.py')!r})\n"
          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
          f"print(json.dumps(m.extrapolate(np.array({samples}, float), np.array({values}), "
          f"{target}, {points})))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_a_target_already_passed_is_reached_not_a_later_crossing():
  """AP climbed past 0.5 and its last points dip: the fit falls back to 0.5 later, which is
  not when the target is reached (the campaign's curve printed '1.15x those seen')."""
  reached = _extrapolate([1e3, 1e4, 2e4, 4e4], [0.2, 0.52, 0.51, 0.505], 0.5, 3)
  assert abs(reached[1] - 4e4) < 1, reached
  # rising towards it: a later crossing (0.1 per decade from 0.3 at 1e4: 1e6); receding: never
  assert abs(_extrapolate([1e3, 1e4], [0.2, 0.3], 0.5, 2)[1] / 1e6 - 1) < 1e-6
  assert _extrapolate([1e3, 1e4, 1e5], [0.2, 0.3, 0.25], 0.5, 2)[1] is None
