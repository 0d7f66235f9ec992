"""Validation curve of one or more chained training runs against training samples seen, as a
PNG and a markdown table, with a log-linear extrapolation to a target value.

  python scripts/training_curve.py --runs=RUN_A,RUN_B --metrics=psnr,iou,ap \
      --target=ap=0.6 --output=experiments/joint_curve.png

RUN_B continues RUN_A (e.g. `--joint_init` from RUN_A's weight average): its samples are
counted from where RUN_A's last validation was. Samples seen = step * --batch_size (from each
run's flags.txt). The values are the in-loop validation scalars (`<workdir>/logs/eval`, the
weight average on the `validation` split); `unchanged_*` (doing nothing) is drawn as a
reference line. The extrapolation fits value = a + b * log10(samples) to the last --fit_points
points: a straight line on a log axis is an optimistic model of a learning curve, and the
script prints it as that, never as a promise.
"""
from __future__ import annotations

import glob
import math
import os

from absl import app, flags
import numpy as np

from tfharm.cli import program

_RUNS = flags.DEFINE_list("runs", None, "Training workdirs, in the order they continue each other.")
_METRICS = flags.DEFINE_list("metrics", ["psnr", "mse", "iou", "ap"], "eval/<metric> scalars.")
_TARGET = flags.DEFINE_string("target", None, "metric=value: extrapolate the samples to reach it.")
_FIT_POINTS = flags.DEFINE_integer("fit_points", 4, "Points (the last ones) of the fit.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write (refused if it exists, unless "
                              "--overwrite).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace --output.")
flags.mark_flag_as_required("runs")


def batch_size(workdir: str) -> int:
  """The run's --batch_size; one value for all its starts (tfharm.training.run_flags), or the
  samples-seen axis would be wrong."""
  from tfharm.training import run_flags  # pylint: disable=g-import-not-at-top
  sizes = {line for block in run_flags.invocations(workdir) for line in block
           if line.startswith("--batch_size=")}
  if len(sizes) != 1:
    raise app.UsageError(f"{run_flags.path(workdir)}: expected one --batch_size for the whole "
                         f"run, found {sorted(sizes) or 'none'}")
  return int(sizes.pop().split("=", 1)[1])


def eval_scalars(workdir: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of `<workdir>/logs/eval` (later files win for a repeated step)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(workdir, "logs", "eval", "events.out.tfevents.*")))
  if not files:
    raise app.UsageError(f"no validation logs in {workdir}/logs/eval")
  out: dict[str, dict[int, float]] = {}
  for path in files:
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.HasField("tensor"):
          array = tf.make_ndarray(v.tensor)
          if array.ndim:  # images, histograms
            continue
          value = float(array)
        else:
          value = v.simple_value
        out.setdefault(v.tag, {})[int(event.step)] = value
  return out


def chained(runs: list[str], metrics: list[str]):
  """(samples (N,), {metric: (N,)}, {metric: doing-nothing value}, [samples where each
  continuation starts]) over the chained runs."""
  samples, values, unchanged, offset = [], {m: [] for m in metrics}, {}, 0
  starts = []  # where each continuation begins, in samples
  for workdir in runs:
    scalars, batch = eval_scalars(workdir), batch_size(workdir)
    steps = sorted(scalars.get(f"eval/{metrics[0]}", {}))
    if not steps:
      raise app.UsageError(f"{workdir}: no eval/{metrics[0]} values")
    for step in steps:
      if offset and step == 0:
        continue  # the continuation's start is the previous run's end
      samples.append(offset + step * batch)
      for m in metrics:
        values[m].append(scalars.get(f"eval/{m}", {}).get(step, math.nan))
    for m in metrics:
      base = scalars.get(f"eval/unchanged_{m}", {})
      if base and m not in unchanged:
        unchanged[m] = next(iter(base.values()))
    offset += steps[-1] * batch
    starts.append(offset)
  return (np.asarray(samples, float), {m: np.asarray(v) for m, v in values.items()}, unchanged,
          starts[:-1])


def extrapolate(samples: np.ndarray, values: np.ndarray, target: float, points: int):
  """(slope per decade, samples at which the fit reaches target or None). The curve's first
  value says from which side the target is approached; a fit already past it at the last point
  gives the last point's samples (reached), never a later crossing on the way back."""
  keep = np.isfinite(values)
  x, y = np.log10(samples[keep])[-points:], values[keep][-points:]
  if len(x) < 2:
    return None, None
  b, a = np.polyfit(x, y, 1)
  towards = np.sign(target - values[keep][0])
  if towards and (a + b * x[-1] - target) * towards >= 0:
    return float(b), float(10 ** x[-1])
  if b == 0 or np.sign(b) != towards or (target - a) / b < x[-1]:
    return float(b), None
  return float(b), float(10 ** ((target - a) / b))


def main(argv):
  del argv
  metrics = _METRICS.value
  if _OUTPUT.value and os.path.exists(_OUTPUT.value) and not _OVERWRITE.value:
    raise app.UsageError(f"{_OUTPUT.value} exists; pass --overwrite to replace it")
  samples, values, unchanged, starts = chained(_RUNS.value, metrics)
  print("| samples seen | " + " | ".join(metrics) + " |")
  print("|---:|" + "---:|" * len(metrics))
  for i, s in enumerate(samples):
    print(f"| {s:.0f} | " + " | ".join(f"{values[m][i]:.4g}" for m in metrics) + " |")
  if unchanged:
    print("doing nothing: " + ", ".join(f"{m} {v:.4g}" for m, v in unchanged.items()))
  if _TARGET.value:
    name, _, text = _TARGET.value.partition("=")
    if name not in values:
      raise app.UsageError(f"--target metric {name!r} is not in --metrics")
    slope, needed = extrapolate(samples, values[name], float(text), _FIT_POINTS.value)
    if slope is None:
      print(f"{name}: too few points to fit")
    elif needed is None:
      print(f"{name}: the last {_FIT_POINTS.value} points move {slope:+.4g} per 10x samples; "
            f"that line never reaches {text}")
    elif needed <= samples[-1]:
      print(f"{name}: the last {_FIT_POINTS.value} points move {slope:+.4g} per 10x samples; "
            f"their fit is already at {text} or past it at {samples[-1]:.3g} samples")
    else:
      print(f"{name}: the last {_FIT_POINTS.value} points move {slope:+.4g} per 10x samples; "
            f"on that (optimistic, log-linear) line {name} = {text} needs ~{needed:.3g} "
            f"samples, {needed / samples[-1]:.3g}x those seen")
  if _OUTPUT.value:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    from matplotlib import ticker  # pylint: disable=g-import-not-at-top
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0))
    for ax, m in zip(np.atleast_1d(axes), metrics):
      ax.plot(samples, values[m], "o-", label="validation")
      if m in unchanged:
        ax.axhline(unchanged[m], color="grey", ls="--", label="doing nothing")
      for start in starts:
        ax.axvline(start, color="tab:orange", lw=0.8, ls=":", label="next run starts")
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(ticker.NullFormatter())
      ax.set_xlabel("training samples seen")
      ax.set_title(m)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = _OUTPUT.value + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, _OUTPUT.value)
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  program.run(main)
