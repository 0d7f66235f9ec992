"""The harmoniser's training task: its loss regions and validation metrics."""
import numpy as np
import tensorflow as tf

from tfharm.models.harmoniser import HarmoniserConfig
from tfharm.training.tasks import harmoniser
from tfharm.training.tasks.harmoniser import HarmoniserTask, HarmoniserTaskConfig
from tests.training.fake_data import SIZE, fake_dataset


def _task(**kw):
  return HarmoniserTask(HarmoniserTaskConfig(HarmoniserConfig(image_size=SIZE), **kw))


def test_mask_region_loss_ignores_background():
  t = _task(loss_region="mask")
  batch = next(iter(fake_dataset("", "train", batch_size=2, shuffle=False)))
  pred = batch["real"] * 2.0 - 1.0
  off_mask = pred + (1.0 - batch["mask"]) * 0.5  # wrong only outside the mask
  assert float(tf.reduce_max(t.loss(batch, {"image": off_mask})["loss"])) == 0.0
  whole = _task()
  assert float(tf.reduce_min(whole.loss(batch, {"image": off_mask})["loss"])) > 0.0


def test_image_and_mask_loss_is_the_sum_of_both_regions():
  batch = next(iter(fake_dataset("", "train", batch_size=2, shuffle=False)))
  pred = batch["real"] * 2.0 - 1.0 + 0.3 * batch["mask"] + 0.1  # off inside and outside
  region = {r: _task(loss_region=r).loss(
      batch, {"image": pred})["loss"].numpy() for r in ("image", "mask", "image_and_mask")}
  np.testing.assert_allclose(region["mask"], 0.16, rtol=1e-4)  # (0.3 + 0.1)^2 inside
  np.testing.assert_allclose(region["image_and_mask"], region["image"] + region["mask"], rtol=1e-6)
  assert np.all(region["image"] < region["mask"])


def test_harmoniser_validation_also_scores_the_l_moments_output():
  """Validation tracks what tfharm returns (the L* moment correction), not only the raw output:
  a prediction that is the real image blurred has poor raw metrics but, corrected, recovers a
  composite whose object was only shifted in L*."""
  rng = np.random.default_rng(0)
  real = tf.constant(rng.uniform(0.2, 0.6, (2, 16, 16, 3)).astype("float32"))
  mask = tf.concat([tf.ones((2, 16, 6, 1)), tf.zeros((2, 16, 10, 1))], axis=2)
  darker = tf.clip_by_value(real - 0.1, 0.0, 1.0)
  composite = darker * mask + real * (1.0 - mask)
  blurred = tf.nn.avg_pool2d(real, 3, 1, "SAME")
  batch = {"composite": composite, "real": real, "mask": mask}
  m = _task().metrics(batch, {"image": blurred * 2.0 - 1.0})
  assert {"mse", "psnr", "fmse", "ssim", "l_moments_mse", "l_moments_psnr",
          "l_moments_fmse"} <= set(m)
  metrics = harmoniser.image_metrics
  np.testing.assert_allclose(m["mse"], metrics(blurred, real, mask)["mse"], rtol=1e-6)
  assert np.all(m["l_moments_psnr"].numpy() > m["psnr"].numpy() + 3)
  assert np.all(m["l_moments_psnr"].numpy() > metrics(composite, real, mask)["psnr"].numpy() + 3)


def test_validation_metrics_known_values():
  real = tf.zeros((1, 16, 16, 3))
  pred = tf.concat([tf.ones((1, 16, 8, 3)) * (10 / 255), tf.zeros((1, 16, 8, 3))], axis=2)
  mask = tf.concat([tf.ones((1, 16, 4, 1)), tf.zeros((1, 16, 12, 1))], axis=2)
  m = harmoniser.image_metrics(pred, real, mask)
  np.testing.assert_allclose(m["mse"], [50.0], rtol=1e-5)  # half the pixels off by 10
  np.testing.assert_allclose(m["fmse"], [100.0], rtol=1e-5)  # the masked columns are all off
  np.testing.assert_allclose(m["psnr"], [10 * np.log10(255**2 / 50)], rtol=1e-5)
  assert float(harmoniser.image_metrics(real, real, mask)["psnr"][0]) == 100.0  # capped, not inf
