"""ImageNet EfficientNet-Lite0 in Keras 3: a cheap frozen trunk beside the VGG16 blocks.

The layers follow `tfharm.weights.efficientnet_lite0` (the converted TF/PyTorch checkpoint,
keras.applications layer names): stem 3x3/2 conv, BN, ReLU6; 16 MBConv blocks without
squeeze-excite; 1x1 head to 1280; average pool and a 1000-way dense layer. `lite0_features`
builds them on a Keras tensor, `load_lite0_weights` copies the converted arrays in by name.

Taps for the joint model (LITE0_TAPS): the ReLU6 expansions that feed the stride-2 depthwise
convs of blocks 2a, 3a and 4a, at H/2 (96 channels), H/4 (144) and H/8 (240) of the full-size
input: the widest activation at each scale (where SSDLite taps MobileNetV2, timm's
feature_location="expansion"), where the blocks' own outputs are thin linear bottlenecks (16,
24, 40 channels). The trunk up to the last tap is blocks 1a-3b
plus one 1x1 conv: 0.32 GFLOP per 256^2 image against 6.1 for VGG16 blocks 1-3 at half size
(the whole classifier: 0.77 GFLOP at 224^2; 2 FLOP per multiply-add).
"""
from __future__ import annotations

import keras
from keras import layers
import numpy as np

from tfharm.weights import efficientnet_lite0 as spec

LITE0_TAPS = ("block2a_expand_activation", "block3a_expand_activation",
              "block4a_expand_activation")  # H/2, H/4, H/8
LITE0_TAP_CHANNELS = (96, 144, 240)
# Everything lite0_features can return, in build order.
LITE0_TENSORS = ("input_scaling", "stem_activation", *(
    n for b in spec.BLOCKS for n in ((f"{b.name}_expand_activation",) if b.expand != 1 else ())
    + (b.name,)), "top_activation", "predictions")


def _bn_relu6(x, name, activation=True):
  x = layers.BatchNormalization(epsilon=spec.BN_EPSILON, name=f"{name}_bn")(x)
  return layers.ReLU(max_value=6.0, name=f"{name}_activation")(x) if activation else x


def lite0_features(image, until: str | None = None, include_top: bool = False) -> dict:
  """{name: Keras tensor} of EfficientNet-Lite0 on `image`, RGB in [0, 1], any H and W ("same"
  padding rounds each stride-2 size up, as TF does).

  Names: "input_scaling", "stem_activation", per block "<block>_expand_activation" (not for
  block1a) and "<block>" (its output), "top_activation", and with `include_top` "predictions"
  (ImageNet logits, no softmax). Building stops after the tensor named `until`.
  """
  if until is not None and until not in LITE0_TENSORS:
    raise ValueError(f"no EfficientNet-Lite0 tensor named {until!r}")
  out = {}

  def keep(name, tensor):
    out[name] = tensor
    return name == until

  # The TF lite models' inception-style input: (255 x - 127) / 128.
  x = layers.Rescaling(spec.INPUT_SCALE, spec.INPUT_OFFSET, name="input_scaling")(image)
  if keep("input_scaling", x):
    return out
  x = layers.Conv2D(spec.STEM, 3, strides=2, padding="same", use_bias=False,
                    name="stem_conv")(x)
  x = _bn_relu6(x, "stem")
  if keep("stem_activation", x):
    return out
  for b in spec.BLOCKS:
    inputs = x
    if b.expand != 1:
      x = layers.Conv2D(b.expanded, 1, padding="same", use_bias=False,
                        name=f"{b.name}_expand_conv")(x)
      x = _bn_relu6(x, f"{b.name}_expand")
      if keep(f"{b.name}_expand_activation", x):
        return out
    x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                               name=f"{b.name}_dwconv")(x)
    x = _bn_relu6(x, b.name)
    x = layers.Conv2D(b.filters_out, 1, padding="same", use_bias=False,
                      name=f"{b.name}_project_conv")(x)
    x = _bn_relu6(x, f"{b.name}_project", activation=False)  # linear bottleneck
    if b.residual:
      x = layers.Add(name=f"{b.name}_add")([x, inputs])
    if keep(b.name, x):
      return out
  x = layers.Conv2D(spec.HEAD, 1, padding="same", use_bias=False, name="top_conv")(x)
  x = _bn_relu6(x, "top")
  if keep("top_activation", x) or not (include_top or until == "predictions"):
    return out
  x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
  keep("predictions", layers.Dense(spec.CLASSES, name="predictions")(x))
  return out


def lite0_classifier(weights: dict[str, np.ndarray] | None = None) -> keras.Model:
  """The whole ImageNet classifier, image in [0, 1] -> 1000 logits: for checks against the
  source network, not used by tfharm's models."""
  image = keras.Input((None, None, 3), name="image")
  model = keras.Model(image, lite0_features(image, include_top=True)["predictions"],
                      name="efficientnet_lite0")
  if weights is not None:
    load_lite0_weights(model, weights)
  return model


def lite0_layer_names(model: keras.Model) -> list[str]:
  """The model's EfficientNet-Lite0 layers that carry weights, in build order."""
  return [l.name for l in model.layers if l.name in spec.LAYERS]


def load_lite0_weights(model: keras.Model, arrays: dict[str, np.ndarray]) -> list[str]:
  """Copies the converted arrays (tfharm.weights.load_efficientnet_lite0) into every
  EfficientNet-Lite0 layer of `model`, by name; returns their names. A missing array or a
  shape that differs is a ValueError naming the layer, before anything is assigned."""
  names = lite0_layer_names(model)
  if not names:
    raise ValueError(f"{model.name} has no EfficientNet-Lite0 layers")
  values = {}
  for name in names:
    layer, ws = model.get_layer(name), spec.LAYERS[name]
    missing = [w.key for w in ws if w.key not in arrays]
    if missing:
      raise ValueError(f"EfficientNet-Lite0 arrays lack {missing}")
    values[name] = [np.asarray(arrays[w.key], "float32") for w in ws]
    shapes = [tuple(v.shape) for v in layer.weights]
    if shapes != [a.shape for a in values[name]]:
      raise ValueError(f"layer {name}: weights {shapes}, arrays "
                       f"{[a.shape for a in values[name]]}")
  for name in names:
    model.get_layer(name).set_weights(values[name])
  return names
