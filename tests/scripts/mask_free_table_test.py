"""scripts/mask_free_table.py prints what metrics.json holds, for the rows that were scored."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rows_and_shares_come_from_the_file(tmp_path):
  metrics = {
      "num_examples": 3,
      "methods": {"composite": {"mse": 10.0, "psnr": 30.0},
                  "joint_l_moments": {"mse": 8.25, "psnr": 31.5}},
      "shares": {"joint_l_moments": {"improved": 2 / 3, "worse_by_1db": 0.0}},
      "real_photos": {"num_photos": 2, "joint_fire_fraction": 0.0125,
                      "joint_l_moments": {"median_psnr": 51.25, "share_at_least_40db": 1.0}},
      "provenance": {"dataset": {"split": "validation"}}}
  path = tmp_path / "metrics.json"
  path.write_text(json.dumps(metrics))
  out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "mask_free_table.py"),
                        str(path)], capture_output=True, text=True, check=True).stdout
  assert "split `validation`, 3 composites, 2 unedited photos" in out
  joint = next(line for line in out.splitlines() if line.startswith("| joint model (what"))
  assert joint.split("|")[2:8] == [" 8.2 ", " 31.50 ", " 67 % ", " 0 % ", " 51.2 ", " 100 % "]
  assert "pipeline, mask-free" not in out  # not scored: no row
  assert "joint_fire_fraction 1.25 %" in out
