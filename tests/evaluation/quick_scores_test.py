"""tfharm.evaluation.quick_scores: the joint model's per-image scores, their means with
standard errors and per-root rows."""
import numpy as np
import pytest

from tests.models.trained_weights import small_joint_model
from tfharm.data import pipeline
from tfharm.evaluation import quick_scores


def test_summary_means_standard_errors_and_shares():
  comp = np.array([30.0, 30.0, 30.0, 30.0])
  per_image = {"psnr_composite": comp, "psnr_mask_free": comp + [1.0, -2.0, 0.5, 0.0],
               "psnr_gt_mask": comp + 1.0, "ap": np.array([0.2, np.nan, 0.4, 0.6]),
               "iou": np.zeros(4), "root": np.array([0, 0, 1, 1])}
  s = quick_scores.joint_summary(per_image, ["a", "b"])
  o = s["overall"]
  assert o["gain_mask_free"]["mean"] == pytest.approx(-0.125)
  assert o["gain_mask_free"]["se"] == pytest.approx(np.std([1, -2, 0.5, 0], ddof=1) / 2)
  assert o["improved_mask_free"] == 0.5 and o["worse_by_1db_mask_free"] == 0.25
  assert o["ap"]["n"] == 3 and o["ap"]["mean"] == pytest.approx(0.4)  # NaN left out
  assert s["root:a"]["num_examples"] == 2 and s["root:b"]["gain_mask_free"]["mean"] == 0.25


def test_a_gate_gain_of_one_is_the_mask_free_row(demo_build):
  """--gate_gains: g = 1 reproduces the mask-free row (the same soft mask), so the sweep's rows
  differ from it only by the scaling of m."""
  data = pipeline.make_dataset(demo_build.data_dir_root, "test", batch_size=8, max_examples=8)
  per_image = quick_scores.joint_per_image(small_joint_model(seed=3), data, gate_gains=(1.0, 4.0))
  np.testing.assert_allclose(per_image[f"psnr_{quick_scores.gain_row(1.0)}"],
                             per_image["psnr_mask_free"], atol=1e-3)
  summary = quick_scores.joint_summary(per_image)["overall"]
  assert summary["gain_mask_free_gain4"]["n"] == 8 and "worse_by_1db_mask_free_gain4" in summary
