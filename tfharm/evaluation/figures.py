"""The evaluation's figures (matplotlib, Agg): distributions (paper Fig. 4), C_p - C_s
differentials (Fig. 5) and best / median / worst examples. The two rows compared are those of
the first scored system that names them (tfharm.evaluation.methods.compared_system: the
pipeline's C_p and C_s; with --systems=joint the joint model's own output and its GT-mask
row)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from tfharm.evaluation import columns  # pylint: disable=wrong-import-position
from tfharm.evaluation.methods import (  # pylint: disable=wrong-import-position
    compared_system, methods_in)

_SHORT = {"composite": "composite", "harmoniser_gt_mask": "C_s", "detector_harmoniser": "C_p",
          "harmoniser_binarised_pred_mask": "binarised", "harmoniser_empty_mask": "empty",
          "harmoniser_gt_mask_gated": "C_s gated", "detector_harmoniser_gated": "C_p gated",
          "harmoniser_gt_mask_l_moments": "C_s L*", "detector_harmoniser_l_moments": "C_p L*",
          "detector_harmoniser_abstain_l_moments": "C_p gate L*", "ring_l_mean_gt_mask": "ring",
          "joint": "joint", "joint_l_moments": "joint L*", "joint_gt_mask": "joint GT"}
# The examples' column titles of the rows compared (another row: its short name).
_TITLES = {"detector_harmoniser": "C_p (detector + harmoniser)",
           "harmoniser_gt_mask": "C_s (GT mask)", "joint": "joint (its own mask m)",
           "joint_gt_mask": "joint GT (GT mask)"}


def _short(row: str) -> str:
  return _SHORT.get(row, row)


def _finder(spec) -> str:
  """What finds the region, as a figure names it: "detector", "joint model"."""
  return spec.finder.removeprefix("the ")


def plot_distributions(per_image: dict[str, np.ndarray], path: str) -> None:
  """One panel per metric (columns.IMAGE_COLUMNS): a box plot per method with every image as
  a dot."""
  cols = columns.IMAGE_COLUMNS
  fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 4.6), squeeze=False)
  rng = np.random.default_rng(0)  # dot jitter only
  methods = methods_in(per_image)
  for ax, col in zip(axes[0], cols):
    data = [per_image[f"{m}/{col.key}"] for m in methods]
    data = [d[np.isfinite(d)] for d in data]
    ax.boxplot(data, showfliers=False, widths=0.6)
    for i, d in enumerate(data):
      ax.scatter(i + 1 + rng.uniform(-0.18, 0.18, d.size), d, s=4, alpha=0.35, color="k")
    ax.set_xticks(range(1, len(methods) + 1), [_short(m) for m in methods], rotation=60,
                  ha="right", fontsize=8)
    ax.set_title(col.header + (" (lower is better)" if col.lower_is_better
                               else " (higher is better)"), fontsize=9)
    if col.log_scale and all(d.size for d in data) and min(d.min() for d in data) > 0:
      ax.set_yscale("log")
  fig.suptitle("Per-image distributions by method (cf. paper Fig. 4)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_differentials(per_image: dict[str, np.ndarray], path: str) -> None:
  """Per-image C_p - C_s (the rows of `compared_system`) for each metric, sorted; the shaded
  side is where C_p is worse."""
  cols = columns.IMAGE_COLUMNS
  spec = compared_system(per_image)
  own, given = spec.compared
  fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.8), squeeze=False)
  for ax, col in zip(axes[0], cols):
    diff = per_image[f"{own}/{col.key}"] - per_image[f"{given}/{col.key}"]
    diff = np.sort(diff[np.isfinite(diff)])
    worse = diff > 0 if col.lower_is_better else diff < 0
    ax.bar(np.arange(diff.size), diff, width=1.0,
           color=np.where(worse, "tab:red", "tab:green"))
    ax.axhline(0.0, color="k", lw=0.8)
    if diff.size:
      ax.axhline(float(diff.mean()), color="tab:blue", lw=1, ls="--", label=f"mean {diff.mean():.4g}")
      ax.legend(fontsize=7)
    ax.set_title(f"{col.header}: {_short(own)} − {_short(given)} ({int(worse.sum())}/"
                 f"{diff.size} worse)", fontsize=9)
    ax.set_xlabel("images, sorted", fontsize=8)
  fig.suptitle(f"{_finder(spec).capitalize()} mask vs ground-truth mask, per image "
               "(cf. paper Fig. 5)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def detection_rgb(detection: np.ndarray) -> np.ndarray:
  """(H, W, 2) [p_neg, p_pos] -> RGB: red = negative (darker), green = positive (brighter)."""
  return np.concatenate([detection[..., :1], detection[..., 1:2], np.zeros_like(detection[..., :1])],
                        axis=-1).clip(0.0, 1.0)


def example_columns(item: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
  """(title, image) of an example's figure row: the rows of `compared_system` and that
  system's detection, between the ground truth, the composite and the GT mask."""
  spec = compared_system(item)
  own, given = spec.compared
  return [("ground truth", item["real"]), ("composite", item["composite"]),
          (_TITLES.get(own, _short(own)), item[own]),
          (_TITLES.get(given, _short(given)), item[given]),
          (f"{_finder(spec)}: red neg / green pos", detection_rgb(item["detection"])),
          ("GT mask", np.repeat(item["mask"], 3, axis=-1))]


def example_description(item: dict[str, np.ndarray]) -> str:
  """The example row's columns in a few words (TensorBoard's image description)."""
  spec = compared_system(item)
  return (f"ground truth | composite | {' | '.join(_short(r) for r in spec.compared)} | "
          f"{_finder(spec)} (red neg, green pos) | GT mask")


def plot_examples(examples: dict[str, dict], scores: dict[str, dict[str, float]], path: str) -> None:
  """Rows best / median / worst (by C_p - C_s, the rows of `compared_system`); columns as in
  `example_columns`; scores: per example its "index" and both rows' MSE ("cp", "cs")."""
  rows = list(examples)
  own, given = (_short(r) for r in compared_system(next(iter(examples.values()))).compared)
  fig, axes = plt.subplots(len(rows), 6, figsize=(16, 2.9 * len(rows)), squeeze=False)
  for r, name in enumerate(rows):
    for c, (title, img) in enumerate(example_columns(examples[name])):
      ax = axes[r, c]
      ax.imshow(np.clip(img, 0.0, 1.0), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(title, fontsize=9)
    s = scores[name]
    axes[r, 0].set_ylabel(f"{name} (#{s['index']})\nMSE {own} {s['cp']:.1f}\n"
                          f"MSE {given} {s['cs']:.1f}", fontsize=8)
  fig.suptitle(f"Best, median and worst examples by {own} − {given} (MSE)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
