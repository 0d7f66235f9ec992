"""The weights tfharm ships, as named presets (the keras-hub pattern): the one place that knows
where they live.

  tfharm.presets.get("harmoniser_256").weights_path   # a file inside the installed package
  tfharm.models.from_preset("harmoniser_256")         # the model, loaded (tfharm.models.presets)

The files are package data (setup.py), so a plain `pip install .` carries them; they are found
relative to this package, never relative to the working directory or the repository. Each preset
names its weight file, the model config it was trained with, and the `.metrics.json` record its
shipping script wrote (the numbers tfharm/presets/README.md prints and
tests/models/checkpoints_test.py re-measures). No TensorFlow here: the command-line tools check
their inputs before paying for importing it.

Adding a preset is one `Preset(...)` entry below, plus a `KINDS` entry when its kind of
network is new.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  kind: str  # which network: a key of KINDS
  weights: str  # file name in DIRECTORY
  metrics: str  # the shipping script's record, in DIRECTORY
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # model config kwargs
  description: str = ""

  @property
  def weights_path(self) -> str:
    return os.path.join(DIRECTORY, self.weights)

  @property
  def metrics_path(self) -> str:
    return os.path.join(DIRECTORY, self.metrics)

  def recorded_metrics(self) -> dict:
    with open(self.metrics_path) as f:
      return json.load(f)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("harmoniser_256", "harmoniser", "harmoniser_256.weights.h5",
           "harmoniser_256.metrics.json", {"image_size": 256},
           "DIH harmoniser at 256x256, float16 storage (tfharm/presets/README.md)"),
    # Only the layers trained on top of the frozen ImageNet VGG16: the backbone is rebuilt from
    # the converted ImageNet file (`python -m tfharm.weights`); the head file stores its config.
    Preset("detector_256", "detector", "detector_256.head.weights.h5",
           "detector_256.metrics.json", {},
           "perceptual luminance detector head, trained at 256x256 (tfharm/presets/README.md)"),
    # The joint model (docs/joint.md), float16 storage of all its weights (the frozen VGG16
    # trunk included); its record holds tfharm.eval's validation and test rows.
    Preset("joint_256", "joint", "joint_256.weights.h5", "joint_256.metrics.json", {},
           "joint detector-harmoniser, one network, trained at 256x256 (tfharm/presets/README.md)"),
)}
# Each kind of network: (module, loader, config class). tfharm.models.presets imports them by
# name, so a new kind of network is one entry here, not a loader in another package; no
# TensorFlow is imported until a network is loaded.
KINDS = {"harmoniser": ("tfharm.models.harmoniser", "load_harmoniser", "HarmoniserConfig"),
         "detector": ("tfharm.models.detector", "load_detector", "DetectorConfig"),
         "joint": ("tfharm.models.joint", "load_joint", "JointConfig")}
# The preset each kind of weights defaults to (a name; its file is get(name).weights_path).
DEFAULTS = {"harmoniser": "harmoniser_256", "detector": "detector_256", "joint": "joint_256"}
DEFAULT_HARMONISER = DEFAULTS["harmoniser"]
DEFAULT_DETECTOR = DEFAULTS["detector"]
DEFAULT_JOINT = DEFAULTS["joint"]
# The abstention gate calibrated on validation for the two default presets
# (scripts/calibrate_gate.py); it records their SHA-256 and is used only with them.
GATE_256 = os.path.join(DIRECTORY, "gate_256.json")


def get(name: str) -> Preset:
  """The preset called `name`; KeyError naming the available ones."""
  try:
    return PRESETS[name]
  except KeyError:
    raise KeyError(f"no preset {name!r}; available: {sorted(PRESETS)}") from None


def resolve(path_or_name: str | None, kind: str, default: str | None = None) -> str:
  """A weight file's path: a path is returned as given, a preset name (or None: `default`,
  else DEFAULTS[kind]) becomes its file. A preset of another kind is a ValueError."""
  name = (default or DEFAULTS.get(kind)) if path_or_name is None else path_or_name
  if name is None:
    raise ValueError(f"no {kind} weights given, and no preset is the {kind} default")
  if name not in PRESETS:
    return name
  preset = PRESETS[name]
  if preset.kind != kind:
    raise ValueError(f"preset {name!r} is a {preset.kind}, not a {kind}")
  return preset.weights_path


def weight_files(given: Mapping[str, str | None], kinds: Mapping[str, str]) -> dict[str, str]:
  """{role: file} for every role of `kinds` ({role: preset kind}, e.g. {"joint_weights":
  "joint"}), each from `given` (a path or preset name; missing or None: the kind's default).
  The one "missing weights" error: FileNotFoundError naming every missing file by its role
  (the command's flag), so a user fixes them all at once."""
  files = {role: resolve(given.get(role), kind) for role, kind in kinds.items()}
  missing = [f"--{role} {path}" for role, path in files.items() if not os.path.isfile(path)]
  if missing:
    raise FileNotFoundError(
        f"missing weights: {', '.join(missing)}. Pass a file written by `python -m "
        f"tfharm.train` (its workdir) or a preset name ({', '.join(sorted(PRESETS))}); the "
        "presets are package data of tfharm (reinstall it if one is missing); their recipes "
        "and records are in tfharm/presets/README.md.")
  return files
