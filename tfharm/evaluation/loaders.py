"""The systems an evaluation scores (`--systems`), loaded from their weight flags, and the
abstention gate that goes with the pipeline's files (when it is scored): every "this file
cannot be used" becomes an EvaluationError naming it."""

from __future__ import annotations

import os

from absl import logging

from tfharm import presets
from tfharm import systems
from tfharm.evaluation.config import EvalConfig, EvaluationError
from tfharm.models import abstention


# The gate file's weights (scripts/calibrate_gate.py) -> the weight flags whose files they are.
GATE_WEIGHTS = {"detector": "detector_weights", "harmoniser": "harmoniser_weights"}


def gate_for(cfg: EvalConfig, sha256: dict[str, str]
             ) -> tuple[abstention.Gate, str | None] | None:
  """(gate, its path) for the scored files `sha256` (weight flag -> SHA-256), as load_gate;
  None when the files the gate is calibrated for were not scored (nothing uses a gate then;
  scored_systems refuses a --gate_file for such a run)."""
  if all(flag in sha256 for flag in GATE_WEIGHTS.values()):
    return load_gate(cfg.gate_file, {k: sha256[flag] for k, flag in GATE_WEIGHTS.items()})
  return None


def load_gate(path: str | None,
              weights_sha256: dict[str, str]) -> tuple[abstention.Gate, str | None]:
  """The gate for these weights; EvaluationError when a given or default file does not match."""
  if path is None:  # the shipped gate, only for the weights it was calibrated for
    if not os.path.exists(presets.GATE_256):
      return abstention.Gate(), None
    try:
      return abstention.load_gate(presets.GATE_256, weights_sha256), presets.GATE_256
    except ValueError as e:
      logging.warning("not using the shipped gate: %s", e)
      return abstention.Gate(), None
  try:
    return abstention.load_gate(path, weights_sha256), os.path.abspath(path)
  except (OSError, ValueError, KeyError) as e:
    raise EvaluationError(f"gate file: {e}") from e


def scored_systems(cfg: EvalConfig) -> tuple[str, ...]:
  """The systems of `cfg.systems` in SYSTEMS order (default: all, so the default system's
  rows are in every table without a flag, beside the paper's pipeline). EvaluationError for
  none, an unknown name, or weights given to a system left out (the user would get a table
  without the model they named)."""
  wanted = tuple(systems.SYSTEMS) if cfg.systems is None else tuple(cfg.systems)
  unknown = [name for name in wanted if name not in systems.SYSTEMS]
  if unknown:
    raise EvaluationError(f"unknown system {', '.join(map(repr, unknown))} in --systems; "
                          f"the systems are {', '.join(systems.SYSTEMS)}")
  if not wanted:
    raise EvaluationError(f"--systems names no system; one or more of "
                          f"{', '.join(systems.SYSTEMS)}, or leave it out for all")
  scored = tuple(name for name in systems.SYSTEMS if name in wanted)
  given = cfg.weights()
  for name, spec in systems.SYSTEMS.items():
    named = [f"--{flag}" for flag in spec.weights if given.get(flag)]
    if name not in scored and named:
      raise EvaluationError(f"{' and '.join(named)} given, but --systems={','.join(wanted)} "
                            f"leaves out {name}; add {name} to --systems or drop "
                            f"{' and '.join(named)}")
  gated = systems.owner(GATE_WEIGHTS["detector"])  # the system whose rows use the gate
  if cfg.gate_file and gated not in scored:
    raise EvaluationError(f"--gate_file given, but --systems={','.join(wanted)} leaves out "
                          f"{gated}, whose rows use it; add {gated} to --systems or drop "
                          "--gate_file")
  return scored


def open_system(name: str, cfg: EvalConfig, image_size: int):
  """(system at S = image_size, {weight flag: file}); EvaluationError for missing files, a
  file its network cannot take, or a preset of another kind."""
  spec = systems.spec(name)
  given = {flag: value for flag, value in cfg.weights().items() if flag in spec.weights}
  try:
    files = systems.weight_files(name, given)
    return systems.load(name, files, image_size=image_size), files
  except (ValueError, RuntimeError, FileNotFoundError) as e:  # RuntimeError: weights.WeightsError
    raise EvaluationError(str(e)) from e
