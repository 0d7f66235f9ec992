"""No import cycles between the modules of tfharm/, data_builders/, scripts/ and bench/ (every
import statement counts, also the ones inside functions): the layers data -> models -> training
-> evaluation stay one-way, and the package never imports the repository's folders above it."""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SCANNED = ("tfharm", "data_builders", "scripts", "bench")


def _modules() -> dict[str, str]:
  out = {}
  for directory, _, files in (w for top in SCANNED for w in os.walk(os.path.join(REPO, top))):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        out[module.removesuffix(".__init__")] = path
  return out


def _imports(path: str, modules) -> set[str]:
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
      found.update(subs)
      if len(subs) < len(node.names):
        found.add(node.module)
  return found & modules.keys()


def import_graph() -> dict[str, set[str]]:
  modules = _modules()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def test_no_import_cycles():
  graph = import_graph()
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_scan_sees_lazy_imports_and_the_folders_outside_the_package():
  """tfharm/evaluation/quick_scores.py imports the detector task inside a function: the scan must
  find it; and it reads data_builders/ and scripts/ too."""
  graph = import_graph()
  assert "tfharm.training.tasks.detector" in graph["tfharm.evaluation.quick_scores"]
  builder = "data_builders.luminance_composites.luminance_composites_dataset_builder"
  assert "tfharm.data.luminance_composites" in graph[builder]
  assert "tfharm.presets" in graph["scripts.ship_joint"]


def test_the_package_imports_nothing_of_the_repository_around_it():
  """data_builders/ (the `tfds build` registration), scripts/ and bench/ use tfharm, never the
  other way: an installed tfharm has none of them."""
  upward = [(a, b) for a, targets in import_graph().items() if a.startswith("tfharm")
            for b in targets if not b.startswith("tfharm")]
  assert not upward, upward


# Each layer may import only the layers before it.
LAYERS = ("tfharm.data", "tfharm.models", "tfharm.systems", "tfharm.training",
          "tfharm.evaluation", "tfharm.serving")


def test_layers_import_only_downwards():
  def layer(module):
    return next((i for i, p in enumerate(LAYERS) if module == p or module.startswith(p + ".")),
                None)
  upward = [(a, b) for a, targets in import_graph().items() for b in targets
            if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
  assert not upward, upward
