"""Calibrated abstention for the mask-free path: change nothing unless the detector is sure.

The detector's soft mask is never exactly 0, so without a gate every pixel of every photo moves
a little, and a detector that fires on a tenth of a harmonious photo moves that tenth. A `Gate`
keeps only confident pixels (soft mask >= `pixel_threshold`, kept at their soft value) and
abstains for the whole image when they cover less than `min_area` of it: the image then comes
back unchanged. Both numbers are chosen on the validation split (scripts/calibrate_gate.py,
which writes them with the SHA-256 of the weights they were chosen for: `load_gate`).
Pure TF, usable under tf.function(jit_compile=True).
"""
from __future__ import annotations

import dataclasses
import json

import tensorflow as tf

GATE_FORMAT = "tfharm-gate-v1"


@dataclasses.dataclass(frozen=True)
class Gate:
  pixel_threshold: float = 0.0  # 0 and min_area 0: the plain soft mask (no abstention)
  min_area: float = 0.0

  def __post_init__(self):
    if not 0.0 <= self.pixel_threshold < 1.0 or not 0.0 <= self.min_area < 1.0:
      raise ValueError(f"gate thresholds must lie in [0, 1): {self}")


def apply_gate(soft: tf.Tensor, gate: Gate) -> tf.Tensor:
  """(B, H, W, 1) soft mask -> the gated mask: confident pixels only, or all zeros."""
  confident = tf.cast(soft >= gate.pixel_threshold, soft.dtype)
  kept = soft * confident
  area = tf.reduce_mean(confident, axis=[1, 2, 3], keepdims=True)
  return tf.where(area >= gate.min_area, kept, tf.zeros_like(kept))


def save_gate(path: str, gate: Gate, weights_sha256: dict[str, str], chosen_on: dict) -> None:
  record = {"format": GATE_FORMAT, **dataclasses.asdict(gate), "weights_sha256": weights_sha256,
            "chosen_on": chosen_on}
  with open(path, "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")


def load_gate(path: str, weights_sha256: dict[str, str]) -> Gate:
  """The gate in `path`; ValueError if it was calibrated for other weights (a threshold is only
  meaningful for the detector and harmoniser it was chosen with)."""
  with open(path) as f:
    record = json.load(f)
  if record.get("format") != GATE_FORMAT:
    raise ValueError(f"{path} is not a gate file ({GATE_FORMAT})")
  recorded = record.get("weights_sha256", {})
  mismatched = sorted(k for k, v in weights_sha256.items() if recorded.get(k) != v)
  if mismatched:
    raise ValueError(f"{path} was calibrated for other {', '.join(mismatched)} weights "
                     f"(recorded {[recorded.get(k) for k in mismatched]}, given "
                     f"{[weights_sha256[k] for k in mismatched]}): re-run "
                     "scripts/calibrate_gate.py for these weights")
  return Gate(record["pixel_threshold"], record["min_area"])
