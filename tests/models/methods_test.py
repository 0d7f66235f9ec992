"""tfharm.models.methods: the one definition of every evaluated row's image."""
import numpy as np
import pytest
import tensorflow as tf

from tfharm.models import harmoniser, methods


@pytest.fixture(scope="module")
def model():
  keras_model = harmoniser.Harmoniser(harmoniser.HarmoniserConfig(image_size=16))
  return keras_model


def _batch(b=2, s=16):
  rng = np.random.default_rng(0)
  composite = tf.constant(rng.uniform(0.1, 0.9, (b, s, s, 3)), tf.float32)
  mask = np.zeros((b, s, s, 1), np.float32)
  mask[:, 4:12, 4:12] = 1.0
  return composite, tf.constant(mask)


def test_one_batched_call_equals_one_call_per_mask(model):
  composite, mask = _batch()
  masks = {"harmoniser_gt_mask": mask, "harmoniser_empty_mask": tf.zeros_like(mask)}
  raw = methods.harmonise_masks(model, composite, masks)
  for name, m in masks.items():
    np.testing.assert_allclose(raw[name], harmoniser.harmonise(model, composite, m), atol=1e-5)


def test_rows_follow_their_definition(model):
  composite, mask = _batch()
  masks = {"harmoniser_gt_mask": mask}
  raw = methods.harmonise_masks(model, composite, masks)
  rows = ("composite", "harmoniser_gt_mask", "harmoniser_gt_mask_gated",
          "harmoniser_gt_mask_l_moments", "ring_l_mean_gt_mask")
  images = methods.method_images(composite, raw, masks, rows)
  assert list(images) == list(rows)
  inside, outside = mask.numpy()[..., 0] > 0.5, mask.numpy()[..., 0] < 0.5
  np.testing.assert_array_equal(images["composite"], composite)
  np.testing.assert_array_equal(images["harmoniser_gt_mask"], raw["harmoniser_gt_mask"])
  gated = images["harmoniser_gt_mask_gated"].numpy()
  np.testing.assert_allclose(gated[inside], raw["harmoniser_gt_mask"].numpy()[inside], atol=1e-6)
  for row in ("harmoniser_gt_mask_gated", "harmoniser_gt_mask_l_moments", "ring_l_mean_gt_mask"):
    np.testing.assert_allclose(images[row].numpy()[outside], composite.numpy()[outside],
                               atol=1e-6, err_msg=row)  # outside the mask: the composite
  assert not np.allclose(images["harmoniser_gt_mask_l_moments"].numpy()[inside],
                         composite.numpy()[inside])


def test_a_row_without_its_output_is_an_error():
  composite, mask = _batch()
  with pytest.raises(ValueError, match="detector_harmoniser"):
    methods.method_images(composite, {"harmoniser_gt_mask": composite},
                          {"harmoniser_gt_mask": mask}, ["detector_harmoniser_gated"])
  with pytest.raises(ValueError, match="unknown method"):
    methods.method_images(composite, {}, {}, ["sharpened"])
