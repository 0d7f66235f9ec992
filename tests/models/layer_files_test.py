"""Weight files (tfharm/models/layer_files.py): the atomic writer, head files, trunk files.

Needs the converted weights (`make weights`) for the ImageNet backbone of the head-file tests.
"""
import os

import h5py
import numpy as np
import pytest

from tfharm.models import detector as det
from tfharm.models import layer_files
from trained_weights import perturb_trained_layers


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype("float32")


def test_atomic_path_replaces_only_a_complete_file(tmp_path):
  target = tmp_path / "model.weights.h5"
  target.write_bytes(b"old")
  with pytest.raises(RuntimeError):
    with layer_files.atomic_path(str(target), ".weights.h5") as tmp:
      assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path)
      with open(tmp, "wb") as f:
        f.write(b"half")
      raise RuntimeError("killed mid-write")
  assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.weights.h5"]
  with layer_files.atomic_path(str(target)) as tmp:
    with open(tmp, "wb") as f:
      f.write(b"new")
  assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.weights.h5"]


def test_a_failed_layer_file_write_leaves_no_file(tmp_path):
  """A write that fails half-way (here: an array h5py cannot store) leaves neither a file
  under the name nor a temporary beside it."""

  class Unstorable:
    name = "bad_layer"
    weights = [object()]

  target = tmp_path / "detector.head.weights.h5"
  with pytest.raises(Exception):
    layer_files.write_layer_groups(str(target), [Unstorable()], {"format": "x"})
  assert os.listdir(tmp_path) == []


def test_head_only_file_is_small_and_reloads_identically(tmp_path):
  m = det.Detector()
  perturb_trained_layers(m, seed=3)
  x = _images((1, 32, 32, 3))
  expected = m(x, training=False).numpy()
  path = str(tmp_path / "detector.head.weights.h5")
  layer_files.save_head_weights(m, path)
  size = os.path.getsize(path)
  assert size < 10e6, size  # ~2.2 M float32 values; the full model would be ~68 MB
  with h5py.File(path) as f:
    assert not set(f.keys()) & set(det.VGG_LAYERS)
  loaded = det.load_detector(path)
  np.testing.assert_array_equal(loaded(x, training=False), expected)
  # a fresh detector differs (so the comparison above can fail)
  assert not np.array_equal(det.Detector()(x, training=False), expected)


def test_head_file_with_a_missing_layer_is_refused(tmp_path):
  m = det.Detector(det.DetectorConfig(imagenet_weights=False))
  path = str(tmp_path / "h.weights.h5")
  layer_files.save_head_weights(m, path)
  with h5py.File(path, "a") as f:
    del f["head_final"]
  with pytest.raises(ValueError, match="head_final"):
    layer_files.load_head_weights(m, path)


def test_file_format_of_other_files(tmp_path):
  (tmp_path / "not.h5").write_bytes(b"not hdf5")
  assert layer_files.file_format(str(tmp_path / "not.h5")) is None
  assert layer_files.file_format(str(tmp_path / "missing.h5")) is None
  assert not layer_files.is_head_file(str(tmp_path / "not.h5"))
