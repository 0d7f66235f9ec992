"""Prints the mask-free systems side by side from `tfharm.eval` metrics.json files (markdown):
mean MSE/PSNR, the per-image shares (improved, worse by > 1 dB) and the do-no-harm figures on
the unedited photos. The default of tfharm.harmonise is the best of these on `validation`.

  python scripts/mask_free_table.py out/eval/joint_validation/metrics.json \
      out/eval/joint_test/metrics.json
  python scripts/mask_free_table.py tfharm/presets/joint_256.metrics.json   # a shipped record

A preset's record (scripts/ship_joint.py) holds both splits' rows: its tables are the ones in
tfharm/presets/README.md (tests/checkpoint_tables_test.py checks they are pasted, not retyped).
"""
from __future__ import annotations

import json

from absl import app

from tfharm.cli import program

# (row in metrics.json, label): the mask-free systems, then the references.
ROWS = (("composite", "composite (do nothing)"),
        ("detector_harmoniser_l_moments", "pipeline, mask-free (C_p, L* moments)"),
        ("detector_harmoniser_abstain_l_moments", "pipeline + calibrated gate"),
        ("joint", "joint model, its own output at S"),
        ("joint_l_moments", "joint model (what tfharm returns by default, --model=joint)"),
        ("harmoniser_gt_mask_l_moments", "reference: pipeline given the true mask (C_s)"),
        ("joint_gt_mask", "reference: joint model given the true mask"))


def table(path: str) -> str:
  """The table of a metrics.json, or both splits' tables of a shipped record."""
  with open(path) as f:
    m = json.load(f)
  if "sha256" in m and "validation" in m and "test" in m:
    return "\n\n".join(table_of(m[split], f"Split `{split}`") for split in ("validation", "test"))
  split = m.get("provenance", {}).get("dataset", {}).get("split", "?")
  return table_of(m, f"`{path}`: split `{split}`")


def table_of(m: dict, title: str) -> str:
  lines = [f"{title}, {m['num_examples']} composites, "
           f"{m.get('real_photos', {}).get('num_photos', 0)} unedited photos", "",
           "| system | MSE | PSNR dB | improved | worse > 1 dB | photos: median PSNR | "
           "photos ≥ 40 dB |", "|---|---:|---:|---:|---:|---:|---:|"]
  photos = m.get("real_photos", {})
  for key, label in ROWS:
    if key not in m["methods"]:
      continue
    r, s, p = m["methods"][key], m.get("shares", {}).get(key, {}), photos.get(key, {})
    share = lambda d, k: f"{100 * d[k]:.0f} %" if k in d else "–"  # noqa: E731
    median = f"{p['median_psnr']:.1f}" if "median_psnr" in p else "–"
    lines.append(f"| {label} | {r['mse']:.1f} | {r['psnr']:.2f} | {share(s, 'improved')} | "
                 f"{share(s, 'worse_by_1db')} | {median} | {share(p, 'share_at_least_40db')} |")
  fire = {k: photos[k] for k in ("fire_fraction", "joint_fire_fraction") if k in photos}
  if photos:
    lines += ["", "Detector firing (> 0.5) on the unedited photos, mean share of pixels: "
              + ", ".join(f"{k} {100 * v:.2f} %" for k, v in fire.items())]
  return "\n".join(lines)


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more metrics.json files")
  print("\n\n".join(table(p) for p in argv[1:]))


if __name__ == "__main__":
  program.run(main)
