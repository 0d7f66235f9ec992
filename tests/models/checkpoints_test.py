"""The shipped harmoniser: compact storage, one-call loading, and its recorded numbers."""

import json
import os

import numpy as np
import pytest

from tfharm.models import checkpoints
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig, load_harmoniser


def test_float16_storage_round_trips_to_float16_precision(tmp_path):
  model = Harmoniser(HarmoniserConfig(image_size=16))
  path = str(tmp_path / "h.weights.h5")
  checkpoints.save_float16_weights(model, path)
  loaded = load_harmoniser(path, HarmoniserConfig(image_size=16))
  for a, b in zip(model.weights, loaded.weights):
    assert b.dtype == "float32"
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-7)
  plain = str(tmp_path / "plain.weights.h5")
  model.save_weights(plain)
  assert os.path.getsize(path) < 0.6 * os.path.getsize(plain)


@pytest.fixture(scope="module")
def shipped_record():
  path = checkpoints.HARMONISER_256.replace(".weights.h5", ".metrics.json")
  if not os.path.exists(checkpoints.HARMONISER_256):
    # Issue 5: a checkpoint is committed only once it beats the unharmonised composite; until
    # then these two tests have nothing to check. They run as soon as the file exists.
    pytest.skip(f"no shipped harmoniser yet ({checkpoints.HARMONISER_256})")
  with open(path) as f:
    return json.load(f)


def test_shipped_file_is_small_and_loads_with_one_call(shipped_record):
  assert os.path.getsize(checkpoints.HARMONISER_256) <= 25 * 2**20
  model = load_harmoniser()
  assert model.count_params() == 8_274_179
  assert shipped_record["step"] > 0


def test_shipped_harmoniser_output_beats_the_composite(shipped_record):
  """Issue 5's bar, on the recorded numbers (the next test re-measures them): what tfharm
  returns with the true mask (the L* moment correction) is clearly better than the composite
  on every pixel metric, and with an empty mask it changes nothing (measured on all 192; bit
  identity is also tested in tests/models/correction_test.py)."""
  scores = shipped_record["float16_file"]
  composite, ours = scores["composite"], scores["harmoniser_gt_mask_l_moments"]
  assert ours["mse"] < 0.8 * composite["mse"]
  assert ours["fmse"] < 0.8 * composite["fmse"]
  assert ours["psnr"] > composite["psnr"] + 0.5
  assert ours["ssim"] > composite["ssim"]
  assert scores["empty_mask_change_l_moments"]["mse"] == 0.0


def test_shipped_harmoniser_reproduces_its_recorded_numbers(shipped_record, coco_mini_build):
  from tfharm import validation
  from tfharm.data import pipeline
  data_dir = coco_mini_build.data_dir.split("/luminance_composites/")[0]
  scores = validation.harmoniser_scores(load_harmoniser(),
                                        pipeline.make_dataset(data_dir, "test", batch_size=16))
  assert scores["num_examples"] == shipped_record["float16_file"]["num_examples"] == 192
  for method in ("composite", "harmoniser_gt_mask", "harmoniser_gt_mask_gated",
                 "harmoniser_gt_mask_l_moments", "harmoniser_empty_mask",
                 "harmoniser_empty_mask_l_moments"):
    for metric, recorded in shipped_record["float16_file"][method].items():
      assert scores[method][metric] == pytest.approx(recorded, rel=1e-3, abs=1e-3), (method, metric)
    # float16 storage reproduces the float32 weights' numbers.
    assert scores[method]["psnr"] == pytest.approx(shipped_record["float32"][method]["psnr"],
                                                   abs=0.02)
    assert scores[method]["mse"] == pytest.approx(shipped_record["float32"][method]["mse"],
                                                  rel=0.01)


@pytest.fixture(scope="module")
def shipped_detector_record():
  if not os.path.exists(checkpoints.DETECTOR_256):
    pytest.skip(f"no shipped detector yet ({checkpoints.DETECTOR_256})")
  with open(checkpoints.DETECTOR_256.replace(".head.weights.h5", ".metrics.json")) as f:
    return json.load(f)


def test_shipped_detector_is_small_and_loads_with_one_call(shipped_detector_record):
  from tfharm.models import detector
  assert os.path.getsize(checkpoints.DETECTOR_256) <= 25 * 2**20
  model = detector.load_detector(checkpoints.DETECTOR_256)
  assert model.count_params() == 16_917_698
  assert shipped_detector_record["step"] > 0


def test_shipped_detector_reproduces_its_recorded_numbers(shipped_detector_record,
                                                          coco_mini_build):
  """The first 16 val composites (the detector costs ~1 s per image here; all 192 are
  re-scored by scripts/ship_detector.py)."""
  from tfharm import validation
  from tfharm.data import pipeline
  from tfharm.models import detector
  data_dir = coco_mini_build.data_dir.split("/luminance_composites/")[0]
  recorded = shipped_detector_record["first_16"]
  scores = validation.detector_scores(
      detector.load_detector(checkpoints.DETECTOR_256),
      pipeline.make_dataset(data_dir, "test", batch_size=8, max_examples=16))
  assert scores["num_examples"] == recorded["num_examples"] == 16
  for metric, value in recorded.items():
    if isinstance(value, float) and np.isnan(value):
      assert np.isnan(scores[metric]), metric
    else:
      assert scores[metric] == pytest.approx(value, rel=1e-3, abs=1e-4), metric
