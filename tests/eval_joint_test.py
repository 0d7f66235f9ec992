"""The evaluation with a joint model (scored by default; EvalConfig.joint_weights names its
file): its mask-free rows, its detection scores and its do-no-harm numbers, beside the
pipeline's. Random-weight models."""
import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import evaluation
from tfharm import presets
from tfharm.evaluation import loaders, report
from tfharm.evaluation import methods as eval_methods
from tfharm.evaluation.graph import EvalGraph
from tfharm.metrics import image as image_metrics
from tfharm.metrics import localisation
from tfharm.metrics import lpips as lpips_lib
from tfharm.models import correction
from tfharm.models import detector as det
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig
from tfharm.systems.joint import JointSystem
from tfharm.systems.pipeline import PipelineSystem
from tests.eval_test import _batch, _config, _stub_detector, S, weight_files  # noqa: F401  pylint: disable=unused-import
from tests.models.trained_weights import small_joint_model as _joint


@pytest.fixture(scope="module")
def joint_graph():
  keras.utils.set_random_seed(1)
  pipeline = PipelineSystem(_stub_detector(), Harmoniser(HarmoniserConfig(image_size=S)))
  return EvalGraph([pipeline, JointSystem(_joint(), image_size=S)],
                   lpips_lib.LPIPS("alex", jit_compile=False), jit_compile=False)


def test_joint_rows_and_detection_equal_the_standalone_functions(joint_graph):
  composite, real, mask = (tf.constant(a) for a in _batch())
  out = joint_graph.compute(composite, real, mask)
  joint = joint_graph.systems[1]
  raw = joint.joint(composite, training=False)
  m = det.soft_mask(raw["probs"])
  # joint_gt_mask: what --model=joint --mask returns at S.
  with_mask = joint({"image": composite, "mask": mask}, mask_source="ground_truth")["harmonised"]
  expected = {"joint": raw["harmonised"],
              "joint_l_moments": correction.apply_correction("l_moments", composite, m,
                                                             composite, m, raw["harmonised"]),
              "joint_gt_mask": with_mask}
  for name, image in expected.items():
    np.testing.assert_allclose(out["metrics"][name]["mse"],
                               image_metrics.mse(image, real, value_range=(0.0, 1.0)),
                               rtol=1e-5, err_msg=name)
  loc = localisation.localisation_metrics(m, mask, 0.5)
  for k in ("iou", "f1", "ap"):
    np.testing.assert_allclose(out["joint_detector"][k], loc[k], rtol=1e-6)
  # The pipeline's rows are still there and unchanged by the joint model's presence.
  assert set(eval_methods.METHODS) < set(out["metrics"])
  photos = joint_graph.compute_real_photos(real)
  assert {"joint/psnr", "joint_l_moments/psnr", "joint_detector/fire_fraction"} <= set(photos)
  assert "joint_gt_mask/psnr" not in photos  # unedited photos have no mask
  shifted = out["images"]["joint_gt_mask"]
  outside = tf.broadcast_to(mask == 0, tf.shape(shifted))
  np.testing.assert_array_equal(tf.boolean_mask(shifted, outside),
                                tf.boolean_mask(composite, outside))


def test_the_rows_and_detections_are_those_of_the_systems_scored():
  pipeline = {f"{m}/mse": 0 for m in eval_methods.METHODS} | {"detector/iou": 0}
  assert eval_methods.scored(pipeline) == ("pipeline",)
  assert eval_methods.methods_in(pipeline) == eval_methods.METHODS
  assert eval_methods.methods_in({**pipeline, "joint/mse": 0}) == eval_methods.METHODS + ("joint",)
  assert eval_methods.detectors_in(pipeline) == ("detector",)
  joint = {"composite/mse": 0, "joint/mse": 0, "joint_detector/iou": 0}
  assert eval_methods.scored(joint) == ("joint",)
  assert eval_methods.methods_in(joint) == ("composite", "joint")
  assert eval_methods.detectors_in(joint) == ("joint_detector",)
  assert eval_methods.compared_system(joint).compared == ("joint", "joint_gt_mask")
  assert eval_methods.compared_system(pipeline).compared == ("detector_harmoniser",
                                                             "harmoniser_gt_mask")


def test_evaluate_writes_the_joint_rows(demo_build, weight_files, tmp_path):  # noqa: F811
  path = str(tmp_path / "joint.keras")
  _joint().save(path)
  metrics = evaluation.evaluate(_config(demo_build, weight_files, tmp_path / "out",
                                        joint_weights=path, systems=None))
  for name in eval_methods.JOINT_METHODS:
    assert np.isfinite(metrics["methods"][name]["psnr"]), name
    assert name in metrics["shares"]
    assert (name in metrics["real_photos"]) == (name in eval_methods.JOINT_MASK_FREE_METHODS), name
  assert set(metrics["joint_detector"]) == {"iou", "f1", "ap"}
  assert metrics["provenance"]["joint_weights"]["path"] == path
  table = open(tmp_path / "out" / "table.md").read()
  assert report.label("joint") in table and "joint model m, suprathreshold" in table
  with open(tmp_path / "out" / "per_image.csv") as f:
    header = next(csv.reader(f))
  assert "joint/psnr" in header and "joint_detector/iou" in header
  assert "joint model vs GT mask" in report.terminal_table(metrics)
  with pytest.raises(evaluation.EvaluationError, match="missing weights: --joint_weights .*missing.keras"):
    evaluation.evaluate(_config(demo_build, weight_files, tmp_path / "out2", systems=None,
                                joint_weights=str(tmp_path / "missing.keras")))


def test_the_default_system_is_scored_without_a_flag_and_can_be_left_out(tmp_path):
  """Issue 27: the joint model (the default system) was in a table only with --joint_weights."""
  config = lambda **kw: evaluation.EvalConfig(data_dir="d", output_dir=str(tmp_path), **kw)
  assert loaders.scored_systems(config()) == ("pipeline", "joint")
  _, files = loaders.open_system("joint", config(), 256)
  assert files == {"joint_weights": presets.get("joint_256").weights_path}
  assert loaders.scored_systems(config(systems=("pipeline",))) == ("pipeline",)
  assert loaders.scored_systems(config(systems=())) == ("pipeline",)  # --systems= (empty)
  assert loaders.scored_systems(config(systems=("joint",))) == ("pipeline", "joint")
  with pytest.raises(evaluation.EvaluationError, match="unknown system 'jiont'"):
    loaders.scored_systems(config(systems=("jiont",)))
  with pytest.raises(evaluation.EvaluationError,
                     match="--joint_weights given, but --systems=pipeline leaves out joint"):
    loaders.scored_systems(config(systems=("pipeline",), joint_weights="joint_256"))


def test_joint_weights_take_a_preset_name(tmp_path):
  cfg = evaluation.EvalConfig(data_dir="d", output_dir=str(tmp_path), joint_weights="joint_256")
  assert loaders.scored_systems(cfg) == ("pipeline", "joint")
  system, files = loaders.open_system("joint", cfg, 256)
  assert files == {"joint_weights": presets.get("joint_256").weights_path}
  assert isinstance(system, JointSystem)
  with pytest.raises(evaluation.EvaluationError, match="not a joint"):
    loaders.open_system("joint", evaluation.EvalConfig(
        data_dir="d", output_dir=str(tmp_path), joint_weights="harmoniser_256"), 256)
