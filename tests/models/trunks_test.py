"""The Keras EfficientNet-Lite0 (tfharm.models.trunks) against a numpy reference.

The reference computes the network the PyTorch way, on torch-layout weights (OIHW kernels,
(C, 1, kh, kw) depthwise kernels, TF-style "SAME" padding as the source package pads), so the
Keras model agreeing with it shows the converter's layouts, the batch-norm order and epsilon,
the padding and the residuals are right. Random weights; the real file only where converted.
"""

import keras
import numpy as np
import pytest

from tfharm import weights
from tfharm.models import trunks
from tfharm.weights import efficientnet_lite0 as spec
from tfharm.weights import store


@pytest.fixture(scope="module")
def torch_state():
  """Random weights under the checkpoint's names, in torch layout, as the converter reads them."""
  rng = np.random.default_rng(0)
  state = {}
  for ws in spec.LAYERS.values():
    for w in ws:
      kind, shape = w.key.rsplit("/", 1)[1], w.shape
      if kind == "kernel":  # (kh, kw, I, O) -> (O, I, kh, kw); dense (I, O) -> (O, I)
        shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
      elif kind == "depthwise_kernel":  # (kh, kw, C, 1) -> (C, 1, kh, kw)
        shape = (shape[2], 1, shape[0], shape[1])
      a = rng.normal(0, 0.3, shape)
      if kind == "moving_variance":
        a = rng.uniform(0.5, 2.0, shape)
      state[w.torch_key] = a.astype("float32")
      if kind == "moving_variance":
        state[w.torch_key.replace("running_var", "num_batches_tracked")] = np.array(0)
  return state


def _pad_same(x, k, s):
  h, w = x.shape[:2]
  oh, ow = -(-h // s), -(-w // s)
  ph, pw = max((oh - 1) * s + k - h, 0), max((ow - 1) * s + k - w, 0)
  return np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))), oh, ow


def _conv(x, w, s=1, depthwise=False):
  """Cross-correlation of x (H, W, C) with a torch kernel (O, I, k, k) or (C, 1, k, k)."""
  k = w.shape[-1]
  xp, oh, ow = _pad_same(x, k, s)
  out = 0.0
  for dy in range(k):
    for dx in range(k):
      patch = xp[dy:dy + s * (oh - 1) + 1:s, dx:dx + s * (ow - 1) + 1:s]
      out = out + (patch * w[:, 0, dy, dx] if depthwise else patch @ w[:, :, dy, dx].T)
  return out


def _reference(x, state):
  """{name: activation} up to block3a's expansion, float64, the torch model's way."""
  st = {k: v.astype("float64") for k, v in state.items()}

  def bn(y, p):
    return (y - st[f"{p}.running_mean"]) / np.sqrt(st[f"{p}.running_var"] + 1e-3) * st[
        f"{p}.weight"] + st[f"{p}.bias"]

  def relu6(y):
    return np.clip(y, 0.0, 6.0)

  out = {}
  y = relu6(bn(_conv((255 * x - 127) / 128, st["_conv_stem.weight"], 2), "_bn0"))
  out["stem_activation"] = y
  # (name, index in `_blocks`, stride), written out rather than taken from the code under test.
  for name, i, stride in (("block1a", 0, 1), ("block2a", 1, 2), ("block2b", 2, 1),
                          ("block3a", 3, 2)):
    t, inputs = f"_blocks.{i}", y
    if f"{t}._expand_conv.weight" in st:
      y = relu6(bn(_conv(y, st[f"{t}._expand_conv.weight"]), f"{t}._bn0"))
      out[f"{name}_expand_activation"] = y
      if name == "block3a":
        return out
    y = relu6(bn(_conv(y, st[f"{t}._depthwise_conv.weight"], stride, depthwise=True),
                 f"{t}._bn1"))
    y = bn(_conv(y, st[f"{t}._project_conv.weight"]), f"{t}._bn2")
    if y.shape == inputs.shape:  # the source's rule: stride 1 and as many channels out as in
      y = y + inputs
    out[name] = y
  raise AssertionError("unreachable")


def test_keras_trunk_equals_the_torch_way_on_converted_arrays(torch_state):
  image = keras.Input((None, None, 3))
  features = trunks.lite0_features(image, until=trunks.LITE0_TAPS[1])
  model = keras.Model(image, features)
  loaded = trunks.load_lite0_weights(model, spec.checkpoint_to_arrays(torch_state))
  assert loaded[:3] == ["stem_conv", "stem_bn", "block1a_dwconv"]
  assert loaded[-2:] == ["block3a_expand_conv", "block3a_expand_bn"]
  # 20 x 28: odd after two halvings, so the stride-2 convs pad asymmetrically (TF "SAME").
  x = np.random.default_rng(1).uniform(0, 1, (20, 28, 3))
  got = {k: v.numpy()[0] for k, v in model(x[None].astype("float32")).items()}
  ref = _reference(x, torch_state)
  assert set(ref) <= set(got)
  for name, r in ref.items():
    assert got[name].shape == r.shape, name
    np.testing.assert_allclose(got[name], r, rtol=1e-4, atol=1e-4 * np.abs(r).max(),
                               err_msg=name)
  assert got["block2b"].shape == (5, 7, 24) and np.abs(got["block2b"]).max() > 0.1


def test_taps_scales_and_widths():
  image = keras.Input((64, 96, 3))
  features = trunks.lite0_features(image, until=trunks.LITE0_TAPS[-1])
  assert list(features)[-1] == trunks.LITE0_TAPS[-1]  # built no further than needed
  shapes = [tuple(features[n].shape) for n in trunks.LITE0_TAPS]
  assert shapes == [(None, 32, 48, 96), (None, 16, 24, 144), (None, 8, 12, 240)]
  assert tuple(c for *_, c in shapes) == trunks.LITE0_TAP_CHANNELS
  assert list(features) == list(trunks.LITE0_TENSORS[:len(features)])
  with pytest.raises(ValueError, match="no EfficientNet-Lite0 tensor named 'block9a'"):
    trunks.lite0_features(image, until="block9a")


def test_load_checks_every_layer_before_assigning(torch_state):
  arrays = spec.checkpoint_to_arrays(torch_state)
  image = keras.Input((None, None, 3))
  model = keras.Model(image, trunks.lite0_features(image, until="block1a")["block1a"])
  before = model.get_layer("stem_conv").get_weights()[0].copy()
  missing = {k: v for k, v in arrays.items() if not k.startswith("block1a_project_bn")}
  with pytest.raises(ValueError, match=r"lack \['block1a_project_bn/gamma'"):
    trunks.load_lite0_weights(model, missing)
  wrong = dict(arrays, **{"block1a_dwconv/depthwise_kernel": np.zeros((3, 3, 32, 2))})
  with pytest.raises(ValueError, match=r"block1a_dwconv: weights \[\(3, 3, 32, 1\)\]"):
    trunks.load_lite0_weights(model, wrong)
  np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0], before)
  with pytest.raises(ValueError, match="no EfficientNet-Lite0 layers"):
    trunks.load_lite0_weights(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), arrays)


def test_classifier_loads_the_converted_file():
  if not store.is_converted(weights.weights_dir(), "efficientnet_lite0"):
    pytest.skip("EfficientNet-Lite0 not converted (optional; `make weights`)")
  model = trunks.lite0_classifier(weights.load_efficientnet_lite0())
  assert len(trunks.lite0_layer_names(model)) == len(spec.LAYERS) == 99
  assert model.count_params() == 4_694_024
  logits = model(np.full((1, 64, 64, 3), 0.5, "float32")).numpy()
  assert logits.shape == (1, 1000) and np.isfinite(logits).all()
