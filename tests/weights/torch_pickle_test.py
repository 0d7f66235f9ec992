"""The torch-free state-dict reader (tfharm.weights.torch_pickle) on hand-made checkpoints."""

import collections
import io
import os
import pickle

import numpy as np
import pytest

import torch_format as tf_
from tfharm.weights import safe_pickle, torch_pickle

FORMATS = {"zip": tf_.save_zip, "legacy": tf_.save_legacy}


def _state():
  """What real checkpoints hold: a conv kernel stored as a transposed (TF-order) view, two
  tensors sharing one storage at offsets, an int64 counter, a 0-d tensor, float64 and uint8."""
  rng = np.random.default_rng(0)
  hwio = rng.normal(size=(3, 3, 2, 4)).astype("float32")  # bytes in TF order, viewed as OIHW
  storage = tf_.Storage("k", hwio)
  kernel = tf_.Tensor(storage, 0, (4, 2, 3, 3), (1, 4, 24, 8))
  shared = tf_.Storage("s", np.arange(10, dtype="float32"))
  return collections.OrderedDict([
      ("conv.weight", kernel),
      ("bn.weight", tf_.Tensor(shared, 0, (4,), (1,))),
      ("bn.bias", tf_.Tensor(shared, 4, (3, 2), (2, 1))),  # offset 4 in the same storage
      ("bn.num_batches_tracked", tf_.tensor("n", np.array(7, "int64"))),
      ("scale", tf_.tensor("d", np.array([0.5, -2.0]))),
      ("mask", tf_.tensor("u", np.array([[0, 255]], "uint8"))),
  ]), hwio


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reads_tensors_views_and_shared_storages(fmt):
  state, hwio = _state()
  got = torch_pickle.load_state_dict(FORMATS[fmt](state))
  assert list(got) == list(state)  # the file's order
  for key, ref in state.items():
    np.testing.assert_array_equal(got[key], ref.numpy())
    assert got[key].dtype == ref.storage.data.dtype and got[key].flags.c_contiguous
  np.testing.assert_array_equal(got["conv.weight"], hwio.transpose(3, 2, 0, 1))  # OIHW
  np.testing.assert_array_equal(got["bn.bias"], [[4, 5], [6, 7], [8, 9]])
  assert got["bn.num_batches_tracked"].shape == () and got["bn.num_batches_tracked"] == 7


def test_zip_container_name_is_free():
  """torch names the zip's folder after the file (or "archive"): any single folder reads."""
  state, _ = _state()
  got = torch_pickle.load_state_dict(tf_.save_zip(state, name="efficientnet-lite0"))
  assert set(got) == set(state)


class _RunsShell:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_refuses_code_execution(fmt, tmp_path):
  marker = tmp_path / "pwned"
  state, _ = _state()
  state["evil"] = _RunsShell(str(marker))
  data = FORMATS[fmt](state)
  with pytest.raises(safe_pickle.UnsafePickleError, match=r"refusing to load global (posix|os)\.system"):
    torch_pickle.load_state_dict(data)
  assert not marker.exists()


def test_refuses_other_globals_and_odd_persistent_ids():
  evil = b"\x80\x02cbuiltins\neval\nX\x06\x00\x00\x001+1==2\x85R."
  with pytest.raises(safe_pickle.UnsafePickleError, match="builtins.eval"):
    torch_pickle._unpickle_state_dict(io.BytesIO(evil))
  # A torch name that is not a storage type (torch.load would import and call it).
  with pytest.raises(safe_pickle.UnsafePickleError, match="torch.save"):
    torch_pickle._unpickle_state_dict(io.BytesIO(b"\x80\x02ctorch\nsave\n."))
  # persistent ids must be storage ids with a storage type, not anything the file chooses.
  for pid in ("x", ("storage", "FloatStorage", "k", "cpu", 1), ("module", 1, 2, 3, 4)):
    data = b"\x80\x02" + pickle.dumps(pid, protocol=2)[2:-1] + b"Q."
    with pytest.raises(safe_pickle.UnsafePickleError):
      torch_pickle._unpickle_state_dict(io.BytesIO(data))


def test_refuses_non_tensor_entries():
  state, _ = _state()
  state["note"] = "hello"
  with pytest.raises(safe_pickle.UnsafePickleError, match="note"):
    torch_pickle.load_state_dict(tf_.save_zip(state))
  with pytest.raises(safe_pickle.UnsafePickleError, match="top level"):
    torch_pickle.load_state_dict(tf_.save_zip([tf_.tensor("a", np.zeros(2, "float32"))]))


def test_malformed_files_are_format_errors():
  state, _ = _state()
  data = tf_.save_legacy(state)
  with pytest.raises(torch_pickle.CheckpointFormatError, match="ends inside storage"):
    torch_pickle.load_state_dict(data[:-1])  # truncated last storage
  with pytest.raises(torch_pickle.CheckpointFormatError, match="after the last storage"):
    torch_pickle.load_state_dict(data + b"\0")
  # A view reaching past its storage's end.
  bad = {"w": tf_.Tensor(tf_.Storage("k", np.zeros(4, "float32")), 2, (3,), (1,))}
  for save in FORMATS.values():
    with pytest.raises(torch_pickle.CheckpointFormatError, match="reads element 4"):
      torch_pickle.load_state_dict(save(bad))
  with pytest.raises(torch_pickle.CheckpointFormatError, match="legacy magic"):
    torch_pickle.load_state_dict(pickle.dumps(123, protocol=2) + data)
