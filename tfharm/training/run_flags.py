"""A run's record of how it was started: `<workdir>/flags.txt`, one block of every flag's
value per start of `python -m tfharm.train` (the first start and each resume append one, so
the file says how every part of the run was trained)."""
from __future__ import annotations

import os

FILENAME = "flags.txt"


def path(workdir: str) -> str:
  return os.path.join(workdir, FILENAME)


def invocations(workdir: str) -> list[list[str]]:
  """The blocks of `<workdir>/flags.txt`, oldest first, each a list of "--flag=value" lines.
  absl writes a block's flags sorted, so each starts with the same flag (in its --x or --nox
  form when it is a boolean)."""
  with open(path(workdir)) as f:
    lines = [line.strip() for line in f if line.startswith("--")]
  if not lines:
    return []
  first = _name(lines[0]).removeprefix("no")
  starts = [i for i, line in enumerate(lines) if _name(line) in (first, "no" + first)]
  return [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]


def _name(line: str) -> str:
  return line[2:].split("=", 1)[0]
