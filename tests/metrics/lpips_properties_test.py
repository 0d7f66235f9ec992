"""LPIPS properties and bad-input handling (no golden data needed)."""

import numpy as np
import pytest
import tensorflow as tf

from tfharm.metrics import lpips


def _images(b, h, w, seed):
  rng = np.random.default_rng(seed)
  base = rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32)
  smooth = tf.image.resize(base, (h // 4, w // 4))
  return tf.image.resize(smooth, (h, w)).numpy().clip(-1, 1)


def test_identity_is_zero_and_distance_is_symmetric(models):
  x, y = _images(2, 48, 40, 0), _images(2, 48, 40, 1)
  model = models("alex")
  np.testing.assert_allclose(model(x, x).numpy(), 0.0, atol=1e-7)
  d_xy, d_yx = model(x, y).numpy(), model(y, x).numpy()
  assert (d_xy > 0.05).all()
  np.testing.assert_allclose(d_xy, d_yx, rtol=0, atol=1e-6)


def test_batch_equals_single_calls(models):
  x, y = _images(3, 40, 56, 2), _images(3, 40, 56, 3)
  model = models("alex")
  batched = model(x, y).numpy()
  single = [float(model(x[i], y[i])) for i in range(3)]
  np.testing.assert_allclose(batched, single, rtol=0, atol=1e-6)


def test_more_distortion_gives_larger_distance(models):
  x = _images(1, 64, 64, 4)
  noise = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
  d = [float(models("alex")(x, np.clip(x + s * noise, -1, 1))[0]) for s in (0.02, 0.1, 0.3)]
  assert d[0] < d[1] < d[2]


def test_spatial_map_mean_is_close_to_scalar(models):
  x, y = _images(2, 64, 64, 6), _images(2, 64, 64, 7)
  scalar = models("alex")(x, y).numpy()
  spatial = models("alex", spatial=True)(x, y).numpy()
  assert spatial.shape == (2, 64, 64) and (spatial >= 0).all()
  np.testing.assert_allclose(spatial.mean(axis=(1, 2)), scalar, rtol=0.05)


def test_min_sizes():
  assert lpips.min_size("alex") == 31  # the official package fails at 30 (reference.json)
  assert lpips.min_size("vgg") == 16


@pytest.mark.parametrize("x_shape,y_shape,match", [
    ((1, 64, 64, 3), (1, 64, 48, 3), "shapes differ"),
    ((1, 64, 64, 1), (1, 64, 64, 1), "grayscale"),
    ((1, 64, 64, 4), (1, 64, 64, 4), "RGBA"),
    ((1, 30, 64, 3), (1, 30, 64, 3), "smaller than"),
    ((64, 64, 3), (1, 64, 64, 3), r"\(H, W, 3\) or \(B, H, W, 3\)"),
])
def test_bad_shapes_are_refused(models, x_shape, y_shape, match):
  with pytest.raises(ValueError, match=match):
    models("alex")(np.zeros(x_shape, np.float32), np.zeros(y_shape, np.float32))


@pytest.mark.parametrize("bad,match", [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"),
                                       (255.0, "expects .-1, 1.")])
def test_bad_values_are_refused(models, bad, match):
  x = np.zeros((1, 32, 32, 3), np.float32)
  y = x.copy()
  y[0, 3, 4, 1] = bad
  with pytest.raises(ValueError, match=match):
    models("alex")(x, y)


def test_uint8_input_is_refused(models):
  x = np.zeros((1, 32, 32, 3), np.uint8)
  with pytest.raises(TypeError, match="from_uint8"):
    models("alex")(tf.constant(x), tf.constant(x))


def test_runs_inside_users_jit_compiled_function(models):
  model = models("alex", jit_compile=False)
  x, y = _images(2, 40, 40, 8), _images(2, 40, 40, 9)

  @tf.function(jit_compile=True)
  def f(a, b):
    return model.compute(a, b)

  np.testing.assert_allclose(f(x, y).numpy(), model(x, y).numpy(), rtol=0, atol=1e-5)


def test_fast_mode_is_close_to_exact_where_bfloat16_runs(monkeypatch):
  from tfharm.metrics import lpips
  monkeypatch.setattr(lpips, "fast_dtype_available", lambda: True)  # as on AMX or a GPU
  x, y = _images(2, 64, 64, 10), _images(2, 64, 64, 11)
  exact = lpips.LPIPS("alex")(x, y).numpy()
  fast_model = lpips.LPIPS("alex", mode="fast")
  fast = fast_model(x, y).numpy()
  assert fast_model.compute_dtype == "bfloat16"
  assert np.abs(fast - exact).max() < 5e-3
  assert not np.array_equal(fast, exact)  # it really is a different computation


def test_fast_mode_is_exact_where_bfloat16_is_slower(monkeypatch):
  from tfharm.metrics import lpips
  monkeypatch.setattr(lpips, "fast_dtype_available", lambda: False)  # AVX2 / AVX-512 CPUs
  x, y = _images(2, 48, 48, 12), _images(2, 48, 48, 13)
  fast_model = lpips.LPIPS("alex", mode="fast")
  assert fast_model.compute_dtype == "float32"
  np.testing.assert_array_equal(fast_model(x, y).numpy(), lpips.LPIPS("alex")(x, y).numpy())


def test_bfloat16_counts_as_fast_only_when_it_measures_faster():
  from tfharm.metrics import device
  import tensorflow as tf
  timed = lambda bf16, f32: (lambda dtype: bf16 if dtype == tf.bfloat16 else f32)  # noqa: E731
  assert device.bfloat16_wins(timed(0.5, 1.0))       # an AMX or GPU-like device
  assert not device.bfloat16_wins(timed(2.3, 1.0))   # oneDNN converting on AVX2 / AVX-512
  assert not device.bfloat16_wins(timed(0.9, 1.0))   # within the margin: keep exact
  assert device._conv_seconds(tf.float32, repeats=1) > 0  # pylint: disable=protected-access


def test_load_image_converts_grayscale_and_rgba(tmp_path):
  from PIL import Image
  from tfharm import lpips as command  # the command's reader
  g = np.arange(64 * 40, dtype=np.uint32).reshape(64, 40) % 256
  Image.fromarray(g.astype(np.uint8), "L").save(tmp_path / "g.png")
  rgba = np.dstack([np.full((64, 40, 3), 9, np.uint8), np.full((64, 40), 200, np.uint8)])
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  gray = command.load_image(str(tmp_path / "g.png"))
  assert gray.shape == (64, 40, 3) and (gray[..., 0] == gray[..., 2]).all()
  assert (command.load_image(str(tmp_path / "a.png")) == 9).all()
  Image.fromarray(rgba[..., :3]).save(tmp_path / "c.jpg", quality=95)
  jpg = command.load_image(str(tmp_path / "c.jpg"))
  assert jpg.shape == (64, 40, 3) and jpg.dtype == np.uint8 and abs(int(jpg.mean()) - 9) <= 1
