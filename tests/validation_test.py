"""tfharm.validation: the joint model's per-image scores, their means with standard errors and
per-root rows, and the command's output rules."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.models.trained_weights import small_joint_model
from tfharm import validation
from tfharm.data import pipeline


def test_summary_means_standard_errors_and_shares():
  comp = np.array([30.0, 30.0, 30.0, 30.0])
  per_image = {"psnr_composite": comp, "psnr_mask_free": comp + [1.0, -2.0, 0.5, 0.0],
               "psnr_gt_mask": comp + 1.0, "ap": np.array([0.2, np.nan, 0.4, 0.6]),
               "iou": np.zeros(4), "root": np.array([0, 0, 1, 1])}
  s = validation.joint_summary(per_image, ["a", "b"])
  o = s["overall"]
  assert o["gain_mask_free"]["mean"] == pytest.approx(-0.125)
  assert o["gain_mask_free"]["se"] == pytest.approx(np.std([1, -2, 0.5, 0], ddof=1) / 2)
  assert o["improved_mask_free"] == 0.5 and o["worse_by_1db_mask_free"] == 0.25
  assert o["ap"]["n"] == 3 and o["ap"]["mean"] == pytest.approx(0.4)  # NaN left out
  assert s["root:a"]["num_examples"] == 2 and s["root:b"]["gain_mask_free"]["mean"] == 0.25


def test_joint_scores_through_the_command(demo_build, tmp_path):
  path = str(tmp_path / "joint.keras")
  small_joint_model(seed=3).save(path)
  out = tmp_path / "scores.json"
  cmd = [sys.executable, "-m", "tfharm.validation", f"--data_dir={demo_build.data_dir_root}",
         "--split=test", f"--joint_weights={path}", f"--output={out}", "--batch_size=8"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  scores = json.loads(out.read_text())
  n = demo_build.info.splits["test"].num_examples
  assert scores["num_examples"] == n and scores["root:dummy_data"]["num_examples"] == n
  # Per-image PSNRs recomputed from the same model and data agree with the command's means.
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  per_image = validation.joint_per_image(
      joint.load_joint(path), pipeline.make_dataset(demo_build.data_dir_root, "test",
                                                    batch_size=8))
  assert scores["overall"]["gain_mask_free"]["mean"] == pytest.approx(
      float(np.mean(per_image["psnr_mask_free"] - per_image["psnr_composite"])), abs=1e-4)
  assert scores["provenance"]["sha256"] and scores["provenance"]["split"] == "test"
  again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert again.returncode == 2 and "exists" in again.stderr.strip().splitlines()[-1]
  assert json.loads(out.read_text()) == scores  # untouched
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_gate_gain_of_one_is_the_mask_free_row(demo_build):
  """--gate_gains: g = 1 reproduces the mask-free row (the same soft mask), so the sweep's rows
  differ from it only by the scaling of m."""
  data = pipeline.make_dataset(demo_build.data_dir_root, "test", batch_size=8, max_examples=8)
  per_image = validation.joint_per_image(small_joint_model(seed=3), data, gate_gains=(1.0, 4.0))
  np.testing.assert_allclose(per_image[f"psnr_{validation.gain_row(1.0)}"],
                             per_image["psnr_mask_free"], atol=1e-3)
  summary = validation.joint_summary(per_image)["overall"]
  assert summary["gain_mask_free_gain4"]["n"] == 8 and "worse_by_1db_mask_free_gain4" in summary


def test_gate_gains_must_be_positive_numbers(demo_build):
  for bad in ("0", "x"):
    proc = subprocess.run([sys.executable, "-m", "tfharm.validation",
                           f"--data_dir={demo_build.data_dir_root}", "--joint_weights=joint_256",
                           f"--gate_gains=1,{bad}"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --gate_gains"), proc.stderr
