"""All-or-nothing output directories: an interrupted evaluation never leaves a metrics.json.

Everything is written into a hidden staging directory inside output_dir, then moved into
place; an old metrics.json is removed first and the new one is moved last, so a directory
with a metrics.json always holds one complete run. The directory is checked for writing before
the evaluation starts, and staging directories of killed runs are removed then.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from absl import logging

from tfharm.cli import outputs

METRICS_JSON = "metrics.json"
# Everything an evaluation writes; any of them present means the directory holds results.
ARTIFACTS = (METRICS_JSON, "per_image.csv", "per_category.csv", "table.md",
             "fig_distributions.png", "fig_differentials.png", "examples.png", "tensorboard")
STAGING_PREFIX = ".eval-partial-"
# .eval-partial-<pid>-<random> (older versions: .eval-partial-<random>, no pid)
_STAGING_PID = re.compile(r"^\.eval-partial-(\d+)-")
# A complete run writes about this much (figures, CSVs, TensorBoard); checked before it starts.
EXPECTED_BYTES = 20 << 20


def existing_results(output_dir: str) -> list[str]:
  if not os.path.isdir(output_dir):
    return []
  return [a for a in ARTIFACTS if os.path.exists(os.path.join(output_dir, a))]


def check_writable(output_dir: str) -> None:
  """Before any work: output_dir is (or can be made) a directory this process can write into,
  with room for the results; raises tfharm.cli.program.SetupError naming the reason."""
  outputs.check_directory(output_dir, "--output_dir", EXPECTED_BYTES)


def clean_stale_staging(output_dir: str) -> list[str]:
  """Removes the staging directories of killed runs (their pid is gone; pid-less ones are from
  older versions); returns their names."""
  if not os.path.isdir(output_dir):
    return []
  removed = []
  for name in sorted(os.listdir(output_dir)):
    if not name.startswith(STAGING_PREFIX):
      continue
    m = _STAGING_PID.match(name)
    if m and outputs.pid_alive(int(m.group(1))):
      continue
    shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    removed.append(name)
  if removed:
    logging.info("removed %d staging directory(ies) of interrupted evaluations from %s: %s",
                 len(removed), output_dir, ", ".join(removed))
  return removed


class StagedOutput:
  """`path(name)` inside a staging dir; `commit()` moves everything in, metrics.json last."""

  def __init__(self, output_dir: str):
    self.output_dir = os.path.abspath(output_dir)
    os.makedirs(self.output_dir, exist_ok=True)
    self.staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.output_dir)

  def path(self, name: str) -> str:
    if name not in ARTIFACTS:
      raise ValueError(f"{name} is not an evaluation artifact {ARTIFACTS}")
    return os.path.join(self.staging, name)

  def commit(self) -> None:
    missing = [a for a in ARTIFACTS if not os.path.exists(os.path.join(self.staging, a))]
    if missing:
      raise RuntimeError(f"not committing an incomplete evaluation: missing {missing}")
    final = lambda name: os.path.join(self.output_dir, name)
    if os.path.exists(final(METRICS_JSON)):
      os.remove(final(METRICS_JSON))  # from here on the directory is visibly incomplete
    for name in ARTIFACTS:
      if name == METRICS_JSON:
        continue
      if os.path.isdir(final(name)):
        shutil.rmtree(final(name))
      os.replace(os.path.join(self.staging, name), final(name))
    os.replace(os.path.join(self.staging, METRICS_JSON), final(METRICS_JSON))
    os.rmdir(self.staging)

  def discard(self) -> None:
    shutil.rmtree(self.staging, ignore_errors=True)
