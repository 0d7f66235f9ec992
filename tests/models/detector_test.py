"""Detector: architecture, ImageNet backbone, save/reload, labels, task, training.

Tiny inputs (16-64 px) throughout; needs the converted weights (`make weights`, which
`make test` runs first).
"""
import functools
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import colour
from tfharm import weights
from tfharm.models import detector as det
from tfharm.models import detector_labels as lab
from trained_weights import perturb_trained_layers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
def _grey_pair(ratios, size=16, l_real=50.0):
  """Real: grey L*=l_real; composite: the central object at L* = ratio * l_real."""
  n = len(ratios)
  mask = np.zeros((n, size, size, 1), "float32")
  mask[:, 4:12, 4:12] = 1.0
  lab_real = np.zeros((n, size, size, 3), "float32")
  lab_real[..., 0] = l_real
  lab_comp = lab_real.copy()
  lab_comp[..., 0] = np.where(mask[..., 0] > 0, l_real * np.asarray(ratios)[:, None, None], l_real)
  return colour.lab_to_rgb(lab_comp), colour.lab_to_rgb(lab_real), mask


def test_labels_follow_the_thresholds():
  ratios = [0.70, 0.84, 0.85, 1.0, 1.17, 1.18, 1.5]
  comp, real, mask = _grey_pair(ratios)
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
  comp, real, mask = _grey_pair([0.7])
  comp = comp.copy()
  comp[0, 4:8, 4:12] = real[0, 4:8, 4:12]  # half the object unchanged
  out = lab.make_labels(comp, real, mask, lab.LabelConfig(mode="pixel"))
  labels = out["labels"].numpy()[0]
  assert np.all(labels[4:8, 4:12] == lab.NONE) and np.all(labels[8:12, 4:12] == lab.NEGATIVE)
  empty = lab.make_labels(comp, real, np.zeros_like(mask))
  assert float(empty["ratio"][0]) == 1.0 and int(empty["sign"][0]) == lab.NONE


def test_labels_in_tf_data_and_under_xla():
  comp, real, mask = _grey_pair([0.7, 1.0, 1.4])
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


# --- task -------------------------------------------------------------------------
def _task_batch(ratios=(0.6, 1.0, 1.5), size=16):
  comp, real, mask = _grey_pair(list(ratios), size=size)
  task = det.DetectorTask(det.DetectorConfig(imagenet_weights=False), image_size=size)
  return task, task.transform({"composite": tf.constant(comp), "real": tf.constant(real),
                               "mask": tf.constant(mask)})


def test_task_loss_and_metrics_on_a_perfect_and_a_wrong_prediction():
  task, batch = _task_batch()
  perfect = tf.one_hot(batch["labels"], 3)
  loss = task.loss(batch, perfect)
  assert float(tf.reduce_max(loss["loss"])) < 1e-5
  m = task.metrics(batch, perfect)
  np.testing.assert_allclose(m["iou"].numpy()[[0, 2]], 1.0)
  assert np.isnan(m["iou"][1])  # subthreshold image: no IoU, counted as silence instead
  np.testing.assert_array_equal(m["sign_accuracy"].numpy()[[0, 2]], 1.0)
  assert float(m["silence"][1]) == 1.0 and np.isnan(m["silence"][0])
  # swap negative and positive: localisation still perfect, sign wrong
  swapped = tf.gather(perfect, [1, 0, 2], axis=-1)
  m2 = task.metrics(batch, swapped)
  np.testing.assert_allclose(m2["iou"].numpy()[[0, 2]], 1.0)
  np.testing.assert_array_equal(m2["sign_accuracy"].numpy()[[0, 2]], 0.0)
  assert float(tf.reduce_min(task.loss(batch, swapped * 0.98 + 0.01)["loss"][0])) > 1.0
  base = task.baseline(batch)  # always "none": silent, IoU 0
  assert float(base["silence"][1]) == 1.0 and float(base["iou"][0]) == 0.0


def test_near_silence_tolerates_detections_below_the_smallest_object():
  """silence fails on a single firing pixel; near_silence only past 1 % of the image."""
  task, batch = _task_batch(size=16)  # 256 pixels: 2 pixels < 1 % < 3 pixels
  none = tf.one_hot(tf.fill(tf.shape(batch["labels"]), 2), 3).numpy()
  for n_fired, near in ((0, 1.0), (2, 1.0), (3, 0.0)):
    probs = none.copy()
    probs[1].reshape(-1, 3)[:n_fired] = [0.0, 1.0, 0.0]  # image 1 is the subthreshold one
    m = task.metrics(batch, tf.constant(probs))
    assert float(m["near_silence"][1]) == near, n_fired
    assert float(m["silence"][1]) == float(n_fired == 0)
    np.testing.assert_allclose(m["false_alarm_fraction"][1], n_fired / 256)
    assert np.isnan(m["near_silence"][0])  # suprathreshold images do not count


def _labelled_batch(b=4, s=64):
  rng = np.random.default_rng(0)
  image = tf.constant(rng.uniform(size=(b, s, s, 3)), tf.float32)
  mask = np.zeros((b, s, s, 1), np.float32)
  mask[0, 40:50, 44:60] = 1  # small object near a corner
  mask[1, 2:12, 2:8] = 1
  mask[2, :, :] = 1  # whole image; example 3 has no object
  task = det.DetectorTask(image_size=None, train_crop=16)
  return task, {"composite": image, "real": image * 0.5, "mask": tf.constant(mask)}


def test_training_crops_are_exact_seeded_and_keep_the_object():
  task, batch = _labelled_batch()
  full = task.transform(batch)
  a = task.train_transform(batch, tf.constant([0, 1], tf.int64))
  b = task.train_transform(batch, tf.constant([0, 1], tf.int64))
  c = task.train_transform(batch, tf.constant([0, 2], tf.int64))
  for key in ("composite", "real", "mask", "labels", "target"):
    assert a[key].shape[1:3] == (16, 16), key
    np.testing.assert_array_equal(a[key], b[key])  # same seed, same crops
  assert not np.array_equal(a["composite"], c["composite"])  # another seed moves them
  np.testing.assert_array_equal(a["ratio"], full["ratio"])  # whole-object values kept
  img = full["composite"].numpy()
  for i in range(4):  # every crop is an exact window of its image, same window for all keys
    crop = a["composite"][i].numpy()
    hits = [(y, x) for y in range(49) for x in range(49)
            if np.array_equal(img[i, y:y + 16, x:x + 16], crop)]
    assert len(hits) == 1, i
    y, x = hits[0]
    np.testing.assert_array_equal(a["labels"][i], full["labels"][i, y:y + 16, x:x + 16])
    np.testing.assert_array_equal(a["mask"][i], batch["mask"][i, y:y + 16, x:x + 16])
  centred = det.crop_labelled_batch(full, 16, tf.constant([3, 4], tf.int64), on_object=1.0)
  assert float(tf.reduce_sum(centred["mask"][0])) > 0 and float(tf.reduce_sum(centred["mask"][1])) > 0
  with pytest.raises(ValueError, match="multiple of 8"):
    det.crop_labelled_batch(full, 12, tf.constant([0, 0], tf.int64))


def test_weighted_loss_upweights_the_rare_classes_and_dice():
  task, batch = _task_batch()
  uniform = tf.fill(tf.concat([tf.shape(batch["labels"]), [3]], 0), 1 / 3)
  auto = task.loss(batch, uniform)["loss"].numpy()
  flat = det.DetectorTask(task.cfg, image_size=16, class_weights=(1.0, 1.0, 1.0)).loss(
      batch, uniform)["loss"].numpy()
  np.testing.assert_allclose(flat, np.log(3.0), rtol=1e-5)
  assert auto[0] > flat[0] and auto[1] == pytest.approx(flat[1])  # image 1 is all 'none'
  dice = det.DetectorTask(task.cfg, image_size=16, dice_weight=1.0).loss(batch, uniform)
  assert float(dice["dice"][0]) > 0 and np.all(dice["loss"] > auto)


def _fake_dataset(data_dir, split, *, config="256", batch_size=4, shuffle=True, augment=False,
                  repeat=False, seed=0, max_examples=None, size=32):
  del data_dir, config, augment
  n = max_examples or 8
  ratios = np.resize([0.6, 1.0, 1.5], n)
  comp, real, mask = _grey_pair(list(ratios), size=size)
  ds = tf.data.Dataset.from_tensor_slices({"composite": comp, "real": real, "mask": mask})
  if shuffle:
    ds = ds.shuffle(n, seed=seed)
  if repeat:
    ds = ds.repeat()
  return ds.batch(batch_size, drop_remainder=repeat)


CLI = textwrap.dedent("""
    import functools, sys
    sys.path.insert(0, {tests!r})
    import detector_test
    from tfharm import train
    train.run(functools.partial(detector_test._fake_dataset, max_examples=6))
""")


@pytest.mark.slow  # ~45 s on 2 shared cores (a fresh TF process, export of a 68 MB .keras)
def test_two_training_steps_through_the_train_command(tmp_path):
  """`--model=detector` through tfharm.train (flags -> make_task -> loop -> export hook).

  A subprocess: tfharm.train defines absl flags at import, and tests/conftest.py imports
  tfharm.data.build, which defines `data_dir` too, so the two cannot share this process.
  """
  workdir = tmp_path / "work"
  flagfile = tmp_path / "d.flags"
  flagfile.write_text(textwrap.dedent(f"""\
      --model=detector
      --image_size=32
      --batch_size=2
      --eval_batch_size=4
      --steps=2
      --log_every=1
      --checkpoint_every=2
      --eval_every=0
      --max_eval_examples=4
      --detector_tau_neg=0.7
      --detector_class_weights=1,2,1
      --workdir={workdir}
      --data_dir={tmp_path}
      """))
  code = CLI.format(tests=os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", code, f"--flagfile={flagfile}"], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Done at step 2" in proc.stderr
  for k in ("iou=", "sign_accuracy=", "silence=", "ap="):
    assert k in proc.stderr, k
  assert "--detector_tau_neg=0.7" in (workdir / "flags.txt").read_text()
  head = workdir / "detector.head.weights.h5"
  assert head.exists() and head.stat().st_size < 10e6
  # the head file reproduces the trained model exported next to it
  full = det.load_detector(str(workdir / "detector.keras"))
  x = _images((1, 32, 32, 3))
  np.testing.assert_array_equal(det.load_detector(str(head))(x), full(x))
  assert not np.array_equal(det.Detector()(x), full(x))  # training changed the head
  # the VGG16 weights did not move (frozen)
  ref = weights.load_vgg16_imagenet()
  np.testing.assert_array_equal(full.get_layer("block3_conv2").kernel.numpy(), ref["block3_conv2"][0])
