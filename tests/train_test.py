"""Tests for tfharm.train on synthetic data with the make_dataset contract."""
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import train
from tfharm.models import checkpoints
from tfharm.models.harmoniser import HarmoniserConfig
from tfharm.weight_average import WeightAverage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16  # smallest DIH: two blocks; keeps every test run to seconds


def fake_dataset(data_dir, split, *, config="256", batch_size=4, shuffle=True, augment=False,
                 repeat=False, seed=0, max_examples=None, size=SIZE, nan_at_batch=None):
  """Random data honouring the tfharm.data.pipeline.make_dataset contract.

  real: smooth random colours; composite: real with the object's brightness scaled, so the
  mapping composite -> real is learnable. nan_at_batch poisons one batch of the stream.
  """
  del data_dir, config, augment
  n = max_examples or 64
  rng = np.random.default_rng(0 if split == "train" else 1)
  base = rng.uniform(0.2, 0.8, (n, 1, 1, 3)).astype("float32")
  ramp = np.linspace(-0.1, 0.1, size, dtype="float32")[None, :, None, None]
  real = np.clip(base + ramp, 0, 1)
  real = np.broadcast_to(real, (n, size, size, 3)).copy()
  mask = np.zeros((n, size, size, 1), "float32")
  mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
  gain = rng.choice([0.6, 1.4], (n, 1, 1, 1)).astype("float32")
  composite = np.where(mask > 0, np.clip(real * gain, 0, 1), real).astype("float32")
  ds = tf.data.Dataset.from_tensor_slices({
      "composite": composite, "real": real, "mask": mask,
      "category": rng.integers(0, 80, n), "image_id": np.arange(n, dtype="int64")})
  if shuffle:
    ds = ds.shuffle(n, seed=seed)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=repeat)
  if nan_at_batch is not None:
    def poison(i, b):
      bad = tf.fill(tf.shape(b["composite"]), float("nan"))
      return dict(b, composite=tf.where(i == nan_at_batch, bad, b["composite"]))
    ds = ds.enumerate().map(poison)
  return ds


def _opts(workdir, **kw):
  base = dict(workdir=str(workdir), data_dir=str(workdir), batch_size=4, eval_batch_size=8,
              steps=30, log_every=5, eval_every=0, checkpoint_every=10, max_eval_examples=16,
              augment=False, export=False)
  base.update(kw)
  return train.TrainOptions(**base)


def _task(**kw):
  return train.HarmoniserTask(HarmoniserConfig(image_size=SIZE, **kw))


def _latest_step(ckpt_dir):
  latest = tf.train.latest_checkpoint(ckpt_dir)
  return int(latest.rsplit("-", 1)[-1]) if latest else None


def test_short_run_decreases_loss_and_exports(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=32)
  t = _task()
  model = t.build_model()
  batch = next(iter(ds_fn("", "train", batch_size=32, shuffle=False)))
  first = float(tf.reduce_mean(t.loss(batch, model(t.inputs(batch), training=False))["loss"]))
  logs = train.train(_opts(tmp_path, steps=150, learning_rate=1e-3, max_train_examples=32,
                           export=True), t, ds_fn)
  assert logs["step"] == 150 and logs["optimizer_iterations"] == 150
  assert logs["loss"] < 0.5 * first, (logs["loss"], first)
  # The exported weights load into a fresh model.
  fresh = t.build_model()
  fresh.load_weights(os.path.join(tmp_path, "harmoniser.weights.h5"))
  assert os.path.exists(os.path.join(tmp_path, "harmoniser.keras"))
  assert os.path.isdir(os.path.join(tmp_path, "logs", "train"))


def test_mask_region_loss_ignores_background():
  t = train.HarmoniserTask(HarmoniserConfig(image_size=SIZE), loss_region="mask")
  batch = next(iter(fake_dataset("", "train", batch_size=2, shuffle=False)))
  pred = batch["real"] * 2.0 - 1.0
  off_mask = pred + (1.0 - batch["mask"]) * 0.5  # wrong only outside the mask
  assert float(tf.reduce_max(t.loss(batch, off_mask)["loss"])) == 0.0
  whole = train.HarmoniserTask(HarmoniserConfig(image_size=SIZE))
  assert float(tf.reduce_min(whole.loss(batch, off_mask)["loss"])) > 0.0


def test_image_and_mask_loss_is_the_sum_of_both_regions():
  batch = next(iter(fake_dataset("", "train", batch_size=2, shuffle=False)))
  pred = batch["real"] * 2.0 - 1.0 + 0.3 * batch["mask"] + 0.1  # off inside and outside
  region = {r: train.HarmoniserTask(HarmoniserConfig(image_size=SIZE), loss_region=r).loss(
      batch, pred)["loss"].numpy() for r in ("image", "mask", "image_and_mask")}
  np.testing.assert_allclose(region["mask"], 0.16, rtol=1e-4)  # (0.3 + 0.1)^2 inside
  np.testing.assert_allclose(region["image_and_mask"], region["image"] + region["mask"], rtol=1e-6)
  assert np.all(region["image"] < region["mask"])


def test_image_size_mismatch_is_named(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=8, size=32)
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="image_size"):
    train.train(_opts(tmp_path, steps=2), _task(), ds_fn)


def test_semantic_branch_trains(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  logs = train.train(_opts(tmp_path, steps=3, checkpoint_every=3), _task(semantic=True), ds_fn)
  assert logs["step"] == 3 and np.isfinite(logs["semantic_ce"])


def test_harmoniser_validation_also_scores_the_l_moments_output():
  """Validation tracks what tfharm returns (the L* moment correction), not only the raw output:
  a prediction that is the real image blurred has poor raw metrics but, corrected, recovers a
  composite whose object was only shifted in L*."""
  rng = np.random.default_rng(0)
  real = tf.constant(rng.uniform(0.2, 0.6, (2, 16, 16, 3)).astype("float32"))
  mask = tf.concat([tf.ones((2, 16, 6, 1)), tf.zeros((2, 16, 10, 1))], axis=2)
  darker = tf.clip_by_value(real - 0.1, 0.0, 1.0)
  composite = darker * mask + real * (1.0 - mask)
  blurred = tf.nn.avg_pool2d(real, 3, 1, "SAME")
  batch = {"composite": composite, "real": real, "mask": mask}
  m = _task().metrics(batch, blurred * 2.0 - 1.0)
  assert {"mse", "psnr", "fmse", "ssim", "l_moments_mse", "l_moments_psnr",
          "l_moments_fmse"} <= set(m)
  np.testing.assert_allclose(m["mse"], train.image_metrics(blurred, real, mask)["mse"], rtol=1e-6)
  assert np.all(m["l_moments_psnr"].numpy() > m["psnr"].numpy() + 3)
  assert np.all(m["l_moments_psnr"].numpy() > train.image_metrics(composite, real, mask)["psnr"].numpy() + 3)


def test_validation_metrics_known_values():
  real = tf.zeros((1, 16, 16, 3))
  pred = tf.concat([tf.ones((1, 16, 8, 3)) * (10 / 255), tf.zeros((1, 16, 8, 3))], axis=2)
  mask = tf.concat([tf.ones((1, 16, 4, 1)), tf.zeros((1, 16, 12, 1))], axis=2)
  m = train.image_metrics(pred, real, mask)
  np.testing.assert_allclose(m["mse"], [50.0], rtol=1e-5)  # half the pixels off by 10
  np.testing.assert_allclose(m["fmse"], [100.0], rtol=1e-5)  # the masked columns are all off
  np.testing.assert_allclose(m["psnr"], [10 * np.log10(255**2 / 50)], rtol=1e-5)
  assert float(train.image_metrics(real, real, mask)["psnr"][0]) == 100.0  # capped, not inf
  assert train._mean_dict({"fmse": [np.array([1.0, np.nan, 3.0])]}) == {"fmse": 2.0}


def test_resume_continues_step_and_optimizer_state(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  train.train(_opts(tmp_path, steps=10, checkpoint_every=5), _task(), ds_fn)
  logs = train.train(_opts(tmp_path, steps=14, checkpoint_every=5), _task(), ds_fn)
  assert logs["step"] == 14 and logs["optimizer_iterations"] == 14
  assert _latest_step(os.path.join(tmp_path, "checkpoints")) == 14


def test_resume_applies_the_new_learning_rate(tmp_path):
  """The rate is optimizer state in the checkpoint; --learning_rate must win on resume."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  train.train(_opts(tmp_path, steps=5, checkpoint_every=5, learning_rate=1e-3), _task(), ds_fn)
  train.train(_opts(tmp_path, steps=6, checkpoint_every=5, learning_rate=2e-5), _task(), ds_fn)
  lr = tf.train.load_variable(os.path.join(tmp_path, "checkpoints", "ckpt-6"),
                              "optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE")
  np.testing.assert_allclose(lr, 2e-5, rtol=1e-6)


def test_weight_average_turned_on_at_resume_is_seeded_and_used(tmp_path):
  """A run resumed from a checkpoint without an average seeds it from the restored weights
  (not from zeros); the average is checkpointed, restore_training_checkpoint loads it (or
  the raw weights on request), and the export holds it."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  ckpt_dir = os.path.join(tmp_path, "checkpoints")
  train.train(_opts(tmp_path, steps=5, checkpoint_every=5, learning_rate=1e-3), _task(), ds_fn)
  assert not checkpoints.checkpoint_has_average(os.path.join(ckpt_dir, "ckpt-5"))
  train.train(_opts(tmp_path, steps=8, checkpoint_every=1, keep_checkpoints=10,
                    learning_rate=1e-3, ema_decay=0.5, export=True), _task(), ds_fn)
  assert checkpoints.checkpoint_has_average(os.path.join(ckpt_dir, "ckpt-8"))
  model = _task().build_model()
  w = {}
  for k in (5, 6, 7, 8):
    checkpoints.restore_training_checkpoint(model, ckpt_dir, f"ckpt-{k}", use_average=False)
    w[k] = [v.numpy() for v in model.trainable_variables]
  checkpoints.restore_training_checkpoint(model, ckpt_dir, "ckpt-8")
  # a5 = w5, a_k = 0.5 a_(k-1) + 0.5 w_k  =>  a8 = w5/8 + w6/8 + w7/4 + w8/2
  for i, v in enumerate(model.trainable_variables):
    expected = w[5][i] / 8 + w[6][i] / 8 + w[7][i] / 4 + w[8][i] / 2
    np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-7)
  assert any(not np.allclose(a.numpy(), b) for a, b in zip(model.trainable_variables, w[8]))
  exported = _task().build_model()
  exported.load_weights(os.path.join(tmp_path, "harmoniser.weights.h5"))
  for a, b in zip(exported.trainable_variables, model.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_weight_average_update_and_swap():
  v = tf.Variable([0.0, 4.0])
  avg = WeightAverage([v], decay=0.75)
  avg.reset()
  v.assign([4.0, 0.0])
  avg.update()
  np.testing.assert_allclose(avg.averages[0].numpy(), [1.0, 3.0])
  with avg.swapped_in():
    np.testing.assert_allclose(v.numpy(), [1.0, 3.0])
  np.testing.assert_array_equal(v.numpy(), [4.0, 0.0])  # the trained weights come back exactly
  with pytest.raises(ValueError, match="decay"):
    WeightAverage([v], decay=1.0)


def _model_weights(ckpt_dir):
  reader = tf.train.load_checkpoint(ckpt_dir)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
          if n.startswith("model/")}


@pytest.mark.slow
def test_data_iterator_position_is_restored(tmp_path):
  """With the iterator checkpointed, 4 steps + resume + 4 steps equals 8 straight steps;
  without it the resumed run sees other batches (the control shows the test can fail)."""
  ds_fn = functools.partial(fake_dataset, max_examples=24)
  def run(name, split_at, iterator):
    kw = dict(checkpoint_every=4, checkpoint_data_iterator=iterator, learning_rate=1e-3)
    if split_at:
      train.train(_opts(tmp_path / name, steps=split_at, **kw), _task(), ds_fn)
    train.train(_opts(tmp_path / name, steps=8, **kw), _task(), ds_fn)
    return _model_weights(str(tmp_path / name / "checkpoints"))
  straight = run("straight", 0, True)
  resumed = run("resumed", 4, True)
  reseeded = run("reseeded", 4, False)
  assert straight.keys() == resumed.keys()
  for name in straight:
    np.testing.assert_allclose(resumed[name], straight[name], atol=1e-6, err_msg=name)
  assert any(not np.allclose(reseeded[n], straight[n], atol=1e-6) for n in straight)


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=64, nan_at_batch=6)
  with pytest.raises(train.DivergedError, match="at step 7"):
    train.train(_opts(tmp_path, steps=20, checkpoint_every=2), _task(), ds_fn)
  ckpt_dir = os.path.join(tmp_path, "checkpoints")
  assert _latest_step(ckpt_dir) == 6
  reader = tf.train.load_checkpoint(ckpt_dir)
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
      assert np.all(np.isfinite(value)), name


def test_missing_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(Exception, match="does not exist"):
    train.train(_opts(tmp_path, data_dir=str(tmp_path / "nope")), _task(), fake_dataset)

  def not_built(data_dir, split, **kw):
    raise FileNotFoundError(f"no luminance_composites in {data_dir}")
  with pytest.raises(Exception, match="tfharm.data.build"):
    train.train(_opts(tmp_path), _task(), not_built)


def test_damaged_latest_checkpoint_falls_back(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  train.train(_opts(tmp_path, steps=10, checkpoint_every=5), _task(), ds_fn)
  ckpt_dir = os.path.join(tmp_path, "checkpoints")
  for f in os.listdir(ckpt_dir):
    if f.startswith("ckpt-10.data"):
      with open(os.path.join(ckpt_dir, f), "r+b") as fh:
        fh.truncate(100)
  logs = train.train(_opts(tmp_path, steps=12, checkpoint_every=5), _task(), ds_fn)
  # Restored step 5 (ckpt-10 unreadable), then trained to 12: the optimizer counted 12.
  assert logs["step"] == 12 and logs["optimizer_iterations"] == 12


CLI = textwrap.dedent("""
    import functools, sys
    sys.path.insert(0, {tests!r})
    import train_test
    from tfharm import train
    train.run(functools.partial(train_test.fake_dataset, max_examples=32, size={size}))
""")


def _cli(args, size=SIZE, **kw):
  code = CLI.format(tests=os.path.join(REPO, "tests"), size=size)
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


def test_detector_sigkill_then_same_command_resumes_with_crops(tmp_path):
  """The detector through the same command: seeded training crops, SIGKILL, resume; the
  frozen ImageNet backbone is bit-identical to the weights file afterwards."""
  from tfharm import weights
  from tfharm.models import detector as det
  workdir = tmp_path / "work"
  ckpt_dir = str(workdir / "checkpoints")
  extra = "--model=detector\n--image_size=32\n--detector_train_crop=16\n--checkpoint_every=2\n"
  proc = _cli([f"--flagfile={_flagfile(tmp_path, workdir, steps=200, extra=extra)}"], size=32)
  deadline = time.time() + 600  # ~30 CPU-s in all; generous for a shared machine
  while time.time() < deadline and (_latest_step(ckpt_dir) or 0) < 4:
    if proc.poll() is not None:
      pytest.fail(f"training ended early: {proc.stdout.read()}")
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = _latest_step(ckpt_dir)
  assert killed_at is not None and 4 <= killed_at < 200
  extra = extra.replace("--checkpoint_every=2", "--checkpoint_every=3")
  proc = _cli([f"--flagfile={_flagfile(tmp_path, workdir, steps=killed_at + 3, extra=extra)}"],
              size=32)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert f"at step {killed_at}" in out
  reader = tf.train.load_checkpoint(ckpt_dir)
  assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == killed_at + 3
  iters = [n for n in reader.get_variable_to_shape_map() if "iteration" in n]
  assert iters and reader.get_tensor(iters[0]) == killed_at + 3, iters
  model = det.Detector(det.DetectorConfig())
  tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(ckpt_dir)).expect_partial()
  imagenet = weights.load_vgg16_imagenet()
  for name in det.VGG_LAYERS:
    kernel, bias = model.get_layer(name).get_weights()
    np.testing.assert_array_equal(kernel, imagenet[name][0], err_msg=name)
    np.testing.assert_array_equal(bias, imagenet[name][1], err_msg=name)


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


@pytest.mark.parametrize("variant", [dict(jit_compile=True), dict(precision="mixed_bfloat16"),
                                     dict(strategy="mirrored")])
def test_training_variants_run(tmp_path, variant):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  logs = train.train(_opts(tmp_path, steps=3, checkpoint_every=3, **variant), _task(), ds_fn)
  assert logs["step"] == 3 and np.isfinite(logs["loss"]) and np.isfinite(logs["psnr"])
  assert keras.mixed_precision.global_policy().name == "float32"


def fake_stream(start, *, batch_size=4, augment=False, seed=0, ignore_start=False):
  """An endless stream whose example i depends only on i (as the online generator's)."""
  del augment, seed
  pool = next(iter(fake_dataset("", "train", batch_size=40, shuffle=False, max_examples=40)))
  ds = tf.data.Dataset.range(0 if ignore_start else start, 2**62).map(
      lambda i: {k: tf.gather(v, i % 40) for k, v in pool.items()})
  return ds.batch(batch_size, drop_remainder=True)


def test_online_stream_resumes_where_the_checkpoint_stopped(tmp_path):
  """4 steps + resume + 4 steps equals 8 straight steps, because the stream restarts at the
  checkpointed position (examples seen); a stream that restarts at 0 differs (control)."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  def run(name, split_at, stream):
    kw = dict(checkpoint_every=4, learning_rate=1e-3, train_source="generator")
    if split_at:
      train.train(_opts(tmp_path / name, steps=split_at, **kw), _task(), ds_fn, stream)
    train.train(_opts(tmp_path / name, steps=8, **kw), _task(), ds_fn, stream)
    ckpt_dir = str(tmp_path / name / "checkpoints")
    position = tf.train.load_checkpoint(ckpt_dir).get_tensor(
        "data_position/.ATTRIBUTES/VARIABLE_VALUE")
    return _model_weights(ckpt_dir), position
  straight, p_straight = run("straight", 0, fake_stream)
  resumed, p_resumed = run("resumed", 4, fake_stream)
  replayed, _ = run("replayed", 4, functools.partial(fake_stream, ignore_start=True))
  assert p_straight == p_resumed == 8 * 4
  for name in straight:
    np.testing.assert_allclose(resumed[name], straight[name], atol=1e-6, err_msg=name)
  assert any(not np.allclose(replayed[n], straight[n], atol=1e-6) for n in straight)


def test_train_source_and_stream_must_agree(tmp_path):
  with pytest.raises(ValueError, match="needs a stream"):
    train.train(_opts(tmp_path, train_source="generator"), _task(), fake_dataset)
