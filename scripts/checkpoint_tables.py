"""Prints the tfharm/presets/README.md tables from the shipped files' .metrics.json records.

  python scripts/checkpoint_tables.py

The records are written by scripts/ship_harmoniser.py and scripts/ship_detector.py (and
re-checked by tests/models/checkpoints_test.py); the README's numbers are this script's output.
"""
from __future__ import annotations

import json
import os

from absl import app

from tfharm import presets
from tfharm.cli import program
HARMONISER_ROWS = (
    ("composite (unharmonised)", "composite"),
    ("**tfharm's output: L\\* moment correction, GT mask**", "harmoniser_gt_mask_l_moments"),
    ("harmoniser, GT mask, raw network output (C_s)", "harmoniser_gt_mask"),
    ("harmoniser, GT mask, raw output gated in (`--correction=residual`)",
     "harmoniser_gt_mask_gated"),
    ("tfharm's output, empty mask", "harmoniser_empty_mask_l_moments"),
)
DETECTOR_ROWS = (("IoU (suprathreshold objects)", "iou", "iou_count"),
                 ("F1", "f1", "f1_count"), ("AP", "ap", "ap_count"),
                 ("sign accuracy", "sign_accuracy", "sign_accuracy_count"),
                 ("near silence (subthreshold composites)", "near_silence", "near_silence_count"),
                 ("silence", "silence", "silence_count"),
                 ("false-alarm fraction (subthreshold)", "false_alarm_fraction",
                  "false_alarm_fraction_count"))


def _load(name: str) -> dict:
  with open(os.path.join(presets.DIRECTORY, name)) as f:
    return json.load(f)


def harmoniser_table(record: dict) -> str:
  v, t = record["validation"], record["test"]
  lines = [f"| method | validation ({v['num_examples']}): MSE | PSNR | fMSE | test ({t['num_examples']}): "
           "MSE | PSNR | fMSE | SSIM |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for label, m in HARMONISER_ROWS:
    a, b = v[m], t[m]
    lines.append(f"| {label} | {a['mse']:.1f} | {a['psnr']:.2f} | {a['fmse']:.0f} | "
                 f"{b['mse']:.1f} | {b['psnr']:.2f} | {b['fmse']:.0f} | {b['ssim']:.3f} |")
  return "\n".join(lines)


def detector_table(record: dict) -> str:
  v, t = record["validation"], record["test"]
  lines = [f"| metric | validation ({v['num_examples']}) | test ({t['num_examples']}) |",
           "|---|---:|---:|"]
  for label, m, n in DETECTOR_ROWS:
    lines.append(f"| {label} | {v[m]:.3f} (n={v[n]}) | {t[m]:.3f} (n={t[n]}) |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  print("Harmoniser (`tfharm/presets/harmoniser_256.metrics.json`):\n")
  print(harmoniser_table(_load("harmoniser_256.metrics.json")))
  print("\nDetector (`tfharm/presets/detector_256.metrics.json`, threshold 0.5 on max(p_neg, p_pos)):\n")
  print(detector_table(_load("detector_256.metrics.json")))


if __name__ == "__main__":
  program.run(main)
