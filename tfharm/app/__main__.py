"""Serve the web page on this machine: upload a photo, see the result and the detector's map.

  python -m tfharm.app                                  # http://127.0.0.1:7860
  python -m tfharm.app --flagfile=configs/app.flags --port=8080

It offers every system of `tfharm.harmonise`, --model (the joint model by default) chosen at
first: that one loads before the page is served (the program prints "serving on URL" when it
is ready), any other on the first request that asks for it. Requests run one at a time.
docs/app.md has the design and its measurements.
"""
import errno
import functools
import os
import shutil
import signal
import sys
import threading
import time

from absl import app, flags, logging

from tfharm.cli import program

# How long a stopping page waits for its server to close before the process exits anyway.
_CLOSE_SECONDS = 10


def _define_flags() -> None:
  """Flags exist only when this runs as a program (BUILD_NOTES.md, "Rules the code follows")."""
  global _HOST, _PORT, _WEIGHTS, _JIT, _MAX_MP, _MAX_MB, _EXAMPLES, _MODEL
  _HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (default: this machine "
                              "only; the page has no authentication).")
  _PORT = flags.DEFINE_integer("port", 7860, "Port to listen on (0: any free port).",
                               lower_bound=0, upper_bound=65535)
  from tfharm import systems  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  _MODEL, _WEIGHTS, _JIT = program.define_model_flags(__name__, systems.DEFAULT,
                                                      systems.weight_flags())
  _MAX_MP = flags.DEFINE_float("max_megapixels", 24.0, "Larger photos are refused (memory).")
  _MAX_MB = flags.DEFINE_float("max_megabytes", 50.0, "Larger uploads are refused.")
  _EXAMPLES = flags.DEFINE_string("examples_dir", None, "Folder of example composites "
                                  "(default: the shipped demo composites, tfharm/app/examples).")


def _check_address(host: str, port: int) -> int:
  """The port the page will listen on (port 0: a free one), bound once and released as the
  server binds it (SO_REUSEADDR): a busy port or a wrong host is a setup error before the
  models load (~20 s), not a crash after."""
  import socket  # pylint: disable=g-import-not-at-top
  try:
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
  except socket.gaierror as e:
    raise program.SetupError(f"--host {host}: not an address to listen on ({e.strerror})") from e
  try:
    with socket.socket(family, kind) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      s.bind(address)
      return s.getsockname()[1]
  except OSError as e:
    reason = (e.strerror or str(e)).lower()
    if e.errno == errno.EADDRNOTAVAIL:
      raise program.SetupError(f"--host {host}: not an address of this machine ({reason})") from e
    raise program.SetupError(f"--port {port} on {host}: cannot listen there ({reason}); choose "
                             "another --port (0: any free one)") from e


def _weights() -> dict[str, dict[str, str]]:
  """{system: its weight files} for --model (SetupError if they are missing) and every other
  system whose files are there (one not offered is logged): each system takes its own weight
  flags, as the page offers them all. No TensorFlow."""
  from tfharm import systems  # pylint: disable=g-import-not-at-top
  given = {flag: holder.value for flag, holder in _WEIGHTS.items()}
  found = {}
  for name, spec in systems.SYSTEMS.items():
    try:
      found[name] = systems.weight_files(name, {f: given.get(f) for f in spec.weights})
    except (FileNotFoundError, ValueError) as e:
      if name == _MODEL.value:
        raise program.SetupError(str(e)) from e
      logging.warning("the page does not offer --model=%s: %s", name, e)
  return {_MODEL.value: found.pop(_MODEL.value), **found}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.perf_counter()
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a terminated page cleans up too
  port = _check_address(_HOST.value, _PORT.value)
  weights = _weights()
  from tfharm.cli import quiet  # pylint: disable=g-import-not-at-top
  # TensorFlow's start-up lines, its C++ INFO lines and libraries' INFO lines (httpx's
  # "HTTP Request: GET .../startup-events") go, as in the other commands; --verbosity=1 shows them.
  quiet.start_tensorflow(flags.FLAGS.verbosity >= 1)
  from tfharm.app import examples, handling, page  # pylint: disable=g-import-not-at-top
  examples_dir = os.path.abspath(_EXAMPLES.value or examples.EXAMPLES_DIR)
  rows = examples.example_rows(examples_dir)
  loaded = time.perf_counter()
  logging.info("port %d on %s is free; loading the models", port, _HOST.value)
  modules = handling.load_modules(_MODEL.value, weights.pop(_MODEL.value), jit_compile=_JIT.value)
  traced = time.perf_counter()
  handling.warm_up(modules)
  page_start = time.perf_counter()
  limits = handling.Limits(max_megapixels=_MAX_MP.value, max_megabytes=_MAX_MB.value)
  others = {name: functools.partial(handling.load_modules, name, files, jit_compile=_JIT.value)
            for name, files in weights.items()}
  harmonise_app = handling.App(modules, limits, model=_MODEL.value, others=others)
  try:  # from here on, every way out removes this run's result files
    blocks = page.build_page(harmonise_app, rows)
    try:
      url = page.launch(blocks, harmonise_app, rows, _HOST.value, port, _MAX_MB.value)
    except OSError as e:  # the port was taken after the check, while the models loaded
      raise program.SetupError(f"--port {port} on {_HOST.value}: the page's server could not "
                               f"start there ({str(e).split('. ')[0]})") from e
    end = time.perf_counter()
    # One line with the phases, for bench/bench_app.py.
    logging.info("ready: imports %.1f s, weights %.1f s, graph %.1f s, page %.1f s, total "
                 "%.1f s (after Python and absl started); %d example(s); %s loaded, %s on first "
                 "use", loaded - start, traced - loaded, page_start - traced, end - page_start,
                 end - start, len(rows), _MODEL.value, ", ".join(others) or "none other")
    try:  # not Gradio's block_thread: it swallows Ctrl-C, printing its own line, exit 0
      # Inside the try: a Ctrl-C sent as soon as this line is read lands here too.
      print(f"serving on {url}", flush=True)  # the line the browser test and the bench wait for
      while True:
        time.sleep(3600)
    except KeyboardInterrupt:
      signal.signal(signal.SIGINT, signal.SIG_IGN)  # the first Ctrl-C ends it, even mid-close
      raise program.Interrupted("the page stopped serving") from None
    finally:
      # Bounded: Gradio's close waits for its server thread, which has been seen to hang after
      # a Ctrl-C (the test's 60 s ran out); the process exits after this either way.
      closer = threading.Thread(target=blocks.close, daemon=True)
      closer.start()
      closer.join(timeout=_CLOSE_SECONDS)
      if closer.is_alive():
        logging.warning("the page's server did not close within %d s; exiting anyway",
                        _CLOSE_SECONDS)
  finally:
    shutil.rmtree(harmonise_app.work_dir, ignore_errors=True)


if __name__ == "__main__":
  _define_flags()
  try:
    program.run(main)  # exit codes, --help and Ctrl-C as the other programs (tfharm.cli.program)
  except KeyboardInterrupt:  # before main started (flag parsing)
    sys.exit(program.INTERRUPTED)
