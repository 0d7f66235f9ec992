"""AET pre-training of the detector (`--model=detector_aet`): the pretext task and its loss.

[L] = GitHub dmt-lab/learning-to-observe (`generators/aet_generator.py`, `train_aet.py`). A
real object's L* is multiplied by 2**o, o ~ U(log2 min_factor, log2 max_factor) (log-uniform
factors, [L]: 0.1 ... 10); the network (tfharm.models.detector_aet) sees (original,
transformed) and regresses the map mask * o, in stops, with an MSE loss. Training pairs are
drawn with the loop's per-batch seed; validation pairs are fixed by image id. The export adds
the trunk file that `--model=detector --detector_init=...` starts from.
"""
from __future__ import annotations

import dataclasses
import math
import os

import keras
import tensorflow as tf

from tfharm import colour
from tfharm.metrics.aggregate import nan_where
from tfharm.models import detector as detector_lib
from tfharm.models import detector_aet as detector_aet_lib
from tfharm.models import layer_files
from tfharm.training.task import Batch, Task, fixed_size

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


# --- the task -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DetectorAETTaskConfig:
  # [L] trains the whole network, VGG16 included: freeze_encoder=False (as
  # configs/train_detector_aet.flags sets); the default keeps DetectorConfig's frozen VGG16.
  model: detector_lib.DetectorConfig = detector_lib.DetectorConfig()
  image_size: int | None = 256  # static size for tf.data/XLA; None: any multiple of 8
  min_factor: float = 0.1
  max_factor: float = 10.0
  dropout: float = 0.5

  def __post_init__(self):
    log2_range(self.min_factor, self.max_factor)


class DetectorAETTask(Task):
  """MSE between the predicted and the true offset map ([L] train_aet.py: loss=mse).

  Data: the luminance_composites batches; only `real` and `mask` are used (a real COCO
  object); the composite is ignored.
  """

  name = "detector_aet"

  def __init__(self, config: DetectorAETTaskConfig = DetectorAETTaskConfig()):
    self.config = config

  def build_model(self) -> keras.Model:
    return detector_aet_lib.DetectorAET(self.config.model, self.config.dropout,
                                        name="detector_aet")

  def _checked(self, batch: Batch) -> dict[str, tf.Tensor]:
    return fixed_size(batch, {"real": 3, "mask": 1}, self.config.image_size,
                      multiple=detector_lib.OUTPUT_STRIDE)

  def transform(self, batch: Batch) -> Batch:
    """Validation view: offsets fixed by `image_id` (by position in the batch without one)."""
    out = self._checked(batch)
    b = tf.shape(out["real"])[0]
    key = batch["image_id"] if "image_id" in batch else tf.range(b)
    return make_pair(out["real"], out["mask"],
                     fixed_log2_factors(key, self.config.min_factor, self.config.max_factor))

  def train_transform(self, batch: Batch, seed: tf.Tensor) -> Batch:
    """Training view: one offset per example from the stateless `seed` (same seed, same pairs)."""
    out = self._checked(batch)
    o = sample_log2_factors(tf.shape(out["real"])[0], seed, self.config.min_factor,
                            self.config.max_factor)
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
        "object_mae": nan_where(empty, tf.math.divide_no_nan(
            tf.reduce_sum(err * m, axis=[1, 2, 3]), area)),
        "background_mae": nan_where(bg_area <= 0, tf.math.divide_no_nan(
            tf.reduce_sum(err * (1.0 - m), axis=[1, 2, 3]), bg_area)),
        "offset_error": nan_where(empty, tf.abs(mean_pred - o)),
        "sign_accuracy": nan_where(empty, tf.cast(mean_pred * o > 0, tf.float32)),
    }

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    """Predicting 'unchanged' (zero offset) everywhere."""
    return self.metrics(batch, tf.zeros_like(batch["target"]))

  def images(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    lo, hi = log2_range(self.config.min_factor, self.config.max_factor)
    scale = 2.0 * max(abs(lo), abs(hi))
    as_image = lambda x: tf.clip_by_value(0.5 + tf.cast(x, tf.float32) / scale, 0.0, 1.0)
    return {"original": batch["real"], "transformed": batch["transformed"],
            "target_offset": as_image(batch["target"]), "predicted_offset": as_image(outputs)}

  def export(self, model: keras.Model, workdir: str) -> None:
    """After the run: the trunk file for `--detector_init`."""
    layer_files.save_trunk_weights(model, os.path.join(workdir, f"{self.name}.trunk.weights.h5"))
