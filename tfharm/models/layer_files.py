"""Weight files: the one atomic writer, and the detector's per-layer HDF5 files.

`atomic_path` is how every weight file of tfharm is written (training exports, these files,
the float16 checkpoints): to a temporary name beside the target, renamed onto it only once
complete, so a killed job never leaves something that looks like a finished file.

Per-layer format: one HDF5 group per layer name holding datasets "0", "1", ... in
`layer.weights` order (BatchNorm moving statistics included), and root attributes naming the
format and the model's `DetectorConfig` as JSON. Two kinds of file use it:
- head file (`HEAD_FORMAT`): only the layers a detector trains on top of the frozen ImageNet
  VGG16 (~9 MB instead of ~68 MB); loading rebuilds the VGG16 from the ImageNet file, whose
  SHA-256 the file records.
- trunk file (`TRUNK_FORMAT`): every layer up to the classifier, VGG16 included (AET may have
  trained it); what `--detector_init` starts a detector from after AET pre-training.
The models are duck-typed (`cfg`, `head_layers()`, `trunk_layers()`,
`changed_backbone_layers()`), so this module imports none of them and they can import it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from typing import Any, Iterator, Mapping, Sequence

import keras
import numpy as np

HEAD_FORMAT = "tfharm-detector-head-v1"
TRUNK_FORMAT = "tfharm-detector-trunk-v1"


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
  """A fresh temporary name beside `path` (ending in `suffix`, e.g. ".keras", which Keras
  insists on) to write to; renamed onto `path` if the block succeeds, removed if it fails."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
  os.close(fd)
  os.remove(tmp)  # the writer creates it, with the usual permissions (mkstemp's are 0600)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_layer_groups(path: str, layers: Sequence[keras.layers.Layer],
                       attrs: Mapping[str, str]) -> None:
  """One group per layer plus root attributes, written atomically."""
  import h5py  # pylint: disable=g-import-not-at-top
  with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
    for key, value in attrs.items():
      f.attrs[key] = value
    for layer in layers:
      group = f.create_group(layer.name)
      for i, v in enumerate(layer.weights):
        group.create_dataset(str(i), data=np.asarray(keras.ops.convert_to_numpy(v)))


def file_format(path: str) -> str | None:
  """The `format` attribute of an HDF5 file; None for another file or a missing one."""
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    with h5py.File(path, "r") as f:
      value = f.attrs.get("format")
  except OSError:
    return None
  return str(value) if value is not None else None


def read_attrs(path: str) -> dict[str, str]:
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, "r") as f:
    return {k: str(v) for k, v in f.attrs.items()}


def load_layer_groups(path: str, layers: Sequence[keras.layers.Layer], expected_format: str,
                      hint: str = "") -> None:
  """Assigns a per-layer file to `layers` after checking the format tag, the layer set, the
  array counts and every shape: a wrong file fails before anything is assigned."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, "r") as f:
    if f.attrs.get("format") != expected_format:
      raise ValueError(f"{path} is not {_KIND[expected_format]} ({expected_format}){hint}")
    pairs = _read_layer_groups(f, layers, path)
  for var, value in pairs:
    var.assign(value)


def _read_layer_groups(f, layers: Sequence[keras.layers.Layer], path: str) -> list[tuple[Any, Any]]:
  names = {l.name for l in layers}
  if set(f.keys()) != names:
    raise ValueError(f"{path}: layers differ from the model: missing "
                     f"{sorted(names - set(f.keys()))}, extra {sorted(set(f.keys()) - names)}")
  pairs = []
  for layer in layers:
    group = f[layer.name]
    values = [group[str(i)][()] for i in range(len(group))]
    if len(values) != len(layer.weights):
      raise ValueError(f"{path}: layer {layer.name} has {len(values)} arrays, "
                       f"the model {len(layer.weights)}")
    for var, value in zip(layer.weights, values):
      if tuple(var.shape) != value.shape:
        raise ValueError(f"{path}: {var.path} has shape {value.shape}, model {var.shape}")
      pairs.append((var, value))
  return pairs


_KIND = {HEAD_FORMAT: "a detector head file", TRUNK_FORMAT: "an AET trunk file"}


# --- head files ---------------------------------------------------------------------
def vgg_sha256() -> str:
  """SHA-256 of the converted ImageNet VGG16 file a head file's backbone is rebuilt from."""
  from tfharm.weights import store  # pylint: disable=g-import-not-at-top
  return store.sha256_file(store.verified_path("vgg"))


def save_head_weights(model, path: str) -> None:
  """Writes a Detector's trained (non-VGG16) layers; about 9 MB for the default detector.

  Refuses (ValueError) a model whose VGG16 convs are no longer the ImageNet ones: the file
  would silently reload the wrong backbone; save the whole model (.weights.h5 / .keras) instead.
  """
  changed = model.changed_backbone_layers()
  if changed:
    raise ValueError(f"the VGG16 convs {changed} differ from the ImageNet file (AET-initialised "
                     "or unfrozen encoder): a head-only file would reload the wrong backbone; "
                     "save the whole model (model.save_weights / .keras) instead")
  write_layer_groups(path, model.head_layers(), {
      "format": HEAD_FORMAT, "config": json.dumps(dataclasses.asdict(model.cfg)),
      "vgg16_sha256": vgg_sha256() if model.cfg.imagenet_weights else ""})


def is_head_file(path: str) -> bool:
  return file_format(path) == HEAD_FORMAT


def load_head_weights(model, path: str) -> None:
  """Loads a `save_head_weights` file into a Detector; every trained layer must be present."""
  load_layer_groups(path, model.head_layers(), HEAD_FORMAT)


# --- trunk files --------------------------------------------------------------------
def save_trunk_weights(model, path: str) -> None:
  """Writes every trunk layer of a Detector or DetectorAET (~68 MB for the default one)."""
  write_layer_groups(path, model.trunk_layers(), {
      "format": TRUNK_FORMAT, "config": json.dumps(dataclasses.asdict(model.cfg))})


def load_trunk_weights(model, path: str) -> None:
  """Loads a `save_trunk_weights` file into a Detector (or DetectorAET): every trunk layer
  must be in the file with matching shapes; the classifier keeps its initial weights."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"no AET trunk file at {path}")
  load_layer_groups(path, model.trunk_layers(), TRUNK_FORMAT,
                    hint="; train one with python -m tfharm.train "
                         "--flagfile=configs/train_detector_aet.flags")
