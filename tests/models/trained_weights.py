"""Test helper: move a detector's trained layers off their initial values.

A round trip of freshly initialised weights would pass even if those weights were never saved,
and near-initial weights give ~uniform probabilities; both detector and pipeline tests need this.
"""

import numpy as np


def perturb(layers, seed: int = 0) -> None:
  """Kernels and biases + N(0, 0.05); BatchNorm variances drawn from U(0.5, 2)."""
  rng = np.random.default_rng(seed)
  for layer in layers:
    for v in layer.weights:
      if "variance" in v.path:
        v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
      else:
        v.assign(v.numpy() + rng.normal(0, 0.05, v.shape).astype("float32"))


def perturb_trained_layers(model, seed: int = 0) -> None:
  """`perturb` on a Detector's layers outside the ImageNet VGG16 (what a head file holds)."""
  perturb(model.head_layers(), seed)


def small_joint_model(seed: int = 0):
  """A small joint model (tfharm.models.joint; random trunk, narrow decoder), perturbed: fast
  stand-in for a trained one in the pipeline, evaluation and command-line tests. Seeded whole
  (initial weights too): a random model's output, and whether it acts at all, must not vary."""
  import keras  # pylint: disable=g-import-not-at-top
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  model = joint.JointModel(joint.JointConfig(imagenet_weights=False, context_width=16,
                                             skip_widths=(8, 8), decoder_widths=(16, 8)))
  perturb([l for l in model.layers if l.weights], seed)
  return model
