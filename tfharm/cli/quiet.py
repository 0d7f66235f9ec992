"""TensorFlow's start-up without its noise on a CPU machine, and without hiding real errors.

Importing TensorFlow and probing its devices print, from C++ and before any flag could stop
them, lines such as "Could not find cuda drivers on your machine", "failed call to cuInit",
cpu_feature_guard's "This TensorFlow binary is optimized to use available CPU instructions"
(2 lines) and absl's "All log messages before absl::InitializeLog() is called are written to
STDERR" (7 lines per command here; 4 with TF_CPP_MIN_LOG_LEVEL=3, which would also hide real
errors). `start_tensorflow()` routes file descriptor 2 through a filter for the rest of the
command (`stop()`, called by `program.finish` and at exit, restores it): lines matching NOISE are
dropped at start-up; during the run TensorFlow's C++ INFO and WARNING lines go too (they sit
below a user's default verbosity: `--verbosity=1` shows them), and so do the C++ ERROR lines
known to be harmless (RUN_NOISE: oneDNN's "supports DT_UINT8 only on platforms with AVX-512",
printed on every inference on AVX-512 machines). Every other line is passed on as it comes, so
real errors show. Python INFO lines of libraries (TensorFlow's SavedModel writer: one line of
4,369 characters per export) are dropped too; tfharm's own INFO lines, and every warning and
error, stay. With `verbose` nothing is filtered.

It also keeps two imports that TensorFlow makes at start-up off a command's critical path:
matplotlib (through keras.src.visualization: ~0.5 s, only used for plotting) is hidden while
TensorFlow and Keras import, and Keras itself (~0.8 s) is imported only if `keras=True`
(a command that loads a cached SavedModel does not need it).
"""
from __future__ import annotations

import atexit
import contextlib
import logging as std_logging
import os
import re
import sys
import threading
from typing import Iterator

# One pattern per known start-up line on a machine without a GPU (TF 2.21).
NOISE = re.compile("|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^[IWE]\d{4} [\d:.]+\s+\d+ cudart_stub\.cc:\d+\] ",
    r"^[IWE]\d{4} [\d:.]+\s+\d+ cuda_(platform|diagnostics|executor|dnn|fft|blas)\.cc:\d+\] ",
    r"^[IWE]\d{4} [\d:.]+\s+\d+ cpu_feature_guard\.cc:\d+\] ",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler",
    r"^[IWE]\d{4} [\d:.]+\s+\d+ port\.cc:\d+\] oneDNN custom operations are on",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
]))
# TensorFlow's C++ log lines (file.cc:N]) at INFO or WARNING: below a user's default verbosity.
CPP_INFO = re.compile(r"^[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+\.(cc|h|cpp):\d+\] ")
# C++ ERROR lines that are not errors of the run (TF 2.21, any x86 CPU).
RUN_NOISE = re.compile("|".join([
    NOISE.pattern,
    CPP_INFO.pattern,
    r"^E\d{4} [\d:.]+\s+\d+ util\.cc:\d+\] oneDNN supports DT_\w+ only on platforms with",
]))


@contextlib.contextmanager
def filtered_stderr(pattern: re.Pattern = NOISE) -> Iterator[None]:
  """Within the block, lines written to fd 2 (C++ or Python) that match `pattern` are dropped;
  the others reach the real stderr as they come (a reader thread; lines only wait for their
  newline)."""
  sys.stderr.flush()
  saved = os.dup(2)
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)

  def forward():
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
      pending = b""
      while chunk := pipe.read(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
          if not pattern.search(line.decode("utf-8", "replace")):
            os.write(saved, line + b"\n")
      if pending and not pattern.search(pending.decode("utf-8", "replace")):
        os.write(saved, pending)

  thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
    thread.join(timeout=5.0)
    os.close(saved)


@contextlib.contextmanager
def _hidden_modules(names: tuple[str, ...]) -> Iterator[None]:
  """`import` of these raises ImportError inside the block (a None entry in sys.modules); the
  importers that try them (Keras's plotting helpers) fall back to "not installed"."""
  added = [n for n in names if n not in sys.modules]
  for n in added:
    sys.modules[n] = None  # type: ignore[assignment]
  try:
    yield
  finally:
    for n in added:
      if sys.modules.get(n, 0) is None:
        del sys.modules[n]


_run_filter: contextlib.ExitStack | None = None


def quiet_run(pattern: re.Pattern = RUN_NOISE) -> None:
  """Filters fd 2 with `pattern` until `stop()` (or the interpreter's exit)."""
  global _run_filter
  if _run_filter is not None:
    return
  stack = contextlib.ExitStack()
  stack.enter_context(filtered_stderr(pattern))
  _run_filter = stack
  atexit.register(stop)


def stop() -> None:
  """Ends `quiet_run`: every line written so far has reached the real stderr when it returns."""
  global _run_filter
  stack, _run_filter = _run_filter, None
  if stack is not None:
    stack.close()


def start_tensorflow(verbose: bool = False, keras: bool = True):
  """Imports TensorFlow (and Keras if asked), probes the devices, returns the tf module; unless
  `verbose`, stderr stays filtered for the rest of the command (`quiet_run`)."""
  if "tensorflow" in sys.modules:  # already started (a test process, a notebook)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf
  hidden = ("matplotlib",) + (() if keras else ("keras.src.optimizers",))
  if not verbose:
    quiet_run()
  with _hidden_modules(hidden):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if keras:
      import keras as _  # pylint: disable=g-import-not-at-top,unused-import
    tf.config.list_physical_devices()  # the CUDA plugin's own start-up lines come here
  if not verbose:
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.get_absl_handler().addFilter(_own_info_only)
  return tf


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _own_info_only(record: std_logging.LogRecord) -> bool:
  """absl's handler shows everyone's INFO lines; keep tfharm's, and others' warnings and
  errors (TensorFlow's SavedModel writer logs one INFO line of 4,369 characters per export)."""
  return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE)
