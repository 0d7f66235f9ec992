"""Export the end-to-end model as a versioned SavedModel for TensorFlow Serving.

Layout: `<export_dir>/<version>/` (saved_model.pb, variables/), the layout
tensorflow_model_server watches. The SavedModel is written under a non-numeric temporary name
in `<export_dir>` and renamed into place, so a server polling the directory never sees a
half-written version. A killed export's temporaries are cleaned by the next one
(paths.clean_interrupted).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import tensorflow as tf

from tfharm.serving.paths import VersionExistsError, target
from tfharm.serving.signatures import ServingModule
from tfharm.systems.base import System


# Beyond the variables, a SavedModel holds its graph (saved_model.pb: 1.8 MB for the joint
# model, 2.8 MB for the detector + harmoniser) and a few small files.
_GRAPH_BYTES = 4 << 20


def export_bytes(system: System) -> int:
  """About what `export` writes for `system`: its variables (what variables.data holds, to
  0.3 %) plus 5 % and the graph's allowance. Measured: 13.4 MB asked for the joint model's
  10.6 MB, 110.0 MB for the detector + harmoniser's 103.6 MB."""
  sizes = {id(v): int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in system.weights}
  return int(sum(sizes.values()) * 1.05) + _GRAPH_BYTES


def export(system: System, export_dir: str, version: int | None = None,
           overwrite: bool = False, jit_compile: bool | None = None) -> str:
  """Writes `<export_dir>/<version>/` and returns its path. An existing version is refused
  (VersionExistsError) unless overwrite; then it is replaced only once the new one is written."""
  export_dir = os.path.abspath(export_dir)  # "x/new/.." names x; os.makedirs would make x/new
  version, final = target(export_dir, version, overwrite)
  os.makedirs(export_dir, exist_ok=True)
  tmp = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
  old = os.path.join(export_dir, f".old-{version}-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  module = ServingModule(system, jit_compile=jit_compile)
  try:
    tf.saved_model.save(module, tmp, signatures=module.signatures())
    replaced = os.path.exists(final)
    if replaced:
      os.rename(final, old)
    try:
      os.rename(tmp, final)
    except BaseException:
      if replaced:  # put the old version back rather than lose it
        os.rename(old, final)
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
  return final
