"""tfharm.evaluation.report reads its columns from tfharm.evaluation.columns: a metric added
there reaches both CSVs, table.md, the terminal and the figures (that the graph scores it is
tests/eval_test.py, test_a_new_metric_is_one_key_of_image_metrics_and_one_column)."""
import csv

import numpy as np
import pytest

from tfharm.evaluation import columns, figures, loop, methods, report

N = 5
# A metric no tfharm code knows: mean absolute error on the 0-255 scale.
MAE = columns.Column("mae", "MAE", 3, lower_is_better=True, unit="0-255", width=9)
PROVENANCE = {"dataset": {"name": "luminance_composites", "config": "256", "split": "test",
                          "image_size": 256},
              "detector_weights": {"path": "/d.h5", "sha256": "0" * 64},
              "harmoniser_weights": {"path": "/h.h5", "sha256": "1" * 64}}


@pytest.fixture
def with_mae(monkeypatch):
  """The column table with MAE as its last row, and per-image values as the graph returns them
  (one array per "row/metric", ids, category, luminance ratio)."""
  monkeypatch.setattr(columns, "IMAGE_COLUMNS", columns.IMAGE_COLUMNS + (MAE,))
  rng = np.random.default_rng(0)
  per_image = {f"{m}/{c.key}": rng.uniform(1, 40, N)
               for m in methods.METHODS for c in columns.IMAGE_COLUMNS}
  per_image.update({f"detector/{c.key}": rng.uniform(0, 1, N) for c in columns.DETECTOR_COLUMNS})
  per_image.update({k: np.arange(N) for k in loop.ID_FIELDS})
  per_image.update(category=np.array([0, 1, 0, 1, 1]), mask_fraction=rng.uniform(0, 1, N),
                   luminance_ratio=np.array([0.5, 1.0, 1.6, 0.9, 1.2]))
  return per_image


def test_the_graph_scores_exactly_the_tables_metrics():
  assert methods.IMAGE_METRICS == tuple(c.key for c in columns.IMAGE_COLUMNS)
  assert methods.DETECTOR_METRICS == tuple(c.key for c in columns.DETECTOR_COLUMNS)
  assert set(methods.LOWER_IS_BETTER) == set(methods.IMAGE_METRICS)


def test_the_paper_numbers_sit_in_paper_columns():
  paper_keys = {k for row in report.PAPER_TABLE_1.values() for k in row}
  assert paper_keys == {c.key for c in columns.IMAGE_COLUMNS if c.paper}


def test_a_new_metric_reaches_table_md_and_the_terminal(with_mae):
  summary = report.summarise(with_mae)
  lines = report.table_markdown(summary, PROVENANCE, 0.5).splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("| method | MSE |"))
  end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
  block = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[start:end]]
  head = block[0]
  assert head[head.index("MAE (0-255)") - 1] == "SSIM"  # after the existing columns ...
  assert head[-3:] == ["paper MSE", "paper PSNR", "paper LPIPS"]  # ... before the paper's
  rows = {row[0]: row for row in block[2:]}
  for m in methods.METHODS:
    expected = f"{np.mean(with_mae[f'{m}/mae']):.3f}"
    assert rows[report.LABELS[m]][head.index("MAE (0-255)")] == expected, m
  assert rows[report.LABELS["harmoniser_gt_mask"]][-3:] == ["19.55", "35.81", "0.0227"]
  terminal = report.terminal_table(summary).splitlines()
  assert terminal[0].split()[-1] == "MAE"
  assert terminal[2].split()[-1] == f"{summary['methods']['composite']['mae']:.3f}"


def test_a_new_metric_reaches_both_csvs(with_mae, tmp_path):
  report.write_per_image_csv(str(tmp_path / "per_image.csv"), with_mae, ["cat", "dog"])
  with open(tmp_path / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  np.testing.assert_allclose([float(r["composite/mae"]) for r in rows], with_mae["composite/mae"])
  report.write_per_category_csv(str(tmp_path / "per_category.csv"),
                                report.per_category(with_mae, ["cat", "dog"]))
  with open(tmp_path / "per_category.csv") as f:
    by_name = {r["category"]: r for r in csv.DictReader(f)}
  assert float(by_name["dog"]["detector_harmoniser/mae"]) == pytest.approx(
      np.mean(with_mae["detector_harmoniser/mae"][[1, 3, 4]]))


def test_a_new_metric_gets_a_panel_in_each_figure(with_mae, monkeypatch, tmp_path):
  titles = []
  monkeypatch.setattr(figures.plt.Figure, "savefig",
                      lambda fig, *a, **k: titles.append([ax.get_title() for ax in fig.axes]))
  figures.plot_distributions(with_mae, str(tmp_path / "d.png"))
  figures.plot_differentials(with_mae, str(tmp_path / "f.png"))
  assert len(titles[0]) == len(titles[1]) == len(columns.IMAGE_COLUMNS)
  assert titles[0][-1] == "MAE (0-255) (lower is better)"
  assert titles[1][-1].startswith("MAE (0-255): C_p − C_s")


def test_terminal_columns_stay_aligned_under_a_long_label(with_mae, monkeypatch):
  """A system's spec may bring a label longer than the default label column: the numbers of
  every row still end where the header's columns end."""
  long = "harmoniser, GT mask, with a label far longer than forty characters"
  monkeypatch.setitem(report.LABELS, "harmoniser_gt_mask", long)
  lines = report.terminal_table(report.summarise(with_mae)).splitlines()
  table = [line for line in lines if not line.startswith(("detector", "joint model vs"))]
  assert any(line.startswith(long) for line in table)
  assert len({len(line) for line in table if not line.startswith("paper:")}) == 1, table
