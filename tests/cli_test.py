"""What every command shares (tfharm/cli): exit codes, --help, one-line usage errors, quiet
TensorFlow start-up that still shows real errors, output locations checked up front."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests import serving_helpers as helpers
from tfharm.cli import outputs, program

COMMANDS = ("tfharm.harmonise", "tfharm.export", "tfharm.eval", "tfharm.lpips",
            "tfharm.app")


def _python(code: str, *args, env=None):
  return helpers.run(["-c", textwrap.dedent(code), *args], env=env)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_usage_errors_exit_2(command):
  proc = helpers.run(["-m", command, "--help"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "flags:" in proc.stdout and "Traceback" not in proc.stderr
  assert "notes/" not in proc.stdout  # help points only at files that exist
  proc = helpers.run(["-m", command, "--no_such_flag=1"])
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.startswith("error: Unknown command line flag 'no_such_flag'")
  assert len(proc.stderr.splitlines()) == 2  # the error and "Run with --help", not the usage


_PROGRAM = """
  import sys
  from absl import app
  from tfharm.cli import program
  def main(argv):
    what = argv[1]
    if what == "usage": raise app.UsageError("bad argument")
    if what == "setup": raise program.SetupError("cannot write there")
    if what == "bug": raise RuntimeError("a bug")
    if what == "ctrl-c": raise KeyboardInterrupt
    if what == "ctrl-c-said": raise program.Interrupted("did 2 of 5")
    return {"ok": None, "skipped": program.SKIPPED}[what]
  program.run(main, fast_exit=True)
"""


@pytest.mark.parametrize("what,code,stderr", [
    ("ok", 0, ""), ("skipped", 1, ""), ("usage", 2, "error: bad argument\n"),
    ("setup", 2, "error: cannot write there\n"), ("bug", 3, "RuntimeError: a bug"),
    ("ctrl-c", 130, "interrupted (Ctrl-C)\n"),
    ("ctrl-c-said", 130, "interrupted (Ctrl-C): did 2 of 5\n")])
def test_exit_codes(what, code, stderr):
  proc = _python(_PROGRAM, what)
  assert proc.returncode == code, proc.stderr
  assert stderr in proc.stderr and (stderr or proc.stderr == "")


def test_filter_drops_start_up_noise_and_keeps_everything_else():
  """Lines written to fd 2 by C++ (here os.write) inside the filter: the known start-up noise
  goes, a real error (also an E-level TensorFlow line) and Python's own output stay."""
  proc = _python("""
    import os, sys
    from tfharm.cli import quiet
    with quiet.filtered_stderr():
      os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
      os.write(2, b"I0000 00:00:1796117765.603057    6639 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\\n")
      os.write(2, b"E0000 00:00:1796117767.661557    6639 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\\n")
      os.write(2, b"I0000 00:00:1796117765.665652    6639 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\\nTo enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.\\n")
      os.write(2, b"E0000 00:00:1796117767.000000    6639 op_kernel.cc:1830] OP_REQUIRES failed: a real error\\n")
      print("python says hello", file=sys.stderr)
      os.write(2, b"no newline at the end")
    print("after", file=sys.stderr)
  """)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ("E0000 00:00:1796117767.000000    6639 op_kernel.cc:1830] OP_REQUIRES "
                         "failed: a real error\npython says hello\nno newline at the endafter\n")


def test_tensorflow_starts_quietly_unless_verbose():
  code = """
    import sys
    from absl import logging
    from tfharm.cli import quiet
    logging.use_absl_handler()  # as under app.run
    logging.set_verbosity(logging.INFO)
    tf = quiet.start_tensorflow(verbose=sys.argv[1] == "verbose", keras=True)
    print(float(tf.reduce_sum(tf.ones((2, 2)))))
    logging.info("a library INFO line")  # logged from outside tfharm (like TF's SavedModel writer)
    logging.error("a real error")
  """
  quiet = _python(code, "quiet")
  assert quiet.returncode == 0 and quiet.stdout == "4.0\n", quiet.stderr
  assert helpers.noise_lines(quiet.stderr) == [], quiet.stderr
  assert "a real error" in quiet.stderr and "a library INFO line" not in quiet.stderr
  verbose = _python(code, "verbose")
  assert "a library INFO line" in verbose.stderr
  if not helpers.noise_lines(verbose.stderr):
    pytest.skip("this TensorFlow build prints no start-up noise to filter")


def test_check_directory_creates_and_probes(tmp_path):
  made = outputs.check_directory(str(tmp_path / "a" / "b"), "--out")
  assert os.path.isdir(made) and os.listdir(made) == []  # the probe file is gone
  (tmp_path / "f").write_text("x")
  with pytest.raises(program.SetupError, match="--out .*f is a file, not a directory"):
    outputs.check_directory(str(tmp_path / "f"), "--out")
  with pytest.raises(program.SetupError, match="f is a file, not a directory"):
    outputs.check_directory(str(tmp_path / "f" / "sub"), "--out")
  with pytest.raises(program.SetupError, match="is a directory, not a file"):
    outputs.check_file(str(tmp_path / "a"), "--out")


def test_check_directory_read_only_and_full_file_systems(tmp_path):
  with helpers.tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
    with pytest.raises(program.SetupError, match="read-only file system"):
      outputs.check_directory(str(ro), "--output")
    with pytest.raises(program.SetupError, match="cannot create it \\(read-only file system\\)"):
      outputs.check_directory(str(ro / "new"), "--output")
  with helpers.full_disk(tmp_path / "full") as full:
    with pytest.raises(program.SetupError, match="no space left|MB free|bytes free"):
      outputs.check_directory(str(full), "--output")
  with helpers.tmpfs(tmp_path / "small", "size=2m") as small:
    outputs.check_directory(str(small), "--output", need_bytes=1 << 20)
    with pytest.raises(program.SetupError, match="free on its file system, about 10.5 MB needed"):
      outputs.check_directory(str(small), "--output", need_bytes=10_500_000)


def test_pid_alive():
  assert outputs.pid_alive(os.getpid())
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  assert not outputs.pid_alive(dead.pid) or dead.pid == os.getpid()
