"""JointSystem: the joint model through the systems' interface, the full-resolution path
and the served signatures (a small random-weight model)."""
import numpy as np
import pytest
import tensorflow as tf

from tfharm.models import correction
from tfharm.models import detector as det
from tfharm.serving import exporter
from tfharm.serving.signatures import ServingModule
from tfharm.systems.joint import JointSystem
from tests.models.trained_weights import small_joint_model as _model

S = 32


@pytest.fixture(scope="module")
def pipe():
  return JointSystem(_model(), image_size=S)


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype("float32")


def test_at_size_is_the_joint_models_output_in_the_pipelines_dict(pipe):
  x = _images((2, S, S, 3))
  out, raw = pipe(x), pipe.joint(x, training=False)
  np.testing.assert_array_equal(out["harmonised"], raw["harmonised"])
  np.testing.assert_array_equal(out["detection"], raw["probs"][..., :2])
  np.testing.assert_array_equal(out["mask"], det.soft_mask(raw["probs"]))


def test_a_given_mask_gates_the_l_change(pipe):
  x = _images((1, S, S, 3), seed=1)
  zero = pipe({"image": x, "mask": np.zeros((1, S, S, 1), "float32")}, mask_source="ground_truth")
  np.testing.assert_array_equal(zero["harmonised"], x)
  ones = pipe({"image": x, "mask": np.ones((1, S, S, 1), "float32")}, mask_source="ground_truth")
  assert float(tf.reduce_max(tf.abs(ones["harmonised"] - x))) > 1e-3
  with pytest.raises(ValueError, match="ground_truth"):
    pipe(x, mask_source="ground_truth")
  with pytest.raises(ValueError, match="mask_source"):
    pipe(x, mask_source="binarised")


def test_any_size_grey_and_rgba_and_unmasked_pixels_unchanged(pipe):
  for channels in (1, 3, 4):
    x = _images((1, 45, 61, channels), seed=channels)
    out = pipe.any_size(x)
    assert out["harmonised"].shape == (1, 45, 61, 3) and out["mask"].shape == (1, 45, 61, 1)
    assert out["detection"].shape == (1, 45, 61, 2)
    assert np.all(np.isfinite(out["harmonised"].numpy()))
  # The full-resolution output is the pipeline's correction of the model's prediction at S.
  x = _images((1, 45, 61, 3), seed=7)
  out = pipe.any_size(x)
  zero = pipe.any_size({"image": x, "mask": np.zeros((1, 45, 61, 1), "float32")},
                       mask_source="ground_truth")
  np.testing.assert_array_equal(zero["harmonised"], x)  # mask 0: bit-identical
  assert float(tf.reduce_max(tf.abs(out["harmonised"] - x))) > 0


def test_silent_model_returns_any_size_photos_unchanged():
  silent = _model(seed=2)
  layer = silent.get_layer("detection_logits")
  kernel, _ = layer.get_weights()
  layer.set_weights([np.zeros_like(kernel), np.array([-30.0, -30.0, 30.0], "float32")])
  pipe = JointSystem(silent, image_size=S)
  x = _images((1, 50, 70, 3), seed=3)
  np.testing.assert_allclose(pipe.any_size(x)["harmonised"], x, atol=1e-6)


def test_config_round_trip(pipe):
  again = JointSystem.from_config(pipe.get_config())
  again.joint.set_weights(pipe.joint.get_weights())
  assert again.image_size == S and again.correction == correction.DEFAULT_CORRECTION
  x = _images((1, S, S, 3), seed=4)
  np.testing.assert_array_equal(again(x)["harmonised"], pipe(x)["harmonised"])
  with pytest.raises(ValueError, match="multiple of 8"):
    JointSystem(pipe.joint, image_size=30)


def test_served_signatures_match_any_size_and_survive_export(pipe, tmp_path):
  module = ServingModule(pipe, jit_compile=False)
  image = (_images((1, 45, 61, 3), seed=5) * 255).round().astype("uint8")
  served = module.serving_default(image=tf.constant(image))
  reference = pipe.any_size(image.astype("float32") / 255.0)
  diff = np.abs(served["harmonised"].numpy().astype(int) -
                np.round(np.clip(reference["harmonised"].numpy(), 0, 1) * 255).astype(int))
  assert diff.max() <= 1 and np.mean(diff > 0) < 1e-2
  np.testing.assert_allclose(served["mask"], reference["mask"], atol=1e-5)
  mask = np.zeros((1, 45, 61, 1), "float32")
  np.testing.assert_array_equal(
      module.harmonise_with_mask(image=tf.constant(image), mask=tf.constant(mask))["harmonised"],
      image)
  path = exporter.export(pipe, str(tmp_path / "serving"), version=1)
  loaded = tf.saved_model.load(path).signatures["serving_default"]
  np.testing.assert_array_equal(loaded(image=tf.constant(image))["harmonised"],
                                served["harmonised"])


def test_first_call_warns_nothing():
  """Keras's default build() warned on the first call of every cache-filling harmonise run."""
  import warnings  # pylint: disable=g-import-not-at-top
  from tests.models.trained_weights import small_joint_model  # pylint: disable=g-import-not-at-top
  pipe = JointSystem(small_joint_model(seed=1), image_size=32)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pipe(np.zeros((1, 32, 32, 3), "float32"))
  assert not [w for w in caught if "build()" in str(w.message)], [str(w.message) for w in caught]
