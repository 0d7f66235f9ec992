"""Test helper: move a detector's trained layers off their initial values.

A round trip of freshly initialised weights would pass even if those weights were never saved,
and near-initial weights give ~uniform probabilities; both detector and pipeline tests need this.
"""

import numpy as np


def perturb_trained_layers(model, seed: int = 0) -> None:
  rng = np.random.default_rng(seed)
  for layer in model.head_layers():
    for v in layer.weights:
      if "variance" in v.path:
        v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
      else:
        v.assign(v.numpy() + rng.normal(0, 0.05, v.shape).astype("float32"))
