"""The evaluation with a joint model (scored by default; EvalConfig.joint_weights names its
file): its mask-free rows, its detection scores and its do-no-harm numbers, beside the
pipeline's or alone (--systems=joint). Random-weight models."""
import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import evaluation
from tfharm import presets
from tfharm.evaluation import artifacts, evaluator, loaders, loop, report
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
from tfharm.weights import store
from tests.eval_test import _batch, _config, _stub_detector, S, weight_files  # noqa: F401  pylint: disable=unused-import
from tests.models.trained_weights import small_joint_model as _joint
from tests.scripts.ship_joint_test import ship_summary


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


@pytest.fixture(scope="module")
def joint_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("joint") / "joint.keras")
  _joint().save(path)
  return path


@pytest.fixture(scope="module")
def all_systems_run(demo_build, weight_files, joint_file, tmp_path_factory):  # noqa: F811
  """(metrics, output dir) of the default run: every system."""
  out = tmp_path_factory.mktemp("all_systems")
  return evaluation.evaluate(_config(demo_build, weight_files, out, joint_weights=joint_file,
                                     systems=None)), out


@pytest.fixture(scope="module")
def joint_only_run(demo_build, weight_files, joint_file, tmp_path_factory):  # noqa: F811
  """(metrics, output dir) of --systems=joint on the same examples."""
  out = tmp_path_factory.mktemp("joint_only")
  return evaluation.evaluate(_config(demo_build, weight_files, out, joint_weights=joint_file,
                                     detector_weights=None, harmoniser_weights=None,
                                     systems=("joint",))), out


def test_evaluate_writes_the_joint_rows(demo_build, weight_files, joint_file,  # noqa: F811
                                        all_systems_run, tmp_path):
  path = joint_file
  metrics, out = all_systems_run
  for name in eval_methods.JOINT_METHODS:
    assert np.isfinite(metrics["methods"][name]["psnr"]), name
    assert name in metrics["shares"]
    assert (name in metrics["real_photos"]) == (name in eval_methods.JOINT_MASK_FREE_METHODS), name
  assert set(metrics["joint_detector"]) == {"iou", "f1", "ap"}
  assert metrics["provenance"]["joint_weights"]["path"] == path
  table = open(out / "table.md").read()
  assert report.label("joint") in table and "joint model m, suprathreshold" in table
  with open(out / "per_image.csv") as f:
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
  assert loaders.scored_systems(config(systems=("joint",))) == ("joint",)
  assert loaders.scored_systems(config(systems=("joint", "pipeline"))) == ("pipeline", "joint")
  with pytest.raises(evaluation.EvaluationError, match="--systems names no system"):
    loaders.scored_systems(config(systems=()))  # --systems= (empty)
  with pytest.raises(evaluation.EvaluationError, match="unknown system 'jiont'"):
    loaders.scored_systems(config(systems=("jiont",)))
  with pytest.raises(evaluation.EvaluationError,
                     match="--joint_weights given, but --systems=pipeline leaves out joint"):
    loaders.scored_systems(config(systems=("pipeline",), joint_weights="joint_256"))
  with pytest.raises(evaluation.EvaluationError, match="--detector_weights given, but "
                     "--systems=joint leaves out pipeline"):
    loaders.scored_systems(config(systems=("joint",), detector_weights="detector_256"))
  with pytest.raises(evaluation.EvaluationError, match="--gate_file given, but --systems=joint "
                     "leaves out pipeline, whose rows use it"):
    loaders.scored_systems(config(systems=("joint",), gate_file="gate.json"))


def test_joint_weights_take_a_preset_name(tmp_path):
  cfg = evaluation.EvalConfig(data_dir="d", output_dir=str(tmp_path), joint_weights="joint_256")
  assert loaders.scored_systems(cfg) == ("pipeline", "joint")
  system, files = loaders.open_system("joint", cfg, 256)
  assert files == {"joint_weights": presets.get("joint_256").weights_path}
  assert isinstance(system, JointSystem)
  with pytest.raises(evaluation.EvaluationError, match="not a joint"):
    loaders.open_system("joint", evaluation.EvalConfig(
        data_dir="d", output_dir=str(tmp_path), joint_weights="harmoniser_256"), 256)


def test_a_joint_only_evaluation_scores_the_joint_model_alone(joint_only_run, joint_file):
  """--systems=joint: the composite's and the joint model's rows, shares, detection and
  unedited-photo figures; nothing of the pipeline (no detector runs); table.md and the terminal
  say the pipeline was not scored where the paper's Table 1 would be."""
  metrics, out = joint_only_run
  assert tuple(metrics["methods"]) == ("composite", *eval_methods.JOINT_METHODS)
  assert tuple(metrics["shares"]) == eval_methods.JOINT_METHODS
  assert "detector" not in metrics and set(metrics["joint_detector"]) == {"iou", "f1", "ap"}
  photos = metrics["real_photos"]
  assert set(photos) == {"num_photos", "joint_fire_fraction",
                         *eval_methods.JOINT_MASK_FREE_METHODS}
  assert photos["num_photos"] > 0 and 0.0 <= photos["joint_fire_fraction"] <= 1.0
  for name in eval_methods.JOINT_MASK_FREE_METHODS:
    assert set(photos[name]) == {"median_psnr", "share_at_least_40db", "min_psnr"}, name
  prov = metrics["provenance"]
  assert prov["joint_weights"]["path"] == joint_file
  assert not {"detector_weights", "harmoniser_weights", "gate"} & set(prov)
  with open(out / "metrics.json") as f:
    assert json.load(f)["methods"] == json.loads(json.dumps(metrics["methods"]))
  for name in artifacts.ARTIFACTS:
    assert os.path.exists(out / name), name
  pipeline = ("detector",) + systems_rows("pipeline")
  with open(out / "per_image.csv") as f:
    header = next(csv.reader(f))
  assert "joint/psnr" in header and "joint_detector/iou" in header
  assert not [c for c in header if c.split("/")[0] in pipeline], header
  with open(out / "per_category.csv") as f:
    assert not [c for c in next(csv.reader(f)) if c.split("/")[0] in pipeline]
  table = open(out / "table.md").read()
  assert "pipeline not scored (--systems=joint)" in table
  assert "paper MSE" not in table and "Dolhasz et al. 2020, Table 1, for C_s" not in table
  assert not [m for m in systems_rows("pipeline") if report.label(m) in table]
  assert "joint model m, all composites" in table and "the joint model fires" in table
  terminal = report.terminal_table(metrics)
  assert "pipeline not scored (--systems=joint)" in terminal and "paper:" not in terminal
  # The examples are chosen by the joint model's own output against its GT-mask row.
  per_image = evaluator.per_image_values(str(out))
  order = np.argsort(per_image["joint/mse"] - per_image["joint_gt_mask/mse"], kind="stable")
  assert prov["examples"] == {"best": order[0], "median": order[len(order) // 2],
                              "worst": order[-1]}
  assert prov["examples"] == loop.select_examples(per_image)
  # scripts/ship_joint.py records such a run: the joint model's figures, no pipeline's.
  record = ship_summary(str(out / "metrics.json"), store.sha256_file(joint_file))
  assert tuple(record["methods"]) == ("composite", *eval_methods.JOINT_METHODS)
  assert record["real_photos"] == json.loads(json.dumps(photos)) and "detector" not in record


def systems_rows(name: str) -> tuple[str, ...]:
  from tfharm import systems  # pylint: disable=g-import-not-at-top
  return systems.SYSTEMS[name].rows


def _assert_close(alone, both, path="", rtol=1e-5):
  """Every number of `alone` equals `both`'s at the same key, to float32 rounding."""
  if isinstance(alone, dict):
    for k, v in alone.items():
      _assert_close(v, both[k], f"{path}/{k}", rtol)
  elif isinstance(alone, float):
    assert both == pytest.approx(alone, rel=rtol, abs=1e-6), path
  else:
    assert alone == both, path


def test_the_joint_rows_do_not_depend_on_the_pipeline(joint_only_run, all_systems_run):
  """Leaving the pipeline out changes nothing about the joint model's rows: per image, the
  means, the shares, its detection and the unedited photos equal the all-systems run's on the
  same examples. Pixel metrics to float32 rounding (rtol 1e-5): they are computed over one
  stack of every scored row, whose size differs (and SSIM varies in its last digits between
  two identical runs); the detection and the photos' figures exactly."""
  (alone, alone_dir), (both, both_dir) = joint_only_run, all_systems_run
  a, b = evaluator.per_image_values(str(alone_dir)), evaluator.per_image_values(str(both_dir))
  rows = ("composite", *eval_methods.JOINT_METHODS)
  assert set(a) == {k for k in b if not k.startswith(("detector", *systems_rows("pipeline")))}
  for key, values in a.items():
    if key.split("/")[0] in rows:
      np.testing.assert_allclose(values, b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    else:  # ids, category, mask fraction, luminance ratio, joint_detector/*
      np.testing.assert_array_equal(values, b[key], err_msg=key)
  for part in ("methods", "shares"):
    _assert_close(alone[part], both[part], part)
  assert alone["joint_detector"] == both["joint_detector"]
  assert alone["joint_detector_suprathreshold"] == both["joint_detector_suprathreshold"]
  assert alone["real_photos"] == {k: both["real_photos"][k] for k in alone["real_photos"]}
  _assert_close(alone["per_category"], both["per_category"], "per_category")
