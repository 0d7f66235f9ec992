"""Test helper: write state dicts the way `torch.save` does, without torch.

The pickle names `torch._utils._rebuild_tensor_v2` and `torch.<Type>Storage` as GLOBALs and
refers to storages by persistent id, as torch's own writer does; the names resolve here to
stand-ins in fake `torch` modules, present only while pickling. Tensors may be non-contiguous
views and may share a storage, as in real checkpoints.
"""

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_STORAGES = {"<f4": "FloatStorage", "<f8": "DoubleStorage", "<f2": "HalfStorage",
             "<i8": "LongStorage", "<i4": "IntStorage", "|u1": "ByteStorage",
             "|b1": "BoolStorage"}


class Storage:
  """A flat array that tensors view; pickled as a persistent id, its bytes written apart."""

  def __init__(self, key: str, data: np.ndarray):
    self.key = key
    self.data = np.ascontiguousarray(data.ravel())


class Tensor:
  """A view (offset, size, stride in elements) of a Storage."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                     collections.OrderedDict())

  def numpy(self) -> np.ndarray:
    item = self.storage.data.itemsize
    return np.lib.stride_tricks.as_strided(
        self.storage.data[self.offset:], self.size, [s * item for s in self.stride]).copy()


def tensor(key: str, array: np.ndarray) -> Tensor:
  """A contiguous tensor with its own storage."""
  array = np.asarray(array)
  strides = [s // array.itemsize for s in np.array(array, order="C").strides]
  return Tensor(Storage(key, array), 0, array.shape, strides)


@contextlib.contextmanager
def _fake_torch():
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
    raise AssertionError(args)

  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in _STORAGES.values():
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  torch._utils = utils
  saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
  sys.modules.update({"torch": torch, "torch._utils": utils})
  try:
    yield torch
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v


def _pickle_state(state, legacy: bool) -> tuple[bytes, dict[str, Storage]]:
  storages = {}
  with _fake_torch() as torch:

    class _Pickler(pickle.Pickler):

      def persistent_id(self, obj):
        if not isinstance(obj, Storage):
          return None
        storages[obj.key] = obj
        stype = getattr(torch, _STORAGES[obj.data.dtype.str])
        pid = ("storage", stype, obj.key, "cpu", obj.data.size)
        return pid + (None,) if legacy else pid  # legacy ids carry view metadata

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(state)
  return buf.getvalue(), storages


def save_zip(state, name: str = "archive") -> bytes:
  """torch >= 1.6's container: <name>/data.pkl and one raw member per storage."""
  data, storages = _pickle_state(state, legacy=False)
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{name}/data.pkl", data)
    z.writestr(f"{name}/byteorder", b"little")
    for key, s in storages.items():
      z.writestr(f"{name}/data/{key}", s.data.tobytes())
    z.writestr(f"{name}/version", b"3\n")
  return buf.getvalue()


def save_legacy(state) -> bytes:
  """torch < 1.6's stream: magic, protocol, system info, state, sorted keys, then per storage
  its int64 element count and bytes (the format of the EfficientNet-Lite0 wheel's .pth)."""
  data, storages = _pickle_state(state, legacy=True)
  buf = io.BytesIO()
  for header in (0x1950A86A20F9469CFC6C, 1001,
                 {"protocol_version": 1001, "little_endian": True,
                  "type_sizes": {"short": 2, "int": 4, "long": 4}}):
    pickle.dump(header, buf, protocol=2)
  buf.write(data)
  keys = sorted(storages)
  pickle.dump(keys, buf, protocol=2)
  for key in keys:
    buf.write(struct.pack("<q", storages[key].data.size) + storages[key].data.tobytes())
  return buf.getvalue()
