"""Synthetic data with the tfharm.data.pipeline.make_dataset contract, for the training tests
(also imported by the command-line tests' subprocesses: `tests.training.fake_data`)."""
import numpy as np
import tensorflow as tf

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


def fake_stream(start, *, batch_size=4, augment=False, seed=0, shard=(0, 1),
                ignore_start=False):
  """An endless stream whose example i depends only on i, sharded as the online generator's
  (worker k of n: examples start+k, start+k+n, ...)."""
  del augment, seed
  pool = next(iter(fake_dataset("", "train", batch_size=40, shuffle=False, max_examples=40)))
  ds = tf.data.Dataset.range((0 if ignore_start else start) + shard[0], 2**62, shard[1]).map(
      lambda i: {k: tf.gather(v, i % 40) for k, v in pool.items()})
  return ds.batch(batch_size, drop_remainder=True)


def latest_step(ckpt_dir):
  latest = tf.train.latest_checkpoint(ckpt_dir)
  return int(latest.rsplit("-", 1)[-1]) if latest else None
