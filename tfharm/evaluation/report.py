"""Numbers out of an evaluation: metrics.json, per_image.csv, per_category.csv, table.md.

Aggregates are means over images of per-image values (PSNR too: the mean of per-image dB,
as the paper). NaN values (fMSE of an empty mask, AP of an empty ground truth) are left out of
a mean and counted; they are written as null in JSON and empty cells in CSV.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np

from tfharm import systems
from tfharm.evaluation import columns
from tfharm.evaluation.loop import ID_FIELDS
from tfharm.evaluation.methods import detectors_in, methods_in, photo_rows_in, scored
from tfharm.metrics import aggregate

# Dolhasz et al. 2020, Table 1 (their resolution, full COCO, their weights); the metrics are
# the column table's `paper` columns.
PAPER_TABLE_1 = {
    "harmoniser_gt_mask": {"mse": 19.55, "psnr": 35.81, "lpips": 0.0227},
    "detector_harmoniser": {"mse": 22.65, "psnr": 35.18, "lpips": 0.0292},
}
LABELS = {
    "composite": "composite (unharmonised input)",
    "harmoniser_gt_mask": "harmoniser, GT mask (C_s)",
    "detector_harmoniser": "detector + harmoniser (C_p)",
    "harmoniser_binarised_pred_mask": "harmoniser, binarised predicted mask",
    "harmoniser_empty_mask": "harmoniser, empty mask",
    "harmoniser_gt_mask_gated": "C_s gated into the composite",
    "detector_harmoniser_gated": "C_p gated into the composite",
    "harmoniser_gt_mask_l_moments": "C_s, L* moments (tfharm's output)",
    "detector_harmoniser_l_moments": "C_p, L* moments (tfharm's output)",
    "detector_harmoniser_abstain_l_moments": "C_p abstaining (gate), L* moments",
    "ring_l_mean_gt_mask": "baseline: L* mean of a ring, GT mask",
}


def _image_metrics() -> tuple[str, ...]:
  """Read at call time, so every table follows columns.IMAGE_COLUMNS."""
  return tuple(c.key for c in columns.IMAGE_COLUMNS)


def _detector_metrics() -> tuple[str, ...]:
  return tuple(c.key for c in columns.DETECTOR_COLUMNS)


def label(row: str) -> str:
  """A row's label in the tables: the pipeline's above, another system's from its spec
  (tfharm.systems.SYSTEMS), else the row's own name."""
  if row in LABELS:
    return LABELS[row]
  return next((s.labels[row] for s in systems.SYSTEMS.values() if row in s.labels), row)


def _mean(values: np.ndarray) -> float | None:
  """aggregate.nanmean, with None (null in metrics.json) where no image has a value."""
  mean = aggregate.nanmean([values])
  return None if math.isnan(mean) else mean


def suprathreshold(per_image: dict[str, np.ndarray]) -> np.ndarray:
  """Composites whose object's mean-L* ratio is outside [tau_neg, tau_pos] (the detector's
  training labels, detector_labels.LabelConfig): the shifts the detector is meant to find."""
  from tfharm.models.detector_labels import LabelConfig  # pylint: disable=g-import-not-at-top
  cfg, ratio = LabelConfig(), per_image["luminance_ratio"]
  return (ratio < cfg.tau_neg) | (ratio > cfg.tau_pos)


def summarise(per_image: dict[str, np.ndarray], select: np.ndarray | None = None) -> dict:
  """{"num_examples", "methods": {m: {metric: mean}}, per scored system its detection
  ("detector", "joint_detector": {...}) and "<detection>_suprathreshold": {..., "num_examples"},
  "shares", "nan_counts"}."""
  pick = (lambda v: v) if select is None else (lambda v: v[select])
  out = {"num_examples": int(len(pick(per_image["composite/mse"]))), "methods": {}}
  nans = {}
  for m in methods_in(per_image):
    out["methods"][m] = {k: _mean(pick(per_image[f"{m}/{k}"])) for k in _image_metrics()}
  supra = pick(suprathreshold(per_image))
  for d in detectors_in(per_image):  # each scored system's: "detector", "joint_detector"
    out[d] = {k: _mean(pick(per_image[f"{d}/{k}"])) for k in _detector_metrics()}
    out[f"{d}_suprathreshold"] = {
        "num_examples": int(supra.sum()),
        **{k: _mean(pick(per_image[f"{d}/{k}"])[supra]) for k in _detector_metrics()}}
  out["shares"] = shares(per_image, select)
  for key, v in per_image.items():
    if "/" in key and np.isnan(pick(v)).any():
      nans[key] = int(np.isnan(pick(v)).sum())
  if nans:
    out["nan_counts"] = nans
  return out


# A change of more than this is visible harm or help (per image, PSNR).
HARM_DB = 1.0


def shares(per_image: dict[str, np.ndarray], select: np.ndarray | None = None) -> dict:
  """Per method, the share of images whose PSNR improved on the composite's and the share made
  worse by more than HARM_DB: a mean can hide a method that hurts most images."""
  pick = (lambda v: v) if select is None else (lambda v: v[select])
  base = pick(per_image["composite/psnr"])
  out = {}
  for m in methods_in(per_image)[1:]:
    gain = pick(per_image[f"{m}/psnr"]) - base
    finite = np.isfinite(gain)
    n = max(int(finite.sum()), 1)
    out[m] = {"improved": float(np.sum(gain[finite] > 0) / n),
              "worse_by_1db": float(np.sum(gain[finite] < -HARM_DB) / n),
              "median_gain_db": float(np.median(gain[finite])) if finite.any() else None}
  return out


def photo_key(detector: str, value: str) -> str:
  """A per-photo value of a system's detection in metrics.json's real_photos: the detector's
  name without "detector", then the value ("fire_fraction", "joint_fire_fraction",
  "abstained": the pipeline's gate)."""
  return detector.removesuffix("detector") + value


def summarise_real_photos(photos: dict[str, np.ndarray]) -> dict:
  """Unedited photos through the mask-free rows of each scored system: output-vs-input PSNR
  (median, share at >= 40 dB, worst), how much each system's detection fires, and the other
  per-photo values its rows return (the pipeline's gate: "abstained")."""
  detectors = detectors_in(photos)
  values = [(d, k.split("/", 1)[1]) for d in detectors for k in photos
            if k.startswith(f"{d}/") and k != f"{d}/fire_fraction"]
  out = {"num_photos": int(len(photos["image_id"])),
         **{photo_key(d, "fire_fraction"): _mean(photos[f"{d}/fire_fraction"])
            for d in detectors},
         **{photo_key(d, v): _mean(photos[f"{d}/{v}"]) for d, v in values}}
  for m in photo_rows_in(photos):
    v = photos[f"{m}/psnr"]
    out[m] = {"median_psnr": float(np.median(v)), "share_at_least_40db": float(np.mean(v >= 40)),
              "min_psnr": float(np.min(v))}
  return out


def shares_table(summary: dict) -> str:
  lines = ["| method | improved PSNR | worse by > 1 dB | median gain (dB) |",
           "|---|---:|---:|---:|"]
  for m, v in summary["shares"].items():
    median = "–" if v["median_gain_db"] is None else f"{v['median_gain_db']:+.2f}"
    lines.append(f"| {label(m)} | {v['improved']:.0%} | {v['worse_by_1db']:.0%} | {median} |")
  return "\n".join(lines)


def real_photos_table(summary: dict) -> str:
  r = summary.get("real_photos")
  if not r:
    return ""
  spec = systems.SYSTEMS[scored(r)[0]]  # the first system scored: its detection's firing
  gate = (f"; the gate abstains on {r['abstained']:.0%} of photos" if "abstained" in r else "")
  lines = [f"Unedited photos of the split ({r['num_photos']}), mask-free, output vs input: "
           f"{spec.finder} fires (> 0.5) on {r[photo_key(spec.detector, 'fire_fraction')]:.1%} "
           f"of pixels on average{gate}.", "",
           "| method | median PSNR (dB) | photos ≥ 40 dB | worst (dB) |", "|---|---:|---:|---:|"]
  for m in photo_rows_in(r):
    v = r[m]
    lines.append(f"| {label(m)} | {v['median_psnr']:.2f} | {v['share_at_least_40db']:.0%} | "
                 f"{v['min_psnr']:.2f} |")
  return "\n".join(lines)


def per_category(per_image: dict[str, np.ndarray], names: list[str]) -> dict[str, dict]:
  """summarise() per object category (by name), categories in name order."""
  cats = per_image["category"]
  return {names[c]: summarise(per_image, cats == c) for c in sorted(set(cats.tolist()),
                                                                      key=lambda c: names[c])}


def _json_safe(x):
  if isinstance(x, dict):
    return {k: _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_json(path: str, data: dict) -> None:
  with open(path, "w") as f:
    json.dump(_json_safe(data), f, indent=2, allow_nan=False)
    f.write("\n")


def per_image_columns(per_image: dict | None = None) -> list[str]:
  """The CSV's columns; with `per_image`, also the joint model's if it was scored."""
  keys = per_image or {}
  return (["index", *ID_FIELDS, "category", "category_id", "mask_fraction", "luminance_ratio"]
          + [f"{m}/{k}" for m in methods_in(keys) for k in _image_metrics()]
          + [f"{d}/{k}" for d in detectors_in(keys) for k in _detector_metrics()])


def write_per_image_csv(path: str, per_image: dict[str, np.ndarray], names: list[str]) -> None:
  header = per_image_columns(per_image)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for i in range(len(per_image["composite/mse"])):
      row = []
      for c in header:
        if c == "index":
          row.append(i)
        elif c == "category":
          row.append(names[int(per_image["category"][i])])
        elif c == "category_id":
          row.append(int(per_image["category"][i]))
        elif c in ID_FIELDS:
          row.append(int(per_image[c][i]))
        else:
          v = float(per_image[c][i])
          row.append(repr(v) if math.isfinite(v) else ("" if math.isnan(v) else repr(v)))
      writer.writerow(row)


def write_per_category_csv(path: str, categories: dict[str, dict]) -> None:
  first = next(iter(categories.values()), {"methods": {}})
  keys = ([f"{m}/{k}" for m in methods_in(first["methods"]) for k in _image_metrics()]
          + [f"{d}/{k}" for d in detectors_in(first) for k in _detector_metrics()])
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["category", "num_examples", *keys])
    for name, s in categories.items():
      values = [s[c.split("/")[0]][c.split("/")[1]] if c.split("/")[0] in detectors_in(s)
                else s["methods"][c.split("/")[0]][c.split("/")[1]] for c in keys]
      writer.writerow([name, s["num_examples"], *["" if v is None else repr(v) for v in values]])


def _row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def paper_scored(summary: dict) -> bool:
  """The rows of the paper's Table 1 (C_s, C_p) were scored: the sections that compare with
  the paper are shown."""
  return all(m in summary["methods"] for m in PAPER_TABLE_1)


def not_scored_line(summary: dict) -> str:
  """Where the paper's Table 1 would be when the system that has its rows was not scored."""
  owner = next(n for n, s in systems.SYSTEMS.items() if set(PAPER_TABLE_1) <= set(s.rows))
  return (f"The paper's Table 1 (C_s and C_p beside Dolhasz et al. 2020): {owner} not scored "
          f"(--systems={','.join(scored(summary['methods']))}).")


def main_table(summary: dict) -> str:
  """Table 1 layout: rows = methods, one column per columns.IMAGE_COLUMNS, then the paper's
  numbers in its `paper` columns (C_s and C_p rows only; no such columns when they were not
  scored)."""
  cols = columns.IMAGE_COLUMNS
  paper_cols = [c for c in cols if c.paper] if paper_scored(summary) else []
  lines = [_row(["method", *(c.header for c in cols), *(f"paper {c.name}" for c in paper_cols)]),
           "|---|" + "---:|" * (len(cols) + len(paper_cols))]
  for m in methods_in(summary["methods"]):
    s = summary["methods"][m]
    paper = PAPER_TABLE_1.get(m, {})
    lines.append(_row([label(m), *(c.format(s[c.key]) for c in cols),
                       *(c.format(paper.get(c.key)) if paper else "" for c in paper_cols)]))
  return "\n".join(lines)


# How the terminal names a system's detection (its Spec.detector); another's by that name.
DETECTIONS = {"detector": "detector", "joint_detector": "joint model"}


def _detection_rows(detector: str) -> list[tuple[str, str]]:
  """(text, summary key) of a system's detection on all and on the suprathreshold composites."""
  from tfharm.models.detector_labels import LabelConfig  # pylint: disable=g-import-not-at-top
  labels = LabelConfig()
  texts = {"detector": ("all composites", f"suprathreshold composites (L* ratio < "
                                          f"{labels.tau_neg} or > {labels.tau_pos})"),
           "joint_detector": ("joint model m, all composites", "joint model m, suprathreshold")}
  every, supra = texts.get(detector, (f"{detector}, all composites",
                                      f"{detector}, suprathreshold"))
  return [(every, detector), (supra, f"{detector}_suprathreshold")]


def detector_table(summary: dict) -> str:
  """Localisation of each scored system's soft mask (the detector's, the joint model's m)
  against the GT mask, on all and on the suprathreshold composites; one column per
  columns.DETECTOR_COLUMNS."""
  cols = columns.DETECTOR_COLUMNS
  rows = [row for d in detectors_in(summary) for row in _detection_rows(d)]
  lines = [_row(["detector (soft mask max(p_neg, p_pos)) vs GT mask", "n",
                 *(c.header for c in cols)]), "|---|---:|" + "---:|" * len(cols)]
  for text, key in rows:
    scores = summary[key]
    lines.append(_row([text, scores.get("num_examples", summary["num_examples"]),
                       *(c.format(scores[c.key]) for c in cols)]))
  return "\n".join(lines)


def table_markdown(summary: dict, provenance: dict, threshold: float) -> str:
  """table.md: our Table 1, each scored system's localisation, and what differs from the
  paper; the paper's sections only when its rows were scored (paper_scored), else one line
  saying which system was not."""
  data, size = provenance["dataset"], provenance["dataset"]["image_size"]
  paper = paper_scored(summary)
  rows_note = rf""" Harmonised rows are the network's raw output at {size}×{size}
(paper §3); the two *gated* rows paste it into the composite through the mask, C + m⊙(Ĥ − C);
the two *L\* moments* rows are what tfharm returns by default: the composite's object moved onto
the prediction's mask-weighted L\* mean and std (Reinhard on L\*, tfharm/models/correction.py)."""
  threshold_note = """
The binarised-mask row uses the same threshold. The detector is trained to stay silent on
subthreshold composites (docs/decisions.md, "Detector labels and loss"), where the GT mask still marks the object, so
the suprathreshold row is the fairer localisation score."""
  paper_section = rf"""

**Paper columns** (the last three of the first table): Dolhasz et al. 2020, Table 1, for C_s
and C_p. What differs here: resolution {size}×{size} (the paper does not state the size
its table was measured at), the training data (the paper's full-COCO composites; what each
of these weights was trained on is in its record, tfharm/presets/README.md), and the weights
themselves. The numbers are therefore not expected to match; the comparison that
carries over is the ordering and the C_p − C_s gap.

Weights: detector `{provenance['detector_weights']['path']}` (sha256 {provenance['detector_weights']['sha256'][:12]}…),
harmoniser `{provenance['harmoniser_weights']['path']}` (sha256 {provenance['harmoniser_weights']['sha256'][:12]}…).""" if paper else ""
  main = main_table(summary) + ("" if paper else f"\n\n{not_scored_line(summary)}")
  return rf"""# Evaluation: {data['name']}/{data['config']} split `{data['split']}`, {summary['num_examples']} composites

All pixel metrics on the 0–255 scale, per image against the real photograph, then averaged
(PSNR: mean of per-image dB).{rows_note if paper else ""}

{main}

Per image, against the composite (PSNR):

{shares_table(summary)}

{detector_table(summary)}

{real_photos_table(summary)}

IoU and F1 threshold the soft mask at {threshold}; AP sweeps thresholds 0, 0.01, …, 1.{threshold_note if paper else ""}{paper_section}
"""


def terminal_table(summary: dict) -> str:
  """Fixed-width summary for the terminal; columns as in main_table."""
  cols = columns.IMAGE_COLUMNS
  rows = methods_in(summary["methods"])
  paper = PAPER_TABLE_1 if paper_scored(summary) else {}
  # The label column fits the longest label (a system's spec may bring longer ones).
  w = max([40] + [len(label(m)) + 1 for m in rows] + [len("paper: " + label(m)) + 1
                                                      for m in paper])
  head = f"{'method':<{w}}" + "".join(f"{c.name:>{c.width}}" for c in cols)
  lines = [head, "-" * len(head)]
  for m in rows:
    s = summary["methods"][m]
    lines.append(f"{label(m):<{w}}" + "".join(f"{c.format(s[c.key]):>{c.width}}" for c in cols))
  for m, p in paper.items():
    lines.append(f"{'paper: ' + label(m):<{w}}" + "".join(
        f"{c.format(p[c.key]) if c.paper else '':>{c.width}}" for c in cols))
  if not paper:
    lines.append(not_scored_line(summary))
  for i, d in enumerate(detectors_in(summary)):
    scores = "  ".join(f"{c.name} {c.format(summary[d][c.key])}"
                       for c in columns.DETECTOR_COLUMNS)
    lines.append(f"{DETECTIONS.get(d, d)} vs GT mask: {scores}" + (
        f"   ({summary['num_examples']} examples)" if i == 0 else ""))
  return "\n".join(lines)
