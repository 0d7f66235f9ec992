"""tfharm.presets: the shipped weights' table, found inside the package."""
import os

import pytest

from tfharm import presets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_preset_ships_its_files_inside_the_package():
  package = os.path.join(REPO, "tfharm", "presets")
  for preset in presets.PRESETS.values():
    for path in (preset.weights_path, preset.metrics_path):
      assert os.path.dirname(path) == package and os.path.isfile(path), path
    record = preset.recorded_metrics()
    assert record["validation"]["num_examples"] > 0, preset.name
  assert os.path.isfile(presets.GATE_256)
  assert {presets.DEFAULT_DETECTOR, presets.DEFAULT_HARMONISER} <= presets.PRESETS.keys()


def test_resolve_names_paths_and_kinds():
  assert presets.resolve(None, "harmoniser", "harmoniser_256") == (
      presets.get("harmoniser_256").weights_path)
  assert presets.resolve("detector_256", "detector", "x") == presets.get("detector_256").weights_path
  assert presets.resolve("my/own.weights.h5", "harmoniser", "harmoniser_256") == "my/own.weights.h5"
  with pytest.raises(ValueError, match="is a detector, not a harmoniser"):
    presets.resolve("detector_256", "harmoniser", "harmoniser_256")
  with pytest.raises(KeyError, match="available"):
    presets.get("harmoniser_1024")


def test_the_table_imports_without_tensorflow():
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  code = "import sys, tfharm.presets; assert 'tensorflow' not in sys.modules, 'tf imported'"
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                 env=dict(os.environ, PYTHONPATH=REPO))
