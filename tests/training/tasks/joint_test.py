"""The joint model's training task: its loss, validation metrics, a short run, the command."""
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from tfharm import train
from tfharm import training
from tfharm.models import joint as joint_lib
from tfharm.models import detector_labels as labels_lib
from tfharm.training.tasks.joint import JointTask, JointTaskConfig
from tests.training.fake_data import SIZE, fake_dataset, latest_step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
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


def _opts(workdir, **kw):
  base = dict(workdir=str(workdir), data_dir=str(workdir), batch_size=4, eval_batch_size=8,
              steps=30, log_every=5, eval_every=0, checkpoint_every=10, max_eval_examples=8,
              augment=False, export=False)
  base.update(kw)
  return training.TrainOptions(**base)


def test_short_run_lowers_both_losses_and_exports(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=8)
  task = _task()
  batch = _batch(task, 8)
  first = task.loss(batch, task.build_model()(task.inputs(batch), training=True))
  logs = training.train(_opts(tmp_path, steps=80, learning_rate=3e-3, max_train_examples=8,
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


CLI = textwrap.dedent("""
    import functools
    from tests.training import fake_data
    from tfharm import train
    train.run(functools.partial(fake_data.fake_dataset, max_examples=32, size={size}))
""")


def _cli(args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.Popen([sys.executable, "-c", CLI.format(size=SIZE), *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _flagfile(tmp_path, workdir, steps, every):
  path = tmp_path / "joint.flags"
  path.write_text(textwrap.dedent(f"""\
      --model=joint
      --image_size={SIZE}
      --batch_size=4
      --steps={steps}
      --checkpoint_every={every}
      --log_every=2
      --eval_every=0
      --max_eval_examples=8
      --ema_decay=0.9
      --export=false
      --workdir={workdir}
      --data_dir={tmp_path}
      """))
  return str(path)


def test_sigkill_then_same_command_resumes(tmp_path):
  """The joint model through the command: SIGKILL mid-run, then the same command continues
  from the last checkpoint (step, optimiser, weight average) and the trunk is still VGG16's."""
  from tfharm import weights
  workdir = tmp_path / "work"
  ckpt_dir = str(workdir / "checkpoints")
  proc = _cli([f"--flagfile={_flagfile(tmp_path, workdir, 400, 2)}"])
  deadline = time.time() + 600
  while time.time() < deadline and (latest_step(ckpt_dir) or 0) < 4:
    if proc.poll() is not None:
      pytest.fail(f"training ended early: {proc.stdout.read()[-3000:]}")
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = latest_step(ckpt_dir)
  assert killed_at is not None and 4 <= killed_at < 400
  proc = _cli([f"--flagfile={_flagfile(tmp_path, workdir, killed_at + 3, 3)}"])
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert f"at step {killed_at}" in out
  reader = tf.train.load_checkpoint(ckpt_dir)
  assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == killed_at + 3
  iters = [n for n in reader.get_variable_to_shape_map() if "iteration" in n]
  assert iters and reader.get_tensor(iters[0]) == killed_at + 3, iters
  assert reader.get_tensor("ema/initialised/.ATTRIBUTES/VARIABLE_VALUE")
  model = joint_lib.JointModel(joint_lib.JointConfig())
  tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(ckpt_dir)).expect_partial()
  imagenet = weights.load_vgg16_imagenet()
  for name in joint_lib.VGG_LAYERS:
    for v, r in zip(model.get_layer(name).get_weights(), imagenet[name]):
      np.testing.assert_array_equal(v, r, err_msg=name)
