"""tfharm.data.summary: every split with its counts per category and per root; exit codes."""
import os
import subprocess
import sys

from tests.conftest import REPO
from tfharm.data import summary


def test_summary_counts_every_split_by_root(demo_build):
  text = summary.summarise(demo_build.data_dir_root, "256")
  for split in ("train", "validation", "test"):
    n = demo_build.info.splits[split].num_examples
    assert f"  {split}: {n} composites" in text and f"by root: dummy_data {n}" in text, text


def test_missing_build_is_a_setup_error(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "tfharm.data.summary", f"--data_dir={tmp_path}"],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: no prepared luminance_composites")
  assert "Traceback" not in proc.stderr
  help_proc = subprocess.run([sys.executable, "-m", "tfharm.data.summary", "--help"],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
  assert help_proc.returncode == 0
