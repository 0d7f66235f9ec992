"""Perceptual luminance-artifact detector (Dolhasz et al., CVPR 2020) as a Keras 3 model.

Re-implementation of the classifier of GitHub dmt-lab/learning-to-observe (`models/aet.py`,
`models/classifier.py`, `models/building_blocks.py`); docs/architecture.md, decisions in
docs/decisions.md, "Detector".

Input: RGB image (B, H, W, 3) in [0, 1], H and W divisible by 8 (`detect_any_size` pads or
resizes other sizes; `as_rgb` turns grayscale/RGBA into RGB). torchvision's ImageNet
normalisation ((x - mean) / std) is applied *inside* the model, because the VGG16 weights are
torchvision's (tfharm.weights.load_vgg16_imagenet).
Output: per-pixel softmax (B, H, W, 3) float32, classes 0 = negative (darker than the real
object past the human threshold), 1 = positive (brighter), 2 = none. `detection_channels`
reports the paper's 2-channel map (ch0 p_negative, ch1 p_positive); `soft_mask` its max.

Graph (shapes at H x W):
  VGG16 blocks 1-3 as usual (block3_pool: H/8), block4_pool and block5_pool 3x3 stride 1,
  block5 convs dilated by 2 (output stride 8)                   -> (B, H/8, W/8, 512)
  side branches on block{1..4}_pool: Conv3x3 (stride 4, 2, 1, 1) 128 + BN + ReLU,
  Conv1x1 128 + BN + ReLU, Conv1x1 3 + BN + ReLU                -> 4 x (B, H/8, W/8, 3)
  head on block5: 2 x [Conv1x1 512 + BN + ReLU + SpatialDropout 0.1], Conv1x1 3 + ReLU
  concat                                                         -> (B, H/8, W/8, 15)
  decoder: 3 x [UpSampling x2, Conv3x3 + BN + ReLU, Conv1x1 + BN + ReLU], 256/128/64
                                                                 -> (B, H, W, 64)
  SpatialDropout 0.75, Conv1x1 3 softmax                         -> (B, H, W, 3)
"""
from __future__ import annotations

import dataclasses
import json
import os
import keras
from keras import layers, ops
import numpy as np
import tensorflow as tf

from tfharm.models import detector_labels as labels_lib
from tfharm.models import layer_files

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDE = 8
# (block, convs, width) of VGG16; block 5 is dilated by 2 (docs/decisions.md, "Detector").
_VGG_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
VGG_LAYERS = tuple(f"block{b}_conv{i + 1}" for b, n, _ in _VGG_BLOCKS for i in range(n))
_BRANCH_STRIDES = (4, 2, 1, 1)  # block1_pool (H/2) ... block4_pool (H/8) -> H/8
# Layers with weights between the VGG16 and the `multiscale` concat: side branches, block-5 head.
MULTISCALE_LAYERS = tuple(
    [f"branch{b}_conv{i}{s}" for b in range(1, 5) for i in (1, 2, 3) for s in ("", "_bn")]
    + [f"head_conv{i}{s}" for i in (1, 2) for s in ("", "_bn")] + ["head_output"])
TRUNK_OUTPUT = "cv2_ucr2_relu"  # the last decoder activation: AET's trunk ends here
CLASSIFIER_LAYERS = ("final_dropout", "head_final")  # the layers after the trunk


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """Detector settings; defaults reproduce [L]'s classifier (16.9 M parameters)."""

  imagenet_weights: bool = True  # load the converted torchvision VGG16 on construction
  freeze_encoder: bool = True  # VGG16 convs not trainable
  # Also freeze the side branches and the block-5 head: with freeze_encoder, [L]'s best freeze
  # point ("the entire encoder"), meant for a trunk pre-trained by AET (detector_aet.py);
  # without AET those layers start random and must train.
  freeze_multiscale: bool = False
  branch_width: int = 128
  head_width: int = 512
  decoder_widths: tuple[int, ...] = (256, 128, 64)
  head_dropout: float = 0.1
  final_dropout: float = 0.75  # [L] classifier.py `final_dropout`

  def __post_init__(self):
    object.__setattr__(self, "decoder_widths", tuple(int(w) for w in self.decoder_widths))
    if len(self.decoder_widths) != 3:
      raise ValueError("the decoder has three x2 levels (output stride 8): give three widths")


def _conv_bn_relu(x, width, kernel, name, stride=1):
  x = layers.Conv2D(width, kernel, stride, padding="same", name=name)(x)
  x = layers.BatchNormalization(name=f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="tfharm")
class Detector(keras.Model):
  """Dilated multiscale VGG16 encoder + 3-level decoder -> 3-class per-pixel softmax.

  A functional model (the keras-hub backbone pattern, as `Harmoniser`): image (B, H, W, 3)
  in [0, 1] -> probabilities (B, H, W, 3) float32. H, W: any multiple of 8.
  """

  def __init__(self, cfg: DetectorConfig | None = None, **kwargs):
    cfg = cfg or DetectorConfig()
    image = keras.Input((None, None, 3), name="image")
    mean = np.asarray(IMAGENET_MEAN, "float32")
    std = np.asarray(IMAGENET_STD, "float32")
    x = (ops.cast(image, "float32") - mean) / std  # torchvision normalisation

    taps = {}
    for block, n, width in _VGG_BLOCKS:
      for i in range(n):
        x = layers.Conv2D(width, 3, padding="same", activation="relu",
                          dilation_rate=2 if block == 5 else 1,
                          name=f"block{block}_conv{i + 1}")(x)
      if block <= 3:
        x = layers.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)
      else:  # stride 1: keeps H/8 (DeepLab-style 3x3 pool; [L]'s fork is unpublished)
        x = layers.MaxPooling2D(3, 1, padding="same", name=f"block{block}_pool")(x)
      taps[block] = x  # block1: H/2 ... block3-5: H/8

    branches = []
    for b, stride in zip(range(1, 5), _BRANCH_STRIDES):
      y = _conv_bn_relu(taps[b], cfg.branch_width, 3, f"branch{b}_conv1", stride)
      y = _conv_bn_relu(y, cfg.branch_width, 1, f"branch{b}_conv2")
      y = _conv_bn_relu(y, 3, 1, f"branch{b}_conv3")  # (B, H/8, W/8, 3)
      branches.append(y)
    y = taps[5]  # (B, H/8, W/8, 512)
    for i in (1, 2):
      # [L] writes dilation_rate=4 on these 1x1 convs: a no-op for a 1x1 kernel.
      y = _conv_bn_relu(y, cfg.head_width, 1, f"head_conv{i}")
      y = layers.SpatialDropout2D(cfg.head_dropout, name=f"head_dropout{i}")(y)
    y = layers.Conv2D(3, 1, activation="relu", name="head_output")(y)  # (B, H/8, W/8, 3)
    x = layers.Concatenate(name="multiscale")([y, *branches])  # (B, H/8, W/8, 15)

    for level, width in enumerate(cfg.decoder_widths):  # H/8 -> H/4 -> H/2 -> H
      x = layers.UpSampling2D(2, name=f"us_ucr{level}")(x)
      x = _conv_bn_relu(x, width, 3, f"cv1_ucr{level}")
      x = _conv_bn_relu(x, width, 1, f"cv2_ucr{level}")  # (B, H/2**(2-level), ..., width)
    x = layers.SpatialDropout2D(cfg.final_dropout, name="final_dropout")(x)
    probs = layers.Conv2D(labels_lib.NUM_CLASSES, 1, activation="softmax", dtype="float32",
                          name="head_final")(x)  # (B, H, W, 3)
    super().__init__(inputs=image, outputs=probs, **kwargs)
    self.cfg = cfg
    if cfg.imagenet_weights:
      self.load_imagenet_backbone()
    frozen = (VGG_LAYERS if cfg.freeze_encoder else ()) + (
        MULTISCALE_LAYERS if cfg.freeze_multiscale else ())
    for name in frozen:
      self.get_layer(name).trainable = False

  def load_imagenet_backbone(self, directory: str | None = None) -> None:
    """Sets the 13 VGG16 convs from the converted torchvision ImageNet file (hash-checked;
    tfharm.weights.WeightsError naming `make weights` if it is missing or altered)."""
    from tfharm import weights  # pylint: disable=g-import-not-at-top
    arrays = weights.load_vgg16_imagenet(directory)
    if tuple(arrays) != VGG_LAYERS:
      raise weights.WeightsError(f"unexpected VGG16 layers {list(arrays)}; "
                                 f"{weights.SETUP_HINT} with --force")
    for name, (kernel, bias) in arrays.items():
      self.get_layer(name).set_weights([kernel, bias])

  def head_layers(self) -> list[keras.layers.Layer]:
    """Every layer with weights except the VGG16 convs (which come from the ImageNet file):
    what a head file (tfharm.models.layer_files) holds."""
    return [l for l in self.layers if l.weights and l.name not in VGG_LAYERS]

  def trunk_layers(self) -> list[keras.layers.Layer]:
    """Every layer with weights up to the last decoder activation: what AET pre-trains."""
    return [l for l in self.layers if l.weights and l.name not in CLASSIFIER_LAYERS]

  def changed_backbone_layers(self) -> list[str]:
    """VGG16 convs whose weights differ from the ImageNet file (trained by AET, or with
    freeze_encoder=False): a head file cannot reproduce them. [] if the model was built
    without ImageNet weights (its head file is refused at load time anyway)."""
    if not self.cfg.imagenet_weights:
      return []
    from tfharm import weights  # pylint: disable=g-import-not-at-top
    reference = weights.load_vgg16_imagenet()
    return [name for name in VGG_LAYERS
            if not all(np.array_equal(keras.ops.convert_to_numpy(v), r)
                       for v, r in zip(self.get_layer(name).weights, reference[name]))]

  def get_config(self):
    return {"cfg": dataclasses.asdict(self.cfg), "name": self.name, "trainable": self.trainable}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(DetectorConfig(**config.pop("cfg")), **config)


# --- outputs -----------------------------------------------------------------------
def detection_channels(probs):
  """(B, H, W, 3) softmax -> (B, H, W, 2): ch0 p_negative, ch1 p_positive."""
  return probs[..., : labels_lib.NONE]


def soft_mask(detection):
  """(B, H, W, 2 or 3) -> (B, H, W, 1) = max(p_negative, p_positive) in [0, 1] (section 2.5)."""
  return ops.max(detection[..., : labels_lib.NONE], axis=-1, keepdims=True)


# --- any input -------------------------------------------------------------------
def as_rgb(image) -> tf.Tensor:
  """(…, H, W, C) in [0, 1] with C = 1 (grey: repeated), 3, or 4 (alpha dropped) -> 3 ch."""
  image = tf.convert_to_tensor(image)
  if image.dtype == tf.uint8:
    image = tf.cast(image, tf.float32) / 255.0
  image = tf.cast(image, tf.float32)
  c = image.shape[-1]
  if c == 1:
    return tf.repeat(image, 3, axis=-1)
  if c == 4:
    return image[..., :3]
  if c != 3:
    raise ValueError(f"expected 1, 3 or 4 channels (grey, RGB, RGBA), got {c}")
  return image


def pad_to_multiple(image: tf.Tensor, multiple: int = OUTPUT_STRIDE):
  """Symmetric (mirror) padding at the bottom/right up to multiples of `multiple`.

  Returns (padded, (H, W)); crop the model's output with [:, :H, :W]. Mirroring keeps
  the statistics of the border region, unlike zeros, which would look like a dark object.
  """
  h, w = tf.shape(image)[1], tf.shape(image)[2]
  ph, pw = (-h) % multiple, (-w) % multiple
  return tf.pad(image, [[0, 0], [0, ph], [0, pw], [0, 0]], mode="SYMMETRIC"), (h, w)


def detect_any_size(model: keras.Model, image, method: str = "pad") -> tf.Tensor:
  """2-channel detection (B, H, W, 2) for images of any size and 1/3/4 channels.

  method "pad": mirror-pad to a multiple of 8, run, crop (exact for sizes that already fit;
  needs H, W >= 4). "resize": bilinear resize to the nearest multiples of 8 (at least 8),
  run, resize the probabilities back.
  """
  image = as_rgb(image)
  if image.shape.rank == 3:
    return detect_any_size(model, image[None], method)[0]
  if method == "pad":
    padded, (h, w) = pad_to_multiple(image)
    return detection_channels(model(padded, training=False))[:, :h, :w]
  if method == "resize":
    hw = tf.shape(image)[1:3]
    target = tf.maximum(OUTPUT_STRIDE, tf.cast(tf.round(tf.cast(hw, tf.float32) / 8.0), tf.int32) * 8)
    probs = model(tf.image.resize(image, target, method="bilinear"), training=False)
    return tf.image.resize(detection_channels(probs), hw, method="bilinear")
  raise ValueError(f"method must be 'pad' or 'resize', got {method!r}")


def load_detector(path: str, cfg: DetectorConfig | None = None) -> Detector:
  """One call for every detector file: a `.keras` model, a head file
  (tfharm.models.layer_files; the backbone is rebuilt from the ImageNet file, whose hash is
  checked against the one recorded at training time), or a full Keras `.weights.h5`.
  A preset name or the default: tfharm.models.presets.load."""
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if path.endswith(".keras"):
    model = keras.saving.load_model(path)
    if not isinstance(model, Detector):
      raise TypeError(f"{path} holds a {type(model).__name__}, not a Detector")
    return model
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if layer_files.is_head_file(path):
    attrs = layer_files.read_attrs(path)
    stored = DetectorConfig(**json.loads(attrs["config"]))
    trained_on = attrs.get("vgg16_sha256", "")
    if not stored.imagenet_weights:
      raise ValueError(f"{path} was trained without the ImageNet backbone; its backbone "
                       "weights are not in the head file")
    model = Detector(cfg or stored)
    if trained_on and trained_on != layer_files.vgg_sha256():
      from tfharm import weights  # pylint: disable=g-import-not-at-top
      raise weights.WeightsError(f"{path} was trained on a VGG16 file with SHA-256 {trained_on}, "
                                 f"the local one differs; {weights.SETUP_HINT} with --force")
    layer_files.load_head_weights(model, path)
    return model
  model = Detector(cfg or DetectorConfig())
  model.load_weights(path)
  return model

