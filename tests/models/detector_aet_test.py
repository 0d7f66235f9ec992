"""The AET network (tfharm/models/detector_aet.py): shapes, parameters, the shared trunk.

The pretext task, its training and the trunk hand-over: tests/training/tasks/detector_aet_test.py.
"""
import numpy as np
import pytest
import tensorflow as tf

from tfharm.models import detector as det
from tfharm.models import detector_aet as aet
from detector_inputs import object_batch

NO_IMAGENET = det.DetectorConfig(imagenet_weights=False, freeze_encoder=False)


@pytest.fixture(scope="module")
def aet_model():
  return aet.DetectorAET(NO_IMAGENET)


def test_network_shapes_parameters_and_shared_layer_names(aet_model):
  real, mask = object_batch(n=2, size=32)
  out = aet_model({"original": real, "transformed": real[::-1]})
  assert out.shape == (2, 32, 32, 1) and out.dtype == tf.float32
  detector = det.Detector(NO_IMAGENET)
  # the Detector minus its classifier (64*3+3) plus aet_features (64*3+3) and aet_output (6+1)
  assert aet_model.count_params() == detector.count_params() + 7
  names = [l.name for l in aet_model.trunk_layers()]
  assert names == [l.name for l in detector.trunk_layers()]
  assert set(names) == {l.name for l in detector.layers if l.weights} - {"head_final"}
  # [L] trains the whole AET network, VGG16 included
  trainable = {v.path.split("/")[0] for v in aet_model.trainable_variables}
  assert set(det.VGG_LAYERS) <= trainable and "aet_output" in trainable
  # each output sees its own pair (the 2B trunk batch is split back correctly) ...
  for i in range(2):
    alone = aet_model({"original": real[i:i + 1], "transformed": real[::-1][i:i + 1]})
    np.testing.assert_allclose(alone[0], out[i], atol=1e-5)
  # ... in order: (original, transformed) is not (transformed, original)
  swapped = aet_model({"original": real[::-1], "transformed": real})
  assert not np.allclose(out.numpy(), swapped.numpy())
