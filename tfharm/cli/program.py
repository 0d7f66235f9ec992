"""How a tfharm command runs, reports errors and exits (README "Exit codes").

  0  SUCCESS   everything asked for was done
  1  SKIPPED   some inputs could not be used: each is logged with its reason, and the counts
               are printed at the end (the others were done)
  2  USAGE     usage or setup error: bad or missing flags, paths that do not exist, collide or
               cannot be written, missing weights. Detected before any work; nothing written.
  3  INTERNAL  an unexpected exception (a bug): the traceback is printed
130  INTERRUPTED  Ctrl-C (SIGINT; 128 + 2, what a shell reports): one line saying so, with
               what was done when the command tells (`Interrupted`), no traceback

`--help`, `--helpshort`, `--helpfull` and `--helpxml` print to stdout and exit 0 (absl's exit
with 1). A flag parsing error or a `UsageError`/`SetupError` raised by `main` prints one
`error: ...` line (absl would print the whole usage text) and exits 2.
"""
from __future__ import annotations

import logging as std_logging
import os
import signal
import sys
import traceback
from typing import Callable

from absl import app, flags

SUCCESS, SKIPPED, USAGE, INTERNAL = 0, 1, 2, 3
INTERRUPTED = 130


class SetupError(Exception):
  """The command cannot run as asked (a path, the weights, the environment): exit 2."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C, carrying what the command had done by then (its summary line)."""


def _exit_zero(absl_flag_class):
  """absl's help flag, exiting with 0 instead of 1 after printing the help."""
  class HelpFlag(absl_flag_class):
    def parse(self, arg):
      try:
        super().parse(arg)
      except SystemExit:
        sys.stdout.flush()
        raise SystemExit(SUCCESS) from None
  return HelpFlag


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with help flags that exit 0 and errors that exit 2 in one line."""
  for cls in (app.HelpFlag, app.HelpshortFlag, app.HelpfullFlag, app.HelpXMLFlag):
    flag = _exit_zero(cls)()
    for name in (flag.name, flag.short_name):  # absl's own, defined by app.run just before
      if name and name in flags.FLAGS:
        delattr(flags.FLAGS, name)
    flags.DEFINE_flag(flag)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\nRun with --help to see the flags.\n")
    raise SystemExit(USAGE) from None


def finish(code: int, fast: bool = False):
  """Exits with `code`. fast: after flushing, skip the interpreter's teardown (os._exit), which
  takes about a second once TensorFlow is loaded; only for commands whose outputs are all
  written and closed by then."""
  from tfharm.cli import quiet  # pylint: disable=g-import-not-at-top
  if not fast:
    raise SystemExit(code)
  quiet.stop()  # lines still in the stderr filter's pipe reach the terminal before os._exit
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  std_logging.shutdown()  # flushes every logging handler (absl's included)
  os._exit(code)  # pylint: disable=protected-access


def run(main: Callable[[list[str]], int | None], fast_exit: bool = False) -> None:
  """`app.run(main)` with the exit codes above. main returns an exit code (None means 0)."""

  def wrapped(argv):
    try:
      code = main(argv)
    except (app.UsageError, SetupError) as e:
      sys.stdout.flush()
      sys.stderr.write(f"error: {e}\n")
      code = USAGE
    except KeyboardInterrupt as e:  # Ctrl-C: a line, not Python's ~58-line traceback
      signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one does not cut the line short
      sys.stdout.flush()
      sys.stderr.write(f"interrupted (Ctrl-C){f': {e}' if str(e) else ''}\n")
      code = INTERRUPTED
    except SystemExit:
      raise
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      code = INTERNAL
    finish(SUCCESS if code is None else int(code), fast=fast_exit)

  app.run(wrapped, flags_parser=_parse_flags)


def define_model_flags(module_name: str, default: str, weights: dict[str, tuple[str, str]]
                       ) -> tuple[flags.FlagHolder, dict[str, flags.FlagHolder], flags.FlagHolder]:
  """The flags of every command that runs a system (harmonise, export, app): --model, one
  weights flag per file a system reads (`weights`: flag -> (system, default preset), from
  tfharm.systems.weight_flags: this module sits below it), and XLA. Returns (--model,
  {flag: holder}, --jit_compile). Call inside `_define_flags` with the command's `__name__`, so
  `--help` lists them as the command's own (absl names the module run as a program by its
  sys.argv[0])."""
  if module_name == "__main__":
    module_name = sys.argv[0]
  systems = list(dict.fromkeys(system for system, _ in weights.values()))
  model = flags.DEFINE_enum(
      "model", default, systems,
      "Which mask-free system runs: " + ", ".join(systems) + " (tfharm.systems; docs/joint.md "
      "for joint, docs/architecture.md for pipeline). With a user mask, the mask replaces the "
      "predicted one.", module_name=module_name)
  holders = {name: flags.DEFINE_string(
      name, None, f"--model={system}: a file (.keras, .weights.h5) or a preset name (default: "
      f"preset {preset}, tfharm.presets).", module_name=module_name)
             for name, (system, preset) in weights.items()}
  jit = flags.DEFINE_boolean("jit_compile", None, "XLA for the networks (default: on with a GPU, "
                             "off on CPU).", module_name=module_name)
  return model, holders, jit
