"""The joint model (tfharm.models.joint): outputs, any size, round trips, do-no-harm form.

Random-weight models (imagenet_weights=False, perturbed) at 16-64 px: properties of the graph,
not of training.
"""
import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import colour
from tfharm.models import detector as det
from tfharm.models import joint
from trained_weights import perturb

CFG = joint.JointConfig(imagenet_weights=False)


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype("float32")


def _model(seed=0, cfg=CFG):
  model = joint.JointModel(cfg)
  perturb([l for l in model.layers if l.weights], seed)
  return model


@pytest.fixture(scope="module")
def model():
  return _model()


def _silence(model):
  """Detection logits that say 'none' everywhere: m ~ 1e-9."""
  layer = model.get_layer("detection_logits")
  kernel, bias = layer.get_weights()
  layer.set_weights([np.zeros_like(kernel), np.array([-10.0, -10.0, 10.0], "float32")])


def test_outputs_shapes_ranges_and_detector_conventions(model):
  x = _images((2, 32, 48, 3))
  out = model(x, training=False)
  probs, delta, harmonised = (out[k].numpy() for k in ("probs", "delta_l", "harmonised"))
  assert probs.shape == (2, 32, 48, 3) and delta.shape == (2, 32, 48, 1)
  assert harmonised.shape == x.shape and harmonised.dtype == np.float32
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  assert np.abs(delta).max() <= CFG.max_delta_l
  assert harmonised.min() >= 0.0 and harmonised.max() <= 1.0
  assert np.abs(harmonised - x).max() > 1e-3  # the perturbed model does change something
  # The output is the composite with L* += m * delta (a*, b* kept), m = max(p_neg, p_pos).
  m = det.soft_mask(det.detection_channels(probs)).numpy()
  lab = colour.rgb_to_lab(x)
  expected_l = np.clip(lab[..., :1] + m * delta, 0, 100)
  got = colour.rgb_to_lab(harmonised)
  inside = np.all((harmonised > 0.01) & (harmonised < 0.99), axis=-1)  # away from gamut clips
  np.testing.assert_allclose(got[..., 0][inside], expected_l[..., 0][inside], atol=0.05)
  np.testing.assert_allclose(got[..., 1:][inside], lab[..., 1:][inside], atol=0.3)


@pytest.mark.parametrize("h,w", [(8, 8), (24, 40), (64, 16)])
def test_any_size_divisible_by_the_stride(model, h, w):
  out = model(_images((1, h, w, 3)))
  assert out["probs"].shape == (1, h, w, 3) and out["harmonised"].shape == (1, h, w, 3)


def test_size_not_divisible_is_a_clear_error():
  with pytest.raises(ValueError, match="multiple of 8"):
    joint.check_size(tf.zeros((1, 37, 40, 3)))
  joint.check_size(tf.zeros((1, 40, 48, 3)))  # fits: no error


def test_silent_detection_returns_the_photo_bit_identical(model):
  silent = _model(seed=1)
  _silence(silent)
  x = _images((2, 32, 32, 3), seed=2)
  x[0, :4] = 0.0  # black and white pixels too
  x[0, 4:8] = 1.0
  out = silent(x, training=False)
  assert float(tf.reduce_max(det.soft_mask(out["probs"]))) < 1e-6
  assert np.abs(out["delta_l"].numpy()).max() > 1.0  # the L* head alone would change it
  np.testing.assert_allclose(out["harmonised"].numpy(), x, atol=1e-4)
  # Exactly m * delta == 0 (delta head zeroed): bit-identical, no colour round trip error.
  layer = silent.get_layer("delta_l_tanh")
  layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
  np.testing.assert_array_equal(silent(x, training=False)["harmonised"].numpy(), x)


def test_new_model_starts_nearly_silent():
  """The detection bias starts at p_none ~ 0.9 and the L* head at 0: an untrained model
  returns its input, so training starts from 'do no harm'."""
  fresh = joint.JointModel(CFG)
  x = _images((1, 32, 32, 3))
  out = fresh(x, training=False)
  assert float(tf.reduce_mean(out["probs"][..., 2])) > 0.8
  np.testing.assert_array_equal(out["harmonised"].numpy(), x)


def test_gradient_reaches_both_heads_and_not_the_frozen_trunk(model):
  x = tf.constant(_images((2, 16, 16, 3)))
  x = tf.concat([x[:1] * 0.0, x[1:]], axis=0)  # an all-black image: finite gradients there too
  target = tf.constant(_images((2, 16, 16, 3), seed=3))
  with tf.GradientTape() as tape:
    out = model(x, training=True)
    loss = tf.reduce_mean(tf.square(out["harmonised"] - target))
  names = [v.path for v in model.trainable_variables]
  grads = tape.gradient(loss, model.trainable_variables)
  assert not any(n.startswith("block") for n in names)  # the VGG16 convs are frozen
  by_name = dict(zip(names, grads))
  for n, g in by_name.items():
    assert g is not None and np.all(np.isfinite(g.numpy())), n
  assert float(tf.reduce_max(tf.abs(by_name["detection_logits/kernel"]))) > 0
  assert float(tf.reduce_max(tf.abs(by_name["delta_l_tanh/kernel"]))) > 0


def test_config_round_trip_and_keras_file_bit_identical(model, tmp_path):
  cfg = joint.JointConfig(imagenet_weights=False, context_width=32, decoder_widths=(16, 8, 8),
                          skip_widths=(8, 8, 4),
                          max_delta_l=30.0)
  small = _model(seed=4, cfg=cfg)
  again = joint.JointModel.from_config(small.get_config())
  assert again.cfg == cfg and again.count_params() == small.count_params()
  x = _images((2, 24, 32, 3), seed=5)
  path = str(tmp_path / "joint.keras")
  small.save(path)
  loaded = joint.load_joint(path)
  assert isinstance(loaded, joint.JointModel) and loaded.cfg == cfg
  for k in ("probs", "delta_l", "harmonised"):
    np.testing.assert_array_equal(loaded(x)[k].numpy(), small(x)[k].numpy(), err_msg=k)
  weights = str(tmp_path / "joint.weights.h5")
  small.save_weights(weights)
  from_weights = joint.load_joint(weights, cfg)
  np.testing.assert_array_equal(from_weights(x)["harmonised"].numpy(), small(x)["harmonised"].numpy())


def test_weights_of_another_config_fail_naming_both(model, tmp_path):
  path = str(tmp_path / "joint.weights.h5")
  model.save_weights(path)
  other = joint.JointConfig(imagenet_weights=False, context_width=32)
  with pytest.raises(ValueError, match="context_width=32"):
    joint.load_joint(path, other)
  with pytest.raises(FileNotFoundError):
    joint.load_joint(str(tmp_path / "missing.weights.h5"))
  keras_file = str(tmp_path / "other.keras")
  keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(keras_file)
  with pytest.raises(TypeError, match="not a JointModel"):
    joint.load_joint(keras_file)


def test_imagenet_trunk_is_vgg16(tmp_path):
  from tfharm import weights
  model = joint.JointModel(joint.JointConfig())
  reference = weights.load_vgg16_imagenet()
  for name in joint.VGG_LAYERS:
    for v, r in zip(model.get_layer(name).get_weights(), reference[name]):
      np.testing.assert_array_equal(v, r)
    assert not model.get_layer(name).trainable


@pytest.mark.parametrize("widths", [((32, 16), (64, 32)), ((8, 8, 4), (16, 8, 8))])
def test_region_correction_is_one_affine_l_map_per_image(widths):
  """correction="region": delta_l = shift + (s - 1) * (L* - mean under m), the same two numbers
  for every pixel of an image; the output is still the composite with L* += m * delta, and
  a .keras file round-trips it."""
  skip, dec = widths
  cfg = joint.JointConfig(imagenet_weights=False, correction="region", context_width=32,
                          skip_widths=skip, decoder_widths=dec)
  model = _model(seed=6, cfg=cfg)
  assert "delta_l_tanh" not in [l.name for l in model.layers]
  x = _images((2, 32, 40, 3), seed=7)
  out = model(x, training=False)
  delta = out["delta_l"].numpy()[..., 0]
  lab_l = colour.rgb_to_lab(x)[..., 0]
  for b in range(2):
    design = np.stack([np.ones(lab_l[b].size), lab_l[b].ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, delta[b].ravel(), rcond=None)
    np.testing.assert_allclose(design @ coef, delta[b].ravel(), atol=1e-3)  # affine in L*
    assert 1.0 / 3.1 - 1 <= coef[1] <= 3.1 - 1  # the scale stays within the data's bound
  assert np.abs(delta[0] - delta[1]).max() > 1e-4  # per image, not a constant
  m = det.soft_mask(det.detection_channels(out["probs"].numpy())).numpy()
  got = colour.rgb_to_lab(out["harmonised"].numpy())[..., 0]
  inside = np.all((out["harmonised"].numpy() > 0.01) & (out["harmonised"].numpy() < 0.99), -1)
  want = np.clip(lab_l + m[..., 0] * delta, 0, 100)
  np.testing.assert_allclose(got[inside], want[inside], atol=0.05)
  again = joint.JointModel.from_config(model.get_config())
  assert again.cfg == cfg


def test_region_correction_trains_its_parameters():
  cfg = joint.JointConfig(imagenet_weights=False, correction="region", context_width=16)
  model = _model(seed=8, cfg=cfg)
  x = tf.constant(_images((2, 16, 16, 3)))
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.square(model(x, training=True)["harmonised"] - 0.5))
  grads = dict(zip([v.path for v in model.trainable_variables],
                   tape.gradient(loss, model.trainable_variables)))
  assert float(tf.reduce_max(tf.abs(grads["region_params/kernel"]))) > 0
  assert all(np.all(np.isfinite(g.numpy())) for g in grads.values())


def test_unknown_correction_is_a_clear_error():
  with pytest.raises(ValueError, match="correction must be one of"):
    joint.JointConfig(correction="global")


LITE0 = joint.JointConfig(imagenet_weights=False, trunk="efficientnet_lite0", context_width=16,
                          skip_widths=(8, 8), decoder_widths=(16, 8))


def test_default_trunk_is_vgg16_and_unknown_trunks_are_refused():
  assert joint.JointConfig().trunk == "vgg16"
  names = {l.name for l in joint.JointModel(CFG).layers}
  assert set(joint.VGG_LAYERS) <= names and "stem_conv" not in names
  with pytest.raises(ValueError, match="unknown trunk 'resnet50'"):
    joint.JointConfig(trunk="resnet50")


def test_efficientnet_trunk_feeds_the_same_decoder_and_stays_frozen(tmp_path):
  model = _model(seed=6, cfg=LITE0)
  trunk = model.trunk_layer_names()
  assert trunk[0] == "stem_conv" and trunk[-1] == "block4a_expand_bn" and len(trunk) == 32
  assert not any(model.get_layer(n).trainable for n in trunk)
  assert not {v.path.split("/")[0] for v in model.trainable_variables} & set(trunk)
  x = tf.constant(_images((2, 32, 48, 3), seed=7))
  out = model(x, training=False)
  assert out["probs"].shape == (2, 32, 48, 3) and out["harmonised"].shape == (2, 32, 48, 3)
  assert model.get_layer("context_reduce").input.shape[-1] == 240  # the H/8 tap
  # Frozen batch norms use their moving statistics in training too.
  tap = keras.Model(model.inputs, model.get_layer("block4a_expand_activation").output)
  np.testing.assert_array_equal(tap(x, training=True).numpy(), tap(x, training=False).numpy())
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.square(model(x, training=True)["harmonised"] - 0.5))
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)  # the whole decoder learns
  # Config and weight file round trip, trunk included.
  again = joint.JointModel.from_config(model.get_config())
  assert again.cfg == LITE0
  path = str(tmp_path / "lite0.weights.h5")
  model.save_weights(path)
  expected = model(x)["harmonised"].numpy()  # after the training call moved the decoder's BN
  np.testing.assert_array_equal(joint.load_joint(path, LITE0)(x)["harmonised"].numpy(), expected)
  model.save(str(tmp_path / "lite0.keras"))  # what training exports: it carries the trunk
  loaded = joint.load_joint(str(tmp_path / "lite0.keras"))
  assert loaded.cfg == LITE0
  np.testing.assert_array_equal(loaded(x)["harmonised"].numpy(), expected)


def test_efficientnet_trunk_without_its_weights_names_the_setup(tmp_path, monkeypatch):
  from tfharm.weights import store
  monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "empty"))
  with pytest.raises(store.WeightsError, match=r"EfficientNet-Lite0 weights not found.*make "
                     "weights"):
    joint.JointModel(joint.JointConfig(trunk="efficientnet_lite0"))


def test_imagenet_trunk_is_efficientnet_lite0():
  from tfharm import weights
  from tfharm.weights import store
  if not store.is_converted(weights.weights_dir(), "efficientnet_lite0"):
    pytest.skip("EfficientNet-Lite0 not converted (optional; `make weights`)")
  model = joint.JointModel(dataclasses.replace(LITE0, imagenet_weights=True))
  arrays = weights.load_efficientnet_lite0()
  for v in model.get_layer("block4a_expand_conv").weights + model.get_layer("stem_bn").weights:
    key = f"{v.path.split('/')[0]}/{'moving_variance' if 'variance' in v.path else v.name}"
    np.testing.assert_array_equal(v.numpy(), arrays[key])
