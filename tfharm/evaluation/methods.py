"""The evaluation's rows (methods), and which of them a run scored. A system's rows
are in its spec (tfharm.systems.SYSTEMS); their images in tfharm.models.methods; the metrics are the column table's
(tfharm.evaluation.columns), re-exported here for the graph."""
from __future__ import annotations

from tfharm import systems
from tfharm.evaluation.columns import (  # pylint: disable=unused-import  (re-exported)
    DETECTOR_METRICS, IMAGE_METRICS, LOWER_IS_BETTER)

# The paper's pipeline: the paper's rows first (Table 1), then the ablations, then the
# corrected variants; and its rows scored on unedited photos (the do-no-harm check).
METHODS = systems.SYSTEMS["pipeline"].rows
REAL_PHOTO_METHODS = systems.SYSTEMS["pipeline"].photo_rows
# The joint model's rows (tfharm.systems.joint), when it is scored.
JOINT_METHODS = systems.SYSTEMS["joint"].rows
JOINT_MASK_FREE_METHODS = systems.SYSTEMS["joint"].photo_rows


def _others():
  return [s for name, s in systems.SYSTEMS.items() if name != "pipeline"]


def methods_in(keys) -> tuple[str, ...]:
  """METHODS, then the rows of every other system that was scored. `keys`: per-image columns
  ("method/metric") or method names."""
  keys = set(keys)
  return METHODS + tuple(m for s in _others() for m in s.rows if m in keys or f"{m}/mse" in keys)


def detectors_in(keys) -> tuple[str, ...]:
  """"detector", then the detection of every other system that was scored."""
  keys = set(keys)
  return ("detector",) + tuple(
      s.detector for s in _others()
      if any(k == s.detector or k.startswith(f"{s.detector}/") for k in keys))


def photo_rows_in(keys) -> tuple[str, ...]:
  """The rows scored on unedited photos in a run (`keys`: its real-photo columns or rows)."""
  keys = set(keys)
  return REAL_PHOTO_METHODS + tuple(m for s in _others() for m in s.photo_rows
                                    if m in keys or f"{m}/psnr" in keys)
