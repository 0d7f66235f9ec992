"""`python -m tfharm.data.build` as a command: the exit codes of tfharm.cli.program (help 0,
usage and setup errors 2 in one line) and no partial folders after a failed build."""
import os

import pytest

from tests import serving_helpers as helpers
from tests.conftest import DEMO_ROOT, copy_demo_root


def _build(*flags):
  return helpers.run(["-m", "tfharm.data.build", *flags])


def _tree(path) -> set[str]:
  return {os.path.relpath(os.path.join(d, n), path)
          for d, dirs, files in os.walk(path) for n in dirs + files}


def _one_error_line(proc, message):
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr


def test_help_exits_0_and_usage_errors_exit_2_in_one_line():
  proc = _build("--help")
  assert proc.returncode == 0 and "--manual_dir" in proc.stdout, proc.stderr[-2000:]
  proc = _build("--no_such_flag=1")
  assert proc.returncode == 2 and proc.stderr.startswith("error: Unknown command line flag")
  assert len(proc.stderr.splitlines()) == 2
  proc = _build(f"--manual_dir={DEMO_ROOT}")
  assert proc.returncode == 2 and proc.stderr.startswith("error: flag --data_dir=None")


def test_setup_errors_exit_2_in_one_line_and_leave_no_folders(tmp_path):
  """Before: exit 1 with a traceback, and the data_dir with downloads/, .config/ and the
  manual_roots symlink folder left behind."""
  data_dir = tmp_path / "tfds"
  _one_error_line(_build(f"--manual_dir={tmp_path}/nope", f"--data_dir={data_dir}"),
                  "does not exist")
  assert not data_dir.exists()
  _one_error_line(_build(f"--manual_dir={DEMO_ROOT}", f"--data_dir={data_dir}",
                         "--dataset_config=1024"), "unknown config '1024'")
  assert not data_dir.exists()
  # Two roots holding the same photos: the merge refuses them, after manual_roots/ was made.
  twin = copy_demo_root(str(tmp_path / "twin"))
  _one_error_line(_build(f"--manual_dir={DEMO_ROOT},{twin}", f"--data_dir={data_dir}"),
                  "occur in two roots")
  assert not data_dir.exists()
  # A data_dir already in use: what was there stays, nothing is added.
  (data_dir / "other_dataset" / "1.0.0").mkdir(parents=True)
  (data_dir / "other_dataset" / "1.0.0" / "records").write_text("keep")
  before = _tree(data_dir)
  _one_error_line(_build(f"--manual_dir={DEMO_ROOT},{twin}", f"--data_dir={data_dir}"),
                  "occur in two roots")
  assert _tree(data_dir) == before


def test_a_full_disk_exits_2_in_one_line_and_leaves_nothing(tmp_path):
  with helpers.tmpfs(tmp_path / "small", "size=2m") as small:
    data_dir = os.path.join(small, "tfds")
    proc = _build(f"--manual_dir={DEMO_ROOT}", f"--data_dir={data_dir}", "--workers=1")
    _one_error_line(proc, "no space left on the device")
    assert os.listdir(small) == []


def test_a_build_prints_no_tensorflow_start_up_lines(tmp_path):
  """Issue 26 (22): TFDS imports TensorFlow mid-build (its writer), so a user saw its start-up
  lines (absl's pre-init line, cudart_stub, cpu_feature_guard, `failed call to cuInit`), twice,
  between the progress bars. Found by scripts/reliability_probe.py (case 22)."""
  proc = _build(f"--manual_dir={DEMO_ROOT}", f"--data_dir={tmp_path / 'tfds'}", "--workers=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert helpers.noise_lines(proc.stderr) == [], helpers.noise_lines(proc.stderr)
  assert "test: 23 examples" in proc.stderr  # the build's own lines still show
