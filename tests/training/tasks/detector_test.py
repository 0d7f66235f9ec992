"""The detector's training task: labels in, loss, validation metrics, crops, export, command.

Tiny inputs (16-64 px); needs the converted weights (`make weights`) where the ImageNet
backbone is the point.
"""
import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfharm import weights
from tfharm.models import detector as det
from tfharm.models import detector_aet as aet
from tfharm.models import layer_files
from tfharm.training.tasks import detector as detector_task
from tfharm.training.tasks.detector import DetectorTask, DetectorTaskConfig
from tests.models.detector_inputs import grey_pair, object_batch
from tests.models.trained_weights import perturb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype("float32")


def _task_batch(ratios=(0.6, 1.0, 1.5), size=16):
  comp, real, mask = grey_pair(list(ratios), size=size)
  task = DetectorTask(DetectorTaskConfig(det.DetectorConfig(imagenet_weights=False),
                                         image_size=size))
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
  task = DetectorTask(DetectorTaskConfig(image_size=None, train_crop=16))
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
  centred = detector_task.crop_labelled_batch(full, 16, tf.constant([3, 4], tf.int64), on_object=1.0)
  assert float(tf.reduce_sum(centred["mask"][0])) > 0 and float(tf.reduce_sum(centred["mask"][1])) > 0
  with pytest.raises(ValueError, match="multiple of 8"):
    detector_task.crop_labelled_batch(full, 12, tf.constant([0, 0], tf.int64))


def test_weighted_loss_upweights_the_rare_classes_and_dice():
  task, batch = _task_batch()
  uniform = tf.fill(tf.concat([tf.shape(batch["labels"]), [3]], 0), 1 / 3)
  auto = task.loss(batch, uniform)["loss"].numpy()
  flat = DetectorTask(DetectorTaskConfig(task.config.model, image_size=16,
                                         class_weights=(1.0, 1.0, 1.0))).loss(
      batch, uniform)["loss"].numpy()
  np.testing.assert_allclose(flat, np.log(3.0), rtol=1e-5)
  assert auto[0] > flat[0] and auto[1] == pytest.approx(flat[1])  # image 1 is all 'none'
  dice = DetectorTask(DetectorTaskConfig(task.config.model, image_size=16, dice_weight=1.0)).loss(
      batch, uniform)
  assert float(dice["dice"][0]) > 0 and np.all(dice["loss"] > auto)


def test_head_only_export_only_while_the_backbone_is_imagenet(tmp_path):
  """AET with a frozen VGG16 keeps the head-only file valid; an AET-trained VGG16 makes it
  insufficient: save_head_weights refuses and the task's export skips it (the full
  detector.weights.h5 / .keras hold the model)."""
  source = aet.DetectorAET(det.DetectorConfig())  # ImageNet VGG16, frozen
  perturb([l for l in source.trunk_layers() if l.name not in det.VGG_LAYERS], seed=1)
  frozen_vgg = str(tmp_path / "frozen.h5")
  layer_files.save_trunk_weights(source, frozen_vgg)
  task = DetectorTask(DetectorTaskConfig(det.DetectorConfig(), image_size=32, init=frozen_vgg))
  model = task.build_model()
  assert model.changed_backbone_layers() == []
  task.export(model, str(tmp_path))
  head = tmp_path / "detector.head.weights.h5"
  x = object_batch(n=1, size=32)[0]
  np.testing.assert_array_equal(det.load_detector(str(head))(x), model(x))
  head.unlink()
  perturb([source.trunk.get_layer("block3_conv2")], seed=2)  # as if AET trained the encoder
  trained_vgg = str(tmp_path / "trained.h5")
  layer_files.save_trunk_weights(source, trained_vgg)
  layer_files.load_trunk_weights(model, trained_vgg)
  assert model.changed_backbone_layers() == ["block3_conv2"]
  with pytest.raises(ValueError, match="differ from the ImageNet file"):
    layer_files.save_head_weights(model, str(head))
  task.export(model, str(tmp_path))
  assert not head.exists()


def fake_dataset(data_dir, split, *, config="256", batch_size=4, shuffle=True, augment=False,
                  repeat=False, seed=0, max_examples=None, size=32):
  del data_dir, config, augment
  n = max_examples or 8
  ratios = np.resize([0.6, 1.0, 1.5], n)
  comp, real, mask = grey_pair(list(ratios), size=size)
  ds = tf.data.Dataset.from_tensor_slices({"composite": comp, "real": real, "mask": mask})
  if shuffle:
    ds = ds.shuffle(n, seed=seed)
  if repeat:
    ds = ds.repeat()
  return ds.batch(batch_size, drop_remainder=repeat)


CLI = textwrap.dedent("""
    import functools
    from tests.training.tasks import detector_test
    from tfharm import train
    train.run(functools.partial(detector_test.fake_dataset, max_examples=6))
""")


@pytest.mark.slow  # ~45 s on 2 shared cores (a fresh TF process, export of a 68 MB .keras)
def test_two_training_steps_through_the_train_command(tmp_path):
  """`--model=detector` through tfharm.train (flags -> make_task -> loop -> export hook).

  A subprocess: absl flags are process-global (and main() reads them), so one command per process.
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
  code = CLI
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
