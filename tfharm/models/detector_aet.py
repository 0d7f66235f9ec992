"""AET pre-training of the luminance detector (Dolhasz et al., CVPR 2020, stage 1): a GPU option.

Unsupervised, transformation-equivariant pre-training of the detector's encoder-decoder
(docs/architecture.md; [L] = GitHub dmt-lab/learning-to-observe, `models/aet.py`,
`generators/aet_generator.py`, `utils/utils.py`, `train_aet.py`, `configs/aet_config.py`).

The pretext task: take a real image and one of its objects, multiply the object's L* by a
factor 2**o with o ~ U(log2 0.1, log2 10) (log-uniform factors 0.1 ... 10), clip, convert back
to RGB and paste with the mask. A siamese network sees (original, transformed) and regresses the
per-pixel map mask * o (in stops, log2 units) with an MSE loss. This module is the network; the
transformation and the loss are the training task, tfharm.training.tasks.detector_aet.

Graph (DetectorAET; shapes at H x W, B pairs):
  original, transformed (B, H, W, 3) in [0, 1] -> concatenated on the batch axis (2B, ...)
  trunk: the Detector up to its last decoder activation `cv2_ucr2_relu` (same layers and names,
    so its weights load into a Detector exactly)          -> (2B, H, W, 64)
  SpatialDropout 0.5, Conv1x1 3 + ReLU (`aet_features`)   -> (2B, H, W, 3)   [L] add_decoder_head
  split into the two halves, concat on channels           -> (B, H, W, 6)     [L] to_AET
  Conv1x1 1, linear, float32 (`aet_output`)               -> (B, H, W, 1)  the offset map

Stage 2 (the classifier) is `--model=detector --detector_init=<workdir>/detector_aet.trunk.weights.h5`:
the detector task loads the trunk file (tfharm.models.layer_files); [L]'s best freeze
point ("the entire encoder") is `--detector_freeze_encoder --detector_freeze_multiscale`.
Decisions and deviations from [L]: docs/decisions.md, "Detector pre-training (AET)".
"""
from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops

from tfharm.models import detector as det


def trunk_of(detector: keras.Model) -> keras.Model:
  """The Detector up to its last decoder activation (B, H, W, 64), sharing its layers."""
  return keras.Model(detector.input, detector.get_layer(det.TRUNK_OUTPUT).output, name="trunk")


@keras.saving.register_keras_serializable(package="tfharm")
class DetectorAET(keras.Model):
  """Siamese AET network on the Detector's trunk: {"original", "transformed"} (B, H, W, 3) in
  [0, 1] -> predicted offset map (B, H, W, 1) float32 (stops). H, W: multiples of 8.

  Both images go through the trunk as one 2B batch (one pass; BatchNorm sees both halves
  together, so they are normalised alike); [L] called the shared model twice.
  """

  def __init__(self, cfg: det.DetectorConfig | None = None, dropout: float = 0.5, **kwargs):
    cfg = cfg or det.DetectorConfig()
    trunk = trunk_of(det.Detector(cfg))  # ImageNet VGG16 if cfg says so ([L]: weights='imagenet')
    original = keras.Input((None, None, 3), name="original")
    transformed = keras.Input((None, None, 3), name="transformed")
    pair = layers.Concatenate(axis=0, name="aet_pair")([original, transformed])  # (2B, H, W, 3)
    x = trunk(pair)  # (2B, H, W, 64)
    x = layers.SpatialDropout2D(dropout, name="aet_dropout")(x)
    x = layers.Conv2D(3, 1, activation="relu", name="aet_features")(x)  # (2B, H, W, 3)
    first, second = ops.split(x, 2, axis=0)
    x = layers.Concatenate(name="aet_concat")([first, second])  # (B, H, W, 6)
    offset = layers.Conv2D(1, 1, dtype="float32", name="aet_output")(x)  # (B, H, W, 1)
    super().__init__(inputs={"original": original, "transformed": transformed}, outputs=offset,
                     **kwargs)
    self.cfg = cfg
    self.dropout = dropout

  @property
  def trunk(self) -> keras.Model:
    return self.get_layer("trunk")

  def trunk_layers(self) -> list[keras.layers.Layer]:
    """The trunk's layers with weights, named as in a Detector (tfharm.models.layer_files)."""
    return [l for l in self.trunk.layers if l.weights]

  def get_config(self):
    return {"cfg": dataclasses.asdict(self.cfg), "dropout": self.dropout, "name": self.name,
            "trainable": self.trainable}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(det.DetectorConfig(**config.pop("cfg")), **config)
