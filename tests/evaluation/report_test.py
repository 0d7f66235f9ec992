"""tfharm.evaluation.report reads its columns from tfharm.evaluation.columns: a metric added
there (and to tfharm.metrics.image) reaches the CSVs, table.md, the terminal and the figures."""
import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm.evaluation import columns, figures, report, runner
from tfharm.metrics import image as image_metrics
from tfharm.metrics import lpips as lpips_lib
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig

S, N = 32, 3
# A metric no tfharm code knows: mean absolute error on the 0-255 scale.
MAE = columns.Column("mae", "MAE", 3, lower_is_better=True, unit="0-255", width=9)
PROVENANCE = {"dataset": {"name": "luminance_composites", "config": "32", "split": "test",
                          "image_size": S},
              "detector_weights": {"path": "/d.h5", "sha256": "0" * 64},
              "harmoniser_weights": {"path": "/h.h5", "sha256": "1" * 64}}


_ORIGINAL = image_metrics.image_metrics


def _image_metrics_with_mae(pred, target, mask=None, value_range=(0.0, 255.0)):
  """metrics.image.image_metrics plus "mae": what adding a metric to metrics/image.py does."""
  lo, hi = value_range
  out = _ORIGINAL(pred, target, mask, value_range)
  out["mae"] = tf.reduce_mean(tf.abs(pred - target), axis=[1, 2, 3]) * (255.0 / (hi - lo))
  return out


def _stub_detector():
  """1x1 conv + softmax: a soft mask that varies with the colour (red -> positive)."""
  inp = keras.Input((None, None, 3))
  conv = keras.layers.Conv2D(3, 1, activation="softmax")
  model = keras.Model(inp, conv(inp))
  kernel = np.zeros((1, 1, 3, 3), "float32")
  kernel[0, 0, 2, 0], kernel[0, 0, 0, 1] = 6.0, 6.0
  conv.set_weights([kernel, np.array([-2.0, -2.0, 1.0], "float32")])
  return model


def _examples():
  rng = np.random.default_rng(0)
  composite = rng.uniform(0, 1, (N, S, S, 3)).astype("float32")
  real = np.clip(composite + rng.normal(0, 0.1, composite.shape), 0, 1).astype("float32")
  mask = np.zeros((N, S, S, 1), "float32")
  mask[:, 8:24, 8:24] = 1.0
  ids = {k: np.arange(N, dtype=np.int64) + 10 * i for i, k in enumerate(runner.ID_FIELDS)}
  return {"composite": composite, "real": real, "mask": mask, **ids,
          "category": np.array([0, 1, 0], np.int64)}


@pytest.fixture(scope="module")
def run_with_mae():
  """A whole scoring run (graph, loop, summary) with MAE added the way a new metric is: one key
  in image_metrics and one row in the column table (runner.IMAGE_METRICS is that table's keys,
  bound at import, so it is patched too). The patches end before the tests run."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(image_metrics, "image_metrics", _image_metrics_with_mae)
    mp.setattr(columns, "IMAGE_COLUMNS", columns.IMAGE_COLUMNS + (MAE,))
    mp.setattr(runner, "IMAGE_METRICS", columns.IMAGE_METRICS + ("mae",))
    keras.utils.set_random_seed(0)
    graph = runner.EvalGraph(_stub_detector(), Harmoniser(HarmoniserConfig(image_size=S)),
                             lpips_lib.LPIPS("alex", jit_compile=False), jit_compile=False)
    data = _examples()
    results = runner.run(graph, tf.data.Dataset.from_tensor_slices(data).batch(2), N,
                         ["cat", "dog"], progress=False)
    summary = report.summarise(results.per_image)
  return data, results.per_image, summary


def test_the_graph_scores_exactly_the_tables_metrics():
  assert runner.IMAGE_METRICS == tuple(c.key for c in columns.IMAGE_COLUMNS)
  assert runner.DETECTOR_METRICS == tuple(c.key for c in columns.DETECTOR_COLUMNS)
  assert set(runner.LOWER_IS_BETTER) == set(runner.IMAGE_METRICS)


def test_the_paper_numbers_sit_in_paper_columns():
  paper_keys = {k for row in report.PAPER_TABLE_1.values() for k in row}
  assert paper_keys == {c.key for c in columns.IMAGE_COLUMNS if c.paper}


def test_a_new_metric_reaches_the_per_image_values(run_with_mae):
  data, per_image, _ = run_with_mae
  expected = np.abs(data["composite"] - data["real"]).mean(axis=(1, 2, 3)) * 255.0
  np.testing.assert_allclose(per_image["composite/mae"], expected, rtol=1e-5)
  assert per_image["harmoniser_gt_mask/mae"].shape == (N,)


def test_a_new_metric_reaches_table_md_and_the_terminal(run_with_mae, monkeypatch):
  _, _, summary = run_with_mae
  monkeypatch.setattr(columns, "IMAGE_COLUMNS", columns.IMAGE_COLUMNS + (MAE,))
  table = report.table_markdown(summary, PROVENANCE, 0.5)
  lines = table.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("| method | MSE |"))
  end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
  block = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[start:end]]
  cells = block[0]
  assert cells[cells.index("MAE (0-255)") - 1] == "SSIM"  # after the existing columns ...
  assert cells[-3:] == ["paper MSE", "paper PSNR", "paper LPIPS"]  # ... before the paper's
  rows = {row[0]: row for row in block[2:]}
  for m in runner.METHODS:
    value = f"{summary['methods'][m]['mae']:.3f}"
    assert rows[report.LABELS[m]][cells.index("MAE (0-255)")] == value, m
  terminal = report.terminal_table(summary)
  assert "MAE" in terminal.splitlines()[0]
  assert f"{summary['methods']['composite']['mae']:.3f}" in terminal


def test_a_new_metric_reaches_the_csvs_and_figures(run_with_mae, monkeypatch, tmp_path):
  _, per_image, summary = run_with_mae
  monkeypatch.setattr(columns, "IMAGE_COLUMNS", columns.IMAGE_COLUMNS + (MAE,))
  report.write_per_image_csv(str(tmp_path / "per_image.csv"), per_image, ["cat", "dog"])
  with open(tmp_path / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  np.testing.assert_allclose([float(r["composite/mae"]) for r in rows], per_image["composite/mae"])
  report.write_per_category_csv(str(tmp_path / "per_category.csv"),
                                report.per_category(per_image, ["cat", "dog"]))
  with open(tmp_path / "per_category.csv") as f:
    assert "detector_harmoniser/mae" in next(csv.reader(f))
  assert summary["methods"]["detector_harmoniser"]["mae"] == pytest.approx(
      np.mean(per_image["detector_harmoniser/mae"]))
  panels = []
  monkeypatch.setattr(figures.plt.Figure, "savefig",
                      lambda fig, *a, **k: panels.append([ax.get_title() for ax in fig.axes]))
  figures.plot_distributions(per_image, str(tmp_path / "d.png"))
  figures.plot_differentials(per_image, str(tmp_path / "f.png"))
  assert panels[0][-1] == "MAE (0-255) (lower is better)"
  assert panels[1][-1].startswith("MAE (0-255): C_p − C_s")
