"""Export the end-to-end model as a versioned SavedModel for TensorFlow Serving.

Layout: `<export_dir>/<version>/` (saved_model.pb, variables/), the layout
tensorflow_model_server watches. The SavedModel is written under a non-numeric temporary name
in `<export_dir>` and renamed into place, so a server polling the directory never sees a
half-written version. A killed export's temporaries are cleaned by the next one
(paths.clean_interrupted).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from typing import Iterator
import warnings

import numpy as np
import tensorflow as tf

from tfharm.cli import program
from tfharm.models.correction import DEFAULT_CORRECTION
from tfharm.models.detector import load_detector
from tfharm.models.harmoniser import load_harmoniser
from tfharm.models.joint_pipeline import JointPipeline, load_joint_pipeline
from tfharm.models.pipeline import HarmonisationPipeline
from tfharm.serving.paths import (DEFAULT_DETECTOR, DEFAULT_HARMONISER,  # pylint: disable=unused-import
                                  VersionExistsError, next_version, resolve_weights, target)
from tfharm.serving.signatures import ServingModule


class WeightsFileError(program.SetupError, ValueError):
  """A weights file that exists but cannot be loaded into its model (another model's file,
  another configuration's, a damaged or foreign file): a setup error of one line, naming the
  flag and the file, for every program that loads through here (harmonise, export, app)."""


def _why(error: Exception, what: str) -> str:
  """Keras's reason in a few words: its own message is up to 150 lines (every variable), and
  for a .keras file that is not a zip archive it says "File not found"."""
  text = str(error).strip()
  count = re.search(r"A total of (\d+) objects could not be loaded", text)
  if count or re.search(r"shape of the target variable|expected \d+ variables", text):
    layers = f": {count.group(1)} layers could not be loaded" if count else ""
    return (f"its weights do not fit the {what}{layers}; a file of another model or "
            "configuration?")
  if text.startswith("File not found: filepath="):
    return "not a .keras model file, which is a zip archive"
  if "file signature not found" in text:
    return "not an HDF5 weights file"
  first = text.splitlines()[0] if text else type(error).__name__
  return first if len(first) <= 200 else first[:197] + "..."


@contextlib.contextmanager
def _loading(flag: str, path: str, what: str) -> Iterator[None]:
  """Turns a failed load of `path` into WeightsFileError; Keras's warnings of that load (one
  per layer that did not fit) are dropped with it, and passed on if the load succeeds."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      yield
    except FileNotFoundError:
      raise
    except (ValueError, TypeError, OSError, KeyError) as e:
      raise WeightsFileError(f"{flag} {path}: cannot be loaded as the {what} "
                             f"({_why(e, what)})") from e
  for w in caught:
    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load_serving_pipeline(detector_weights: str | None = None,
                          harmoniser_weights: str | None = None,
                          correction: str = DEFAULT_CORRECTION, joint_weights: str | None = None
                          ) -> HarmonisationPipeline | JointPipeline:
  """The pipeline both the export and the harmonise CLI run (predicted soft mask): the joint
  model's if `joint_weights` is given, else the detector and harmoniser's. A file that cannot
  be loaded into its model raises WeightsFileError (named by its flag)."""
  if joint_weights:
    with _loading("--joint_weights", joint_weights, "joint model"):
      return load_joint_pipeline(joint_weights, correction=correction)
  detector_path, harmoniser_path = resolve_weights(detector_weights, harmoniser_weights)
  with _loading("--detector_weights", detector_path, "detector"):
    detector = load_detector(detector_path)
  with _loading("--harmoniser_weights", harmoniser_path, "harmoniser"):
    harmoniser = load_harmoniser(harmoniser_path)
  return HarmonisationPipeline(detector, harmoniser, correction=correction)


# Beyond the variables, a SavedModel holds its graph (saved_model.pb: 1.8 MB for the joint
# model, 2.8 MB for the detector + harmoniser) and a few small files.
_GRAPH_BYTES = 4 << 20


def export_bytes(pipeline: HarmonisationPipeline | JointPipeline) -> int:
  """About what `export` writes for `pipeline`: its variables (what variables.data holds, to
  0.3 %) plus 5 % and the graph's allowance. Measured: 13.4 MB asked for the joint model's
  10.6 MB, 110.0 MB for the detector + harmoniser's 103.6 MB."""
  sizes = {id(v): int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in pipeline.weights}
  return int(sum(sizes.values()) * 1.05) + _GRAPH_BYTES


def export(pipeline: HarmonisationPipeline | JointPipeline, export_dir: str, version: int | None = None,
           overwrite: bool = False, jit_compile: bool | None = None) -> str:
  """Writes `<export_dir>/<version>/` and returns its path. An existing version is refused
  (VersionExistsError) unless overwrite; then it is replaced only once the new one is written."""
  export_dir = os.path.abspath(export_dir)  # "x/new/.." names x; os.makedirs would make x/new
  version, final = target(export_dir, version, overwrite)
  os.makedirs(export_dir, exist_ok=True)
  tmp = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
  old = os.path.join(export_dir, f".old-{version}-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  module = ServingModule(pipeline, jit_compile=jit_compile)
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
