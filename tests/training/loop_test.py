"""The shared training loop (tfharm.training) on synthetic data with the make_dataset contract."""
import functools
import gc
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import training
from tfharm.models import checkpoints
from tfharm.models.harmoniser import HarmoniserConfig
from tfharm.training.tasks.harmoniser import HarmoniserTask, HarmoniserTaskConfig
from tests.training.fake_data import SIZE, fake_dataset, fake_stream, latest_step as _latest_step


def _opts(workdir, **kw):
  base = dict(workdir=str(workdir), data_dir=str(workdir), batch_size=4, eval_batch_size=8,
              steps=30, log_every=5, eval_every=0, checkpoint_every=10, max_eval_examples=16,
              augment=False, export=False)
  base.update(kw)
  return training.TrainOptions(**base)


def _task(**kw):
  return HarmoniserTask(HarmoniserTaskConfig(HarmoniserConfig(image_size=SIZE, **kw)))


def test_short_run_decreases_loss_and_exports(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=32)
  t = _task()
  model = t.build_model()
  batch = next(iter(ds_fn("", "train", batch_size=32, shuffle=False)))
  first = float(tf.reduce_mean(t.loss(batch, model(t.inputs(batch), training=False))["loss"]))
  logs = training.train(_opts(tmp_path, steps=150, learning_rate=1e-3, max_train_examples=32,
                              export=True), t, ds_fn)
  assert logs["step"] == 150 and logs["optimizer_iterations"] == 150
  assert logs["loss"] < 0.5 * first, (logs["loss"], first)
  # The exported weights load into a fresh model.
  fresh = t.build_model()
  fresh.load_weights(os.path.join(tmp_path, "harmoniser.weights.h5"))
  assert os.path.exists(os.path.join(tmp_path, "harmoniser.keras"))
  assert os.path.isdir(os.path.join(tmp_path, "logs", "train"))


def test_image_size_mismatch_is_named(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=8, size=32)
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="image_size"):
    training.train(_opts(tmp_path, steps=2), _task(), ds_fn)


def test_semantic_branch_trains(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  logs = training.train(_opts(tmp_path, steps=3, checkpoint_every=3), _task(semantic=True), ds_fn)
  assert logs["step"] == 3 and np.isfinite(logs["semantic_ce"])


def test_resume_continues_step_and_optimizer_state(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  training.train(_opts(tmp_path, steps=10, checkpoint_every=5), _task(), ds_fn)
  logs = training.train(_opts(tmp_path, steps=14, checkpoint_every=5), _task(), ds_fn)
  assert logs["step"] == 14 and logs["optimizer_iterations"] == 14
  assert _latest_step(os.path.join(tmp_path, "checkpoints")) == 14


def test_resume_applies_the_new_learning_rate(tmp_path):
  """The rate is optimizer state in the checkpoint; --learning_rate must win on resume."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  training.train(_opts(tmp_path, steps=5, checkpoint_every=5, learning_rate=1e-3), _task(), ds_fn)
  training.train(_opts(tmp_path, steps=6, checkpoint_every=5, learning_rate=2e-5), _task(), ds_fn)
  lr = tf.train.load_variable(os.path.join(tmp_path, "checkpoints", "ckpt-6"),
                              "optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE")
  np.testing.assert_allclose(lr, 2e-5, rtol=1e-6)


def test_weight_average_turned_on_at_resume_is_seeded_and_used(tmp_path):
  """A run resumed from a checkpoint without an average seeds it from the restored weights
  (not from zeros); the average is checkpointed, restore_training_checkpoint loads it (or
  the raw weights on request), and the export holds it."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  ckpt_dir = os.path.join(tmp_path, "checkpoints")
  training.train(_opts(tmp_path, steps=5, checkpoint_every=5, learning_rate=1e-3), _task(), ds_fn)
  assert not checkpoints.checkpoint_has_average(os.path.join(ckpt_dir, "ckpt-5"))
  training.train(_opts(tmp_path, steps=8, checkpoint_every=1, keep_checkpoints=10,
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
      training.train(_opts(tmp_path / name, steps=split_at, **kw), _task(), ds_fn)
    training.train(_opts(tmp_path / name, steps=8, **kw), _task(), ds_fn)
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
  with pytest.raises(training.DivergedError, match="at step 7"):
    training.train(_opts(tmp_path, steps=20, checkpoint_every=2), _task(), ds_fn)
  ckpt_dir = os.path.join(tmp_path, "checkpoints")
  assert _latest_step(ckpt_dir) == 6
  reader = tf.train.load_checkpoint(ckpt_dir)
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
      assert np.all(np.isfinite(value)), name


def test_missing_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(Exception, match="does not exist"):
    training.train(_opts(tmp_path, data_dir=str(tmp_path / "nope")), _task(), fake_dataset)

  def not_built(data_dir, split, **kw):
    raise FileNotFoundError(f"no luminance_composites in {data_dir}")
  with pytest.raises(Exception, match="tfharm.data.build"):
    training.train(_opts(tmp_path), _task(), not_built)


def test_damaged_latest_checkpoint_falls_back(tmp_path):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  training.train(_opts(tmp_path, steps=10, checkpoint_every=5), _task(), ds_fn)
  ckpt_dir = os.path.join(tmp_path, "checkpoints")
  for f in os.listdir(ckpt_dir):
    if f.startswith("ckpt-10.data"):
      with open(os.path.join(ckpt_dir, f), "r+b") as fh:
        fh.truncate(100)
  logs = training.train(_opts(tmp_path, steps=12, checkpoint_every=5), _task(), ds_fn)
  # Restored step 5 (ckpt-10 unreadable), then trained to 12: the optimizer counted 12.
  assert logs["step"] == 12 and logs["optimizer_iterations"] == 12


@pytest.mark.parametrize("variant", [dict(jit_compile=True), dict(precision="mixed_bfloat16"),
                                     dict(strategy="mirrored")])
def test_training_variants_run(tmp_path, variant):
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  logs = training.train(_opts(tmp_path, steps=3, checkpoint_every=3, **variant), _task(), ds_fn)
  assert logs["step"] == 3 and np.isfinite(logs["loss"]) and np.isfinite(logs["psnr"])
  assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow  # ~80 s (five short runs); tests/data/generator_test checks the stream resumes at any position
def test_online_stream_resumes_where_the_checkpoint_stopped(tmp_path):
  """4 steps + resume + 4 steps equals 8 straight steps, because the stream restarts at the
  checkpointed position (examples seen); a stream that restarts at 0 differs (control)."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  def run(name, split_at, stream):
    kw = dict(checkpoint_every=4, learning_rate=1e-3, train_source="generator")
    if split_at:
      training.train(_opts(tmp_path / name, steps=split_at, **kw), _task(), ds_fn, stream)
    training.train(_opts(tmp_path / name, steps=8, **kw), _task(), ds_fn, stream)
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
    training.train(_opts(tmp_path, train_source="generator"), _task(), fake_dataset)


def test_checkpoint_objects_are_the_resumable_format(tmp_path):
  """Runs resume from checkpoints of earlier versions (and tfharm.models.checkpoints reads
  them): the top-level objects are exactly model, optimizer, step, data_position and ema."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  training.train(_opts(tmp_path, steps=2, checkpoint_every=2, ema_decay=0.5), _task(), ds_fn)
  names = {n.split("/")[0] for n, _ in tf.train.list_variables(
      os.path.join(tmp_path, "checkpoints", "ckpt-2"))}
  assert names == {"model", "optimizer", "step", "data_position", "ema", "save_counter",
                   "_CHECKPOINTABLE_OBJECT_GRAPH"}, names


class _MeanTask(training.Task):
  """Only the required methods: metrics, baseline, images and export keep their defaults."""

  name = "mean"

  def build_model(self):
    image = keras.Input((SIZE, SIZE, 3))
    return keras.Model(image, keras.layers.Conv2D(3, 1)(image))

  def transform(self, batch):
    return {"composite": batch["composite"], "real": batch["real"]}

  def inputs(self, batch):
    return batch["composite"]

  def loss(self, batch, outputs):
    return {"loss": tf.reduce_mean(tf.square(outputs - batch["real"]), axis=[1, 2, 3])}


def test_a_task_with_only_the_required_methods_trains_and_exports(tmp_path):
  logs = training.train(_opts(tmp_path, steps=3, checkpoint_every=3, export=True), _MeanTask(),
                        functools.partial(fake_dataset, max_examples=16))
  assert logs["step"] == 3 and np.isfinite(logs["loss"])
  assert sorted(f for f in os.listdir(tmp_path) if f.startswith("mean.")) == [
      "mean.keras", "mean.weights.h5"]
  with pytest.raises(TypeError, match="abstract"):
    type("NoLoss", (training.Task,), {"name": "x", "build_model": None, "transform": None,
                                      "inputs": None})()


def test_resume_warns_of_no_unrestored_checkpoint_values(tmp_path, caplog):
  """The restore reads the checkpoint in parts (core, position, average); none may be reported
  as unrestored: that is ~60 warning lines at every resume, and they would hide a real one."""
  ds_fn = functools.partial(fake_dataset, max_examples=16)
  training.train(_opts(tmp_path, steps=2, checkpoint_every=2, ema_decay=0.5), _task(), ds_fn)
  with caplog.at_level("WARNING", logger="tensorflow"):
    logs = training.train(_opts(tmp_path, steps=3, checkpoint_every=3, ema_decay=0.5), _task(),
                          ds_fn)
    gc.collect()  # the warning is given when a partly restored checkpoint object is deleted
  assert logs["step"] == 3
  unrestored = [r.getMessage() for r in caplog.records
                if "unrestored" in r.getMessage() or "could not be found" in r.getMessage()]
  assert not unrestored, unrestored[:3]
