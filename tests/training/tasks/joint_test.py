"""The joint model's training task: its loss, validation metrics, a short run, its flags.
Its run through the command (SIGKILL, resume): tests/train_test.py."""
import functools
import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

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
      "--joint_output_weight=7", "--joint_detection_weight=0.5", "--joint_max_delta_l=20",
      "--detector_class_weights=1,2,1", "--detector_tau_pos=1.3", "--joint_init=j.keras"])
  cfg = train.task_from_flags(fv).config
  assert cfg.output_weight == 7 and cfg.detection_weight == 0.5 and cfg.image_size == 128
  assert cfg.model.max_delta_l == 20 and cfg.class_weights == (1.0, 2.0, 1.0)
  assert cfg.labels.tau_pos == 1.3 and cfg.init == "j.keras"
