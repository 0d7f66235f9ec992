"""All-or-nothing output directories: an interrupted evaluation never leaves a metrics.json.

Everything is written into a hidden staging directory inside output_dir, then moved into
place; an old metrics.json is removed first and the new one is moved last, so a directory
with a metrics.json always holds one complete run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

METRICS_JSON = "metrics.json"
# Everything an evaluation writes; any of them present means the directory holds results.
ARTIFACTS = (METRICS_JSON, "per_image.csv", "per_category.csv", "table.md",
             "fig_distributions.png", "fig_differentials.png", "examples.png", "tensorboard")
STAGING_PREFIX = ".eval-partial-"


def existing_results(output_dir: str) -> list[str]:
  if not os.path.isdir(output_dir):
    return []
  return [a for a in ARTIFACTS if os.path.exists(os.path.join(output_dir, a))]


class StagedOutput:
  """`path(name)` inside a staging dir; `commit()` moves everything in, metrics.json last."""

  def __init__(self, output_dir: str):
    self.output_dir = os.path.abspath(output_dir)
    os.makedirs(self.output_dir, exist_ok=True)
    self.staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.output_dir)

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
