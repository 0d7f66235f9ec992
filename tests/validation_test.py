"""python -m tfharm.validation: the joint model's record through the command (its means agree
with tfharm.evaluation.quick_scores on the same data), and the command's output rules."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import serving_helpers as helpers
from tests.conftest import REPO
from tests.models.trained_weights import small_joint_model
from tfharm.data import pipeline
from tfharm.evaluation import quick_scores


def test_joint_scores_through_the_command(demo_build, tmp_path):
  path = str(tmp_path / "joint.keras")
  small_joint_model(seed=3).save(path)
  out = tmp_path / "scores.json"
  cmd = [sys.executable, "-m", "tfharm.validation", f"--data_dir={demo_build.data_dir_root}",
         "--split=test", f"--joint_weights={path}", f"--output={out}", "--batch_size=8"]
  proc = helpers.run(cmd[1:])  # the user's environment: TensorFlow's own log level unset
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert helpers.noise_lines(proc.stderr) == [], proc.stderr[-3000:]  # issue 26: quiet commands
  scores = json.loads(out.read_text())
  assert json.loads(proc.stdout) == scores  # stdout is the JSON alone: no progress bar in it
  n = demo_build.info.splits["test"].num_examples
  assert scores["num_examples"] == n and scores["root:dummy_data"]["num_examples"] == n
  # Per-image PSNRs recomputed from the same model and data agree with the command's means.
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  per_image = quick_scores.joint_per_image(
      joint.load_joint(path), pipeline.make_dataset(demo_build.data_dir_root, "test",
                                                    batch_size=8))
  assert scores["overall"]["gain_mask_free"]["mean"] == pytest.approx(
      float(np.mean(per_image["psnr_mask_free"] - per_image["psnr_composite"])), abs=1e-4)
  assert scores["provenance"]["sha256"] and scores["provenance"]["split"] == "test"
  again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert again.returncode == 2 and "exists" in again.stderr.strip().splitlines()[-1]
  assert json.loads(out.read_text()) == scores  # untouched
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_gate_gains_must_be_positive_numbers(demo_build):
  for bad in ("0", "x"):
    proc = subprocess.run([sys.executable, "-m", "tfharm.validation",
                           f"--data_dir={demo_build.data_dir_root}", "--joint_weights=joint_256",
                           f"--gate_gains=1,{bad}"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --gate_gains"), proc.stderr
