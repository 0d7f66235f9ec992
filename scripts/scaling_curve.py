"""The data-scaling curve: validation quality of one recipe trained at an equal sample budget
on nested sets of distinct training photos, as a PNG and a markdown table, with a log-linear
extrapolation of the photos a target would need. With --axis=samples, the same for one run
scored at several sample counts (the sample curve), with the hours of training a target
would need at --images_per_second.

  python scripts/scaling_curve.py --points=173=VAL_173.json,700=VAL_700.json,1311=VAL_ALL.json \
      --output=experiments/scaling/curve.png --target=gain_mask_free=1.0
  python scripts/scaling_curve.py --axis=samples --images_per_second=9.2 \
      --points=12000=TEST_12K.json,48000=TEST_48K.json,96000=TEST_96K.json --target=ap=0.5

Each VAL_*.json is `python -m tfharm.validation --split=validation --joint_weights=RUN/joint.keras
--output=...` of one run (configs/train_joint_scaling.flags with --generator_max_photos).
Plotted per point: the mean PSNR gain over the composite mask-free (what tfharm.harmonise
returns at S) and through the true mask, and the detection's AP, each with +-1 standard error.
The extrapolation fits value = a + b * log10(photos) through all points: an optimistic model of
a learning curve, printed as that, never as a promise; a slope within its standard error of 0
means photos are not what limits this recipe.
"""
from __future__ import annotations

import json
import math
import os

from absl import app, flags
import numpy as np

from tfharm.cli import program

_POINTS = flags.DEFINE_list("points", None, "PHOTOS=validation.json, one per run.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write (refused if it exists, unless "
                              "--overwrite).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace --output.")
_TARGET = flags.DEFINE_string("target", "gain_mask_free=1.0",
                              "metric=value: extrapolate the photos needed to reach it.")
_AXIS = flags.DEFINE_enum("axis", "photos", ["photos", "samples"], "What the points' numbers "
                          "count: distinct photos at an equal budget, or samples seen by one run.")
_IPS = flags.DEFINE_float("images_per_second", None, "With --axis=samples: the training "
                          "command's speed, to give the extrapolated samples in hours.")
_ALSO = flags.DEFINE_list("also", None, "More validation.json records (e.g. the shipped "
                          "preset's) for the per-root table.")
# axis: (column header, x-axis label, what the extrapolation counts)
AXES = {"photos": ("photos", "distinct training photos (equal sample budget)",
                   "distinct photos at this sample budget"),
        "samples": ("samples seen", "training samples seen (one run)", "training samples")}
METRICS = (("gain_mask_free", "PSNR gain mask-free (dB)"),
           ("gain_gt_mask", "PSNR gain, true mask (dB)"), ("ap", "AP (suprathreshold)"))


def _load(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def read_points(specs: list[str]) -> list[tuple[int, dict]]:
  points = []
  for spec in specs:
    photos, sep, path = spec.partition("=")
    if not sep or not photos.isdigit():
      raise app.UsageError(f"--points entry {spec!r} is not NUMBER=validation.json")
    points.append((int(photos), _load(path)))
  return sorted(points, key=lambda p: p[0])


def fit(photos: list[int], values: list[float]) -> tuple[float, float, float]:
  """(a, b, se of b) of value = a + b * log10(photos), least squares."""
  x, y = np.log10(np.asarray(photos, float)), np.asarray(values, float)
  b, a = np.polyfit(x, y, 1)
  if len(x) > 2:
    resid = y - (a + b * x)
    se = math.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
  else:
    se = float("nan")
  return float(a), float(b), se


def table(points: list[tuple[int, dict]], target: tuple[str, float] | None,
          axis: str = "photos", images_per_second: float | None = None) -> str:
  header, _, counts = AXES[axis]
  lines = [f"| {header} | composites | " + " | ".join(label for _, label in METRICS)
           + " | improved (mask-free) | worse > 1 dB (mask-free) |",
           "|---:|---:|" + "---:|" * (len(METRICS) + 2)]
  for photos, m in points:
    o = m["overall"]
    cells = [f"{o[k]['mean']:+.3f} ± {o[k]['se']:.3f}" if k.startswith("gain")
             else f"{o[k]['mean']:.3f} ± {o[k]['se']:.3f}" for k, _ in METRICS]
    lines.append(f"| {photos} | {o['num_examples']} | " + " | ".join(cells)
                 + f" | {100 * o['improved_mask_free']:.0f} % | "
                 f"{100 * o['worse_by_1db_mask_free']:.1f} % |")
  if target and len(points) >= 2:
    metric, value = target
    a, b, se = fit([p for p, _ in points], [m["overall"][metric]["mean"] for _, m in points])
    first, last = points[0][1]["overall"][metric], points[-1][1]["overall"][metric]
    diff, diff_se = last["mean"] - first["mean"], math.hypot(first["se"], last["se"])
    lines += ["", f"{metric}, most {axis} minus fewest: {diff:+.3f} ± {diff_se:.3f} "
              f"({abs(diff) / diff_se:.1f} standard errors; composites of one object are "
              "correlated, so the real error is somewhat larger)."]
    lines += [f"Fit {metric} = {a:.3f} + {b:.3f} (± {se:.3f}) · log10({axis})."]
    if b > 0:
      need = 10 ** ((value - a) / b)
      hours = (f", ~{need / images_per_second / 3600:.3g} hours at {images_per_second:g} "
               "images/s" if axis == "samples" and images_per_second else "")
      lines.append(f"{metric} = {value} would need ~{need:.3g} {counts}{hours} "
                   "(log-linear extrapolation: optimistic).")
    else:
      lines.append(f"The slope is not positive: more {axis} do not raise {metric} here.")
  return "\n".join(lines)


def root_table(points: list[tuple[str, dict]]) -> str:
  """Per root of the validation split: each record's mean gains and AP (± SE)."""
  lines = ["| run | root | composites | gain mask-free (dB) | gain true mask (dB) | AP |",
           "|---|---|---:|---:|---:|---:|"]
  for name, m in points:
    for key in sorted(k for k in m if k.startswith("root:")):
      r = m[key]
      lines.append(f"| {name} | {key[5:]} | {r['num_examples']} | "
                   f"{r['gain_mask_free']['mean']:+.3f} ± {r['gain_mask_free']['se']:.3f} | "
                   f"{r['gain_gt_mask']['mean']:+.3f} ± {r['gain_gt_mask']['se']:.3f} | "
                   f"{r['ap']['mean']:.3f} ± {r['ap']['se']:.3f} |")
  return "\n".join(lines)


def plot(points: list[tuple[int, dict]], output: str, axis: str = "photos") -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
  x = [p for p, _ in points]
  for ax, (key, label) in zip(axes, METRICS):
    y = [m["overall"][key]["mean"] for _, m in points]
    e = [m["overall"][key]["se"] for _, m in points]
    ax.errorbar(x, y, yerr=e, marker="o", capsize=3)
    if key.startswith("gain"):
      ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(AXES[axis][1])
    ax.set_title(label, fontsize=10)
  fig.tight_layout()
  fig.savefig(output, dpi=110)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  points = read_points(_POINTS.value or [])
  if len(points) < 2:
    raise app.UsageError("--points needs at least two runs")
  target = None
  if _TARGET.value:
    metric, _, value = _TARGET.value.partition("=")
    target = (metric, float(value))
  print(table(points, target, _AXIS.value, _IPS.value))
  print()
  print(root_table([(f"{p} {_AXIS.value}", m) for p, m in points]
                   + [(os.path.basename(path), _load(path)) for path in _ALSO.value or []]))
  if _OUTPUT.value:
    if os.path.exists(_OUTPUT.value) and not _OVERWRITE.value:
      raise app.UsageError(f"{_OUTPUT.value} exists (--overwrite replaces it)")
    plot(points, _OUTPUT.value, _AXIS.value)
    print(f"\nwrote {_OUTPUT.value}")


if __name__ == "__main__":
  flags.mark_flag_as_required("points")
  program.run(main)
