"""Perceptual luminance-artifact detector (Dolhasz et al., CVPR 2020) as a Keras 3 model.

Re-implementation of the classifier of GitHub dmt-lab/learning-to-observe (`models/aet.py`,
`models/classifier.py`, `models/building_blocks.py`); architectures.md section 2, decisions in
notes/detector.md.

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
from typing import Any, Mapping

from absl import flags
from absl import logging
import keras
from keras import layers, ops
import numpy as np
import tensorflow as tf

from tfharm.metrics import localisation
from tfharm.models import detector_labels as labels_lib
from tfharm.models import layer_files

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDE = 8
# (block, convs, width) of VGG16; block 5 is dilated by 2 (see notes/detector.md).
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


def load_detector(path: str | None = None, cfg: DetectorConfig | None = None) -> Detector:
  """One call for every detector file: a `.keras` model, a head file
  (tfharm.models.layer_files; the backbone is rebuilt from the ImageNet file, whose hash is
  checked against the one recorded at training time), or a full Keras `.weights.h5`.
  Without a path: the detector shipped in checkpoints/."""
  if path is None:
    from tfharm.models import checkpoints  # pylint: disable=g-import-not-at-top
    path = checkpoints.DETECTOR_256
    if not os.path.exists(path):
      raise FileNotFoundError(f"no shipped detector at {path}: pass the path of a trained one "
                              "(python -m tfharm.train --flagfile=configs/train_detector.flags)")
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


# --- training task (tfharm.train --model=detector) --------------------------------
Batch = Mapping[str, tf.Tensor]


def nan_where(cond, value) -> tf.Tensor:
  """`value` as float32 with NaN where `cond`: metrics that do not apply to an image are left
  out of the means (validation averages with nanmean)."""
  return tf.where(cond, tf.fill(tf.shape(value), float("nan")), tf.cast(value, tf.float32))


@dataclasses.dataclass(frozen=True)
class DetectorTask:
  """Weighted softmax cross-entropy (+ optional soft Dice on p_neg + p_pos).

  class_weights: None = per batch from the label frequencies (detector_labels.class_weights),
  else fixed (w_negative, w_positive, w_none).
  """

  cfg: DetectorConfig = DetectorConfig()
  label_cfg: labels_lib.LabelConfig = labels_lib.LabelConfig()
  image_size: int | None = 256  # static size for tf.data/XLA; None: any multiple of 8
  class_weights: tuple[float, float, float] | None = None
  max_class_weight: float = 10.0
  dice_weight: float = 0.0
  threshold: float = 0.5  # on max(p_neg, p_pos) for IoU/F1/silence
  # near_silence: a subthreshold composite whose detected area stays below this fraction of
  # the image counts as (nearly) silent: the data's smallest object covers 1 % of its image
  # (tfharm.data.composites.min_area_fraction), so a smaller detection is not an object.
  silent_area: float = 0.01
  name: str = "detector"
  # AET trunk or head file (tfharm.models.layer_files) loaded into the model at build time; a
  # checkpoint restored afterwards (resume) overrides it.
  init: str | None = None
  # Training on random crops of the labelled images (None: whole images). The labels are made
  # on the whole image first, so an object's class never depends on the crop.
  train_crop: int | None = None
  crop_on_object: float = 0.75  # fraction of crops centred (with jitter) on the target object

  def build_model(self) -> keras.Model:
    model = Detector(self.cfg, name="detector")
    if self.init and layer_files.is_head_file(self.init):  # fine-tuning a shipped detector
      layer_files.load_head_weights(model, self.init)
      logging.info("Detector initialised from the head file %s.", self.init)
    elif self.init:
      layer_files.load_trunk_weights(model, self.init)
      logging.info("Detector trunk initialised from %s.", self.init)
    return model

  def transform(self, batch: Batch) -> Batch:
    s = self.image_size
    if s is not None:
      if s % OUTPUT_STRIDE:
        raise ValueError(f"detector image_size must be a multiple of 8, got {s}")
      static = batch["composite"].shape[1:3]
      if static.is_fully_defined() and tuple(static) != (s, s):
        raise ValueError(f"dataset images are {tuple(static)}, not {s}x{s}: make --image_size "
                         "match --dataset_config")
      out = {k: tf.ensure_shape(batch[k], (None, s, s, c))
             for k, c in (("composite", 3), ("real", 3), ("mask", 1))}
    else:
      out = {k: batch[k] for k in ("composite", "real", "mask")}
    out.update(labels_lib.make_labels(out["composite"], out["real"], out["mask"],
                                      self.label_cfg))
    return out

  def train_transform(self, batch: Batch, seed: tf.Tensor) -> Batch:
    """`transform`, then (if `train_crop`) one seeded random crop per example."""
    out = self.transform(batch)
    if not self.train_crop:
      return out
    return crop_labelled_batch(out, self.train_crop, seed, self.crop_on_object)

  def inputs(self, batch: Batch) -> tf.Tensor:
    return batch["composite"]

  def loss(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    probs = tf.cast(outputs, tf.float32)
    y = batch["labels"]
    p_y = tf.reduce_sum(probs * tf.one_hot(y, labels_lib.NUM_CLASSES), axis=-1)  # (B, H, W)
    ce = -tf.math.log(tf.clip_by_value(p_y, 1e-7, 1.0))
    if self.class_weights is None:
      w = labels_lib.class_weights(y, self.max_class_weight)
    else:
      w = tf.constant(self.class_weights, tf.float32)
    wce = tf.reduce_mean(tf.gather(w, y) * ce, axis=[1, 2])  # (B,)
    losses = {"loss": wce, "weighted_ce": wce, "ce": tf.reduce_mean(ce, axis=[1, 2])}
    if self.dice_weight:
      m = probs[..., labels_lib.NEGATIVE] + probs[..., labels_lib.POSITIVE]  # (B, H, W)
      g = batch["target"][..., 0]
      dice = 1.0 - (2.0 * tf.reduce_sum(m * g, [1, 2]) + 1.0) / (
          tf.reduce_sum(m, [1, 2]) + tf.reduce_sum(g, [1, 2]) + 1.0)
      losses.update(loss=wce + self.dice_weight * dice, dice=dice)
    return losses

  def metrics(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    """Per image; NaN where a metric does not apply (left out of the split's mean).

    iou/f1/ap: thresholded / soft max(p0, p1) vs the suprathreshold object, on images that
    have one. sign_accuracy: on those images, whether sum(p_pos) vs sum(p_neg) over the
    object picks the object's class. silence: on subthreshold images (empty target), 1 if no
    pixel reaches the threshold; near_silence: 1 if under `silent_area` of the pixels do.
    pixel_accuracy: argmax vs labels, every image.
    """
    probs = tf.cast(outputs, tf.float32)
    m = soft_mask(probs)  # (B, H, W, 1)
    target = batch["target"]
    supra = tf.reduce_sum(target, axis=[1, 2, 3]) > 0  # (B,)
    loc = localisation.localisation_metrics(m, target, threshold=self.threshold)
    out = {k: nan_where(~supra, v) for k, v in loc.items()}
    s_neg = tf.reduce_sum(probs[..., 0:1] * target, axis=[1, 2, 3])
    s_pos = tf.reduce_sum(probs[..., 1:2] * target, axis=[1, 2, 3])
    pred_sign = tf.where(s_pos > s_neg, labels_lib.POSITIVE, labels_lib.NEGATIVE)
    correct = tf.cast(pred_sign == batch["sign"], tf.float32)
    out["sign_accuracy"] = nan_where(~supra | (batch["sign"] == labels_lib.NONE), correct)
    fired = tf.reduce_max(m, axis=[1, 2, 3]) >= self.threshold
    out["silence"] = nan_where(supra, 1.0 - tf.cast(fired, tf.float32))
    fired_area = tf.reduce_mean(tf.cast(m >= self.threshold, tf.float32), axis=[1, 2, 3])
    out["near_silence"] = nan_where(supra, tf.cast(fired_area < self.silent_area, tf.float32))
    out["false_alarm_fraction"] = nan_where(supra, fired_area)
    pred = tf.argmax(probs, axis=-1, output_type=tf.int32)
    out["pixel_accuracy"] = tf.reduce_mean(tf.cast(pred == batch["labels"], tf.float32), [1, 2])
    out["ce"] = self.loss(batch, probs)["ce"]
    return out

  def baseline(self, batch: Batch) -> dict[str, tf.Tensor]:
    """A detector that always says 'none' (silent everywhere)."""
    none = tf.one_hot(tf.fill(tf.shape(batch["labels"]), labels_lib.NONE), labels_lib.NUM_CLASSES)
    return self.metrics(batch, none * 0.98 + 0.01)

  def images(self, batch: Batch, outputs) -> dict[str, tf.Tensor]:
    probs = tf.cast(outputs, tf.float32)
    zeros = tf.zeros_like(probs[..., :1])
    # red = positive (brighter), blue = negative (darker)
    signed = tf.concat([probs[..., 1:2], zeros, probs[..., 0:1]], axis=-1)
    return {"composite": batch["composite"], "real": batch["real"],
            "target": batch["target"], "soft_mask": soft_mask(probs), "detection": signed}

  def export(self, model: keras.Model, workdir: str) -> None:
    """Called by tfharm.train after the run: the small head-only file, unless the VGG16 convs
    changed (AET init, unfrozen encoder); then only <name>.weights.h5 / .keras hold the model."""
    changed = model.changed_backbone_layers()
    if changed:
      logging.warning("No %s.head.weights.h5: the VGG16 convs differ from the ImageNet file "
                      "(%d changed); use %s.weights.h5 or %s.keras (load_detector reads both).",
                      self.name, len(changed), self.name, self.name)
      return
    layer_files.save_head_weights(model, os.path.join(workdir, f"{self.name}.head.weights.h5"))


def crop_labelled_batch(batch: Batch, size: int, seed: tf.Tensor,
                        on_object: float = 0.75) -> Batch:
  """Crops every per-pixel tensor of a labelled batch to size x size at one offset per example.

  Why: the detector is fully convolutional, so a 128^2 crop of a 256^2 composite teaches the
  same thing at the same scale for a quarter of the FLOPs (our CPU-training recipe). With
  probability `on_object` the window is centred on the mask's centroid, jittered by up to
  size/4; otherwise it is uniform over the image (mostly background: it teaches silence).
  Exact pixel copies (gathers), seeded (stateless), XLA-safe. Per-example scalars (ratio,
  sign) keep their whole-object values; `target` is cropped, so a crop that misses the object
  becomes a silent example.
  """
  if size % OUTPUT_STRIDE:
    raise ValueError(f"crop size must be a multiple of {OUTPUT_STRIDE}, got {size}")
  image = batch["composite"]
  b = tf.shape(image)[0]
  h, w = tf.shape(image)[1], tf.shape(image)[2]
  tf.debugging.assert_greater_equal(tf.minimum(h, w), size,
                                    message=f"images smaller than the {size} crop")
  seeds = tf.random.split(tf.cast(seed, tf.int64), 3)
  mask = tf.cast(batch["mask"][..., 0] >= 0.5, tf.float32)  # (B, H, W)
  area = tf.reduce_sum(mask, [1, 2])
  ys = tf.cast(tf.range(h), tf.float32)[None, :, None]
  xs = tf.cast(tf.range(w), tf.float32)[None, None, :]
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  cy = tf.where(area > 0, tf.reduce_sum(mask * ys, [1, 2]) / tf.maximum(area, 1.0), hf / 2)
  cx = tf.where(area > 0, tf.reduce_sum(mask * xs, [1, 2]) / tf.maximum(area, 1.0), wf / 2)
  jitter = tf.random.stateless_uniform([b, 2], seeds[0], -size / 4, size / 4)
  anywhere = tf.random.stateless_uniform([b, 2], seeds[1], 0.0, 1.0)
  pick = tf.random.stateless_uniform([b], seeds[2]) < on_object
  limit = tf.stack([hf - size, wf - size])[None, :]  # (1, 2)
  centred = tf.stack([cy, cx], axis=1) + jitter - size / 2
  offset = tf.where(pick[:, None], centred, anywhere * (limit + 1.0))
  offset = tf.cast(tf.clip_by_value(tf.floor(offset), 0.0, limit), tf.int32)  # (B, 2)
  rows = offset[:, :1] + tf.range(size)[None, :]  # (B, size)
  cols = offset[:, 1:] + tf.range(size)[None, :]

  def crop(x):
    x = tf.gather(x, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)

  out = dict(batch)
  for key, value in batch.items():
    if value.shape.rank is not None and value.shape.rank >= 3:
      out[key] = crop(value)
  return out


def _flag(name: str, default: Any) -> Any:
  """A flag defined in tfharm/train.py if parsed there, else `default` (library use)."""
  fl = flags.FLAGS
  if name in fl and fl.is_parsed():
    return fl[name].value
  return default


def make_task() -> DetectorTask:
  """The Task for `python -m tfharm.train --model=detector` (flags: detector_* in train.py)."""
  weights = _flag("detector_class_weights", "auto")
  if weights in ("", "auto", None):
    class_weights = None
  else:
    class_weights = tuple(float(v) for v in weights.split(","))
    if len(class_weights) != 3:
      raise ValueError(f"--detector_class_weights needs 3 values (neg,pos,none), got {weights!r}")
  cfg = DetectorConfig(freeze_encoder=_flag("detector_freeze_encoder", True),
                       freeze_multiscale=_flag("detector_freeze_multiscale", False))
  label_cfg = labels_lib.LabelConfig(tau_neg=_flag("detector_tau_neg", 0.845),
                                     tau_pos=_flag("detector_tau_pos", 1.174),
                                     mode=_flag("detector_label_mode", "object"))
  return DetectorTask(cfg, label_cfg, image_size=_flag("image_size", 256),
                      class_weights=class_weights,
                      max_class_weight=_flag("detector_max_class_weight", 10.0),
                      dice_weight=_flag("detector_dice_weight", 0.0),
                      train_crop=_flag("detector_train_crop", 0) or None,
                      init=_flag("detector_init", "") or None)
