"""The harmonise command's model, kept as a small SavedModel so a run after the first starts fast.

Building the Keras models (~2 s here) and tracing the full-resolution graph (~2-4 s) cost more
than the image itself. The first run with given weights does both, harmonises, and then saves
the two functions it runs (tfharm.serving.signatures: `harmonise_uint8` and
`harmonise_with_mask`) with the variables alone, no Keras objects, under

  $TFHARM_CACHE_DIR (default ~/.cache/tfharm/harmonise)/<key>/

Later runs load that: no Keras import and no tracing (measured in bench/RESULTS.md, "CLI").
The key is a SHA-256 of everything the graph depends on: both weight files' bytes, the ImageNet
backbone's recorded hash, the correction, jit_compile, the TensorFlow version and the source
of the tfharm modules that build the graph; anything else changed means a new entry. The
newest KEEP entries are kept. Written to a temporary name and renamed: a killed run leaves no
entry that looks complete (its temporary directory is removed by the next run). The functions
are the very FunctionDefs traced in-process, so both give the same pixels (tested). An entry
that cannot be loaded (a damaged disk block, a truncated copy) is named in the log, removed,
and the run goes on with the model built in-process, which then caches it anew.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from typing import Any, Callable, Mapping

from absl import logging
import numpy as np

from tfharm import colour
from tfharm.cli import outputs

ENV_VAR = "TFHARM_CACHE_DIR"
KEEP = 3  # entries kept (each ~100 MB)
_TMP_RE = re.compile(r"^\.tmp-[0-9a-f]+-(\d+)$")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The modules whose code becomes the graph (and so the cache entry).
_SOURCES = ("colour.py", "metrics/device.py", "models", "systems", "serving/signatures.py",
            "weights")


def cache_dir() -> str:
  path = os.environ.get(ENV_VAR) or os.path.join("~", ".cache", "tfharm", "harmonise")
  return os.path.abspath(os.path.expanduser(path))


def _source_files() -> list[str]:
  files = []
  for entry in _SOURCES:
    path = os.path.join(_PACKAGE, entry)
    if os.path.isdir(path):
      files += sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".py"))
    else:
      files.append(path)
  return files


def key(weights: Mapping[str, str], correction: str, jit_compile: bool | None) -> str:
  """What the cached graph depends on, hashed: the weight files (`weights`:
  tfharm.systems.weight_files, so also which system runs), tfharm's source, the converted offline
  weights, the correction, XLA and TensorFlow's version (read from the installed package's
  metadata: no TensorFlow import)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  from tfharm.weights import store  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  labelled = [(name.removesuffix("_weights"), path) for name, path in sorted(weights.items())]
  labelled += [(os.path.relpath(p, _PACKAGE), p) for p in _source_files()]
  for label, path in labelled:
    h.update(label.encode())
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
  manifest = store.read_manifest(store.weights_dir()) or {}
  h.update(repr(sorted(manifest.get("files", {}).items())).encode())
  try:
    tf_version = metadata.version("tensorflow")
  except metadata.PackageNotFoundError:
    tf_version = "?"
  h.update(f"{correction}|{jit_compile}|{tf_version}".encode())
  return h.hexdigest()[:32]


class Runner:
  """The two functions of the harmonise command, on numpy arrays."""

  def __init__(self, predicted, with_mask, source: str):
    self._predicted, self._with_mask, self.source = predicted, with_mask, source

  def predicted(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> (harmonised (H, W, 3) uint8, gating mask (H, W) uint8)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    out = self._predicted(image=tf.constant(rgb[None]))
    return out["harmonised"].numpy()[0], out["mask"].numpy()[0, ..., 0]

  def with_mask(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 and (H, W, 1) float32 mask -> harmonised (H, W, 3) uint8."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    out = self._with_mask(image=tf.constant(rgb[None]), mask=tf.constant(mask[None], tf.float32))
    return out["harmonised"].numpy()[0]


def runner_from_module(module) -> Runner:
  """In-process: the ServingModule's own tf.functions."""
  return Runner(module.harmonise_uint8, module.harmonise_with_mask, "in-process")


def runner_from_signatures(module) -> Runner:
  """From the two exported signatures of any ServingModule-like object (serving_default's
  float mask rounded to uint8 as the graph does: round half to even)."""
  def predicted(image):
    out = module.serving_default(image=image)
    mask = colour.to_uint8(out["mask"].numpy())
    return {"harmonised": out["harmonised"], "mask": _Array(mask)}
  return Runner(predicted, module.harmonise_with_mask, "signatures")


class _Array:
  """A numpy array where the Runner expects a tensor (`.numpy()`)."""

  def __init__(self, value: np.ndarray):
    self.value = value

  def numpy(self) -> np.ndarray:
    return self.value


# One SavedModel per function: a run loads only the one it uses (loading costs about a second
# per 1,000 graph nodes here), and the with-mask one holds only the harmoniser's variables.
_PARTS = {"harmonise": "harmonise_uint8", "harmonise_with_mask": "harmonise_with_mask"}


def load(entry_key: str, rebuild: Callable[[], Runner] | None = None) -> Runner | None:
  """The cached functions for `entry_key` (each loaded when first called), or None if there
  is no complete entry. If a part cannot be loaded, the entry is removed (logged, naming it)
  and `rebuild()`'s runner serves both functions from then on; without `rebuild` the error
  is raised."""
  path = os.path.join(cache_dir(), entry_key)
  if not all(os.path.isfile(os.path.join(path, part, "saved_model.pb")) for part in _PARTS):
    return None
  loaded = {}

  def load_part(part):
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      model = tf.saved_model.load(os.path.join(path, part))
      return model, model.signatures[part]  # the model is kept alive with its signature
    except Exception as e:  # pylint: disable=broad-except  (a damaged file: any decoder's error)
      if rebuild is None:
        raise
      logging.warning("the cached model %s cannot be loaded (%s: %s); removed it, building the "
                      "model instead (this run caches it anew)", path, type(e).__name__,
                      str(e).splitlines()[0][:200] if str(e) else "")
      shutil.rmtree(path, ignore_errors=True)
      built = rebuild()
      loaded.update({"harmonise": (None, built._predicted),  # pylint: disable=protected-access
                     "harmonise_with_mask": (None, built._with_mask)})  # pylint: disable=protected-access
      return loaded[part]

  def function(part):
    def call(**inputs):
      if part not in loaded:
        loaded[part] = load_part(part)
      return loaded[part][1](**inputs)
    return call

  try:
    os.utime(path)  # most recently used
  except OSError:
    pass
  return Runner(function("harmonise"), function("harmonise_with_mask"), path)


def save(module: Any, entry_key: str) -> str | None:
  """Saves the ServingModule's two harmonise functions (variables only, no Keras objects)
  under `entry_key`; returns the path, or None (logged) if the cache cannot be written."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  root = cache_dir()
  final = os.path.join(root, entry_key)
  tmp = os.path.join(root, f".tmp-{entry_key}-{os.getpid()}")
  t = time.perf_counter()
  try:
    os.makedirs(root, exist_ok=True)
    clean(root)
    for part, method in _PARTS.items():
      holder = tf.Module()
      # Tracked: what the function captures (the harmoniser alone for the with-mask one).
      holder.weights = (list(module.system.variables) if part == "harmonise" else
                        module.system.mask_path_variables)
      concrete = getattr(module, method).get_concrete_function()
      tf.saved_model.save(holder, os.path.join(tmp, part), signatures={part: concrete})
    try:
      os.rename(tmp, final)
    except OSError:  # another run saved the same entry meanwhile
      shutil.rmtree(tmp, ignore_errors=True)
  except (OSError, ValueError, AssertionError, tf.errors.OpError) as e:
    shutil.rmtree(tmp, ignore_errors=True)
    logging.warning("could not cache the model in %s (%s); the next run will build it again",
                    root, str(e)[:200])
    return None
  logging.info("cached the model in %s (%.1f s); the next run starts faster", final,
               time.perf_counter() - t)
  return final


def clean(root: str | None = None) -> None:
  """Removes temporary entries of killed runs, and all but the KEEP most recent entries."""
  root = root or cache_dir()
  try:
    names = os.listdir(root)
  except OSError:
    return
  entries = []
  for name in names:
    path = os.path.join(root, name)
    m = _TMP_RE.match(name)
    if m:
      if not outputs.pid_alive(int(m.group(1))):
        shutil.rmtree(path, ignore_errors=True)
    elif re.fullmatch(r"[0-9a-f]{32}", name) and os.path.isdir(path):
      entries.append((os.path.getmtime(path), path))
  for _, path in sorted(entries, reverse=True)[KEEP - 1:]:  # room for the one being saved
    shutil.rmtree(path, ignore_errors=True)
