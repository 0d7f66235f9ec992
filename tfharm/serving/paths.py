"""Where exports go: checked before TensorFlow is imported, so a command with an existing
version fails in a second, not after loading ~100 MB (the weight files are checked the same
way, by tfharm.systems.weight_files)."""
from __future__ import annotations

import os
import re
import shutil

from absl import logging


class VersionExistsError(FileExistsError):
  """The version directory is already there and overwriting was not asked for."""


def next_version(export_dir: str) -> int:
  """1 + the largest numeric version under export_dir (1 if none): TF Serving serves the
  highest version, so a new export without --version becomes the served one."""
  if not os.path.isdir(export_dir):
    return 1
  versions = [int(n) for n in os.listdir(export_dir) if n.isdigit()]
  return max(versions, default=0) + 1


def target(export_dir: str, version: int | None = None,
           overwrite: bool = False) -> tuple[int, str]:
  """(version, path) an export would write; refuses an existing version unless overwrite."""
  version = next_version(export_dir) if version is None else int(version)
  if version < 0:
    raise ValueError(f"version must be a non-negative integer, got {version}")
  final = os.path.join(export_dir, str(version))
  if os.path.exists(final) and not overwrite:
    raise VersionExistsError(f"{final} already exists; pass --overwrite to replace it, or "
                             "choose another --version")
  return version, final


_TEMPORARY_RE = re.compile(r"^\.(tmp|old)-(\d+)-(\d+)$")


def clean_interrupted(export_dir: str) -> list[str]:
  """What a killed export left in export_dir (`.tmp-<version>-<pid>`: a half-written version;
  `.old-<version>-<pid>`: the version being replaced by --overwrite), for pids that are gone:
  a half-written one is removed; a replaced one is put back if its version is missing (the
  kill came between the two renames), else removed. Returns what was done, also logged."""
  from tfharm.cli import outputs  # pylint: disable=g-import-not-at-top
  done = []
  if not os.path.isdir(export_dir):
    return done
  for name in sorted(os.listdir(export_dir)):
    m = _TEMPORARY_RE.match(name)
    if not m or outputs.pid_alive(int(m.group(3))):
      continue
    path, final = os.path.join(export_dir, name), os.path.join(export_dir, m.group(2))
    if m.group(1) == "old" and not os.path.exists(final):
      os.rename(path, final)
      done.append(f"restored {final} from {name}")
    else:
      shutil.rmtree(path, ignore_errors=True)
      done.append(f"removed {name}")
  for line in done:
    logging.info("interrupted export: %s", line)
  return done
