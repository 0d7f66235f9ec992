"""Reads a PyTorch state dict (`torch.save(model.state_dict())`) into numpy, without torch.

A `.pth` file is a pickle that names torch's tensor-rebuilding function and storage classes;
`torch.load` (and `pickle.load`) would import and call whatever the file names. This reader
resolves only what a state dict of plain tensors needs and refuses everything else with
`UnsafePickleError` before it is imported:

  collections.OrderedDict         the state dict itself (and the empty backward-hooks dict)
  torch._utils._rebuild_tensor_v2  a tensor: (storage, offset, size, stride, ...)
  torch.<Type>Storage              only as a dtype tag inside a storage's persistent id

Storages are never objects from the pickle: their persistent ids `('storage', <Type>Storage,
key, location, numel)` are checked and their bytes read by this module, then each tensor is
cut out of its storage with its own offset and strides (a tensor need not be contiguous: the
EfficientNet-Lite0 checkpoint stores TF-transposed views) and copied.

Both containers torch writes are read:
  zip (torch >= 1.6): `<name>/data.pkl` + one raw member `<name>/data/<key>` per storage.
  legacy (torch < 1.6): five pickles in a row (magic number, protocol 1001, system info, the
    state dict, the sorted storage keys), then per key an int64 element count and the bytes.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from tfharm.weights.safe_pickle import UnsafePickleError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch storage class -> numpy dtype, little-endian (torch writes native order, checked below).
STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class CheckpointFormatError(ValueError):
  """The file is not a torch state dict this reader understands (truncated, views, ...)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageType:
  dtype: np.dtype


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageRef:
  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass(frozen=True, slots=True)
class _TensorRef:
  storage: _StorageRef
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
  if not (isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)):
    raise UnsafePickleError(f"tensor {what} {value!r} is not a tuple of non-negative ints")
  return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """Stands in for torch._utils._rebuild_tensor_v2: records the view, reads nothing."""
  del requires_grad, metadata  # training state; irrelevant to the values
  if not isinstance(storage, _StorageRef):
    raise UnsafePickleError(f"tensor storage is a {type(storage).__name__}, not a storage id")
  if type(storage_offset) is not int or storage_offset < 0:
    raise UnsafePickleError(f"bad tensor storage offset {storage_offset!r}")
  size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
  if len(size) != len(stride):
    raise UnsafePickleError(f"tensor size {size} and stride {stride} differ in rank")
  if backward_hooks:
    raise UnsafePickleError("tensor with backward hooks: not a plain state dict")
  return _TensorRef(storage, storage_offset, size, stride)


class _TorchUnpickler(pickle.Unpickler):

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor_v2
    if module == "torch" and name in STORAGE_DTYPES:
      return _StorageType(np.dtype(STORAGE_DTYPES[name]))
    raise UnsafePickleError(
        f"refusing to load global {module}.{name!s}: only tensors of a state dict are allowed "
        "in weight checkpoints (the file is corrupt, malicious or not a plain state dict)")

  def persistent_load(self, pid: Any) -> _StorageRef:
    # zip: ('storage', type, key, location, numel); legacy: the same + view_metadata.
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
      raise UnsafePickleError(f"unexpected persistent id {pid!r}")
    _, stype, key, location, numel = pid[:5]
    if not isinstance(stype, _StorageType):
      raise UnsafePickleError(f"storage type {stype!r} is not a torch storage class")
    if not (isinstance(key, str) and isinstance(location, str) and type(numel) is int
            and numel >= 0):
      raise UnsafePickleError(f"malformed storage id {pid!r}")
    if len(pid) == 6 and pid[5] is not None:
      raise CheckpointFormatError(f"storage {key} is a view of another storage: unsupported")
    return _StorageRef(key, stype.dtype, numel)


def _unpickle_state_dict(stream: io.BytesIO) -> dict[str, _TensorRef]:
  state = _TorchUnpickler(stream).load()
  if not isinstance(state, dict):
    raise UnsafePickleError(f"top level is {type(state).__name__}, expected a state dict")
  for key, value in state.items():
    if not isinstance(key, str) or not isinstance(value, _TensorRef):
      raise UnsafePickleError(f"state dict entry {key!r}: {type(value).__name__}, expected a "
                              "tensor under a string key")
  return state


def _to_array(ref: _TensorRef, data: bytes) -> np.ndarray:
  dtype, storage = ref.storage.dtype, ref.storage
  if len(data) != storage.numel * dtype.itemsize:
    raise CheckpointFormatError(f"storage {storage.key}: {len(data)} bytes for {storage.numel} "
                                f"elements of {dtype}")
  if 0 not in ref.size:
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= storage.numel:
      raise CheckpointFormatError(f"tensor reads element {last} of storage {storage.key}, "
                                  f"which has {storage.numel}")
  view = np.ndarray(ref.size, dtype, buffer=data, offset=ref.offset * dtype.itemsize,
                    strides=tuple(s * dtype.itemsize for s in ref.stride))
  return np.array(view, dtype=dtype.newbyteorder("="), order="C")  # a contiguous native copy


def _load_zip(data: bytes) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(io.BytesIO(data)) as z:
    pickles = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise CheckpointFormatError(f"expected one <name>/data.pkl in the zip, found {pickles}")
    prefix = pickles[0][:-len("data.pkl")]
    names = set(z.namelist())
    if f"{prefix}byteorder" in names and z.read(f"{prefix}byteorder") != b"little":
      raise CheckpointFormatError("big-endian torch checkpoint: unsupported")
    state = _unpickle_state_dict(io.BytesIO(z.read(pickles[0])))
    storages = {}
    for ref in state.values():
      member = f"{prefix}data/{ref.storage.key}"
      if member not in names:
        raise CheckpointFormatError(f"storage {member} missing from the zip")
      storages.setdefault(ref.storage.key, z.read(member))
  return {k: _to_array(ref, storages[ref.storage.key]) for k, ref in state.items()}


def _load_legacy(data: bytes) -> dict[str, np.ndarray]:
  stream = io.BytesIO(data)
  header = [_TorchUnpickler(stream).load() for _ in range(3)]  # plain ints and dicts only
  if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
    raise CheckpointFormatError("not a torch checkpoint (no zip, no legacy magic number)")
  if not (isinstance(header[2], dict) and header[2].get("little_endian") is True):
    raise CheckpointFormatError(f"big-endian or unknown legacy system info {header[2]!r}")
  state = _unpickle_state_dict(stream)
  keys = _TorchUnpickler(stream).load()
  refs = {ref.storage.key: ref.storage for ref in state.values()}
  if not (isinstance(keys, list) and sorted(refs) == sorted(keys)):
    raise CheckpointFormatError("the legacy storage key list does not match the tensors' storages")
  storages = {}
  for key in keys:  # in the file's order: int64 element count, then the elements
    head = stream.read(8)
    if len(head) != 8:
      raise CheckpointFormatError(f"file ends before storage {key}")
    (numel,) = struct.unpack("<q", head)
    if numel != refs[key].numel:
      raise CheckpointFormatError(f"storage {key}: {numel} elements, its id says {refs[key].numel}")
    storages[key] = stream.read(numel * refs[key].dtype.itemsize)
    if len(storages[key]) != numel * refs[key].dtype.itemsize:
      raise CheckpointFormatError(f"file ends inside storage {key}")
  if stream.read(1):
    raise CheckpointFormatError("unexpected bytes after the last storage")
  return {k: _to_array(ref, storages[ref.storage.key]) for k, ref in state.items()}


def load_state_dict(data: bytes) -> dict[str, np.ndarray]:
  """{name: contiguous numpy array} of a torch state dict file's bytes, in the file's order.

  Raises UnsafePickleError for anything but tensors in a (Ordered)dict, and
  CheckpointFormatError for a file that is truncated, big-endian or uses storage views.
  """
  if data[:4] == b"PK\x03\x04":
    return _load_zip(data)
  return _load_legacy(data)
