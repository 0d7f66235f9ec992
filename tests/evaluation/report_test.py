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


def _joint_only(n=N):
  """Per-image values of a --systems=joint run: the composite's and the joint model's rows."""
  rng = np.random.default_rng(1)
  per_image = {f"{m}/{c.key}": rng.uniform(1, 40, n)
               for m in ("composite", *methods.JOINT_METHODS) for c in columns.IMAGE_COLUMNS}
  per_image.update({f"joint_detector/{c.key}": rng.uniform(0, 1, n)
                    for c in columns.DETECTOR_COLUMNS})
  per_image.update({k: np.arange(n) for k in loop.ID_FIELDS})
  per_image.update(category=np.zeros(n, int), mask_fraction=rng.uniform(0, 1, n),
                   luminance_ratio=np.array([0.5, 1.0, 1.6, 0.9, 1.2]))
  return per_image


def test_without_the_pipeline_its_sections_are_one_line():
  """table.md and the terminal of a --systems=joint run: no paper columns, C_s/C_p prose or
  pipeline weights (provenance has none), the joint model's detection only, and one line
  saying the pipeline was not scored where the paper's Table 1 would be."""
  summary = report.summarise(_joint_only())
  assert "detector" not in summary and "joint_detector" in summary
  provenance = {"dataset": PROVENANCE["dataset"]}  # no detector or harmoniser weights
  md = report.table_markdown(summary, provenance, 0.5)
  line = ("The paper's Table 1 (C_s and C_p beside Dolhasz et al. 2020): pipeline not scored "
          "(--systems=joint).")
  assert line in md.splitlines()
  assert next(l for l in md.splitlines() if l.startswith("| method | MSE")).endswith("| SSIM |")
  for absent in ("paper MSE", "*gated*", "binarised-mask row", "Weights:", "| all composites |"):
    assert absent not in md, absent
  assert "| joint model m, all composites | 5 |" in md
  terminal = report.terminal_table(summary).splitlines()
  assert line in terminal and not [l for l in terminal if l.startswith(("paper:", "detector"))]
  assert terminal[-1].startswith("joint model vs GT mask: IoU") and "(5 examples)" in terminal[-1]


def test_the_real_photo_keys_are_those_of_the_systems_scored():
  """Each scored system's firing and values, then its rows; the default's keys as before
  (fire_fraction, joint_fire_fraction, abstained: what scripts/mask_free_table.py reads)."""
  ones = np.ones(3)
  photos = {"image_id": np.arange(3), "detector_harmoniser_l_moments/psnr": ones * 40,
            "detector_harmoniser_abstain_l_moments/psnr": ones * 100,
            "detector/fire_fraction": ones * 0.5, "detector/abstained": ones,
            "joint/psnr": ones * 50, "joint_l_moments/psnr": ones * 60,
            "joint_detector/fire_fraction": ones * 0.25}
  both = report.summarise_real_photos(photos)
  assert list(both) == ["num_photos", "fire_fraction", "joint_fire_fraction", "abstained",
                        "detector_harmoniser_l_moments", "detector_harmoniser_abstain_l_moments",
                        "joint", "joint_l_moments"]
  assert (both["fire_fraction"], both["joint_fire_fraction"], both["abstained"]) == (0.5, 0.25, 1.0)
  joint = report.summarise_real_photos({k: v for k, v in photos.items()
                                        if k.startswith(("image_id", "joint"))})
  assert list(joint) == ["num_photos", "joint_fire_fraction", "joint", "joint_l_moments"]
  assert joint["joint_l_moments"] == both["joint_l_moments"]
  text = report.real_photos_table({"real_photos": joint})
  assert "the joint model fires (> 0.5) on 25.0% of pixels on average." in text
  assert "gate" not in text
