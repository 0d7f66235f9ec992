"""What an evaluation is asked to do (`EvalConfig`), and the error for input it cannot use
(`EvaluationError`, exit 2 in the command): shared by the loaders, the dataset and evaluator."""

from __future__ import annotations

import dataclasses

from tfharm import systems


class EvaluationError(Exception):
  """Bad input to the evaluation (data, weights, output dir), with what to do about it."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What to evaluate and where to write it; weights are paths or preset names (tfharm.presets),
  None means the default presets."""
  data_dir: str
  output_dir: str
  dataset_config: str = "256"
  split: str = "test"
  detector_weights: str | None = None
  harmoniser_weights: str | None = None
  joint_weights: str | None = None  # the joint model's file or preset (default: joint_256)
  # The systems scored (tfharm.systems names); None: every one. ("joint",) scores the joint
  # model alone (no pipeline: no paper columns, no gate), ("pipeline",) the pipeline alone.
  systems: tuple[str, ...] | None = None
  max_examples: int | None = None
  batch_size: int = 8
  lpips_net: str = "alex"
  jit_compile: bool | None = None  # None: tfharm.metrics.device.default_jit_compile()
  threshold: float = 0.5  # binarised mask and IoU/F1
  # The abstaining rows' gate (scripts/calibrate_gate.py); None: tfharm/presets/gate_256.json
  # when it exists (it must match the weights), else no gate.
  gate_file: str | None = None
  real_photos: bool = True  # also score the split's unedited photos (do-no-harm)
  overwrite: bool = False
  progress: bool = True

  def weights(self) -> dict[str, str | None]:
    """{weight flag: value} of every system (tfharm.systems.weight_flags)."""
    return {f: getattr(self, f, None) for f in systems.weight_flags()}
