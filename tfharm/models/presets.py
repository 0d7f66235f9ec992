"""A network by preset name or file: `load(path_or_name, kind)` and `from_preset(name)` (the
table and the files: tfharm.presets). The network loaders themselves (load_harmoniser, ...)
take files only, so this is the one step from a name to a loaded network.

  harmoniser = tfharm.models.from_preset("harmoniser_256")
  joint = tfharm.models.presets.load(flag_value, "joint")   # a file, a preset name or None
"""
from __future__ import annotations

from typing import Any, Callable

import keras

from tfharm import presets


def _harmoniser(path: str, cfg: Any) -> keras.Model:
  from tfharm.models import harmoniser  # pylint: disable=g-import-not-at-top
  return harmoniser.load_harmoniser(path, cfg)


def _detector(path: str, cfg: Any) -> keras.Model:
  from tfharm.models import detector  # pylint: disable=g-import-not-at-top
  return detector.load_detector(path, cfg)


def _joint(path: str, cfg: Any) -> keras.Model:
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  return joint.load_joint(path, cfg)


def _config(kind: str, config: dict) -> Any:
  if not config:
    return None
  from tfharm.models import detector, harmoniser, joint  # pylint: disable=g-import-not-at-top
  return {"harmoniser": harmoniser.HarmoniserConfig, "detector": detector.DetectorConfig,
          "joint": joint.JointConfig}[kind](**config)


# One loader per preset kind; a new kind of network adds its entry here.
LOADERS: dict[str, Callable[[str, Any], keras.Model]] = {
    "harmoniser": _harmoniser, "detector": _detector, "joint": _joint}


def load(path_or_name: str | None, kind: str, cfg: Any = None) -> keras.Model:
  """The `kind` network from a file or a preset name (None: the kind's default preset). A
  preset brings its own config unless `cfg` is given; ValueError for a preset of another kind,
  FileNotFoundError if the file is missing."""
  path = presets.resolve(path_or_name, kind)
  name = presets.DEFAULTS[kind] if path_or_name is None else path_or_name
  if cfg is None and name in presets.PRESETS:
    cfg = _config(kind, dict(presets.get(name).config))
  return LOADERS[kind](path, cfg)


def from_preset(name: str) -> keras.Model:
  """The network of preset `name` with its shipped weights; FileNotFoundError if the file is
  not installed, KeyError for an unknown name."""
  return load(name, presets.get(name).kind)
