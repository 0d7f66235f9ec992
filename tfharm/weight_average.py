"""An exponential moving average of a model's trainable weights, checkpointed with them.

Why: on coco_mini the harmoniser's validation numbers swung by +-10 % between checkpoints
250 steps apart (its training run); averaging the weights over the
last ~1/(1 - decay) steps removes most of that noise at no training cost. Not Keras's
`use_ema`: that keeps the average inside the optimizer, where it cannot be evaluated without
being made permanent, and it starts from zeros when a run resumes from a checkpoint that had
no average. Here the average is a separate tf.Module: `initialised` says whether it holds
real values, so a run that resumes from an average-less checkpoint seeds it from the
restored weights.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import tensorflow as tf


class WeightAverage(tf.Module):
  """averages[i] tracks variables[i]; save and restore it as `ema=` in a tf.train.Checkpoint."""

  def __init__(self, variables: Sequence[tf.Variable], decay: float, name: str = "ema"):
    super().__init__(name=name)
    if not 0.0 < decay < 1.0:
      raise ValueError(f"weight-average decay must be in (0, 1), got {decay}")
    self.decay = decay
    self._variables = list(variables)
    self.averages = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                 name=f"average_{i}") for i, v in enumerate(self._variables)]
    self.initialised = tf.Variable(False, trainable=False, name="initialised")

  def reset(self) -> None:
    """Averages := current weights (a fresh start, e.g. after resuming without an average)."""
    for a, v in zip(self.averages, self._variables):
      a.assign(_value(v))
    self.initialised.assign(True)

  def update(self) -> None:
    """One step of a <- decay * a + (1 - decay) * w; graph-safe (call inside the train step)."""
    d = tf.constant(self.decay, tf.float32)
    for a, v in zip(self.averages, self._variables):
      a.assign(tf.cast(d, a.dtype) * a + tf.cast(1.0 - d, a.dtype) * _value(v))

  def copy_to_variables(self) -> None:
    """Overwrites the model's weights with the averages (for export)."""
    if not bool(self.initialised.numpy()):
      raise ValueError("the weight average holds no values yet (never reset or restored)")
    for a, v in zip(self.averages, self._variables):
      v.assign(a)

  @contextlib.contextmanager
  def swapped_in(self) -> Iterator[None]:
    """Evaluates with the averages, then puts the trained weights back exactly."""
    saved = [tf.identity(_value(v)) for v in self._variables]
    self.copy_to_variables()
    try:
      yield
    finally:
      for v, s in zip(self._variables, saved):
        v.assign(s)


def _value(v) -> tf.Tensor:
  """A Keras 3 variable's tensor, or a tf.Variable itself."""
  return v.value if hasattr(v, "value") and not isinstance(v, tf.Variable) else v
