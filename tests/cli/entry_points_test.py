"""Every program in the repository (found by scanning for `__main__`, so a new one cannot be
forgotten) runs through `tfharm.cli.program.run`: one exit-code convention (docs/cli.md), and
`--help` exits 0 (absl's own `app.run` exits 1 after the help)."""
import ast
import concurrent.futures
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("tfharm", "scripts", "bench")


def _main_block(tree: ast.Module) -> ast.If | None:
  for node in tree.body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__"
                for c in node.test.comparators)):
      return node
  return None


def entry_points() -> dict[str, str]:
  """{command line: path}: `-m tfharm.x` for the package, the script's path otherwise."""
  found = {}
  for top in SCANNED:
    for directory, _, names in os.walk(os.path.join(REPO, top)):
      for name in sorted(names):
        path = os.path.join(directory, name)
        if not name.endswith(".py") or name.endswith("_test.py"):
          continue
        with open(path) as f:
          if _main_block(ast.parse(f.read())) is None:
            continue
        rel = os.path.relpath(path, REPO)
        if top == "tfharm":
          module = rel[:-3].replace(os.sep, ".").removesuffix(".__main__")
          found[f"-m {module}"] = path
        else:
          found[rel] = path
  return found


def _calls(node: ast.AST) -> set[str]:
  """Dotted names called under node: `program.run`, `app.run`, ..."""
  out = set()
  for n in ast.walk(node):
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
      if isinstance(n.func.value, ast.Name):
        out.add(f"{n.func.value.id}.{n.func.attr}")
  return out


def test_the_scan_finds_the_commands_and_scripts():
  found = entry_points()
  for expected in ("-m tfharm.train", "-m tfharm.eval", "-m tfharm.harmonise", "-m tfharm.app",
                   "-m tfharm.weights", "-m tfharm.data.build", "-m tfharm.lpips",
                   os.path.join("scripts", "ship_joint.py"),
                   os.path.join("bench", "bench_cli.py")):
    assert expected in found, sorted(found)
  assert len(found) >= 30, sorted(found)


@pytest.mark.parametrize("command", sorted(entry_points()))
def test_every_entry_point_runs_through_program_run(command):
  path = entry_points()[command]
  with open(path) as f:
    tree = ast.parse(f.read())
  calls = _calls(tree)
  assert "app.run" not in calls, f"{path}: use tfharm.cli.program.run (exit codes, --help 0)"
  if "runpy.run_module" in _calls(_main_block(tree)):  # an old name of another command
    (target,) = [n.args[0].value for n in ast.walk(_main_block(tree))
                 if isinstance(n, ast.Call) and ast.unparse(n.func) == "runpy.run_module"]
    assert f"-m {target}" in entry_points(), (path, target)
    return
  # The program itself, or the function `__main__` calls that does (tfharm.train's run()).
  assert "program.run" in calls or "_program.run" in calls, path


def _help(command: str) -> tuple[str, subprocess.CompletedProcess]:
  env = {**os.environ, "PYTHONPATH": REPO}  # scripts import this checkout's tfharm
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return command, subprocess.run([sys.executable, *command.split(), "--help"], cwd=REPO,
                                 env=env, capture_output=True, text=True, timeout=600)


def test_help_exits_0_for_every_entry_point():
  """All at once, four at a time: most of the time is each process importing TensorFlow."""
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = dict(pool.map(_help, sorted(entry_points())))
  failed = {c: (p.returncode, p.stderr[-800:]) for c, p in results.items()
            if p.returncode != 0 or "Traceback" in p.stderr}
  assert not failed, failed
  no_usage = [c for c, p in results.items() if len(p.stdout.splitlines()) < 2]
  assert not no_usage, no_usage  # absl's help: the program's docstring (and its flags)
