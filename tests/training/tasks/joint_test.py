"""The joint model's training task: its loss, validation metrics, a short run, its flags.
Its run through the command (SIGKILL, resume): tests/train_test.py."""
import functools
import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from tfharm import presets
from tfharm import train
from tfharm import training
from tfharm.models import joint as joint_lib
from tfharm.models import detector_labels as labels_lib
from tfharm.training.tasks.joint import JointTask, JointTaskConfig
from tests.training import loop_test
from tests.training.fake_data import SIZE, fake_dataset
CFG = joint_lib.JointConfig(imagenet_weights=False)


def _task(**kw):
  return JointTask(JointTaskConfig(CFG, image_size=SIZE, **kw))


def _batch(task, n=4):
  return task.transform(next(iter(fake_dataset("", "train", batch_size=n, shuffle=False))))


def test_loss_is_the_weighted_sum_and_zero_for_a_perfect_output():
  task = _task(detection_weight=2.0, output_weight=10.0)
  batch = _batch(task)
  perfect = {"probs": tf.one_hot(batch["labels"], 3), "harmonised": batch["real"],
             "delta_l": tf.zeros_like(batch["mask"])}
  assert float(tf.reduce_max(task.loss(batch, perfect)["loss"])) < 1e-5
  silent = {"probs": tf.one_hot(tf.fill(tf.shape(batch["labels"]), labels_lib.NONE), 3) * 0.98
            + 0.01, "harmonised": batch["composite"], "delta_l": tf.zeros_like(batch["mask"])}
  parts = task.loss(batch, silent)
  mse = tf.reduce_mean(tf.square(batch["composite"] - batch["real"]), axis=[1, 2, 3])
  np.testing.assert_allclose(parts["output_mse"], mse, rtol=1e-6)
  np.testing.assert_allclose(parts["loss"], 2.0 * parts["detection_loss"] + 10.0 * mse, rtol=1e-6)
  assert float(tf.reduce_min(parts["detection_loss"])) > 0.1  # the fake objects are suprathreshold
  with pytest.raises(ValueError, match="not both 0"):
    JointTaskConfig(detection_weight=0.0, output_weight=0.0)


def test_mask_output_term_trains_the_correction_through_the_true_mask():
  """The term is the composite's own error for delta_l = 0, ~0 for the true L* change (the
  detection head plays no part: a silent detection does not hide the correction's error)."""
  task = _task(output_weight=10.0, mask_output_weight=5.0)
  batch = _batch(task)
  # An L*-only composite (as the data's corruptions are): the real image 12 L* darker in the mask.
  shift = joint_lib.LightnessShift(dtype="float32")
  batch["composite"] = shift(batch["real"], tf.fill(tf.shape(batch["mask"]), -12.0), batch["mask"])
  silent = {"probs": tf.one_hot(tf.fill(tf.shape(batch["labels"]), labels_lib.NONE), 3),
            "harmonised": batch["composite"], "delta_l": tf.zeros_like(batch["mask"])}
  parts = task.loss(batch, silent)
  mse = tf.reduce_mean(tf.square(batch["composite"] - batch["real"]), axis=[1, 2, 3])
  np.testing.assert_allclose(parts["mask_output_mse"], mse, rtol=1e-5)
  np.testing.assert_allclose(parts["loss"], parts["detection_loss"] + 15.0 * mse, rtol=1e-5)
  fixed = task.loss(batch, {**silent, "delta_l": tf.fill(tf.shape(batch["mask"]), 12.0)})
  # ~0 (1e-15) but where the darkening clipped saturated fake colours: < 10 % per image
  assert float(tf.reduce_max(fixed["mask_output_mse"] / mse)) < 0.1
  np.testing.assert_allclose(fixed["output_mse"], mse, rtol=1e-6)  # mask-free output unchanged
  assert "mask_output_mse" not in _task().loss(batch, silent)  # off by default
  with pytest.raises(ValueError, match="mask_output_weight"):
    JointTaskConfig(mask_output_weight=-1.0)


def test_validation_scores_both_heads_and_doing_nothing():
  task = _task()
  batch = _batch(task)
  model = task.build_model()
  metrics = task.metrics(batch, model(task.inputs(batch), training=False))
  for key in ("iou", "sign_accuracy", "silence", "psnr", "mse", "fmse", "changed_fraction"):
    assert key in metrics and metrics[key].shape == (4,), key
  base = task.baseline(batch)
  assert float(tf.reduce_max(base["iou"])) == 0.0 and "psnr" in base
  np.testing.assert_allclose(metrics["changed_fraction"], 0.0)  # a new model is silent
  np.testing.assert_allclose(metrics["psnr"], base["psnr"], rtol=1e-5)


def test_short_run_lowers_both_losses_and_exports(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=8)
  task = _task()
  batch = _batch(task, 8)
  first = task.loss(batch, task.build_model()(task.inputs(batch), training=True))
  logs = training.train(loop_test._opts(tmp_path, steps=80, learning_rate=3e-3, max_train_examples=8,
                              export=True, batch_size=8), task, ds_fn)
  # Training-mode losses on the same 8 examples (80 steps are too few for BatchNorm's moving
  # statistics to settle, so the inference-mode loss lags behind).
  assert logs["detection_loss"] < 0.5 * float(tf.reduce_mean(first["detection_loss"])), logs
  assert logs["output_mse"] < 0.5 * float(tf.reduce_mean(first["output_mse"])), logs
  model = joint_lib.load_joint(os.path.join(tmp_path, "joint.keras"))
  out = model(task.inputs(batch), training=False)["harmonised"]
  assert np.all(np.isfinite(out.numpy()))


def test_joint_flags_reach_the_task_config():
  fv = flags.FlagValues()
  train._define_flags(fv)  # pylint: disable=protected-access
  fv(["train", "--model=joint", "--data_dir=D", "--workdir=W", "--image_size=128",
      "--joint_output_weight=7", "--joint_detection_weight=0.5", "--joint_mask_output_weight=3", "--joint_max_delta_l=20",
      "--detector_class_weights=1,2,1", "--detector_tau_pos=1.3", "--joint_init=j.keras",
      "--joint_trunk=efficientnet_lite0"])
  cfg = train.task_from_flags(fv).config
  assert cfg.output_weight == 7 and cfg.detection_weight == 0.5 and cfg.image_size == 128
  assert cfg.mask_output_weight == 3
  assert cfg.model.max_delta_l == 20 and cfg.class_weights == (1.0, 2.0, 1.0)
  assert cfg.model.trunk == "efficientnet_lite0"
  assert cfg.labels.tau_pos == 1.3 and cfg.init == "j.keras"


def test_init_takes_a_preset_name():
  """`--joint_init=joint_256` fine-tunes the shipped model (configs/train_joint_finetune.flags)."""
  shipped = joint_lib.load_joint(presets.get("joint_256").weights_path)
  model = _task(init="joint_256").build_model()
  for a, b in zip(model.get_weights(), shipped.get_weights()):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="not a joint"):
    _task(init="harmoniser_256").build_model()
