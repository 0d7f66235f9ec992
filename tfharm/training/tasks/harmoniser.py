"""The harmoniser's training task (`--model=harmoniser`): DIH's reconstruction loss.

Loss: MSE in [-1, 1] over the whole image (as DIH), only inside the mask, or the sum of the
two; with the scene-parsing branch, plus its weighted cross-entropy. Validation scores both
the raw output and what tfharm returns (the composite moved onto the prediction's L* moments,
tfharm.models.correction).
"""
from __future__ import annotations

import dataclasses

from absl import logging
import keras
import tensorflow as tf

from tfharm.data import coco
from tfharm.metrics import image as image_lib
from tfharm.models import harmoniser as harmoniser_lib
from tfharm.models import methods
from tfharm.models import presets as model_presets
from tfharm.training.task import Batch, Task, fixed_size

LOSS_REGIONS = ("image", "mask", "image_and_mask")


@dataclasses.dataclass(frozen=True)
class HarmoniserTaskConfig:
  model: harmoniser_lib.HarmoniserConfig = harmoniser_lib.HarmoniserConfig()
  # image_and_mask: the object's tone weighs more, the background is still reconstructed
  loss_region: str = "image"
  semantic_weight: float = 1e-4  # weight of the parsing cross-entropy (model.semantic)
  init: str | None = None  # weights to start from (a resumed checkpoint overrides them)

  def __post_init__(self):
    if self.loss_region not in LOSS_REGIONS:
      raise ValueError(f"loss_region must be one of {LOSS_REGIONS}, got {self.loss_region!r}")


def image_metrics(pred: tf.Tensor, real: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
  """MSE, PSNR, fMSE and SSIM per image on the 0-255 scale (tfharm.metrics.image); inputs
  in [0, 1]. PSNR is capped at 100 dB only here, for logging: a composite identical to its
  real image (a zero luminance shift) would otherwise make the mean +inf. fMSE is NaN for an
  empty mask and such images are left out of its mean."""
  m = image_lib.mse(pred, real, value_range=(0.0, 1.0))
  return {"mse": m, "psnr": image_lib.psnr_from_mse(m, max_db=100.0),
          "fmse": image_lib.fmse(pred, real, mask, value_range=(0.0, 1.0)),
          "ssim": image_lib.ssim(pred, real, value_range=(0.0, 1.0))}


def _image(outputs) -> tf.Tensor:
  """The harmonised image (B, S, S, 3) in [-1, 1] of the model's output dict."""
  return tf.cast(outputs["image"], tf.float32)


class HarmoniserTask(Task):
  """DIH: whole-image MSE in [-1, 1] (or mask-restricted), optional parsing branch."""

  name = "harmoniser"

  def __init__(self, config: HarmoniserTaskConfig = HarmoniserTaskConfig()):
    self.config = config

  def build_model(self) -> keras.Model:
    cfg = self.config
    model = harmoniser_lib.Harmoniser(cfg.model, name="harmoniser")
    if cfg.init:
      model.set_weights(model_presets.load(cfg.init, "harmoniser", cfg.model).get_weights())
      logging.info("Harmoniser initialised from %s.", cfg.init)
    return model

  def transform(self, batch: Batch) -> Batch:
    out = fixed_size(batch, {"composite": 3, "real": 3, "mask": 1}, self.config.model.image_size)
    if self.config.model.semantic:
      # Only the target object's class is known per composite: label it (category + 1,
      # 0 = background) inside the mask; COCO's ClassLabel indices are contiguous 0..79, and a
      # category of another root ("other", 80) is left unlabelled (0): the head has 81 classes.
      cat = tf.cast(tf.reshape(batch["category"], (-1, 1, 1)), tf.int32)
      cat = tf.where(cat < len(coco.CATEGORY_NAMES), cat + 1, 0)
      out["labels"] = tf.where(batch["mask"][..., 0] > 0.5, cat, 0)  # (B, S, S)
    return out

  def inputs(self, batch: Batch) -> dict[str, tf.Tensor]:
    return {"image": batch["composite"] * 2.0 - 1.0, "mask": batch["mask"]}

  def loss(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    err = tf.square(_image(outputs) - (batch["real"] * 2.0 - 1.0))  # [-1, 1] space
    image_mse = tf.reduce_mean(err, axis=[1, 2, 3])
    m = batch["mask"]
    mask_mse = tf.math.divide_no_nan(tf.reduce_sum(err * m, axis=[1, 2, 3]),
                                     3.0 * tf.reduce_sum(m, axis=[1, 2, 3]))
    mse = {"image": image_mse, "mask": mask_mse,
           "image_and_mask": image_mse + mask_mse}[self.config.loss_region]
    losses = {"loss": mse, "mse": mse}
    if self.config.model.semantic:
      ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
          batch["labels"], tf.cast(outputs["semantic"], tf.float32))
      ce = tf.reduce_mean(ce, axis=[1, 2])
      losses.update(loss=mse + self.config.semantic_weight * ce, semantic_ce=ce)
    return losses

  def _pred01(self, outputs) -> tf.Tensor:
    return tf.clip_by_value((_image(outputs) + 1.0) / 2.0, 0.0, 1.0)

  def metrics(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    """The raw output's metrics, and (prefix `l_moments_`) those of what tfharm returns: the
    composite moved onto the prediction's L* moments (tfharm.models.correction)."""
    mask = batch["mask"]
    raw, masks = {methods.GT_MASK: self._pred01(outputs)}, {methods.GT_MASK: mask}
    images = methods.method_images(batch["composite"], raw, masks,
                                   (methods.GT_MASK, methods.GT_MASK + methods.L_MOMENTS))
    product = image_metrics(images[methods.GT_MASK + methods.L_MOMENTS], batch["real"], mask)
    return {**image_metrics(images[methods.GT_MASK], batch["real"], mask),
            **{f"l_moments_{k}": product[k] for k in ("mse", "psnr", "fmse")}}

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    return image_metrics(batch["composite"], batch["real"], batch["mask"])

  def images(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    return {"composite": batch["composite"], "harmonised": self._pred01(outputs),
            "real": batch["real"], "mask": batch["mask"]}
