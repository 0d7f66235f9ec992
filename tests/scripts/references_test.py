"""Every name a script in scripts/ or bench/ takes from tfharm exists: the scripts are run by
hand, rarely, so a module that moves or renames something breaks them silently otherwise."""
import ast
import glob
import importlib
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "scripts", "*.py"))
                 + glob.glob(os.path.join(REPO, "bench", "*.py")))


def _tfharm_references(tree: ast.Module):
  """(module, attribute) pairs: `from tfharm.a import b` and uses `b.c` of an imported module."""
  bound = {}  # local name -> tfharm module path
  refs = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tfharm":
      for alias in node.names:
        refs.append((node.module, alias.name))
        bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "tfharm" and alias.asname:
          bound[alias.asname] = alias.name
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in bound):
      refs.append((bound[node.value.id], node.attr))
  return refs


def _exists(module: str, name: str) -> bool:
  mod = importlib.import_module(module)
  if hasattr(mod, name):
    return True
  try:  # `from package import submodule`
    importlib.import_module(f"{module}.{name}")
    return True
  except ModuleNotFoundError:
    return False


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_every_tfharm_name_a_script_uses_exists(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  missing = []
  for module, name in _tfharm_references(tree):
    try:
      mod = importlib.import_module(module)
    except ModuleNotFoundError:  # `b` bound by `from tfharm.a import b` is a value, not a module
      continue
    if not _exists(mod.__name__, name):
      missing.append(f"{module}.{name}")
  assert not missing, f"{os.path.relpath(path, REPO)} uses names tfharm no longer has: {missing}"
