"""The paper's system (tfharm.systems.pipeline): mask sources, full-resolution path, one XLA graph. Tiny sizes (32 px)."""
import numpy as np
import pytest
import tensorflow as tf

from tfharm.models import detector as det
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig, harmonise
from tfharm.systems import base
from tfharm.systems.pipeline import PipelineSystem
from tests.models.trained_weights import perturb_trained_layers

S = 32


@pytest.fixture(scope="module")
def pipe():
  d = det.Detector()
  perturb_trained_layers(d, 0)
  return PipelineSystem(d, Harmoniser(HarmoniserConfig(image_size=S)))


def _batch(b=2, h=S, w=S, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 1, (b, h, w, 3)).astype("float32")
  mask = np.zeros((b, h, w, 1), "float32")
  mask[:, h // 4: h // 2, w // 3: 2 * w // 3] = 1.0
  return image, mask


def test_ground_truth_and_empty_equal_the_harmoniser_alone(pipe):
  image, gt = _batch()
  out = pipe({"image": image, "mask": gt}, mask_source="ground_truth")
  np.testing.assert_array_equal(out["mask"], gt)
  np.testing.assert_array_equal(out["harmonised"], harmonise(pipe.harmoniser, image, gt))
  empty = pipe(image, mask_source="empty")
  zeros = np.zeros_like(gt)
  np.testing.assert_array_equal(empty["mask"], zeros)
  np.testing.assert_array_equal(empty["harmonised"], harmonise(pipe.harmoniser, image, zeros))
  # the two differ, so the comparisons above can fail
  assert not np.array_equal(out["harmonised"], empty["harmonised"])


def test_predicted_mask_is_the_max_of_the_two_channels(pipe):
  image, _ = _batch(seed=1)
  out = pipe(image)  # default: predicted
  probs = pipe.detector(image, training=False).numpy()
  np.testing.assert_array_equal(out["detection"], probs[..., :2])
  expected = np.maximum(probs[..., 0], probs[..., 1])[..., None]
  np.testing.assert_array_equal(out["mask"], expected)
  assert np.any((expected > 0.05) & (expected < 0.95))  # soft, not saturated
  np.testing.assert_array_equal(out["harmonised"], harmonise(pipe.harmoniser, image, expected))
  binarised = pipe(image, mask_source="binarised")["mask"].numpy()
  np.testing.assert_array_equal(binarised, (expected > 0.5).astype("float32"))


def test_output_contract(pipe):
  image, gt = _batch(b=3)
  for source in PipelineSystem.MASK_SOURCES:
    out = pipe({"image": image, "mask": gt}, mask_source=source)
    assert out["harmonised"].shape == (3, S, S, 3)
    assert out["detection"].shape == (3, S, S, 2) and out["mask"].shape == (3, S, S, 1)
    h = out["harmonised"].numpy()
    assert h.min() >= 0.0 and h.max() <= 1.0
  with pytest.raises(ValueError, match="ground_truth"):
    pipe(image, mask_source="ground_truth")
  with pytest.raises(ValueError, match="mask_source"):
    pipe(image, mask_source="oracle")


def test_xla_graph_matches_eager(pipe):
  image, gt = _batch(seed=2)
  for source in ("predicted", "ground_truth"):
    fn = base.inference_fn(pipe, source, jit_compile=True)
    got = fn({"image": tf.constant(image), "mask": tf.constant(gt)})
    ref = pipe({"image": image, "mask": gt}, mask_source=source)
    for k in ref:
      np.testing.assert_allclose(got[k], ref[k], atol=2e-5, err_msg=f"{source}/{k}")


@pytest.mark.parametrize("h,w", [(37, 53), (64, 24)])
def test_any_size_keeps_shape_and_untouched_background(pipe, h, w):
  image, gt = _batch(b=1, h=h, w=w, seed=3)
  out = pipe.any_size({"image": image, "mask": gt}, mask_source="ground_truth")
  assert out["harmonised"].shape == (1, h, w, 3) and out["detection"].shape == (1, h, w, 2)
  outside = gt[..., 0] == 0
  np.testing.assert_array_equal(out["harmonised"].numpy()[outside], image[outside])
  empty = pipe.any_size(image, mask_source="empty")
  np.testing.assert_array_equal(empty["harmonised"], image)  # nothing to fix: unchanged
  pred = pipe.any_size(image)
  assert pred["mask"].shape == (1, h, w, 1)
  assert not np.array_equal(pred["harmonised"], image)


def test_any_size_grey_and_rgba_and_xla(pipe):
  image, _ = _batch(b=1, h=40, w=28, seed=4)
  grey = image[..., :1]
  np.testing.assert_allclose(pipe.any_size(grey)["harmonised"],
                             pipe.any_size(np.repeat(grey, 3, -1))["harmonised"])
  rgba = np.concatenate([image, np.ones_like(grey)], -1)
  ref = pipe.any_size(image)
  np.testing.assert_allclose(pipe.any_size(rgba)["harmonised"], ref["harmonised"])
  fn = base.inference_fn(pipe, "predicted", jit_compile=True, any_size=True)
  got = fn(tf.constant(image))
  for k in ref:
    np.testing.assert_allclose(got[k], ref[k], atol=2e-5, err_msg=k)
