"""`from_preset(name)`: a shipped model by name (the table and the files: tfharm.presets).

  harmoniser = tfharm.models.from_preset("harmoniser_256")
  pipeline = tfharm.models.load_pipeline()  # the two default presets, end to end
"""
from __future__ import annotations

from typing import Callable

import keras

from tfharm import presets


def _harmoniser(preset: presets.Preset) -> keras.Model:
  from tfharm.models import harmoniser  # pylint: disable=g-import-not-at-top
  return harmoniser.load_harmoniser(preset.weights_path,
                                    harmoniser.HarmoniserConfig(**preset.config))


def _detector(preset: presets.Preset) -> keras.Model:
  from tfharm.models import detector  # pylint: disable=g-import-not-at-top
  cfg = detector.DetectorConfig(**preset.config) if preset.config else None
  return detector.load_detector(preset.weights_path, cfg)


def _joint(preset: presets.Preset) -> keras.Model:
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  return joint.load_joint(preset.weights_path,
                          joint.JointConfig(**preset.config) if preset.config else None)


# One loader per preset kind; a new kind of model adds its entry here.
LOADERS: dict[str, Callable[[presets.Preset], keras.Model]] = {
    "harmoniser": _harmoniser, "detector": _detector, "joint": _joint}


def from_preset(name: str) -> keras.Model:
  """The model of preset `name` with its shipped weights; FileNotFoundError if the file is
  not installed, KeyError for an unknown name."""
  preset = presets.get(name)
  return LOADERS[preset.kind](preset)
