"""The evaluation's per-image metrics, one row each: what the graph scores, the CSV and JSON keys,
and every table and figure of the report are read from here, so a new metric (a key of
tfharm.metrics.image.image_metrics plus one row below) cannot reach the CSV and miss table.md.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Column:
  """One per-image metric as the report shows it."""
  key: str  # per_image.csv "method/<key>", metrics.json; the name the graph returns it under
  name: str  # short header: the terminal, the paper columns ("paper <name>")
  digits: int  # decimals in every table
  lower_is_better: bool
  unit: str = ""  # table.md and figure headers: "<name> (<unit>)"
  paper: bool = False  # Dolhasz et al. 2020 Table 1 reports it: a "paper <name>" column
  width: int = 10  # terminal columns
  log_scale: bool = False  # spans decades: plotted on a log axis when every value is > 0

  @property
  def header(self) -> str:
    return f"{self.name} ({self.unit})" if self.unit else self.name

  def format(self, value: float | None) -> str:
    return "–" if value is None else f"{value:.{self.digits}f}"


# An evaluated image against the real photograph (0-255 scale), in table order: the paper's
# three first.
IMAGE_COLUMNS = (
    Column("mse", "MSE", 2, lower_is_better=True, paper=True, log_scale=True),
    Column("psnr", "PSNR", 2, lower_is_better=False, unit="dB", paper=True, width=9),
    Column("lpips", "LPIPS", 4, lower_is_better=True, paper=True, width=9),
    Column("fmse", "fMSE", 1, lower_is_better=True, log_scale=True),
    Column("ssim", "SSIM", 4, lower_is_better=False, width=8),
)
# A soft mask against the ground-truth mask (tfharm.metrics.localisation).
DETECTOR_COLUMNS = (
    Column("iou", "IoU", 4, lower_is_better=False),
    Column("f1", "F1", 4, lower_is_better=False),
    Column("ap", "AP", 4, lower_is_better=False),
)

# The keys as the graph and older callers name them (tfharm.evaluation.methods re-exports).
IMAGE_METRICS = tuple(c.key for c in IMAGE_COLUMNS)
DETECTOR_METRICS = tuple(c.key for c in DETECTOR_COLUMNS)
LOWER_IS_BETTER = {c.key: c.lower_is_better for c in IMAGE_COLUMNS}
