"""The contract between the training loop and a model family: `Task`.

The loop (tfharm.training.loop) is the same for every model; a task says what differs. In
tf.data it calls `train_transform` on training batches and `transform` on validation batches;
in the train step `inputs`, the model and `loss`; in validation `metrics`, `baseline` and
`images`; after the run `export`. Per-example tensors have shape (B,).
"""
from __future__ import annotations

import abc
from typing import Any, Mapping

import keras
import tensorflow as tf

Batch = Mapping[str, tf.Tensor]


def fixed_size(batch: Batch, channels: Mapping[str, int], size: int | None,
               multiple: int = 1) -> dict[str, tf.Tensor]:
  """The `channels` entries of `batch` ({key: C} of NHWC images), checked to be size x size and
  given that static shape (tf.data and XLA then trace once); `size` None: any size, unchecked."""
  if size is None:
    return {k: batch[k] for k in channels}
  if size % multiple:
    raise ValueError(f"image_size must be a multiple of {multiple}, got {size}")
  first = batch[next(iter(channels))]
  message = f"not {size}x{size}: make --image_size match --dataset_config"
  static = first.shape[1:3]
  if static.is_fully_defined() and tuple(static) != (size, size):
    raise ValueError(f"dataset images are {tuple(static)}, {message}")
  check = tf.debugging.assert_equal(tf.shape(first)[1:3], [size, size],
                                    message=f"dataset images are {message}")
  with tf.control_dependencies([check]):
    return {k: tf.ensure_shape(tf.identity(batch[k]), (None, size, size, c))
            for k, c in channels.items()}


class Task(abc.ABC):
  """A model family's part of training. Subclasses set `name` (the stem of the exported
  files) and implement the abstract methods; the others default to doing nothing."""

  name: str

  @abc.abstractmethod
  def build_model(self) -> keras.Model:
    """A fresh model (with any initial weights); a resumed checkpoint overrides them."""

  @abc.abstractmethod
  def transform(self, batch: Batch) -> Batch:
    """The validation view of a dataset batch (composite/real in [0, 1], mask in {0, 1},
    int64 metadata): what `inputs`, `loss`, `metrics` and `images` read."""

  def train_transform(self, batch: Batch, seed: tf.Tensor) -> Batch:
    """The training view. `seed` (2,) int64 is distinct per batch and the same for a batch
    after a resume, for stateless random ops (crops, AET pairs). Default: `transform`."""
    del seed
    return self.transform(batch)

  @abc.abstractmethod
  def inputs(self, batch: Batch) -> Any:
    """The model's inputs, picked from a transformed batch."""

  @abc.abstractmethod
  def loss(self, batch: Batch, outputs: Any) -> dict[str, tf.Tensor]:
    """{"loss": (B,), ...components} for the optimiser and TensorBoard."""

  def metrics(self, batch: Batch, outputs: Any) -> dict[str, tf.Tensor]:
    """{name: (B,)} validation metrics, NaN where one does not apply (left out of the mean)."""
    del batch, outputs
    return {}

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    """`metrics` of doing nothing, logged once for comparison."""
    del batch
    return {}

  def images(self, batch: Batch, outputs: Any) -> dict[str, tf.Tensor]:
    """{name: (B, H, W, C) in [0, 1]} for TensorBoard."""
    del batch, outputs
    return {}

  def export(self, model: keras.Model, workdir: str) -> None:
    """Files beyond <name>.weights.h5 and <name>.keras, written after the run."""
    del model, workdir
