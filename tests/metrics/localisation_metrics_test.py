"""IoU / F1 / AP for soft masks: hand-computed values, exact AP, conventions, XLA."""

import numpy as np
import pytest
import tensorflow as tf

from tfharm.metrics import localisation as loc


def _exact_ap(scores, labels):
  """sklearn's average_precision_score, written out: sort by score, step-wise sum."""
  order = np.argsort(-scores, kind="stable")
  s, y = scores[order], labels[order]
  distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each score value
  tp = np.cumsum(y)[distinct]
  pp = distinct + 1
  precision, recall = tp / pp, tp / y.sum()
  return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def test_hand_computed_iou_f1():
  gt = np.zeros((1, 4, 4), np.float32)
  gt[0, 0, :4] = 1
  pred = np.zeros((1, 4, 4), np.float32)
  pred[0, 0, :2] = 0.9  # 2 TP
  pred[0, 1, :2] = 0.6  # 2 FP; 2 FN remain
  np.testing.assert_allclose(loc.iou(pred, gt), [2 / 6])
  np.testing.assert_allclose(loc.f1(pred, gt), [0.5])
  np.testing.assert_allclose(loc.iou(pred, gt, threshold=0.7), [2 / 4])
  np.testing.assert_allclose(loc.f1(pred, gt, threshold=0.7), [4 / 6])


def test_perfect_inverse_and_empty():
  gt = (np.random.default_rng(0).uniform(size=(2, 16, 16, 1)) > 0.6).astype(np.float32)
  m = loc.localisation_metrics(gt, gt)
  for k in ("iou", "f1", "ap"):
    np.testing.assert_allclose(m[k], [1.0, 1.0], err_msg=k)
  np.testing.assert_allclose(loc.iou(1 - gt, gt), [0.0, 0.0])
  np.testing.assert_allclose(loc.f1(1 - gt, gt), [0.0, 0.0])
  empty = np.zeros((1, 8, 8), np.float32)
  np.testing.assert_allclose(loc.iou(empty, empty), [1.0])
  np.testing.assert_allclose(loc.f1(empty, empty), [1.0])
  assert np.isnan(loc.average_precision(empty, empty).numpy()[0])


def test_ap_equals_exact_ap_on_8bit_scores():
  rng = np.random.default_rng(1)
  gt = (rng.uniform(size=(3, 24, 20)) > 0.7).astype(np.float32)
  noisy = np.clip(gt * 0.5 + rng.uniform(size=gt.shape) * 0.6, 0, 1)
  pred = np.round(noisy * 255) / 255  # 8-bit soft mask
  got = loc.average_precision(pred, gt, thresholds=[k / 255 for k in range(256)]).numpy()
  want = [_exact_ap(pred[i].ravel(), gt[i].ravel()) for i in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert 0.5 < min(want) < max(want) < 1.0  # a non-trivial case


def test_ap_of_uninformative_prediction_is_positive_rate():
  gt = np.zeros((1, 10, 10), np.float32)
  gt[0, :3] = 1
  np.testing.assert_allclose(loc.average_precision(np.full_like(gt, 0.5), gt), [0.3], rtol=1e-6)


def test_xla_matches_eager():
  rng = np.random.default_rng(2)
  pred = rng.uniform(size=(2, 32, 32, 1)).astype(np.float32)
  gt = (rng.uniform(size=(2, 32, 32, 1)) > 0.5).astype(np.float32)
  fn = tf.function(loc.localisation_metrics, jit_compile=True)
  got, want = fn(pred, gt), loc.localisation_metrics(pred, gt)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)


def test_bad_masks_are_refused():
  with pytest.raises(ValueError, match="shapes differ"):
    loc.iou(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    loc.f1(np.full((1, 8, 8), 255.0), np.zeros((1, 8, 8)))
  with pytest.raises(ValueError, match="NaN"):
    loc.iou(np.full((1, 8, 8), np.nan), np.zeros((1, 8, 8)))
  with pytest.raises(ValueError, match="one channel"):
    loc.iou(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))
