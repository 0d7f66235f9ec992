"""A network by preset name or file: `load(path_or_name, kind)` and `from_preset(name)` (the
table and the files: tfharm.presets). The network loaders themselves (load_harmoniser, ...)
take files only, so this is the one step from a name to a loaded network.

  harmoniser = tfharm.models.from_preset("harmoniser_256")
  joint = tfharm.models.presets.load(flag_value, "joint")   # a file, a preset name or None
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

import keras

from tfharm import presets


def _network(kind: str) -> tuple[Callable[[str, Any], keras.Model], type]:
  """The loader and config class of a kind of network (tfharm.presets.KINDS)."""
  module_name, loader, config = presets.KINDS[kind]
  module = importlib.import_module(module_name)
  return getattr(module, loader), getattr(module, config)


def load(path_or_name: str | None, kind: str, cfg: Any = None) -> keras.Model:
  """The `kind` network from a file or a preset name (None: the kind's default preset). A
  preset brings its own config unless `cfg` is given; ValueError for a preset of another kind,
  FileNotFoundError if the file is missing."""
  path = presets.resolve(path_or_name, kind)
  name = presets.DEFAULTS[kind] if path_or_name is None else path_or_name
  loader, config_class = _network(kind)
  if cfg is None and name in presets.PRESETS:
    config = dict(presets.get(name).config)
    cfg = config_class(**config) if config else None
  return loader(path, cfg)


def from_preset(name: str) -> keras.Model:
  """The network of preset `name` with its shipped weights; FileNotFoundError if the file is
  not installed, KeyError for an unknown name."""
  return load(name, presets.get(name).kind)
