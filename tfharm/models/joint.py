"""One network that finds and fixes a luminance composite, no mask in (the paper's future work).

Input: the composite only, RGB (B, H, W, 3) in [0, 1], H and W multiples of STRIDE (8).
Outputs (a dict):
  "probs":      (B, H, W, 3) float32 softmax with the detector's classes (0 negative, 1 positive,
                2 none; tfharm.models.detector_labels); `detector.detection_channels` gives the
                2-channel [p_negative, p_positive] map and `detector.soft_mask` its max, m.
  "delta_l":    (B, H, W, 1) float32, the L* change the network proposes, max_delta_l * tanh(.).
  "harmonised": (B, H, W, 3) float32 in [0, 1]: the composite with L* += m * delta_l (a*, b*
                kept), applied as a difference of two L*a*b* -> RGB conversions, so a pixel with
                m * delta_l == 0 is returned bit-identical. A silent detection changes nothing:
                do no harm on real photos is built into the output form.

Why this form: the data's corruptions move only L* (tfharm.data.composites.move_lightness), so
an L* change is the whole correction; gating it by the model's own detection ties the two heads
together, and the output loss trains both on what the user receives.

Graph (cost per 256^2 image in docs/joint.md, counted by bench/bench_models.py):
  trunk (frozen, no backward): the image 2x average-pooled, ImageNet-normalised, through VGG16
    blocks 1-3 (the offline torchvision weights)     taps at H/2 (64), H/4 (128), H/8 (256)
    or, with trunk="efficientnet_lite0", the full-size image through ImageNet EfficientNet-Lite0
    up to block 4a's expansion (tfharm.models.trunks) taps at H/2 (96), H/4 (144), H/8 (240)
  context at H/8: 1x1 -> `context_width`, residual dilated 3x3 convs, + a global-pool term
  decoder: 2 (or 3) x [bilinear x2, concat a 1x1-reduced tap (a third level: a 3x3 conv of the
    full-size image), 3x3 conv + BN + ReLU]           -> (B, H/2, W/2, 32)
  heads: 1x1 -> 3 logits, 1x1 -> 1 (tanh * max_delta_l); bilinear x2 to H; softmax
    (correction="region": instead of the 1x1 L* head, two numbers per image from the features
    and L* statistics pooled inside and outside the soft mask: an affine L* map, RegionLightness)
"""
from __future__ import annotations

import dataclasses
import os

import keras
from keras import layers, ops
import numpy as np
import tensorflow as tf

from tfharm import colour
from tfharm.models import detector as detector_lib
from tfharm.models import detector_labels as labels_lib
from tfharm.models import trunks

# (block, convs, width) of VGG16's first three blocks, named as in tfharm.models.detector.
_VGG_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256))
VGG_LAYERS = tuple(f"block{b}_conv{i + 1}" for b, n, _ in _VGG_BLOCKS for i in range(n))
# Initial bias of the detection logits: p_none ~ 0.9 at the start, so an untrained model
# already (nearly) leaves photos alone and its output loss starts at the composite's.
_NONE_BIAS = 3.0
TRUNKS = ("vgg16", "efficientnet_lite0")


@dataclasses.dataclass(frozen=True)
class JointConfig:
  """The joint model. Defaults: 8.3 GFLOP forward per 256^2 image, 6.1 of it the frozen trunk;
  12.9 GFLOP per training image (bench/bench_models.py --models=joint)."""

  imagenet_weights: bool = True  # load the converted ImageNet weights into the trunk
  # "vgg16": VGG16 blocks 1-3 at half size (the shipped models). "efficientnet_lite0": a 0.32
  # GFLOP trunk instead of 6.1, 2.6 GFLOP forward in all (needs the optional EfficientNet-Lite0
  # file of `make weights`).
  trunk: str = "vgg16"
  context_width: int = 128
  context_dilations: tuple[int, ...] = (2, 4)
  # Decoder levels at H/4, H/2 (and H): reduced taps (at H a 3x3 conv of the image itself) and
  # widths. With two levels (default) the heads run at H/2 and their logits and L* change are
  # upsampled bilinearly: a full-size third level costs ~1.5x the training time (docs/joint.md).
  skip_widths: tuple[int, ...] = (32, 16)
  decoder_widths: tuple[int, ...] = (64, 32)
  max_delta_l: float = 50.0  # bound of the L* change, L* units
  # How the L* change is predicted. "pixel": a map from a 1x1 conv (delta per pixel). "region":
  # one affine L* map per image, delta = shift + (s - 1) * (L* - mean of L* under m), its two
  # parameters regressed from the decoder's features and the L* statistics pooled inside the
  # soft mask m and outside it (the region and its surroundings): the Reinhard form that made
  # the composite, so its inverse is in the family, and one decision per region, not per pixel.
  correction: str = "pixel"
  max_log_scale: float = 1.1  # "region": |log s| bound (s within [1/3, 3], the data's bound)

  def __post_init__(self):
    for name in ("context_dilations", "skip_widths", "decoder_widths"):
      object.__setattr__(self, name, tuple(int(w) for w in getattr(self, name)))
    if len(self.decoder_widths) not in (2, 3) or len(self.skip_widths) != len(
        self.decoder_widths):
      raise ValueError("the decoder has two or three x2 levels: give as many skip as decoder "
                       f"widths, got {self.skip_widths} and {self.decoder_widths}")
    if self.max_delta_l <= 0:
      raise ValueError(f"max_delta_l must be positive, got {self.max_delta_l}")
    if self.correction not in CORRECTIONS:
      raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
    if self.trunk not in TRUNKS:
      raise ValueError(f"unknown trunk {self.trunk!r}; expected one of {TRUNKS}")


CORRECTIONS = ("pixel", "region")
STRIDE = 8  # H and W must be multiples of this: the input's 2x pooling and the trunk's two
# (EfficientNet-Lite0: its three stride-2 layers)


def _vgg_taps(normalised) -> list:
  """VGG16 blocks 1-3 on the 2x average-pooled image: a quarter of the trunk's cost; detection
  needs context more than detail."""
  x = layers.AveragePooling2D(2, name="trunk_input_pool")(normalised)
  taps = []
  for block, n, width in _VGG_BLOCKS:
    for i in range(n):
      x = layers.Conv2D(width, 3, padding="same", activation="relu",
                        name=f"block{block}_conv{i + 1}")(x)
    taps.append(ops.stop_gradient(x))  # frozen trunk: no backward through it
    if block < 3:
      x = layers.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)
  return taps


def _conv_bn_relu(x, width, kernel, name, dilation=1):
  x = layers.Conv2D(width, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                    name=name)(x)
  x = layers.BatchNormalization(name=f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="tfharm")
class Upsample2x(layers.Layer):
  """Bilinear x2 (half-pixel centres) for any H, W: Keras's bilinear UpSampling2D cannot be
  traced with unknown sizes, which SavedModel export (tfharm.export) needs."""

  def call(self, x):
    hw = tf.shape(x)[1:3] * 2
    return tf.cast(tf.image.resize(x, hw, method="bilinear"), x.dtype)

  def compute_output_shape(self, input_shape):
    b, h, w, c = input_shape
    return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)


@keras.saving.register_keras_serializable(package="tfharm")
class LightnessShift(layers.Layer):
  """harmonised = clip(image + rgb(L* + m * delta, a*, b*) - rgb(L*, a*, b*), 0, 1). `gate`:
  the (B, H, W, 3) detection softmax (m = max(p_negative, p_positive)) or a (B, H, W, 1) soft
  mask m. Exact identity where m * delta == 0."""

  def call(self, image, delta_l, gate):  # not `mask`: Keras gives that argument a meaning
    image = tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 1.0)
    gate = tf.cast(gate, tf.float32)
    m = detector_lib.soft_mask(gate) if gate.shape[-1] == labels_lib.NUM_CLASSES else gate
    lab = colour.rgb_to_lab_tf(image)
    l = tf.clip_by_value(lab[..., :1] + m * tf.cast(delta_l, tf.float32), *colour.L_RANGE)
    shifted = colour.lab_to_rgb_tf(tf.concat([l, lab[..., 1:]], axis=-1))
    return tf.clip_by_value(image + (shifted - colour.lab_to_rgb_tf(lab)), 0.0, 1.0)

  def compute_output_shape(self, image_shape, delta_l_shape, gate_shape):
    return image_shape


def _masked_stats(x, m):
  """(B, C) means of x over the soft mask m (B, H, W, 1) and over 1 - m."""
  def mean(w):
    return tf.math.divide_no_nan(tf.reduce_sum(x * w, axis=[1, 2]),
                                 tf.reduce_sum(w, axis=[1, 2]) + 1e-3)
  return mean(m), mean(1.0 - m)


@keras.saving.register_keras_serializable(package="tfharm")
class RegionPool(layers.Layer):
  """The region's and its surroundings' summary for the "region" correction: the features'
  means inside the soft mask m and outside it, and L*/100's mean and standard deviation in
  each, concatenated (B, 2C + 4)."""

  def call(self, features, probs, image):
    m = detector_lib.soft_mask(tf.cast(probs, tf.float32))
    x = tf.cast(features, tf.float32)
    l = colour.rgb_to_lab_tf(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 1.0))[..., :1]
    l = l / 100.0
    f_in, f_out = _masked_stats(x, m)
    l_in, l_out = _masked_stats(l, m)
    sq_in, sq_out = _masked_stats(tf.square(l), m)
    sd = lambda sq, mu: tf.sqrt(tf.maximum(sq - tf.square(mu), 0.0) + 1e-6)  # noqa: E731
    return tf.concat([f_in, f_out, l_in, sd(sq_in, l_in), l_out, sd(sq_out, l_out)], axis=-1)

  def compute_output_shape(self, features_shape, probs_shape, image_shape):
    return (features_shape[0], 2 * features_shape[-1] + 4)


@keras.saving.register_keras_serializable(package="tfharm")
class RegionLightness(layers.Layer):
  """delta_l (B, H, W, 1) = shift + (exp(log_scale) - 1) * (L* - mean of L* under m): one
  affine L* map per image from params (B, 2) in (-1, 1) (tanh), scaled by the bounds."""

  def __init__(self, max_delta_l: float, max_log_scale: float, **kwargs):
    super().__init__(**kwargs)
    self.max_delta_l = float(max_delta_l)
    self.max_log_scale = float(max_log_scale)

  def call(self, image, params, probs):
    m = detector_lib.soft_mask(tf.cast(probs, tf.float32))
    l = colour.rgb_to_lab_tf(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 1.0))[..., :1]
    mean, _ = _masked_stats(l, m)  # (B, 1)
    params = tf.cast(params, tf.float32)
    shift = params[:, 0:1] * self.max_delta_l
    scale = tf.exp(params[:, 1:2] * self.max_log_scale)
    return shift[:, None, None, :] + (scale - 1.0)[:, None, None, :] * (l - mean[:, None, None, :])

  def compute_output_shape(self, image_shape, params_shape, probs_shape):
    return tuple(image_shape[:-1]) + (1,)

  def get_config(self):
    return {**super().get_config(), "max_delta_l": self.max_delta_l,
            "max_log_scale": self.max_log_scale}


@keras.saving.register_keras_serializable(package="tfharm")
class JointModel(keras.Model):
  """Frozen VGG16 blocks 1-3 at half resolution + a light two-head decoder (module docstring).

  A functional model: image (B, H, W, 3) in [0, 1] -> {"probs", "delta_l", "harmonised"}.
  """

  def __init__(self, cfg: JointConfig | None = None, **kwargs):
    cfg = cfg or JointConfig()
    image = keras.Input((None, None, 3), name="image")
    mean = np.asarray(detector_lib.IMAGENET_MEAN, "float32")
    std = np.asarray(detector_lib.IMAGENET_STD, "float32")
    normalised = (ops.cast(image, "float32") - mean) / std
    if cfg.trunk == "vgg16":
      taps = _vgg_taps(normalised)
    else:  # full size: the network's stem already halves it
      features = trunks.lite0_features(ops.cast(image, "float32"), until=trunks.LITE0_TAPS[-1])
      taps = [ops.stop_gradient(features[name]) for name in trunks.LITE0_TAPS]
    # taps at H/2 (64 channels), H/4 (128), H/8 (256); EfficientNet-Lite0: 96, 144, 240

    c = _conv_bn_relu(taps[2], cfg.context_width, 1, "context_reduce")
    for d in cfg.context_dilations:
      c = layers.Add(name=f"context_d{d}_add")([c, _conv_bn_relu(c, cfg.context_width, 3,
                                                                 f"context_d{d}", dilation=d)])
    g = layers.GlobalAveragePooling2D(keepdims=True, name="context_global_pool")(c)
    g = layers.Conv2D(cfg.context_width, 1, activation="relu", name="context_global")(g)
    x = c + g  # the scene's summary at every position (broadcast over H/8 x W/8)

    skips = [taps[1], taps[0], normalised]  # H/4, H/2, H
    for level, (skip, skip_width, width) in enumerate(zip(skips, cfg.skip_widths,
                                                          cfg.decoder_widths)):
      x = Upsample2x(name=f"decoder{level}_up")(x)
      kernel = 3 if level == 2 else 1  # the image itself needs a spatial filter, taps do not
      s = _conv_bn_relu(skip, skip_width, kernel, f"decoder{level}_skip")
      x = layers.Concatenate(name=f"decoder{level}_concat")([x, s])
      x = _conv_bn_relu(x, width, 3, f"decoder{level}_conv")
    logits = layers.Conv2D(labels_lib.NUM_CLASSES, 1, name="detection_logits")(x)
    if cfg.correction == "region":
      head_probs = layers.Softmax(dtype="float32", name="head_probs")(logits)
      head_image = (layers.AveragePooling2D(2, name="head_image_pool")(image)
                    if len(cfg.decoder_widths) == 2 else image)
      pooled = RegionPool(dtype="float32", name="region_pool")(x, head_probs, head_image)
      hidden = layers.Dense(64, activation="relu", name="region_hidden")(pooled)
      params = layers.Dense(2, activation="tanh", kernel_initializer="zeros", dtype="float32",
                            name="region_params")(hidden)
    else:
      delta = layers.Conv2D(1, 1, activation="tanh", kernel_initializer="zeros", dtype="float32",
                            name="delta_l_tanh")(x)
    if len(cfg.decoder_widths) == 2:  # heads at H/2
      logits = Upsample2x(name="logits_up")(logits)
      if cfg.correction == "pixel":
        delta = Upsample2x(dtype="float32", name="delta_l_up")(delta)
    probs = layers.Softmax(dtype="float32", name="probs")(logits)
    if cfg.correction == "region":
      delta_l = RegionLightness(cfg.max_delta_l, cfg.max_log_scale, dtype="float32",
                                name="delta_l")(image, params, probs)
    else:
      delta_l = layers.Rescaling(cfg.max_delta_l, dtype="float32", name="delta_l")(delta)
    harmonised = LightnessShift(dtype="float32", name="harmonised")(image, delta_l, probs)
    super().__init__(inputs=image,
                     outputs={"probs": probs, "delta_l": delta_l, "harmonised": harmonised},
                     **kwargs)
    self.cfg = cfg
    bias = self.get_layer("detection_logits").bias
    bias.assign(np.eye(labels_lib.NUM_CLASSES, dtype="float32")[labels_lib.NONE] * _NONE_BIAS)
    if cfg.imagenet_weights:
      self.load_imagenet_trunk()
    for name in self.trunk_layer_names():
      self.get_layer(name).trainable = False  # also keeps its batch norms in inference mode

  def trunk_layer_names(self) -> list[str]:
    """The frozen trunk's layers that carry weights."""
    if self.cfg.trunk == "vgg16":
      return list(VGG_LAYERS)
    return trunks.lite0_layer_names(self)

  def load_imagenet_trunk(self, directory: str | None = None) -> None:
    """The converted ImageNet weights (hash-checked by tfharm.weights): VGG16's first 7 convs,
    or EfficientNet-Lite0 up to the last tap."""
    from tfharm import weights  # pylint: disable=g-import-not-at-top
    if self.cfg.trunk == "efficientnet_lite0":
      trunks.load_lite0_weights(self, weights.load_efficientnet_lite0(directory))
      return
    arrays = weights.load_vgg16_imagenet(directory)
    for name in VGG_LAYERS:
      if name not in arrays:
        raise weights.WeightsError(f"the VGG16 file has no {name}; {weights.SETUP_HINT} --force")
      self.get_layer(name).set_weights(list(arrays[name]))

  def get_config(self):
    return {"cfg": dataclasses.asdict(self.cfg), "name": self.name, "trainable": self.trainable}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(JointConfig(**config.pop("cfg")), **config)


def check_size(image) -> None:
  """A clear error for a static size the model cannot take (instead of a concat shape error)."""
  s = STRIDE
  hw = tuple(image.shape[1:3])
  if None not in hw and (hw[0] % s or hw[1] % s or min(hw) < s):
    raise ValueError(f"joint model input must be a multiple of {s} (>= {s}) in H and W, got "
                     f"{hw[0]}x{hw[1]}; pad (detector.pad_to_multiple) or resize first")


def load_joint(path: str, cfg: JointConfig | None = None) -> JointModel:
  """One call for a joint model file: a `.keras` model, or a `.weights.h5` file (the config
  from `cfg`, default JointConfig(); a file of another config fails naming both). Either way
  the model is built by this code and given the file's weights, so a `.keras` file written by
  an earlier version of the graph (same weights) runs the current one."""
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.endswith(".keras"):
    stored = keras.saving.load_model(path)
    if not isinstance(stored, JointModel):
      raise TypeError(f"{path} holds a {type(stored).__name__}, not a JointModel")
    model = JointModel(dataclasses.replace(stored.cfg, imagenet_weights=False))
    model.set_weights(stored.get_weights())
    return model
  cfg = cfg or JointConfig()
  model = JointModel(dataclasses.replace(cfg, imagenet_weights=False))
  try:
    model.load_weights(path)
  except ValueError as e:
    raise ValueError(f"{path} does not match the joint model config {cfg}: {e}") from e
  return model
