"""The evaluation's rows (methods), and which systems a run scored. A system's rows, its
detection and its labels are in its spec (tfharm.systems.SYSTEMS); their images in
tfharm.models.methods; the metrics are the column table's (tfharm.evaluation.columns),
re-exported here for the graph.

A run scores any subset of the systems (`--systems`). Every table, figure and CSV finds what
was scored from its own keys (`scored`, `methods_in`, `detectors_in`, `photo_rows_in`,
`compared_system`), so a section that needs a system shows only when that system was scored."""
from __future__ import annotations

from tfharm import systems
from tfharm.evaluation.columns import (  # pylint: disable=unused-import  (re-exported)
    DETECTOR_METRICS, IMAGE_METRICS, LOWER_IS_BETTER)
from tfharm.models.methods import COMPOSITE

# Every run's first row: the composite itself (nothing done), what the shares are counted
# against; no system's.
REFERENCE_ROWS = (COMPOSITE,)
# The rows of a run of the paper's pipeline: the reference, then the paper's rows (Table 1),
# the ablations and the corrected variants; and its rows scored on unedited photos.
METHODS = REFERENCE_ROWS + systems.SYSTEMS["pipeline"].rows
REAL_PHOTO_METHODS = systems.SYSTEMS["pipeline"].photo_rows
# The joint model's rows (tfharm.systems.joint), when it is scored.
JOINT_METHODS = systems.SYSTEMS["joint"].rows
JOINT_MASK_FREE_METHODS = systems.SYSTEMS["joint"].photo_rows


def _has(keys: set, name: str, metric: str | None = None) -> bool:
  """`name` itself, or its column "name/metric" (any metric when None), is in `keys`."""
  if metric:
    return name in keys or f"{name}/{metric}" in keys
  return name in keys or any(k.startswith(f"{name}/") for k in keys)


def scored(keys) -> tuple[str, ...]:
  """The systems (names, in SYSTEMS order) with a row or a detection in `keys`: per-image or
  per-photo columns ("row/metric", "<detector>/metric"), or the keys of a summary
  (metrics.json: row names under "methods", detector names at the top)."""
  keys = set(keys)
  return tuple(name for name, s in systems.SYSTEMS.items()
               if any(_has(keys, row) for row in s.rows) or _has(keys, s.detector))


def methods_in(keys) -> tuple[str, ...]:
  """The rows in `keys` (per-image columns "method/metric" or method names), in table order:
  the composite, then each scored system's rows."""
  keys = set(keys)
  rows = REFERENCE_ROWS + tuple(m for name in scored(keys) for m in systems.SYSTEMS[name].rows)
  return tuple(m for m in rows if _has(keys, m, "mse"))


def detectors_in(keys) -> tuple[str, ...]:
  """The detection of every system with a row or detection in `keys`, in SYSTEMS order."""
  return tuple(systems.SYSTEMS[name].detector for name in scored(keys))


def photo_rows_in(keys) -> tuple[str, ...]:
  """The rows scored on unedited photos in a run (`keys`: its real-photo columns or rows)."""
  keys = set(keys)
  return tuple(m for s in systems.SYSTEMS.values() for m in s.photo_rows
               if _has(keys, m, "psnr"))


def compared_system(keys) -> systems.Spec:
  """The first system scored (in `keys`) that names the two rows its examples and differential
  figure compare (Spec.compared): the pipeline's C_p and C_s when it was scored."""
  for name in scored(keys):
    if systems.SYSTEMS[name].compared:
      return systems.SYSTEMS[name]
  raise ValueError(f"no system scored in these keys names the rows its figures compare "
                   f"(tfharm.systems.Spec.compared): {sorted(set(keys))[:8]}")
