"""Where a run's batches come from (tfharm.training.data): the stream's shards per worker, and
per-batch seeds that stay distinct across a cluster."""
import numpy as np
import tensorflow as tf

from tfharm import training
from tfharm.training import data as data_lib
from tests.training.fake_data import fake_stream


class _Seeds(training.Task):
  """Keeps each batch's image ids and the seed the loop gave it."""
  name = "seeds"

  def build_model(self):
    raise NotImplementedError

  def transform(self, batch):
    return {"image_id": batch["image_id"]}

  def train_transform(self, batch, seed):
    return {"image_id": batch["image_id"], "seed": seed}

  def inputs(self, batch):
    return batch

  def loss(self, batch, outputs):
    return {"loss": tf.zeros([1])}


def _draw(context, position=8, steps=2):
  opts = training.TrainOptions(workdir="", data_dir="", train_source="generator", batch_size=4)
  ds = data_lib.training_data(opts, _Seeds(), None, 7, fake_stream, position, context)
  per_step = context.num_replicas_in_sync // context.num_input_pipelines
  batches = [b for _, b in zip(range(steps * per_step), ds)]
  return ([b["image_id"].numpy().tolist() for b in batches],
          [int(b["seed"].numpy()[1]) for b in batches])


def test_workers_share_each_global_batch_and_get_distinct_seeds():
  """Two workers with two replicas each: every step takes examples position .. position+3
  between them (fake ids are i % 40), and the four per-replica batches have seeds 4s .. 4s+3."""
  ids, seeds = {}, {}
  for k in range(2):
    ids[k], seeds[k] = _draw(tf.distribute.InputContext(2, k, 4))
  assert ids[0] == [[8], [10], [12], [14]] and ids[1] == [[9], [11], [13], [15]]
  assert seeds[0] == [8, 9, 12, 13] and seeds[1] == [10, 11, 14, 15]  # step 2 then 3 (8 // 4)
  assert sorted(np.ravel(list(ids.values()))) == list(range(8, 16))


def test_one_process_is_unchanged():
  ids, seeds = _draw(tf.distribute.InputContext())
  assert ids == [[8, 9, 10, 11], [12, 13, 14, 15]] and seeds == [2, 3]
