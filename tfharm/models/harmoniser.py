"""Deep Image Harmonization (Tsai et al., CVPR 2017) as a Keras 3 model.

Layer table: docs/architecture.md, "The harmoniser". Inputs are a dict
{"image": (B, S, S, 3) in [-1, 1], "mask": (B, S, S, 1) soft in [0, 1]}; the
output is {"image": the harmonised image (B, S, S, 3) in [-1, 1] space}, *linear* (not
clipped) so that training sees gradients everywhere; `harmonise` clips.
"""
from __future__ import annotations

import dataclasses
import os
import math
from typing import Sequence

import keras
from keras import layers, ops

from tfharm.models import correction


_WIDTHS = (64, 64, 128, 128, 256, 256, 512)  # conv0..conv6 as in the Caffe release


@dataclasses.dataclass(frozen=True)
class HarmoniserConfig:
  """Size-dependent DIH settings; defaults give the 256x256 model of the TF1 port."""

  image_size: int = 256  # the FC bottleneck fixes it; must be 4 * 2**n with n >= 1
  fc_dim: int | None = None  # None: 512 at 256 (six blocks), 1024 at >= 512 (seven blocks)
  semantic: bool = False  # the scene-parsing decoder branch (docs/architecture.md)
  num_classes: int = 81  # 80 COCO categories + background when `semantic`
  init_std: float = 0.01  # conv/deconv kernels, as in Caffe and the TF1 port
  fc_init_std: float = 0.005

  def __post_init__(self):
    n = math.log2(self.image_size / 4) if self.image_size > 0 else -1
    if n < 1 or n != int(n) or int(n) > len(_WIDTHS):
      raise ValueError(f"image_size must be 4 * 2**n with 1 <= n <= {len(_WIDTHS)}, "
                       f"got {self.image_size}")

  @property
  def depth(self) -> int:
    """Number of stride-2 encoder blocks: log2(S / 4)."""
    return int(round(math.log2(self.image_size / 4)))

  @property
  def widths(self) -> list[int]:
    return list(_WIDTHS[: self.depth])

  @property
  def bottleneck(self) -> int:
    if self.fc_dim is not None:
      return self.fc_dim
    return 512 if self.image_size <= 256 else 1024


def _conv_init(std):
  return keras.initializers.RandomNormal(stddev=std)


class _Decoder:
  """Builds one DIH decoder path (the harmonisation or the semantic one).

  Kept as a helper, not a layer, so every Keras layer stays a direct, named child of
  the functional model (stable weight names for .weights.h5 files).
  """

  def __init__(self, cfg: HarmoniserConfig, prefix: str):
    init = _conv_init(cfg.init_std)
    widths = cfg.widths
    self.top = layers.Conv2DTranspose(widths[-1], 4, 1, "valid", kernel_initializer=init,
                                      name=f"{prefix}dec_top")
    self.top_bn = layers.BatchNormalization(name=f"{prefix}dec_top_bn")
    self.ups, self.bns = [], []
    for i in range(cfg.depth - 2, -1, -1):  # dec_{depth-2} ... dec_0, mirrors conv_i
      self.ups.append(layers.Conv2DTranspose(widths[i], 4, 2, "same", kernel_initializer=init,
                                             name=f"{prefix}dec{i}"))
      self.bns.append(layers.BatchNormalization(name=f"{prefix}dec{i}_bn"))

  def __call__(self, z, skips, others: Sequence | None = None):
    """z: (B, 1, 1, d); skips: encoder maps from the deepest; others: features to concat.

    Returns the per-level features (after the skip sum), deepest first.
    """
    x = ops.elu(self.top_bn(self.top(z)))  # (B, 4, 4, w_top)
    x = x + skips[0]
    feats = [x]
    for level, (up, bn) in enumerate(zip(self.ups, self.bns)):
      if others is not None:
        x = ops.concatenate([x, others[level]], axis=-1)  # semantic features, x2 channels
      x = ops.elu(bn(up(x))) + skips[level + 1]
      feats.append(x)
    return feats


@keras.saving.register_keras_serializable(package="tfharm")
class Harmoniser(keras.Model):
  """DIH encoder-decoder: {"image" [-1, 1], "mask" [0, 1]} -> image in [-1, 1] space.

  A functional model built from `HarmoniserConfig` (the keras-hub "backbone" pattern),
  so the graph is static, summary() shows every layer and save/load needs no tracing.
  The output is always a dict: {"image": (B, S, S, 3)}, plus "semantic" (B, S, S, classes)
  logits with `cfg.semantic`; callers read `out["image"]` whatever the config.
  """

  def __init__(self, cfg: HarmoniserConfig | None = None, **kwargs):
    cfg = cfg or HarmoniserConfig()
    s = cfg.image_size
    init = _conv_init(cfg.init_std)
    image = keras.Input((s, s, 3), name="image")
    mask = keras.Input((s, s, 1), name="mask")
    clean = correction.sanitise_mask(ops.cast(mask, "float32"))  # a NaN would reach every pixel
    x = ops.concatenate([image, clean], axis=-1)  # (B, S, S, 4)

    skips = []
    for i, w in enumerate(cfg.widths):
      x = layers.Conv2D(w, 4, 2, "same", kernel_initializer=init, name=f"conv{i}")(x)
      x = ops.elu(layers.BatchNormalization(name=f"conv{i}_bn")(x))
      skips.append(x)  # conv_i: (B, S / 2**(i+1), ..., w)
    skips = skips[::-1]  # deepest (4x4) first

    x = layers.Flatten(name="flatten")(x)  # (B, 16 * w_last)
    x = layers.Dense(cfg.bottleneck, kernel_initializer=_conv_init(cfg.fc_init_std),
                     name="fc7")(x)  # linear, no BN, no ELU
    z = layers.Reshape((1, 1, cfg.bottleneck), name="fc7_reshape")(x)  # (B, 1, 1, d)

    sem_feats = None
    if cfg.semantic:
      sem_feats = _Decoder(cfg, "sem_")(z, skips)
    harm_feats = _Decoder(cfg, "")(z, skips, sem_feats)
    out = layers.Conv2DTranspose(3, 4, 2, "same", kernel_initializer=init, dtype="float32",
                                 name="output_h")(harm_feats[-1])  # (B, S, S, 3), linear
    outputs = {"image": out}
    if cfg.semantic:
      y = layers.Conv2DTranspose(64, 4, 2, "same", kernel_initializer=init,
                                 name="sem_head")(sem_feats[-1])
      y = ops.elu(layers.BatchNormalization(name="sem_head_bn")(y))
      logits = layers.Conv2D(cfg.num_classes, 1, kernel_initializer=init, dtype="float32",
                             name="output_s")(y)  # (B, S, S, classes)
      outputs["semantic"] = logits
    super().__init__(inputs={"image": image, "mask": mask}, outputs=outputs, **kwargs)
    self.cfg = cfg

  def get_config(self):
    return {"cfg": dataclasses.asdict(self.cfg), "name": self.name,
            "trainable": self.trainable}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(HarmoniserConfig(**config.pop("cfg")), **config)


def harmonise(model: keras.Model, image, mask):
  """Harmonised image in [0, 1] from image in [0, 1] and a soft mask, both at S x S.

  Wraps the [0, 1] <-> [-1, 1] convention of the network and clips its linear output.
  """
  out = model({"image": image * 2.0 - 1.0, "mask": mask}, training=False)["image"]
  return ops.clip((ops.cast(out, "float32") + 1.0) / 2.0, 0.0, 1.0)


def load_harmoniser(path: str, cfg: HarmoniserConfig | None = None) -> Harmoniser:
  """Loads a harmoniser from a `.keras` file, or a `.weights.h5` file plus its config (a
  preset name or the default: tfharm.models.presets.load).

  `.weights.h5` files carry no architecture, so `cfg` (default: the 256x256 model) says
  what to build; a mismatch fails loudly in Keras rather than loading partially.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.endswith(".keras"):
    model = keras.saving.load_model(path)
    if not isinstance(model, Harmoniser):
      raise TypeError(f"{path} holds a {type(model).__name__}, not a Harmoniser")
    return model
  if not path.endswith(".weights.h5"):
    raise ValueError(f"expected a .keras or .weights.h5 file, got {path}")
  model = Harmoniser(cfg or HarmoniserConfig())
  model.load_weights(path)
  return model
