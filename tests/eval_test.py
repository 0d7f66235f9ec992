"""The evaluation command: graph, numbers, artifacts, bad input.

Untrained models stand in for the committed checkpoints (which may not exist yet): the
numbers are meaningless, but every value must still equal the standalone metric functions
recomputed on the same inputs. The detector costs ~2 s per 256x256 image here, so the runs
on the demo build score 4 examples; the graph's unit tests use 32x32 stand-ins.
"""

import csv
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import evaluation
from tfharm import presets
from tfharm import systems
from tfharm.data import pipeline as data_pipeline
from tfharm.evaluation import artifacts, figures, loaders, loop, report
from tfharm.evaluation import graph as eval_graph
from tfharm.evaluation import evaluator
from tfharm.metrics import image as image_metrics
from tfharm.metrics import localisation
from tfharm.metrics import lpips as lpips_lib
from tfharm.weights import store
from tfharm.models import abstention, baselines, correction
from tfharm.models import detector as det
from tfharm.models.detector_labels import LabelConfig
from tfharm.models import layer_files
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig, harmonise
from tfharm.systems.pipeline import PipelineSystem
from tests.models.trained_weights import perturb_trained_layers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 2  # examples scored on the demo build, one per batch (two batches, one trace)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
  """Randomly initialised 256 harmoniser and detector (perturbed head), saved as files."""
  keras.utils.set_random_seed(0)
  d = tmp_path_factory.mktemp("eval_weights")
  harmoniser = Harmoniser(HarmoniserConfig(image_size=256))
  detector = det.Detector(det.DetectorConfig())
  perturb_trained_layers(detector, 0)
  paths = {"harmoniser": str(d / "harmoniser_256.weights.h5"),
           "detector": str(d / "detector_256.head.weights.h5"),
           "harmoniser_128": str(d / "harmoniser_128.weights.h5")}
  harmoniser.save_weights(paths["harmoniser"])
  layer_files.save_head_weights(detector, paths["detector"])
  Harmoniser(HarmoniserConfig(image_size=128)).save_weights(paths["harmoniser_128"])
  paths["models"] = {"harmoniser": harmoniser, "detector": detector}  # what the files hold
  return paths


def _root(builder) -> str:
  """The TFDS data_dir given to the build (builder.data_dir is <root>/name/config/version)."""
  return os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))


def _config(demo_build, weight_files, output_dir, **kwargs):
  """The pipeline alone (--systems=pipeline) unless `systems` says otherwise: these tests are
  about the command and the pipeline's numbers; the joint model's rows: eval_joint_test.py."""
  base = dict(data_dir=_root(demo_build), output_dir=str(output_dir), dataset_config="256",
              split="test", detector_weights=weight_files["detector"],
              harmoniser_weights=weight_files["harmoniser"], max_examples=N, batch_size=1,
              progress=False, systems=("pipeline",))
  base.update(kwargs)
  return evaluation.EvalConfig(**base)


@pytest.fixture(scope="module")
def eval_run(demo_build, weight_files, tmp_path_factory):
  out = tmp_path_factory.mktemp("eval_out")
  metrics = evaluation.evaluate(_config(demo_build, weight_files, out))
  return metrics, str(out)


# --------------------------------------------------------------------------- the graph
S = 32


def _stub_detector():
  """1x1 conv + softmax: p_pos grows with red, p_neg with blue (a soft mask that varies and
  crosses 0.5), so binarised and empty masks differ."""
  inp = keras.Input((None, None, 3))
  conv = keras.layers.Conv2D(3, 1, activation="softmax")
  model = keras.Model(inp, conv(inp))
  kernel = np.zeros((1, 1, 3, 3), "float32")
  kernel[0, 0, 2, 0], kernel[0, 0, 0, 1] = 6.0, 6.0  # blue -> negative, red -> positive
  conv.set_weights([kernel, np.array([-2.0, -2.0, 1.0], "float32")])
  return model


def _batch(b=3, seed=0):
  rng = np.random.default_rng(seed)
  composite = rng.uniform(0, 1, (b, S, S, 3)).astype("float32")
  real = np.clip(composite + rng.normal(0, 0.1, composite.shape), 0, 1).astype("float32")
  mask = np.zeros((b, S, S, 1), "float32")
  for i in range(b):
    mask[i, 4 + i:20 + i, 6:24 - i] = 1.0
  return composite, real, mask


def _stub_open_system(name, cfg, size):
  """loaders.open_system without loading: the files it would read, and a stand-in system whose
  rows are the composite itself."""
  del size
  spec = systems.spec(name)
  given = {k: v for k, v in cfg.weights().items() if k in spec.weights}

  def rows(composite, mask=None, threshold=0.5, gate=None):
    del threshold, gate
    zeros = tf.zeros_like(composite[..., 0])  # (B, S, S)
    return {"images": {r: composite for r in (spec.photo_rows if mask is None else spec.rows)},
            "detection": tf.stack([zeros, zeros], -1),
            "values": {"detector/abstained": zeros[:, 0, 0]} if mask is None else {}}

  return types.SimpleNamespace(SYSTEM=name, rows=rows), systems.weight_files(name, given)


@pytest.fixture(scope="module")
def graph():
  keras.utils.set_random_seed(1)
  harmoniser = Harmoniser(HarmoniserConfig(image_size=S))
  return eval_graph.EvalGraph([PipelineSystem(_stub_detector(), harmoniser)],
                              lpips_lib.LPIPS("alex", jit_compile=False), jit_compile=False)


def test_graph_harmonises_the_same_inputs_with_each_mask_source(graph):
  composite, real, mask = _batch()
  out = graph.step(composite, real, mask)
  img = out["images"]
  detection = det.detection_channels(graph.systems[0].detector(composite))
  soft = det.soft_mask(detection).numpy()
  assert 0.0 < (soft > 0.5).mean() < 1.0  # the binarised mask is neither empty nor full
  np.testing.assert_allclose(img["detection"], detection, atol=1e-6)
  np.testing.assert_array_equal(img["composite"], composite)
  masks = {"harmoniser_gt_mask": mask, "detector_harmoniser": soft,
           "harmoniser_binarised_pred_mask": (soft > 0.5).astype("float32"),
           "harmoniser_empty_mask": np.zeros_like(mask)}
  alone = {name: harmonise(graph.systems[0].harmoniser, composite, m).numpy() for name, m in masks.items()}
  for name in masks:
    np.testing.assert_allclose(img[name], alone[name], atol=2e-5, err_msg=name)
  for a in masks:  # the four outputs differ, so a mix-up of the 4B split would show
    for b in masks:
      if a < b:
        assert np.abs(alone[a] - alone[b]).max() > 1e-4, (a, b)
  np.testing.assert_allclose(img["harmoniser_gt_mask_gated"],
                             composite * (1 - mask) + alone["harmoniser_gt_mask"] * mask, atol=2e-5)
  np.testing.assert_allclose(img["detector_harmoniser_gated"],
                             composite + soft * (alone["detector_harmoniser"] - composite), atol=2e-5)
  for name, m in (("harmoniser_gt_mask", mask), ("detector_harmoniser", soft)):
    np.testing.assert_allclose(img[f"{name}_l_moments"], correction.apply_correction(
        "l_moments", composite, m, composite, m, alone[name]), atol=2e-5, err_msg=name)
  np.testing.assert_allclose(img["ring_l_mean_gt_mask"], baselines.ring_l_mean(composite, mask),
                             atol=2e-5)
  # Without a gate the abstaining row is the plain soft-mask row.
  np.testing.assert_allclose(img["detector_harmoniser_abstain_l_moments"],
                             img["detector_harmoniser_l_moments"], atol=2e-5)


def test_a_gate_that_abstains_returns_the_composite(graph):
  composite, real, mask = _batch()
  strict = eval_graph.EvalGraph(graph.systems, graph.lpips, jit_compile=False,
                                gate=abstention.Gate(pixel_threshold=0.5, min_area=0.99))
  out = strict.step(composite, real, mask)
  np.testing.assert_allclose(out["images"]["detector_harmoniser_abstain_l_moments"], composite,
                             atol=1e-6)
  photos = strict.real_photo_step(real)
  np.testing.assert_array_equal(photos["detector/abstained"], 1.0)
  np.testing.assert_array_equal(photos["detector_harmoniser_abstain_l_moments/psnr"], 100.0)
  soft = det.soft_mask(det.detection_channels(graph.systems[0].detector(real))).numpy()
  np.testing.assert_allclose(photos["detector/fire_fraction"], (soft > 0.5).mean(axis=(1, 2, 3)),
                             atol=1e-6)


def test_graph_metrics_equal_the_standalone_functions(graph):
  composite, real, mask = _batch(seed=3)
  out = graph.step(composite, real, mask)
  lp = lpips_lib.LPIPS("alex", jit_compile=False)
  for method in evaluation.METHODS:
    pred = out["images"][method]
    expected = {
        "mse": image_metrics.mse(pred, real, value_range=(0, 1)),
        "psnr": image_metrics.psnr(pred, real, value_range=(0, 1)),
        "fmse": image_metrics.fmse(pred, real, mask, value_range=(0, 1)),
        "ssim": image_metrics.ssim(pred, real, value_range=(0, 1)),
        "lpips": lp(pred * 2.0 - 1.0, real * 2.0 - 1.0),
    }
    for k in evaluation.IMAGE_METRICS:
      np.testing.assert_allclose(out["metrics"][method][k], expected[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"{method}/{k}")
  soft = out["images"]["soft_mask"]
  for k, fn in (("iou", localisation.iou), ("f1", localisation.f1),
                ("ap", localisation.average_precision)):
    np.testing.assert_allclose(out["detector"][k], fn(soft, mask), rtol=1e-6, err_msg=k)


@pytest.mark.slow
def test_graph_under_xla_matches_the_default_graph(graph):
  composite, real, mask = _batch(seed=5)
  xla = eval_graph.EvalGraph(graph.systems, graph.lpips, jit_compile=True)
  assert xla.jit_compile and not graph.jit_compile
  a, b = graph.step(composite, real, mask), xla.step(composite, real, mask)
  for method in evaluation.METHODS:
    np.testing.assert_allclose(b["images"][method], a["images"][method], atol=1e-4)
    for k in evaluation.IMAGE_METRICS:
      np.testing.assert_allclose(b["metrics"][method][k], a["metrics"][method][k], rtol=1e-3,
                                 atol=1e-4, err_msg=f"{method}/{k}")
  for k in evaluation.DETECTOR_METRICS:
    np.testing.assert_allclose(b["detector"][k], a["detector"][k], atol=1e-3)


def test_select_examples_orders_by_cp_minus_cs():
  per_image = {"detector_harmoniser/mse": np.array([5.0, 1.0, 9.0, 4.0, 3.0]),
               "harmoniser_gt_mask/mse": np.array([1.0, 1.0, 1.0, 1.0, 1.0]),
               "detector_harmoniser/psnr": np.array([30.0, 20.0, 25.0, 21.0, 22.0]),
               "harmoniser_gt_mask/psnr": np.zeros(5)}
  assert loop.select_examples(per_image, "mse") == {"best": 1, "median": 3, "worst": 2}
  # higher PSNR is better: the best has the largest C_p - C_s
  assert loop.select_examples(per_image, "psnr") == {"best": 0, "median": 4, "worst": 1}


def test_a_new_metric_is_one_key_of_image_metrics_and_one_column(graph, monkeypatch):
  """Adding a per-image metric: a key in metrics.image.image_metrics and a row in
  evaluation.columns; the graph then scores it for every row and the report shows it
  (tests/evaluation/report_test.py follows it into every output file)."""
  import copy  # pylint: disable=g-import-not-at-top
  from tfharm.evaluation import columns  # pylint: disable=g-import-not-at-top
  original = image_metrics.image_metrics

  def with_mae(pred, target, mask=None, value_range=(0.0, 255.0)):
    lo, hi = value_range
    return {**original(pred, target, mask, value_range),
            "mae": tf.reduce_mean(tf.abs(pred - target), axis=[1, 2, 3]) * (255.0 / (hi - lo))}

  monkeypatch.setattr(image_metrics, "image_metrics", with_mae)
  monkeypatch.setattr(columns, "IMAGE_COLUMNS", columns.IMAGE_COLUMNS + (
      columns.Column("mae", "MAE", 3, lower_is_better=True),))
  # The graph's IMAGE_METRICS is the table's keys, bound at import: what editing the table changes.
  assert eval_graph.IMAGE_METRICS == tuple(c.key for c in columns.IMAGE_COLUMNS[:-1])
  monkeypatch.setattr(eval_graph, "IMAGE_METRICS", eval_graph.IMAGE_METRICS + ("mae",))
  eager = copy.copy(graph)  # the fixture's step is traced already; compute reads the patches
  eager.step = eager.compute
  composite, real, mask = _batch()
  data = {"composite": composite, "real": real, "mask": mask, "category": np.array([0, 1, 0]),
          **{k: np.arange(3) for k in loop.ID_FIELDS}}
  per_image = loop.run(eager, tf.data.Dataset.from_tensor_slices(data).batch(2), 3,
                         ["a", "b"], progress=False).per_image
  np.testing.assert_allclose(per_image["composite/mae"],
                             np.abs(composite - real).mean(axis=(1, 2, 3)) * 255.0, rtol=1e-5)
  summary = report.summarise(per_image)
  for m in evaluation.METHODS:
    assert summary["methods"][m]["mae"] == pytest.approx(per_image[f"{m}/mae"].mean())
  assert "| MAE |" in report.main_table(summary)


# --------------------------------------------------------------------------- a whole run
def test_metrics_json_schema(eval_run, weight_files):
  metrics, out = eval_run
  with open(os.path.join(out, "metrics.json")) as f:
    on_disk = json.load(f)
  assert on_disk["num_examples"] == N
  assert set(on_disk["methods"]) == set(evaluation.METHODS)
  for required in ("composite", "harmoniser_gt_mask", "detector_harmoniser",
                   "harmoniser_binarised_pred_mask", "harmoniser_empty_mask"):
    assert set(on_disk["methods"][required]) == {"mse", "psnr", "lpips", "fmse", "ssim"}
    for v in on_disk["methods"][required].values():
      assert isinstance(v, float) and np.isfinite(v)
  assert set(on_disk["detector"]) == {"iou", "f1", "ap"}
  with open(os.path.join(out, "per_image.csv")) as f:
    ratios = np.array([float(r["luminance_ratio"]) for r in csv.DictReader(f)])
  labels = LabelConfig()
  assert on_disk["detector_suprathreshold"]["num_examples"] == int(
      ((ratios < labels.tau_neg) | (ratios > labels.tau_pos)).sum())
  prov = on_disk["provenance"]
  for which in ("detector", "harmoniser"):
    assert prov[f"{which}_weights"]["path"] == os.path.abspath(weight_files[which])
    assert prov[f"{which}_weights"]["sha256"] == store.sha256_file(weight_files[which])
  assert prov["dataset"]["split"] == "test" and prov["dataset"]["config"] == "256"
  assert prov["settings"]["jit_compile"] is False
  assert sum(c["num_examples"] for c in on_disk["per_category"].values()) == N
  assert on_disk["methods"] == json.loads(json.dumps(metrics["methods"]))


def test_every_output_file_exists(eval_run):
  _, out = eval_run
  for name in artifacts.ARTIFACTS:
    assert os.path.exists(os.path.join(out, name)), name
  for png in ("fig_distributions.png", "fig_differentials.png", "examples.png"):
    with open(os.path.join(out, png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", png
  events = os.listdir(os.path.join(out, "tensorboard"))
  assert any(e.startswith("events.out.tfevents") for e in events)
  tags = set()
  for e in events:
    for event in tf.compat.v1.train.summary_iterator(os.path.join(out, "tensorboard", e)):
      tags.update(v.tag for v in event.summary.value)
  assert {"detector_harmoniser/psnr", "detector/iou", "examples/worst"} <= tags
  assert not [n for n in os.listdir(out) if n.startswith(artifacts.STAGING_PREFIX)]
  with open(os.path.join(out, "table.md")) as f:
    table = f.read()
  assert_paper_columns(table)
  with open(os.path.join(out, "per_category.csv")) as f:
    assert next(csv.reader(f))[:2] == ["category", "num_examples"]


def assert_paper_columns(table: str) -> None:
  """The paper's Table 1 numbers sit in the C_s and C_p rows' paper columns (not in prose)."""
  lines = table.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith("| method | MSE |"))
  block = []
  for line in lines[start:]:
    if not line.startswith("|"):
      break
    block.append(line)
  assert block[0].split("|")[-4:-1] == [" paper MSE ", " paper PSNR ", " paper LPIPS "], block[0]
  rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[-4:-1]]
          for line in block}
  assert rows[report.LABELS["harmoniser_gt_mask"]] == ["19.55", "35.81", "0.0227"], rows
  assert rows[report.LABELS["detector_harmoniser"]] == ["22.65", "35.18", "0.0292"], rows


def test_paper_columns_check_fails_on_a_mutated_table(eval_run):
  _, out = eval_run
  with open(os.path.join(out, "table.md")) as f:
    table = f.read()
  assert_paper_columns(table)
  with pytest.raises(AssertionError):
    assert_paper_columns(table.replace("| 35.81 |", "| 35.18 |", 1))


def test_values_equal_standalone_metrics_on_the_same_examples(eval_run, demo_build, weight_files):
  """C_s and C_p come from the dataset's own composite/real/mask, and every per-image number
  equals the standalone metric on outputs recomputed from those inputs."""
  metrics, out = eval_run
  with open(os.path.join(out, "per_image.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == N and [int(r["index"]) for r in rows] == list(range(N))
  batch = next(iter(data_pipeline.make_dataset(_root(demo_build), "test", batch_size=N,
                                               max_examples=N)))
  for key in loop.ID_FIELDS:
    assert [int(r[key]) for r in rows] == batch[key].numpy().tolist()
  composite, real, mask = batch["composite"], batch["real"], batch["mask"]
  harmoniser, detector = weight_files["models"]["harmoniser"], weight_files["models"]["detector"]
  soft = det.soft_mask(det.detection_channels(detector(composite, training=False)))
  outputs = {"composite": composite,
             "harmoniser_gt_mask": harmonise(harmoniser, composite, mask),
             "detector_harmoniser": harmonise(harmoniser, composite, soft)}
  lp = lpips_lib.LPIPS("alex", jit_compile=False)
  col = lambda name: np.array([float(r[name]) for r in rows])
  for method, pred in outputs.items():
    expected = {"mse": image_metrics.mse(pred, real, value_range=(0, 1)),
                "psnr": image_metrics.psnr(pred, real, value_range=(0, 1)),
                "fmse": image_metrics.fmse(pred, real, mask, value_range=(0, 1)),
                "ssim": image_metrics.ssim(pred, real, value_range=(0, 1)),
                "lpips": lp(pred * 2.0 - 1.0, real * 2.0 - 1.0)}
    for k, v in expected.items():
      np.testing.assert_allclose(col(f"{method}/{k}"), v, rtol=2e-4, atol=1e-5,
                                 err_msg=f"{method}/{k}")
  np.testing.assert_allclose(col("detector/iou"), localisation.iou(soft, mask), atol=1e-6)
  np.testing.assert_allclose(col("detector/ap"), localisation.average_precision(soft, mask),
                             atol=1e-4)
  # C_p and C_s differ (different masks), so the comparisons above can tell them apart
  assert np.abs(col("detector_harmoniser/mse") - col("harmoniser_gt_mask/mse")).max() > 1e-3
  # the summary is the mean of the per-image values
  for method in evaluation.METHODS:
    for k in evaluation.IMAGE_METRICS:
      np.testing.assert_allclose(metrics["methods"][method][k], col(f"{method}/{k}").mean(),
                                 rtol=1e-6)


def test_terminal_table_lists_methods_and_paper(eval_run):
  text = report.terminal_table(eval_run[0])
  assert "detector + harmoniser (C_p)" in text and "35.18" in text
  assert f"{eval_run[0]['methods']['composite']['mse']:.2f}" in text


# --------------------------------------------------------------------------- bad input
def test_data_dir_without_the_dataset(tmp_path, weight_files):
  cfg = evaluation.EvalConfig(data_dir=str(tmp_path / "empty"), output_dir=str(tmp_path / "o"),
                              detector_weights=weight_files["detector"],
                              harmoniser_weights=weight_files["harmoniser"])
  with pytest.raises(evaluation.EvaluationError, match="no prepared luminance_composites/256.*"
                                                       "tfharm.data.build"):
    evaluation.evaluate(cfg)
  assert not os.path.exists(tmp_path / "o" / "metrics.json")


def test_unknown_split(demo_build, weight_files, tmp_path):
  with pytest.raises(evaluation.EvaluationError,
                     match=r"split 'holdout'.*\['test', 'train', 'validation'\]"):
    evaluation.evaluate(_config(demo_build, weight_files, tmp_path, split="holdout"))


def test_harmoniser_weights_for_another_size(demo_build, weight_files, tmp_path):
  with pytest.raises(evaluation.EvaluationError, match="--harmoniser_weights .* cannot be loaded as the 256x256 harmoniser"):
    evaluation.evaluate(_config(demo_build, weight_files, tmp_path,
                                harmoniser_weights=weight_files["harmoniser_128"]))


def test_not_a_detector_file(demo_build, weight_files, tmp_path):
  with pytest.raises(evaluation.EvaluationError, match="--detector_weights .* cannot be loaded as the detector"):
    evaluation.evaluate(_config(demo_build, weight_files, tmp_path,
                                detector_weights=weight_files["harmoniser"]))


def test_missing_weight_files_say_how_to_get_them(demo_build, weight_files, tmp_path):
  with pytest.raises(evaluation.EvaluationError, match="missing weights: --harmoniser_weights .*nope.*"
                                                       "tfharm/presets/README.md"):
    evaluation.evaluate(_config(demo_build, weight_files, tmp_path,
                                harmoniser_weights=str(tmp_path / "nope.weights.h5")))
  with pytest.raises(evaluation.EvaluationError, match="missing weights: --detector_weights .*nope.*"
                                                       "tfharm/presets/README.md"):
    evaluation.evaluate(_config(demo_build, weight_files, tmp_path,
                                detector_weights=str(tmp_path / "nope.head.weights.h5")))


def test_default_weights_resolve_to_the_package_not_the_cwd(demo_build, tmp_path, monkeypatch):
  presets_dir = os.path.join(REPO, "tfharm", "presets")
  harmoniser_256 = presets.get("harmoniser_256").weights_path
  detector_256 = presets.get("detector_256").weights_path
  assert harmoniser_256 == os.path.join(presets_dir, "harmoniser_256.weights.h5")
  assert detector_256 == os.path.join(presets_dir, "detector_256.head.weights.h5")
  monkeypatch.chdir(tmp_path)
  cfg = evaluation.EvalConfig(data_dir=_root(demo_build), output_dir=str(tmp_path / "o"),
                              max_examples=1, batch_size=1, progress=False)
  if not (os.path.exists(harmoniser_256) and os.path.exists(detector_256)):
    with pytest.raises(evaluation.EvaluationError) as e:
      evaluation.evaluate(cfg)
    assert harmoniser_256 in str(e.value) or detector_256 in str(e.value)
    return
  # The shipped presets are what an evaluation without weight flags uses, from any cwd.
  evaluation.evaluate(cfg)
  with open(tmp_path / "o" / "metrics.json") as f:
    provenance = json.dumps(json.load(f)["provenance"])
  assert harmoniser_256 in provenance and detector_256 in provenance


@pytest.mark.parametrize("existing", ["metrics.json", "per_image.csv", "tensorboard"])
def test_refuses_an_output_dir_with_results(demo_build, weight_files, tmp_path, existing):
  out = tmp_path / "out"
  out.mkdir()
  (out / existing).mkdir() if existing == "tensorboard" else (out / existing).write_text("old")
  with pytest.raises(evaluation.EvaluationError, match="already holds evaluation results.*--overwrite"):
    evaluation.evaluate(_config(demo_build, weight_files, out))
  assert sorted(os.listdir(out)) == [existing]  # untouched


def _fake_results(n=3):
  """Results of a run without the graph (for the artifact-writing tests)."""
  rng = np.random.default_rng(0)
  per_image = {f"{m}/{k}": rng.uniform(1, 2, n) for m in evaluation.METHODS
               for k in evaluation.IMAGE_METRICS}
  per_image.update({f"detector/{k}": rng.uniform(0, 1, n) for k in evaluation.DETECTOR_METRICS})
  per_image.update({k: np.arange(n) for k in loop.ID_FIELDS})
  per_image.update({"category": np.zeros(n, int), "mask_fraction": np.full(n, 0.1),
                    "luminance_ratio": np.ones(n)})
  images = {k: np.zeros((n, 8, 8, 3), np.uint8) for k in ("composite", "harmoniser_gt_mask",
                                                          "detector_harmoniser", "real")}
  images.update(detection=np.zeros((n, 8, 8, 2), np.uint8), mask=np.zeros((n, 8, 8, 1), np.uint8))
  return loop.Results(per_image, ["person"], {"loop_s": 1.0, "examples_per_s": 3.0}, n, images)


def _interrupt(*args, **kwargs):
  raise KeyboardInterrupt


@pytest.mark.parametrize("previous", [False, True])
def test_interrupted_run_never_leaves_a_metrics_json(demo_build, weight_files, tmp_path,
                                                     monkeypatch, eval_run, previous):
  """Interrupted while writing the figures: a new dir gets no metrics.json (nor any other
  artifact); an --overwrite of a complete run keeps the old, complete results."""
  out = tmp_path / "out"
  if previous:
    import shutil
    shutil.copytree(eval_run[1], out)
  monkeypatch.setattr(loop, "run", lambda *a, **k: _fake_results())
  monkeypatch.setattr(loaders, "open_system", _stub_open_system)
  monkeypatch.setattr(figures, "plot_examples", _interrupt)
  before = {n: (out / n).read_bytes() for n in ("metrics.json", "per_image.csv")} if previous else {}
  with pytest.raises(KeyboardInterrupt):
    evaluation.evaluate(_config(demo_build, weight_files, out, overwrite=True))
  left = sorted(os.listdir(out)) if out.exists() else []
  assert not [n for n in left if n.startswith(artifacts.STAGING_PREFIX)]
  if previous:
    assert {n: (out / n).read_bytes() for n in before} == before
  else:
    assert left == []


def test_a_rerun_removes_the_staging_dirs_of_killed_runs(demo_build, weight_files, tmp_path,
                                                        monkeypatch):
  out = tmp_path / "out"
  stale = [f"{artifacts.STAGING_PREFIX}999999999-abc", f"{artifacts.STAGING_PREFIX}xyz"]  # gone
  running = f"{artifacts.STAGING_PREFIX}{os.getpid()}-live"  # a run still going: kept
  for name in (*stale, running):
    os.makedirs(out / name)
    (out / name / "per_image.csv").write_text("partial")
  monkeypatch.setattr(loop, "run", lambda *a, **k: _fake_results())
  monkeypatch.setattr(loaders, "open_system", _stub_open_system)
  monkeypatch.setattr(figures, "plot_examples", _interrupt)
  with pytest.raises(KeyboardInterrupt):
    evaluation.evaluate(_config(demo_build, weight_files, out))
  assert sorted(os.listdir(out)) == [running]


def test_a_full_disk_while_writing_is_a_setup_error_and_keeps_the_old_results(
    demo_build, weight_files, tmp_path, monkeypatch, eval_run):
  """ENOSPC while the results are written (past the free-space check): EvaluationError, which
  the command prints as one line with exit 2; before, an OSError traceback (exit 3)."""
  from tests import serving_helpers as helpers  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  with helpers.tmpfs(tmp_path / "disk", "size=50m,nr_inodes=64") as disk:
    out = os.path.join(disk, "out")
    shutil.copytree(eval_run[1], out)  # a complete earlier run, to be replaced (--overwrite)
    before = {n: open(os.path.join(out, n), "rb").read() for n in ("metrics.json", "table.md")}
    helpers.fill_inodes(os.path.join(disk, "filler"), leave=4)  # probe, staging dir, 2 files
    monkeypatch.setattr(loop, "run", lambda *a, **k: _fake_results())
    monkeypatch.setattr(loaders, "open_system", _stub_open_system)
    with pytest.raises(evaluation.EvaluationError) as e:
      evaluation.evaluate(_config(demo_build, weight_files, out, overwrite=True))
    assert str(e.value) == (f"--output_dir {out}: no space left on the device while writing "
                            "the results; the previous results are unchanged")
    assert not [n for n in os.listdir(out) if n.startswith(artifacts.STAGING_PREFIX)]
    assert {n: open(os.path.join(out, n), "rb").read() for n in before} == before


def _damaged_copy(demo_build, directory) -> str:
  """A copy of the demo build whose test TFRecord has 64 bytes overwritten in its first
  record; returns that file's path."""
  import glob  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(_root(demo_build), directory)
  (path,) = glob.glob(os.path.join(directory, "luminance_composites", "256", "*",
                                    "luminance_composites-test.tfrecord*"))
  with open(path, "r+b") as f:
    f.seek(5000)
    f.write(b"\xff" * 64)
  return path


def test_a_corrupted_tfrecord_is_one_line_naming_the_file(demo_build, weight_files, tmp_path):
  """TensorFlow's DataLossError says only "corrupted record at 12"; before, a traceback, exit 3.
  Exit 2: nothing can be evaluated from that split and nothing is written (1 would say the
  other inputs were done)."""
  path = _damaged_copy(demo_build, str(tmp_path / "tfds"))
  out = tmp_path / "o"
  proc = _cli("--flagfile=configs/eval_demo.flags", f"--data_dir={tmp_path / 'tfds'}",
              f"--output_dir={out}", f"--detector_weights={weight_files['detector']}",
              f"--harmoniser_weights={weight_files['harmoniser']}", "--max_examples=2",
              "--progress=false")
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: {path}: a damaged record (corrupted record at 12); rebuild the "
                    "dataset (python -m tfharm.data.build)"], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert os.listdir(out) == []


def test_commit_replaces_old_results_and_moves_metrics_json_last(tmp_path, monkeypatch):
  out = tmp_path / "out"
  out.mkdir()
  (out / "metrics.json").write_text("old")
  (out / "tensorboard").mkdir()
  (out / "tensorboard" / "old_event").write_text("old")
  staged = artifacts.StagedOutput(str(out))
  for name in artifacts.ARTIFACTS:
    if name == "tensorboard":
      os.makedirs(staged.path(name))
    else:
      with open(staged.path(name), "w") as f:
        f.write("new")
  moved = []
  real_replace = os.replace
  monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(os.path.basename(b)),
                                                   real_replace(a, b)))
  staged.commit()
  assert moved[-1] == "metrics.json" and sorted(moved) == sorted(artifacts.ARTIFACTS)
  assert (out / "metrics.json").read_text() == "new"
  assert os.listdir(out / "tensorboard") == []
  assert sorted(os.listdir(out)) == sorted(artifacts.ARTIFACTS)


def test_commit_refuses_an_incomplete_staging_dir(tmp_path):
  staged = artifacts.StagedOutput(str(tmp_path))
  with open(staged.path("metrics.json"), "w") as f:
    f.write("{}")
  with pytest.raises(RuntimeError, match="incomplete"):
    staged.commit()
  assert not os.path.exists(tmp_path / "metrics.json")


def test_per_image_csv_round_trips(eval_run):
  values = evaluator.per_image_values(eval_run[1])
  assert len(values["composite/mse"]) == N
  assert set(report.per_image_columns()) - {"category"} <= set(values)


# --------------------------------------------------------------------------- the command
def _cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "tfharm.eval", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=600)


def test_cli_flagfile_parses_and_bad_data_exits_with_a_message(tmp_path):
  proc = _cli("--flagfile=configs/eval_coco.flags", f"--data_dir={tmp_path / 'none'}",
              f"--output_dir={tmp_path / 'o'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "error: no prepared luminance_composites/256" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_cli_checks_the_output_dir_before_any_work(tmp_path):
  """A file in the way, a read-only or a full file system: exit 2 with the reason, before
  TensorFlow starts (it used to come after the whole evaluation, as a traceback)."""
  from tests import serving_helpers as helpers  # pylint: disable=g-import-not-at-top
  (tmp_path / "afile").write_text("x")
  cases = [(str(tmp_path / "afile"), "is a file, not a directory")]
  with helpers.tmpfs(tmp_path / "ro", "size=1m,ro") as ro, helpers.full_disk(tmp_path / "full") as full:
    cases += [(f"{ro}/eval", "read-only file system"), (str(full), "no space left on the device")]
    for output_dir, message in cases:
      proc = _cli("--flagfile=configs/eval_coco.flags", f"--data_dir={tmp_path}",
                  f"--output_dir={output_dir}")
      assert proc.returncode == 2, proc.stderr[-2000:]
      assert message in proc.stderr and "Traceback" not in proc.stderr
      assert helpers.noise_lines(proc.stderr) == []  # TensorFlow was never started


@pytest.mark.slow
def test_cli_demo_end_to_end(demo_build, weight_files, tmp_path):
  proc = _cli("--flagfile=configs/eval_demo.flags", f"--data_dir={_root(demo_build)}",
              f"--output_dir={tmp_path / 'o'}", f"--detector_weights={weight_files['detector']}",
              f"--harmoniser_weights={weight_files['harmoniser']}", "--max_examples=2",
              "--progress=false")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "detector + harmoniser (C_p)" in proc.stdout and "examples/s" in proc.stdout
  # No flag names it, yet the default system (the shipped joint model) is scored too.
  assert report.label("joint_l_moments") in open(tmp_path / "o" / "table.md").read()
  assert os.path.exists(tmp_path / "o" / "metrics.json")


@pytest.mark.parametrize("threshold", ["nan", "2", "1"])
def test_cli_refuses_a_threshold_no_mask_value_can_pass(tmp_path, threshold):
  """Issue 26: --threshold=nan (or 2) was accepted and IoU and F1 came out 0 with exit 0.
  A soft mask value counts as positive above the threshold, so it must be in [0, 1)."""
  proc = _cli("--flagfile=configs/eval_coco.flags", f"--data_dir={tmp_path}",
              f"--output_dir={tmp_path / 'o'}", f"--threshold={threshold}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.startswith(f"error: --threshold must be in [0, 1), got {float(threshold)}")
  assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "o").exists()
  with pytest.raises(evaluation.EvaluationError, match="threshold"):
    evaluation.evaluate(evaluation.EvalConfig(data_dir=str(tmp_path),
                                              output_dir=str(tmp_path / "o"),
                                              threshold=float(threshold)))
