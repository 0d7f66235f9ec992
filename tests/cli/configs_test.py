"""configs/: every command has a flagfile example, each flagfile names the command it is for
and parses with that command's flags, without the old names (an unknown or renamed flag
fails here, not in `make demo`), and none holds a machine path."""
import collections
import concurrent.futures
import os
import re
import subprocess
import sys
import textwrap

from tests.cli import entry_points_test

REPO = entry_points_test.REPO
CONFIGS = os.path.join(REPO, "configs")
_PARSE = textwrap.dedent("""
  import importlib, sys
  from absl import flags
  module = importlib.import_module(sys.argv[1])
  module._define_flags()  # every command defines its flags there, never at import
  for path in sys.argv[2:]:
    flags.FLAGS.unparse_flags()
    try:
      flags.FLAGS(["prog", f"--flagfile={path}"])
    except flags.IllegalFlagValueError as e:  # a required flag given on the command line is fine
      if "must have a value other than None" not in str(e):
        print(f"{path}: {e}")
    except flags.Error as e:
      print(f"{path}: {e}")
""")


def _command_of(path: str) -> str | None:
  """The `python -m tfharm.X --flagfile=configs/<this file>` its comments give."""
  name = os.path.basename(path)
  with open(path) as f:
    for line in f:
      m = re.search(r"python -m (tfharm[\w.]*) .*--flagfile=configs/" + re.escape(name), line)
      if line.startswith("#") and m:
        return m.group(1)
  return None


def _flagfiles() -> list[str]:
  return sorted(os.path.join("configs", n) for n in os.listdir(CONFIGS) if n.endswith(".flags"))


def test_every_command_has_a_flagfile_example():
  commands = {c.split()[1] for c in entry_points_test.entry_points() if c.startswith("-m ")}
  commands.discard("tfharm.metrics.lpips")  # the old name of tfharm.lpips
  covered = {_command_of(os.path.join(REPO, p)) for p in _flagfiles()}
  assert not commands - covered, sorted(commands - covered)


def test_every_flagfile_parses_with_its_commands_flags():
  by_command = collections.defaultdict(list)
  for path in _flagfiles():
    command = _command_of(os.path.join(REPO, path))
    assert command, f"{path}: no '# python -m tfharm.X --flagfile={path}' line"
    package_main = os.path.join(REPO, *command.split("."), "__main__.py")
    by_command[command + ".__main__" if os.path.exists(package_main) else command].append(path)

  def parse(item):
    module, paths = item
    return subprocess.run([sys.executable, "-c", _PARSE, module, *paths], cwd=REPO,
                          capture_output=True, text=True, timeout=600)

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(parse, sorted(by_command.items())))
  errors = [r.stdout.strip() or r.stderr[-1500:] for r in results
            if r.returncode != 0 or r.stdout.strip() or "is deprecated" in r.stderr]
  assert not errors, "\n".join(errors)


def test_no_flagfile_holds_a_machine_path():
  for path in _flagfiles():
    with open(os.path.join(REPO, path)) as f:
      values = [line.split("=", 1)[-1] for line in f if line.startswith("--")]
    assert not [v for v in values if v.startswith(("/", "~")) or "../" in v], path
