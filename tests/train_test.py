"""The command line (tfharm/train.py): flags and flagfiles -> configs -> the loop, in subprocesses."""
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
from tfharm.models.detector_labels import LabelConfig
from tests.training.fake_data import SIZE, latest_step as _latest_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


CLI = textwrap.dedent("""
    import functools
    from tests.training import fake_data
    from tfharm import train
    train.run(functools.partial(fake_data.fake_dataset, max_examples=32, size={size}))
""")


def _cli(args, size=SIZE, **kw):
  code = CLI.format(size=size)
  return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _flagfile(tmp_path, workdir, steps, extra=""):
  path = tmp_path / "run.flags"
  path.write_text(textwrap.dedent(f"""\
      # tiny run for the tests
      --model=harmoniser
      --image_size={SIZE}
      --batch_size=4
      --steps={steps}
      --checkpoint_every=5
      --log_every=5
      --eval_every=0
      --max_eval_examples=8
      --export=false
      --workdir={workdir}
      --data_dir={tmp_path}
      """) + extra)
  return str(path)


def test_sigkill_then_same_command_resumes(tmp_path):
  workdir = tmp_path / "work"
  ckpt_dir = str(workdir / "checkpoints")
  flagfile = _flagfile(tmp_path, workdir, steps=400)
  proc = _cli([f"--flagfile={flagfile}"])
  deadline = time.time() + 240
  while time.time() < deadline and (_latest_step(ckpt_dir) or 0) < 20:
    if proc.poll() is not None:
      pytest.fail(f"training ended early: {proc.stdout.read()}")
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)  # no chance to clean up
  proc.wait()
  killed_at = _latest_step(ckpt_dir)
  assert killed_at is not None and 20 <= killed_at < 400
  flagfile = _flagfile(tmp_path, workdir, steps=killed_at + 15)
  proc = _cli([f"--flagfile={flagfile}"])
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0, out
  assert f"at step {killed_at}" in out  # "Resumed from .../ckpt-N at step N."
  reader = tf.train.load_checkpoint(ckpt_dir)
  assert _latest_step(ckpt_dir) == killed_at + 15
  assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == killed_at + 15
  iters = [n for n in reader.get_variable_to_shape_map() if "iteration" in n]
  assert iters and reader.get_tensor(iters[0]) == killed_at + 15, iters


def _kill_then_resume(tmp_path, extra, size=SIZE):
  """Runs the command with `extra` flags (checkpoint_every=2), SIGKILLs it after its 4th step's
  checkpoint, re-runs it to 3 steps further and checks the resume (step, optimiser steps).
  Returns the checkpoint directory."""
  workdir = tmp_path / "work"
  ckpt_dir = str(workdir / "checkpoints")
  extra += "--checkpoint_every=2\n"
  proc = _cli([f"--flagfile={_flagfile(tmp_path, workdir, steps=200, extra=extra)}"], size=size)
  deadline = time.time() + 600  # ~30 CPU-s in all; generous for a shared machine
  while time.time() < deadline and (_latest_step(ckpt_dir) or 0) < 4:
    if proc.poll() is not None:
      pytest.fail(f"training ended early: {proc.stdout.read()[-3000:]}")
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = _latest_step(ckpt_dir)
  assert killed_at is not None and 4 <= killed_at < 200
  extra = extra.replace("--checkpoint_every=2", "--checkpoint_every=3")
  proc = _cli([f"--flagfile={_flagfile(tmp_path, workdir, steps=killed_at + 3, extra=extra)}"],
              size=size)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert f"at step {killed_at}" in out
  reader = tf.train.load_checkpoint(ckpt_dir)
  assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == killed_at + 3
  iters = [n for n in reader.get_variable_to_shape_map() if "iteration" in n]
  assert iters and reader.get_tensor(iters[0]) == killed_at + 3, iters
  return ckpt_dir


def _assert_imagenet_vgg(model, names, ckpt_dir):
  """The latest checkpoint's VGG16 convs `names` equal the ImageNet file's (frozen)."""
  from tfharm import weights
  tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(ckpt_dir)).expect_partial()
  imagenet = weights.load_vgg16_imagenet()
  for name in names:
    kernel, bias = model.get_layer(name).get_weights()
    np.testing.assert_array_equal(kernel, imagenet[name][0], err_msg=name)
    np.testing.assert_array_equal(bias, imagenet[name][1], err_msg=name)


@pytest.mark.slow  # ~70 s; the harmoniser's and the joint model's SIGKILL tests cover the command's resume
def test_detector_sigkill_then_same_command_resumes_with_crops(tmp_path):
  """The detector through the same command: seeded training crops, SIGKILL, resume; the
  frozen ImageNet backbone is bit-identical to the weights file afterwards."""
  from tfharm.models import detector as det
  ckpt_dir = _kill_then_resume(
      tmp_path, "--model=detector\n--image_size=32\n--detector_train_crop=16\n", size=32)
  _assert_imagenet_vgg(det.Detector(det.DetectorConfig()), det.VGG_LAYERS, ckpt_dir)


@pytest.mark.slow  # ~40 s; the same loop's resume is covered by the harmoniser's SIGKILL test
def test_joint_sigkill_then_same_command_resumes(tmp_path):
  """The joint model through the command: SIGKILL, resume (with its weight average); the
  frozen VGG16 trunk is still the ImageNet file's."""
  from tfharm.models import joint
  ckpt_dir = _kill_then_resume(tmp_path, "--model=joint\n--ema_decay=0.9\n")
  reader = tf.train.load_checkpoint(ckpt_dir)
  assert reader.get_tensor("ema/initialised/.ATTRIBUTES/VARIABLE_VALUE")
  _assert_imagenet_vgg(joint.JointModel(joint.JointConfig()), joint.VGG_LAYERS, ckpt_dir)


def test_unknown_flag_in_flagfile_fails_before_anything_starts(tmp_path):
  workdir = tmp_path / "work"
  flagfile = _flagfile(tmp_path, workdir, steps=5, extra="--learning_rat=0.1\n")
  proc = subprocess.run([sys.executable, "-m", "tfharm.train", f"--flagfile={flagfile}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "learning_rat" in proc.stderr
  assert not workdir.exists()


def test_shipped_flagfiles_parse_and_missing_data_dir_is_named(tmp_path):
  """The smoke config (which includes train_harmoniser.flags) has only known flags; with
  no dataset the command stops with a message naming data_dir, before creating anything."""
  workdir = tmp_path / "work"
  proc = subprocess.run(
      [sys.executable, "-m", "tfharm.train", "--flagfile=configs/smoke_train.flags",
       f"--data_dir={tmp_path / 'no_such_dir'}", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "Unknown command line flag" not in proc.stderr
  assert "no_such_dir" in proc.stderr and "does not exist" in proc.stderr, proc.stderr[-2000:]
  assert not workdir.exists()


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "configs"))
                                        if f.startswith(("train_", "smoke_train"))))
def test_every_shipped_flagfile_parses_into_a_valid_run(name, monkeypatch):
  """Each training flagfile (with the --data_dir/--workdir its comments ask for) has only known
  flags with valid values, and makes valid TrainOptions and a valid task config."""
  monkeypatch.chdir(REPO)  # flagfiles include each other by repository-relative paths
  fv = flags.FlagValues()
  train._define_flags(fv)  # pylint: disable=protected-access
  fv(["train", f"--flagfile=configs/{name}", "--data_dir=DATA", "--workdir=RUN"])
  opts = train.options_from_flags(fv)
  task = train.task_from_flags(fv)
  assert opts.workdir == "RUN" and task.name == fv.model
  if opts.train_source == "generator":
    assert fv.generator_weights  # the online configs name their corruption mix
  if "online" in name and fv.model != "joint":  # joint: nothing shipped to start from yet
    assert task.config.init, "an online fine-tuning config starts from the shipped weights"


def test_detector_flags_reach_the_task_config():
  fv = flags.FlagValues()
  train._define_flags(fv)  # pylint: disable=protected-access
  fv(["train", "--model=detector", "--data_dir=D", "--workdir=W", "--image_size=128",
      "--detector_tau_neg=0.7", "--detector_class_weights=1,2,1", "--detector_train_crop=64",
      "--nodetector_freeze_encoder", "--detector_init=x.h5"])
  cfg = train.task_from_flags(fv).config
  assert cfg.labels.tau_neg == 0.7 and cfg.labels.tau_pos == LabelConfig().tau_pos
  assert cfg.class_weights == (1.0, 2.0, 1.0) and cfg.train_crop == 64 and cfg.image_size == 128
  assert not cfg.model.freeze_encoder and cfg.init == "x.h5"
  fv = flags.FlagValues()
  train._define_flags(fv)  # pylint: disable=protected-access
  fv(["train", "--model=detector_aet", "--data_dir=D", "--workdir=W"])
  # one default for the VGG16 freeze, for both detector tasks (docs/training.md)
  assert train.task_from_flags(fv).config.model.freeze_encoder
