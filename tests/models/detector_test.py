"""Detector: architecture, ImageNet backbone, save/reload, labels.

Its head files: layer_files_test.py; its training task: tests/training/tasks/detector_test.py.

Tiny inputs (16-64 px) throughout; needs the converted weights (`make weights`, which
`make test` runs first).
"""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import weights
from tfharm.models import detector as det
from tfharm.models import detector_labels as lab
from detector_inputs import grey_pair
from trained_weights import perturb_trained_layers



@pytest.fixture(scope="module")
def model():
  return det.Detector()


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype("float32")


# --- architecture -------------------------------------------------------------------
def test_softmax_at_input_resolution_and_two_reported_channels(model):
  x = _images((2, 32, 48, 3))
  probs = model(x).numpy()
  assert probs.shape == (2, 32, 48, 3) and probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  two = det.detection_channels(probs)
  assert two.shape == (2, 32, 48, 2)
  np.testing.assert_array_equal(two, probs[..., :2])  # ch0 negative, ch1 positive
  np.testing.assert_array_equal(det.soft_mask(two)[..., 0], np.maximum(probs[..., 0], probs[..., 1]))


@pytest.mark.parametrize("h,w", [(8, 8), (24, 40), (64, 16)])
def test_any_size_divisible_by_8(model, h, w):
  assert model(_images((1, h, w, 3))).shape == (1, h, w, 3)


def test_size_not_divisible_by_8_fails_but_helper_pads_or_resizes(model):
  x = _images((1, 37, 53, 3))
  with pytest.raises(Exception):
    model(x)
  for method in ("pad", "resize"):
    out = det.detect_any_size(model, x, method=method)
    assert out.shape == (1, 37, 53, 2)
    assert np.all(np.isfinite(out)) and float(tf.reduce_max(out)) <= 1.0
  # padding a size that already fits changes nothing
  y = _images((1, 32, 40, 3), seed=1)
  np.testing.assert_array_equal(det.detect_any_size(model, y, "pad"), model(y)[..., :2])


def test_grey_rgba_and_uint8_inputs(model):
  rgb = _images((1, 16, 16, 3))
  grey = rgb[..., :1]
  np.testing.assert_array_equal(det.as_rgb(grey), np.repeat(grey, 3, -1))
  rgba = np.concatenate([rgb, np.ones_like(grey)], -1)
  np.testing.assert_allclose(det.detect_any_size(model, rgba), det.detect_any_size(model, rgb))
  u8 = (rgb * 255).round().astype(np.uint8)
  np.testing.assert_allclose(det.as_rgb(u8), u8 / 255.0, atol=1e-7)
  with pytest.raises(ValueError, match="channels"):
    det.as_rgb(np.zeros((1, 8, 8, 2), "float32"))


def test_parameter_count_from_the_layer_table(model):
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  bn = lambda c: 4 * c
  vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
         (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
  total = sum(conv(3, a, b) for a, b in vgg)
  for cin in (64, 128, 256, 512):  # side branches
    total += conv(3, cin, 128) + bn(128) + conv(1, 128, 128) + bn(128) + conv(1, 128, 3) + bn(3)
  total += 2 * (conv(1, 512, 512) + bn(512)) + conv(1, 512, 3)  # head on block 5
  cin = 15
  for w in (256, 128, 64):
    total += conv(3, cin, w) + bn(w) + conv(1, w, w) + bn(w)
    cin = w
  total += conv(1, 64, 3)
  assert model.count_params() == total == 16_917_698


def test_output_stride_8_and_block5_dilated(model):
  assert model.get_layer("block5_conv1").dilation_rate == (2, 2)
  assert model.get_layer("block4_conv1").dilation_rate == (1, 1)
  probe = keras.Model(model.input, model.get_layer("block5_pool").output)
  assert probe(_images((1, 64, 48, 3))).shape == (1, 8, 6, 512)


# --- backbone ---------------------------------------------------------------------
def test_backbone_equals_imagenet_file_and_is_frozen(model):
  ref = weights.load_vgg16_imagenet()
  assert tuple(ref) == det.VGG_LAYERS
  for name, (k, b) in ref.items():
    layer = model.get_layer(name)
    np.testing.assert_array_equal(layer.kernel.numpy(), k)
    np.testing.assert_array_equal(layer.bias.numpy(), b)
    assert not layer.trainable
  trainable = {v.path.split("/")[0] for v in model.trainable_variables}
  assert trainable and not trainable & set(det.VGG_LAYERS)
  n_trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  n_vgg = sum(k.size + b.size for k, b in ref.values())
  n_moving = 2 * sum(int(np.prod(l.moving_mean.shape)) for l in model.layers
                     if isinstance(l, keras.layers.BatchNormalization))
  assert n_trainable == model.count_params() - n_vgg - n_moving == 2_197_098


def test_unfrozen_encoder_is_trainable():
  m = det.Detector(det.DetectorConfig(freeze_encoder=False, imagenet_weights=False))
  assert all(m.get_layer(n).trainable for n in det.VGG_LAYERS)


def test_torchvision_normalisation_inside_the_model(model):
  """The first conv sees (x - mean) / std: reproduce block1_conv1 by hand."""
  x = _images((1, 8, 8, 3))
  k, b = weights.load_vgg16_imagenet()["block1_conv1"]
  norm = (x - np.array(det.IMAGENET_MEAN, "float32")) / np.array(det.IMAGENET_STD, "float32")
  expected = tf.nn.relu(tf.nn.conv2d(norm, k, 1, "SAME") + b)
  probe = keras.Model(model.input, model.get_layer("block1_conv1").output)
  np.testing.assert_allclose(probe(x), expected, atol=1e-5)


def test_missing_or_tampered_imagenet_weights_name_the_setup(tmp_path, monkeypatch):
  monkeypatch.setenv("TFHARM_WEIGHTS_DIR", str(tmp_path))
  with pytest.raises(weights.WeightsError, match="make weights"):
    det.Detector()
  # tampered: a copy of the real directory with one byte changed in the VGG file
  monkeypatch.undo()
  src = weights.weights_dir()
  bad = tmp_path / "bad"
  bad.mkdir()
  for name in ("manifest.json", "lpips_vgg.weights.h5", "lpips_alex.weights.h5"):
    data = bytearray(open(os.path.join(src, name), "rb").read())
    if name == "lpips_vgg.weights.h5":
      data[len(data) // 2] ^= 0xFF
    (bad / name).write_bytes(bytes(data))
  monkeypatch.setenv("TFHARM_WEIGHTS_DIR", str(bad))
  with pytest.raises(weights.WeightsError, match="tampered.*make weights"):
    det.Detector()


# --- save / reload -------------------------------------------------------------------
def test_keras_round_trip_is_bit_identical(tmp_path):
  m = det.Detector()
  perturb_trained_layers(m)
  x = _images((2, 16, 24, 3))
  expected = m(x, training=False).numpy()
  path = str(tmp_path / "d.keras")
  m.save(path)
  loaded = det.load_detector(path)
  assert isinstance(loaded, det.Detector) and loaded.cfg == m.cfg
  np.testing.assert_array_equal(loaded(x, training=False), expected)
  for a, b in zip(m.weights, loaded.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert all(not loaded.get_layer(n).trainable for n in det.VGG_LAYERS)


# --- labels -------------------------------------------------------------------------
def test_labels_follow_the_thresholds():
  ratios = [0.70, 0.84, 0.85, 1.0, 1.17, 1.18, 1.5]
  comp, real, mask = grey_pair(ratios)
  out = lab.make_labels(comp, real, mask)
  np.testing.assert_allclose(out["ratio"], ratios, rtol=2e-3)
  expected = [lab.NEGATIVE, lab.NEGATIVE, lab.NONE, lab.NONE, lab.NONE, lab.POSITIVE, lab.POSITIVE]
  np.testing.assert_array_equal(out["sign"], expected)
  labels = out["labels"].numpy()
  for i, c in enumerate(expected):
    assert np.all(labels[i][mask[i, ..., 0] > 0] == c)
    assert np.all(labels[i][mask[i, ..., 0] == 0] == lab.NONE)  # background is none
  np.testing.assert_array_equal(out["target"][..., 0], (labels != lab.NONE).astype("float32"))
  # configurable thresholds
  strict = lab.make_labels(comp, real, mask, lab.LabelConfig(tau_neg=0.9, tau_pos=1.1))
  np.testing.assert_array_equal(strict["sign"], [0, 0, 0, 2, 1, 1, 1])


def test_pixel_mode_and_empty_mask():
  comp, real, mask = grey_pair([0.7])
  comp = comp.copy()
  comp[0, 4:8, 4:12] = real[0, 4:8, 4:12]  # half the object unchanged
  out = lab.make_labels(comp, real, mask, lab.LabelConfig(mode="pixel"))
  labels = out["labels"].numpy()[0]
  assert np.all(labels[4:8, 4:12] == lab.NONE) and np.all(labels[8:12, 4:12] == lab.NEGATIVE)
  empty = lab.make_labels(comp, real, np.zeros_like(mask))
  assert float(empty["ratio"][0]) == 1.0 and int(empty["sign"][0]) == lab.NONE


def test_labels_in_tf_data_and_under_xla():
  comp, real, mask = grey_pair([0.7, 1.0, 1.4])
  ds = tf.data.Dataset.from_tensors((comp, real, mask)).map(lab.make_labels)
  from_data = next(iter(ds))
  jitted = tf.function(lab.make_labels, jit_compile=True)(comp, real, mask)
  np.testing.assert_array_equal(from_data["labels"], jitted["labels"])
  np.testing.assert_array_equal(jitted["sign"], [0, 2, 1])


def test_class_weights_formula():
  y = np.full((1, 20, 10), lab.NONE, "int32")
  y[0, 0, :4] = lab.NEGATIVE  # f_none / f_neg = 195 / 4
  y[0, 1, :1] = lab.POSITIVE  # 195 / 1: sqrt is 13.96, capped at 10
  w = lab.class_weights(y).numpy()
  np.testing.assert_allclose(w, [np.sqrt(195 / 4), 10.0, 1.0], rtol=1e-6)
  assert lab.class_weights(np.full((1, 4, 4), lab.NONE))[2] == 1.0
  with pytest.raises(ValueError):
    lab.LabelConfig(tau_neg=1.2)
