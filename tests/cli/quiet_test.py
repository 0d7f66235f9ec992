"""The quiet layer holds for a command's whole run on any CPU: TensorFlow's C++ logger is made to
write mid-run (PrintV2 to its INFO, WARNING and ERROR streams), so the test does not depend on
which lines the machine's oneDNN build happens to print."""

import subprocess
import sys

from tfharm.cli import quiet

_SCRIPT = """
import sys
from tfharm.cli import program, quiet
tf = quiet.start_tensorflow(verbose=VERBOSE, keras=False)
for stream in ("log(info)", "log(warning)", "log(error)"):
  tf.raw_ops.PrintV2(input=tf.constant("probe-" + stream), output_stream=stream)
ds = tf.data.Dataset.range(10).cache().take(2)  # cache_dataset_ops' "did not fully read" warning
list(ds.as_numpy_iterator())
sys.stderr.write("python-line\\n")
program.finish(0, fast=FAST)
"""


def _run(verbose: bool, fast: bool) -> str:
  code = _SCRIPT.replace("VERBOSE", str(verbose)).replace("FAST", str(fast))
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stderr


def test_cpp_info_and_warning_lines_are_dropped_mid_run_and_errors_kept():
  for fast in (False, True):  # os._exit must not lose what is still in the filter's pipe
    err = _run(verbose=False, fast=fast)
    assert "probe-log(error)" in err and "python-line" in err, err
    assert "probe-log(info)" not in err and "probe-log(warning)" not in err, err
    assert "did not fully read the dataset" not in err, err


def test_verbose_shows_the_cpp_lines():
  err = _run(verbose=True, fast=True)
  assert "probe-log(warning)" in err and "probe-log(error)" in err, err


def test_known_harmless_cpp_errors_are_dropped_and_others_kept():
  onednn = ("E0000 00:00:1765000000.123456    4242 util.cc:131] oneDNN supports DT_UINT8 only on "
            "platforms with AVX-512. Falling back to the default Eigen-based implementation if "
            "present.")
  assert quiet.RUN_NOISE.search(onednn)
  assert not quiet.RUN_NOISE.search("E0000 00:00:1765000000.123456 4242 op_kernel.cc:1840] "
                                    "OP_REQUIRES failed")
  # absl's Python lines look alike but name a .py file: never dropped by the C++ rule.
  assert not quiet.RUN_NOISE.search("I1206 07:30:09.661536 140173169986432 harmonise.py:228] done")
