"""Properties of the DIH harmoniser: architecture, serialisation, mask handling."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig, harmonise


def _inputs(size, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"),
          "mask": rng.uniform(0, 1, (batch, size, size, 1)).astype("float32")}


def _expected_params(size, fc_dim, semantic_classes=0):
  """Parameter count recomputed from the layer table in architectures.md 1.2."""
  widths = [64, 64, 128, 128, 256, 256, 512][: int(np.log2(size / 4))]
  conv = lambda cin, cout, k=4: k * k * cin * cout + cout
  bn = lambda c: 4 * c
  total, cin = 0, 4
  for w in widths:
    total += conv(cin, w) + bn(w)
    cin = w
  total += 16 * widths[-1] * fc_dim + fc_dim  # fc7
  def decoder(mult):
    n = conv(fc_dim, widths[-1]) + bn(widths[-1])
    for i in range(len(widths) - 2, -1, -1):
      n += conv(widths[i + 1] * mult, widths[i]) + bn(widths[i])
    return n
  total += decoder(2 if semantic_classes else 1) + conv(widths[0], 3)
  if semantic_classes:
    total += decoder(1) + conv(widths[0], 64) + bn(64) + conv(64, semantic_classes, 1)
  return total


@pytest.mark.parametrize("size,fc_dim,classes,approx", [
    (256, 512, 0, 8.27e6), (512, 1024, 0, 25.06e6), (256, 512, 81, 14.5e6)])
def test_parameter_count_matches_table(size, fc_dim, classes, approx):
  model = Harmoniser(HarmoniserConfig(image_size=size, semantic=bool(classes),
                                      num_classes=classes or 81))
  assert model.cfg.bottleneck == fc_dim
  assert model.count_params() == _expected_params(size, fc_dim, classes)
  assert abs(model.count_params() - approx) / approx < 0.005


def test_layer_shapes_at_256():
  model = Harmoniser()
  assert [model.get_layer(f"conv{i}").output.shape[1:] for i in range(6)] == [
      (128, 128, 64), (64, 64, 64), (32, 32, 128), (16, 16, 128), (8, 8, 256), (4, 4, 256)]
  assert model.get_layer("fc7").activation.__name__ == "linear"
  assert model.get_layer("dec_top").output.shape[1:] == (4, 4, 256)
  assert model.get_layer("output_h").output.shape[1:] == (256, 256, 3)
  assert model.get_layer("output_h").activation.__name__ == "linear"
  with pytest.raises(ValueError):
    model.get_layer("conv6")
  assert model.get_layer("conv0").kernel.shape == (4, 4, 4, 64)  # RGB + mask in


def test_initialisation_scales():
  model = Harmoniser(HarmoniserConfig(image_size=64))
  assert abs(np.std(model.get_layer("conv3").kernel.numpy()) - 0.01) < 0.001
  assert abs(np.std(model.get_layer("fc7").kernel.numpy()) - 0.005) < 0.0005


@pytest.mark.parametrize("bad", [0, 100, 3, 2048])
def test_rejects_sizes_the_bottleneck_cannot_take(bad):
  with pytest.raises(ValueError, match="image_size"):
    HarmoniserConfig(image_size=bad)


@pytest.mark.parametrize("semantic", [False, True])
def test_save_and_reload_is_bit_identical(tmp_path, semantic):
  model = Harmoniser(HarmoniserConfig(image_size=32, semantic=semantic))
  x = _inputs(32)
  model(x, training=True)  # move the BN statistics away from their initial values
  expected = model(x, training=False)
  path = os.path.join(tmp_path, "h.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, Harmoniser) and loaded.cfg == model.cfg
  got = loaded(x, training=False)
  for a, b in zip(tf.nest.flatten(expected), tf.nest.flatten(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  weights = os.path.join(tmp_path, "h.weights.h5")
  model.save_weights(weights)
  fresh = Harmoniser.from_config(model.get_config())
  fresh.load_weights(weights)
  np.testing.assert_array_equal(np.asarray(tf.nest.flatten(fresh(x))[0]),
                                np.asarray(tf.nest.flatten(expected)[0]))


def test_soft_masks_matter_and_bad_masks_are_sanitised():
  model = Harmoniser(HarmoniserConfig(image_size=32))
  x = _inputs(32)
  soft = model(x)["image"]
  hard = model(dict(x, mask=np.round(x["mask"])))["image"]
  assert not np.allclose(soft, hard)  # the soft values reach the network
  wild = x["mask"] * 4 - 2  # in [-2, 2]
  np.testing.assert_array_equal(model(dict(x, mask=wild))["image"],
                                model(dict(x, mask=np.clip(wild, 0, 1)))["image"])
  nan_mask = x["mask"].copy()
  nan_mask[:, :4] = np.nan
  zeroed = x["mask"].copy()
  zeroed[:, :4] = 0
  out = model(dict(x, mask=nan_mask))["image"]
  assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(out, model(dict(x, mask=zeroed))["image"])


def test_harmonise_returns_unit_range_and_handles_empty_mask():
  model = Harmoniser(HarmoniserConfig(image_size=32))
  x = _inputs(32)
  image = (x["image"] + 1) / 2
  out = harmonise(model, image, np.zeros_like(x["mask"]))
  assert out.shape == (2, 32, 32, 3)
  assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0


def test_mixed_bfloat16_keeps_float32_output():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = Harmoniser(HarmoniserConfig(image_size=32))
    out = model(_inputs(32))
    assert list(out) == ["image"] and out["image"].dtype == tf.float32  # one type, any config
    assert model.get_layer("conv0").compute_dtype == "bfloat16"
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_load_harmoniser_from_either_file(tmp_path):
  from tfharm.models.harmoniser import load_harmoniser
  cfg = HarmoniserConfig(image_size=16)
  model = Harmoniser(cfg)
  x = _inputs(16)
  model.save(os.path.join(tmp_path, "m.keras"))
  model.save_weights(os.path.join(tmp_path, "m.weights.h5"))
  for loaded in (load_harmoniser(os.path.join(tmp_path, "m.keras")),
                 load_harmoniser(os.path.join(tmp_path, "m.weights.h5"), cfg)):
    np.testing.assert_array_equal(loaded(x)["image"], model(x)["image"])
  with pytest.raises(ValueError):  # weights of another size do not fit
    load_harmoniser(os.path.join(tmp_path, "m.weights.h5"), HarmoniserConfig(image_size=32))
