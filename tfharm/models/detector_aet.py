"""AET pre-training of the luminance detector (Dolhasz et al., CVPR 2020, stage 1): a GPU option.

Unsupervised, transformation-equivariant pre-training of the detector's encoder-decoder
(architectures.md section 2.1; [L] = GitHub dmt-lab/learning-to-observe, `models/aet.py`,
`generators/aet_generator.py`, `utils/utils.py`, `train_aet.py`, `configs/aet_config.py`).

The pretext task: take a real image and one of its objects, multiply the object's L* by a
factor 2**o with o ~ U(log2 0.1, log2 10) (log-uniform factors 0.1 ... 10), clip, convert back
to RGB and paste with the mask. A siamese network sees (original, transformed) and regresses the
per-pixel map mask * o (in stops, log2 units) with an MSE loss.

Graph (DetectorAET; shapes at H x W, B pairs):
  original, transformed (B, H, W, 3) in [0, 1] -> concatenated on the batch axis (2B, ...)
  trunk: the Detector up to its last decoder activation `cv2_ucr2_relu` (same layers and names,
    so its weights load into a Detector exactly)          -> (2B, H, W, 64)
  SpatialDropout 0.5, Conv1x1 3 + ReLU (`aet_features`)   -> (2B, H, W, 3)   [L] add_decoder_head
  split into the two halves, concat on channels           -> (B, H, W, 6)     [L] to_AET
  Conv1x1 1, linear, float32 (`aet_output`)               -> (B, H, W, 1)  the offset map

Stage 2 (the classifier) is `--model=detector --detector_init=<workdir>/detector_aet.trunk.weights.h5`:
`DetectorTask.build_model` loads the trunk file (tfharm.models.layer_files); [L]'s best freeze
point ("the entire encoder") is `--detector_freeze_encoder --detector_freeze_multiscale`.
Decisions and deviations from [L]: BUILD_NOTES.md, "Detector AET pre-training".
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping

import keras
from keras import layers, ops
import tensorflow as tf

from tfharm import colour
from tfharm.models import detector as det
from tfharm.models import layer_files

Batch = Mapping[str, tf.Tensor]

# [L] trains the whole AET network, VGG16 included (aet.py: freeze_first=None).
AET_CONFIG = det.DetectorConfig(freeze_encoder=False)
_WEYL = (math.sqrt(5.0) - 1.0) / 2.0  # golden-ratio step: well-spread validation offsets


# --- the transformation ------------------------------------------------------------
def scale_object_lightness(real: tf.Tensor, mask: tf.Tensor, log2_factor: tf.Tensor) -> tf.Tensor:
  """Multiplies L* of the masked object by 2**log2_factor, clips to [0, 100], pastes it back.

  real (B, H, W, 3) in [0, 1], mask (B, H, W, 1) (object where >= 0.5), log2_factor (B,).
  a*, b* are kept; the Lab -> RGB conversion clips out-of-gamut colours per channel. Pixels
  outside the mask are returned bit-identical (a select, not a blend). [L] scales 8-bit OpenCV
  L (= L* * 255/100); the product is the same up to rounding, and L* <= 100 is L <= 255.
  Pure TF, XLA-safe.
  """
  real = tf.cast(real, tf.float32)
  lab = colour.rgb_to_lab_tf(tf.clip_by_value(real, 0.0, 1.0))
  factor = tf.pow(2.0, tf.cast(log2_factor, tf.float32))[:, None, None]  # (B, 1, 1)
  lightness = tf.clip_by_value(lab[..., 0] * factor, *colour.L_RANGE)
  rgb = colour.lab_to_rgb_tf(tf.stack([lightness, lab[..., 1], lab[..., 2]], axis=-1))
  inside = tf.cast(mask, tf.float32) >= 0.5  # (B, H, W, 1), broadcast over channels
  return tf.where(inside, rgb, real)


def log2_range(min_factor: float, max_factor: float) -> tuple[float, float]:
  if not 0.0 < min_factor < max_factor:
    raise ValueError(f"need 0 < min_factor < max_factor, got {min_factor}, {max_factor}")
  return math.log2(min_factor), math.log2(max_factor)


def sample_log2_factors(batch_size: tf.Tensor, seed: tf.Tensor, min_factor: float = 0.1,
                        max_factor: float = 10.0) -> tf.Tensor:
  """(B,) o ~ U(log2 min, log2 max): factors 2**o log-uniform over [min, max] ([L]'s range)."""
  lo, hi = log2_range(min_factor, max_factor)
  # Runs in tf.data (CPU). Under XLA the same seed gives other (equally seeded) numbers: TF's
  # XLA Philox differs from its CPU kernel. Everything downstream of the offsets is identical.
  return tf.random.stateless_uniform([batch_size], tf.cast(seed, tf.int64), lo, hi, alg="philox")


def fixed_log2_factors(key: tf.Tensor, min_factor: float = 0.1,
                       max_factor: float = 10.0) -> tf.Tensor:
  """(B,) deterministic offsets for validation: a Weyl sequence over the range keyed by an
  integer per example (the image id), so every validation pass sees the same pairs."""
  lo, hi = log2_range(min_factor, max_factor)
  u = tf.math.floormod(0.5 + tf.cast(key, tf.float64) * _WEYL, 1.0)
  return tf.cast(lo + (hi - lo) * u, tf.float32)


def make_pair(real: tf.Tensor, mask: tf.Tensor, log2_factor: tf.Tensor) -> dict[str, tf.Tensor]:
  """The AET example: transformed image and target map mask * o (B, H, W, 1), o in stops."""
  inside = tf.cast(tf.cast(mask, tf.float32) >= 0.5, tf.float32)
  log2_factor = tf.cast(log2_factor, tf.float32)
  return {"real": tf.cast(real, tf.float32), "mask": inside,
          "transformed": scale_object_lightness(real, inside, log2_factor),
          "target": inside * log2_factor[:, None, None, None], "log2_factor": log2_factor}


# --- the network --------------------------------------------------------------------
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
    cfg = cfg or AET_CONFIG
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


# --- training task (tfharm.train --model=detector_aet) --------------------------------
@dataclasses.dataclass(frozen=True)
class DetectorAETTask:
  """MSE between the predicted and the true offset map ([L] train_aet.py: loss=mse).

  Data: the luminance_composites batches; only `real` and `mask` are used (a real COCO
  object); the composite is ignored. Training pairs are sampled with the seed tfharm.train
  passes to `train_transform`; validation pairs (`transform`) are fixed by image id.
  """

  cfg: det.DetectorConfig = AET_CONFIG
  image_size: int | None = 256  # static size for tf.data/XLA; None: any multiple of 8
  min_factor: float = 0.1
  max_factor: float = 10.0
  dropout: float = 0.5
  name: str = "detector_aet"

  def __post_init__(self):
    log2_range(self.min_factor, self.max_factor)

  def build_model(self) -> keras.Model:
    return DetectorAET(self.cfg, self.dropout, name="detector_aet")

  def _checked(self, batch: Batch) -> dict[str, tf.Tensor]:
    s = self.image_size
    if s is None:
      return {k: batch[k] for k in ("real", "mask")}
    if s % det.OUTPUT_STRIDE:
      raise ValueError(f"detector image_size must be a multiple of 8, got {s}")
    static = batch["real"].shape[1:3]
    if static.is_fully_defined() and tuple(static) != (s, s):
      raise ValueError(f"dataset images are {tuple(static)}, not {s}x{s}: make --image_size "
                       "match --dataset_config")
    return {k: tf.ensure_shape(batch[k], (None, s, s, c)) for k, c in (("real", 3), ("mask", 1))}

  def transform(self, batch: Batch) -> Batch:
    """Validation view: offsets fixed by `image_id` (by position in the batch without one)."""
    out = self._checked(batch)
    b = tf.shape(out["real"])[0]
    key = batch["image_id"] if "image_id" in batch else tf.range(b)
    return make_pair(out["real"], out["mask"],
                     fixed_log2_factors(key, self.min_factor, self.max_factor))

  def train_transform(self, batch: Batch, seed: tf.Tensor) -> Batch:
    """Training view: one offset per example from the stateless `seed` (same seed, same pairs)."""
    out = self._checked(batch)
    o = sample_log2_factors(tf.shape(out["real"])[0], seed, self.min_factor, self.max_factor)
    return make_pair(out["real"], out["mask"], o)

  def inputs(self, batch: Batch) -> dict[str, tf.Tensor]:
    return {"original": batch["real"], "transformed": batch["transformed"]}

  def loss(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    err = tf.square(tf.cast(outputs, tf.float32) - batch["target"])
    mse = tf.reduce_mean(err, axis=[1, 2, 3])
    return {"loss": mse, "mse": mse}

  def metrics(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    """Per image; object terms NaN for an empty mask.

    mse/mae: whole map. object_mae / background_mae: |error| inside / outside the object.
    offset_error: |mean predicted offset over the object - o| (stops). sign_accuracy: whether
    that mean has the sign of o (darker vs brighter).
    """
    pred = tf.cast(outputs, tf.float32)
    target, m = batch["target"], batch["mask"]
    err = tf.abs(pred - target)
    area = tf.reduce_sum(m, axis=[1, 2, 3])
    empty = area <= 0
    bg_area = tf.reduce_sum(1.0 - m, axis=[1, 2, 3])
    mean_pred = tf.math.divide_no_nan(tf.reduce_sum(pred * m, axis=[1, 2, 3]), area)
    o = batch["log2_factor"]
    return {
        "mse": tf.reduce_mean(tf.square(pred - target), axis=[1, 2, 3]),
        "mae": tf.reduce_mean(err, axis=[1, 2, 3]),
        "object_mae": det.nan_where(empty, tf.math.divide_no_nan(
            tf.reduce_sum(err * m, axis=[1, 2, 3]), area)),
        "background_mae": det.nan_where(bg_area <= 0, tf.math.divide_no_nan(
            tf.reduce_sum(err * (1.0 - m), axis=[1, 2, 3]), bg_area)),
        "offset_error": det.nan_where(empty, tf.abs(mean_pred - o)),
        "sign_accuracy": det.nan_where(empty, tf.cast(mean_pred * o > 0, tf.float32)),
    }

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    """Predicting 'unchanged' (zero offset) everywhere."""
    return self.metrics(batch, tf.zeros_like(batch["target"]))

  def images(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    lo, hi = log2_range(self.min_factor, self.max_factor)
    scale = 2.0 * max(abs(lo), abs(hi))
    as_image = lambda x: tf.clip_by_value(0.5 + tf.cast(x, tf.float32) / scale, 0.0, 1.0)
    return {"original": batch["real"], "transformed": batch["transformed"],
            "target_offset": as_image(batch["target"]), "predicted_offset": as_image(outputs)}

  def export(self, model: keras.Model, workdir: str) -> None:
    """Called by tfharm.train after the run: the trunk file for `--detector_init`."""
    layer_files.save_trunk_weights(model, os.path.join(workdir, f"{self.name}.trunk.weights.h5"))


def make_task() -> DetectorAETTask:
  """The Task for `python -m tfharm.train --model=detector_aet`.

  Flags: --image_size, --detector_aet_min_factor/--detector_aet_max_factor, and
  --detector_freeze_encoder (its default, true, freezes the VGG16 convs; [L] trains them,
  so configs/train_detector_aet.flags sets it to false).
  """
  flag = det._flag  # pylint: disable=protected-access
  cfg = det.DetectorConfig(freeze_encoder=flag("detector_freeze_encoder", False))
  return DetectorAETTask(cfg, image_size=flag("image_size", 256),
                         min_factor=flag("detector_aet_min_factor", 0.1),
                         max_factor=flag("detector_aet_max_factor", 10.0))
