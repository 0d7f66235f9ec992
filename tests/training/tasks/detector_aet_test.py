"""AET pre-training of the detector: the luminance transformation, targets, training, and the
hand-over of the trunk to the detector task (tfharm/training/tasks/detector_aet.py).

Tiny images (16-32 px) and DetectorConfig(imagenet_weights=False) except where the ImageNet
backbone is the point; needs `make weights` for those.
"""
import functools
import math
import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import colour
from tfharm import training
from tfharm.models import detector as det
from tfharm.models import detector_aet as aet
from tfharm.models import layer_files
from tfharm.training import checkpointing
from tfharm.training.tasks import detector_aet as aet_task
from tfharm.training.tasks.detector import DetectorTask, DetectorTaskConfig
from tfharm.training.tasks.detector_aet import DetectorAETTask, DetectorAETTaskConfig
from tests.models.detector_inputs import object_batch
from tests.models.trained_weights import perturb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NO_IMAGENET = det.DetectorConfig(imagenet_weights=False, freeze_encoder=False)
LO, HI = math.log2(0.1), math.log2(10.0)


@pytest.fixture(scope="module")
def aet_model():
  return aet.DetectorAET(NO_IMAGENET)


def _lightness(rgb):
  return colour.rgb_to_lab(np.asarray(rgb))[..., 0]


def test_transform_scales_lightness_inside_the_mask_only():
  """Grey objects: L* becomes clip(L* * 2**o, 0, 100), a* = b* = 0 stay; outside the mask
  every pixel is bit-identical, in colour images too."""
  real, mask = object_batch(n=4)
  inside = mask[..., 0] > 0
  lab = colour.rgb_to_lab(real)
  grey_l = np.array([20.0, 50.0, 50.0, 80.0], "float32")
  lab[inside] = 0.0
  lab[..., 0][inside] = np.repeat(grey_l, inside.reshape(4, -1).sum(1))
  real = np.where(mask > 0, colour.lab_to_rgb(lab), real).astype("float32")
  o = np.array([-1.0, 0.5, LO, HI], "float32")  # x0.5, x1.41, x0.1, x10 (clips at 100)
  out = aet_task.scale_object_lightness(real, mask, o).numpy()
  np.testing.assert_array_equal(out[~inside], real[~inside])  # outside: untouched, exactly
  out_lab = colour.rgb_to_lab(out)
  for i in range(4):
    expected = min(100.0, grey_l[i] * 2.0 ** o[i])
    np.testing.assert_allclose(out_lab[i][inside[i]][:, 0], expected, atol=0.02)
    np.testing.assert_allclose(out_lab[i][inside[i]][:, 1:], 0.0, atol=0.02)
  assert np.allclose(out[3][inside[3]], 1.0, atol=1e-5)  # 80 * 10 clipped: white


def test_transform_keeps_chroma_of_in_gamut_colours():
  """Muted colours, factor 1.2 and 0.6: L* scales by the factor, a*, b* unchanged."""
  rng = np.random.default_rng(1)
  lab = np.stack([rng.uniform(30, 60, (2, 8, 8)), rng.uniform(-10, 10, (2, 8, 8)),
                  rng.uniform(-10, 10, (2, 8, 8))], -1).astype("float32")
  real = colour.lab_to_rgb(lab)
  mask = np.ones((2, 8, 8, 1), "float32")
  factors = np.array([1.2, 0.6], "float32")
  out_lab = colour.rgb_to_lab(aet_task.scale_object_lightness(real, mask, np.log2(factors)).numpy())
  in_lab = colour.rgb_to_lab(real)
  np.testing.assert_allclose(out_lab[..., 0], in_lab[..., 0] * factors[:, None, None], atol=0.02)
  np.testing.assert_allclose(out_lab[..., 1:], in_lab[..., 1:], atol=0.05)


def test_target_is_mask_times_the_sampled_offset_and_the_seed_fixes_everything():
  real, mask = object_batch()
  task = DetectorAETTask(DetectorAETTaskConfig(NO_IMAGENET, image_size=16))
  batch = {"real": tf.constant(real), "mask": tf.constant(mask)}
  a = task.train_transform(batch, tf.constant([0, 1], tf.int64))
  b = task.train_transform(batch, tf.constant([0, 1], tf.int64))
  c = task.train_transform(batch, tf.constant([0, 2], tf.int64))
  o = a["log2_factor"].numpy()
  assert o.shape == (3,) and np.all((o >= LO) & (o <= HI))
  np.testing.assert_array_equal(a["target"], mask * o[:, None, None, None])
  np.testing.assert_array_equal(
      a["transformed"], aet_task.scale_object_lightness(real, mask, o))  # the pair uses that o
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])  # same seed, same pairs
  assert not np.allclose(c["log2_factor"], o)
  # validation pairs: fixed by image id, no seed
  ids = tf.constant([7, 8, 9], tf.int64)
  v1 = task.transform(dict(batch, image_id=ids))
  v2 = task.transform(dict(batch, image_id=ids))
  np.testing.assert_array_equal(v1["transformed"], v2["transformed"])
  np.testing.assert_array_equal(v1["target"], mask * v1["log2_factor"].numpy()[:, None, None, None])
  assert len(set(v1["log2_factor"].numpy().tolist())) == 3


def test_offsets_are_log_uniform_over_the_factor_range():
  o = aet_task.sample_log2_factors(20000, tf.constant([3, 4], tf.int64)).numpy()
  assert o.min() >= LO and o.max() <= HI
  factors = 2.0 ** o
  # log-uniform on [0.1, 10]: half the factors below 1, a quarter below 10**-0.5, ...
  for edge, share in ((10 ** -0.5, 0.25), (1.0, 0.5), (10 ** 0.5, 0.75)):
    assert abs(np.mean(factors < edge) - share) < 0.015, edge
  narrow = aet_task.sample_log2_factors(1000, tf.constant([3, 4], tf.int64), 0.5, 2.0).numpy()
  assert narrow.min() >= -1.0 and narrow.max() <= 1.0
  fixed = aet_task.fixed_log2_factors(tf.range(1000)).numpy()
  assert fixed.min() >= LO and fixed.max() <= HI and abs(np.mean(fixed < 0) - 0.5) < 0.02
  with pytest.raises(ValueError, match="min_factor"):
    DetectorAETTaskConfig(min_factor=2.0, max_factor=1.0)


def test_transform_runs_under_xla():
  real, mask = object_batch()
  o = tf.constant([-2.0, 0.3, 3.0])
  eager = aet_task.make_pair(real, mask, o)
  jitted = tf.function(aet_task.make_pair, jit_compile=True)(real, mask, o)
  for key in eager:
    np.testing.assert_allclose(jitted[key], eager[key], atol=2e-5, err_msg=key)
  task = DetectorAETTask(DetectorAETTaskConfig(NO_IMAGENET, image_size=16))
  step = tf.function(task.train_transform, jit_compile=True)
  batch = {"real": tf.constant(real), "mask": tf.constant(mask)}
  first = step(batch, tf.constant([5, 6], tf.int64))
  np.testing.assert_array_equal(first["target"], step(batch, tf.constant([5, 6], tf.int64))["target"])
  o = first["log2_factor"].numpy()
  assert np.all((o >= LO) & (o <= HI))
  np.testing.assert_array_equal(first["target"], mask * o[:, None, None, None])


def test_trunk_file_loads_into_a_detector_exactly(tmp_path, aet_model):
  perturb(aet_model.trunk_layers())
  path = str(tmp_path / "detector_aet.trunk.weights.h5")
  DetectorAETTask(DetectorAETTaskConfig(NO_IMAGENET)).export(aet_model, str(tmp_path))
  task = DetectorTask(DetectorTaskConfig(
      det.DetectorConfig(imagenet_weights=False, freeze_multiscale=True), image_size=32, init=path))
  detector = task.build_model()
  for layer in aet_model.trunk_layers():
    for a, b in zip(layer.weights, detector.get_layer(layer.name).weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  x = object_batch(n=2, size=32)[0]
  np.testing.assert_array_equal(aet.trunk_of(detector)(x, training=False),
                                aet_model.trunk(x, training=False))
  # [L]'s best freeze point: encoder and multiscale part frozen, decoder and head train
  trainable = {v.path.split("/")[0] for v in detector.trainable_variables}
  assert trainable == {f"{c}_ucr{i}{s}" for c in ("cv1", "cv2") for i in range(3)
                       for s in ("", "_bn")} | {"head_final"}
  # wrong files are refused with the reason, before anything is assigned
  head = str(tmp_path / "head.weights.h5")
  layer_files.save_head_weights(detector, head)
  with pytest.raises(ValueError, match="not an AET trunk file"):
    layer_files.load_trunk_weights(detector, head)
  with h5py.File(path, "a") as f:
    del f["cv2_ucr2_bn"]
  perturb([detector.get_layer("block1_conv1")], seed=5)
  before = [v.numpy() for v in detector.weights]
  with pytest.raises(ValueError, match="cv2_ucr2_bn"):
    layer_files.load_trunk_weights(detector, path)
  for v, w in zip(detector.weights, before):
    np.testing.assert_array_equal(v.numpy(), w, err_msg=v.path)
  with pytest.raises(FileNotFoundError):
    DetectorTask(DetectorTaskConfig(NO_IMAGENET, init=str(tmp_path / "nope.h5"))).build_model()


def fake_dataset(data_dir, split, *, config="256", batch_size=4, shuffle=True, augment=False,
                 repeat=False, seed=0, max_examples=None, size=32):
  """The make_dataset contract (real, mask, image_id; composite unused by AET)."""
  del data_dir, config, augment
  n = max_examples or 8
  real, mask = object_batch(n=n, size=size, seed=0 if split == "train" else 1)
  ramp = np.linspace(0.2, 0.8, size, dtype="float32")[None, :, None, None]
  real = (0.5 * real + 0.5 * ramp).astype("float32")  # textured, mid-grey on average
  ds = tf.data.Dataset.from_tensor_slices({"composite": real, "real": real, "mask": mask,
                                           "image_id": np.arange(n, dtype="int64")})
  if shuffle:
    ds = ds.shuffle(n, seed=seed)
  if repeat:
    ds = ds.repeat()
  return ds.batch(batch_size, drop_remainder=repeat)


def _opts(workdir, **kw):
  base = dict(workdir=str(workdir), data_dir=str(workdir), batch_size=1, eval_batch_size=2,
              steps=4, log_every=5, eval_every=0, checkpoint_every=2, max_eval_examples=2,
              max_train_examples=1, augment=False, export=False, learning_rate=1e-3)
  base.update(kw)
  return training.TrainOptions(**base)


class _OnePairTask(DetectorAETTask):
  """Always the same training pair (the seed is fixed): overfitting it shows that the loss,
  the gradients and the optimiser work together, in a handful of steps."""

  def train_transform(self, batch, seed):
    del seed
    return super().train_transform(batch, tf.constant([0, 0], tf.int64))


@pytest.mark.slow  # ~40 s; AET pre-training is a GPU option, not part of any shipped recipe
def test_training_learns_checkpoints_resumes_and_exports(tmp_path):
  """Through tfharm.train.train: 20 steps on one pair (frozen VGG16, to keep it fast) and the
  export. The exported network fits the pair far better than the 'unchanged' (zero)
  prediction; the checkpoint restores as a resumed run would (train._create_state: model,
  optimizer, step); the trunk file is what the Detector loads. (A resumed run that trains on
  is in the slow command-line test; resuming itself is generic, tests/train_test.py.)"""
  size = 16
  task = _OnePairTask(DetectorAETTaskConfig(det.DetectorConfig(imagenet_weights=False),
                                            image_size=size))
  ds_fn = functools.partial(fake_dataset, size=size)
  pair = task.train_transform(next(iter(ds_fn("", "train", batch_size=1, max_examples=1))), None)
  assert abs(float(pair["log2_factor"][0])) > 1.0  # a clear target for this seed
  zero_loss = float(task.loss(pair, tf.zeros_like(pair["target"]))["loss"][0])

  opts = _opts(tmp_path, steps=20, checkpoint_every=10, export=True)
  logs = training.train(opts, task, ds_fn)
  assert logs["step"] == 20 and np.isfinite(logs["loss"])
  for key in ("mse", "object_mae", "offset_error", "sign_accuracy"):
    assert np.isfinite(logs[key]), key  # validation ran (on fixed pairs)

  files = {f for f in os.listdir(tmp_path) if f.startswith("detector_aet.")}
  assert files == {"detector_aet.weights.h5", "detector_aet.keras",
                   "detector_aet.trunk.weights.h5"}
  model = keras.saving.load_model(str(tmp_path / "detector_aet.keras"))
  assert isinstance(model, aet.DetectorAET) and model.cfg == task.config.model
  state = checkpointing.create_state(opts, task, tf.distribute.get_strategy(),
                                    str(tmp_path / "checkpoints"))
  assert state.restored.endswith("ckpt-20") and int(state.step.numpy()) == 20
  assert int(state.optimizer.iterations.numpy()) == 20
  for a, b in zip(state.model.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  detector = DetectorTask(DetectorTaskConfig(
      task.config.model, image_size=size,
      init=str(tmp_path / "detector_aet.trunk.weights.h5"))).build_model()
  x = pair["real"]
  np.testing.assert_array_equal(aet.trunk_of(detector)(x, training=False),
                                model.trunk(x, training=False))
  # training mode, as the optimiser saw it (BN moving statistics lag after 20 steps)
  fitted = np.mean([float(task.loss(pair, model(task.inputs(pair), training=True))["loss"][0])
                    for _ in range(3)])
  assert fitted < 0.5 * zero_loss, (fitted, zero_loss)


CLI = textwrap.dedent("""
    import functools
    from tests.training.tasks import detector_aet_test
    from tfharm import train
    train.run(functools.partial(detector_aet_test.fake_dataset, size=32))
""")


@pytest.mark.slow  # ~1-2 min on 2 shared cores: two fresh TF processes, 68 MB exports
def test_two_stages_through_the_train_command(tmp_path):
  """Stage 1 with the shipped AET flagfile (tiny overrides), stage 2 = the detector flagfile
  + --detector_init, as the flagfile's comments say: the classifier starts from the AET trunk,
  its encoder stays frozen, and no head-only file is written (AET trained the VGG16)."""
  code = CLI
  tiny = ["--image_size=32", "--batch_size=2", "--eval_batch_size=4", "--steps=2",
          "--checkpoint_every=2", "--log_every=1", "--eval_every=0", "--max_eval_examples=4",
          f"--data_dir={tmp_path}", "--nojit_compile"]
  stage1 = tmp_path / "aet"
  for steps in (2, 3):  # the same command again resumes
    proc = subprocess.run([sys.executable, "-c", code, "--flagfile=configs/train_detector_aet.flags",
                           *tiny, f"--steps={steps}", f"--workdir={stage1}"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "offset_error=" in proc.stderr and f"Done at step {steps}" in proc.stderr
  assert "Resumed from" in proc.stderr and "at step 2" in proc.stderr
  trunk = stage1 / "detector_aet.trunk.weights.h5"
  stage2 = tmp_path / "classifier"
  proc = subprocess.run([sys.executable, "-c", code, "--flagfile=configs/train_detector.flags",
                         *tiny, f"--workdir={stage2}", f"--detector_init={trunk}",
                         "--detector_freeze_multiscale"],
                        cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "initialised from" in proc.stderr and "No detector.head.weights.h5" in proc.stderr
  assert not (stage2 / "detector.head.weights.h5").exists()
  source = keras.saving.load_model(str(stage1 / "detector_aet.keras"))
  trained = det.load_detector(str(stage2 / "detector.keras"))
  for name in det.VGG_LAYERS + det.MULTISCALE_LAYERS:  # frozen: still the AET weights
    for a, b in zip(source.trunk.get_layer(name).weights, trained.get_layer(name).weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  changed = [a.path for a, b in zip(source.trunk.get_layer("cv1_ucr0").weights,
                                    trained.get_layer("cv1_ucr0").weights)
             if not np.array_equal(a.numpy(), b.numpy())]
  assert changed  # the decoder trained on
