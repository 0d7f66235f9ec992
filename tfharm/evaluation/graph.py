"""The evaluation graph: every scored system's rows and every metric on every example, one
tf.function.

Per batch of `make_dataset` examples (composite, real, mask in [0, 1], S x S), each system
scored (tfharm.systems: by default all of them; `--systems` a subset) adds its rows through
`System.rows` and its detection; this graph puts the composite's row first, stacks them and
scores them:
  pixel metrics (MSE, PSNR, fMSE, SSIM) on all rows stacked (kB images);
  LPIPS: the ground truth's features once, every row's images through the trunk once;
  localisation (IoU, F1, AP) of each system's soft mask against the ground-truth mask.
The pipeline (tfharm.systems.pipeline): detector once -> 2-channel map -> soft mask
max(p_neg, p_pos) and its binarisation; harmoniser once on a 5B batch. Its rows are named as
in the paper's Table 1 (C_s = harmoniser_gt_mask, C_p = detector_harmoniser); harmonised
outputs are the network's raw output at S (paper section 3), the `*_gated` rows paste it into
the composite through the mask, C + m * (H - C), and the `*_l_moments` rows are what tfharm
returns by default (harmonise_any_size, the served model): the composite's object moved onto
the prediction's L* mean/std (tfharm.models.correction). The rows of one system do not depend
on which others are scored.
"""

from __future__ import annotations

import tensorflow as tf

from tfharm import systems
from tfharm.evaluation import methods
from tfharm.evaluation.methods import IMAGE_METRICS
from tfharm.metrics import image as image_metrics
from tfharm.metrics import localisation
from tfharm.metrics import lpips as lpips_lib
from tfharm.metrics.device import default_jit_compile
from tfharm.models import abstention
from tfharm.models import detector as detector_lib
from tfharm.models import detector_labels


class EvalGraph:
  """The batched evaluation graph; `step(composite, real, mask)` is one tf.function.

  Returns {"metrics": {method: {metric: (B,)}}, <detector>: {metric: (B,)} per system,
  "extra": {"mask_fraction", "luminance_ratio": (B,)}, "images": {method: (B, S, S, 3),
  "detection": (B, S, S, 2), "soft_mask": (B, S, S, 1)}} (the detection of `self.shown`,
  the system whose rows the figures compare).
  """

  def __init__(self, scored: list, lpips_model: lpips_lib.LPIPS,
               threshold: float = 0.5, jit_compile: bool | None = None,
               gate: abstention.Gate = abstention.Gate()):
    self.systems, self.lpips = list(scored), lpips_model
    self.specs = [systems.spec(s.SYSTEM) for s in self.systems]
    self.methods = methods.REFERENCE_ROWS + tuple(row for spec in self.specs for row in spec.rows)
    # Whose detection the examples show: the system whose rows they compare (Spec.compared).
    self.shown = next((s for s in self.specs if s.compared), self.specs[0])
    self.threshold = float(threshold)
    self.gate = gate
    self.jit_compile = default_jit_compile() if jit_compile is None else bool(jit_compile)
    self.step = tf.function(self.compute, jit_compile=self.jit_compile, reduce_retracing=True)
    self.real_photo_step = tf.function(self.compute_real_photos, jit_compile=self.jit_compile,
                                       reduce_retracing=True)

  def compute_real_photos(self, photo: tf.Tensor) -> dict:
    """Unedited (B, S, S, 3) photos through each system's mask-free rows: PSNR of output vs
    input, and the fraction of pixels its detection fires on (soft mask > 0.5)."""
    out = {}
    for system, spec in zip(self.systems, self.specs):
      rows = system.rows(photo, None, self.threshold, self.gate)
      for name in spec.photo_rows:
        mse = image_metrics.mse(rows["images"][name], photo, value_range=(0.0, 1.0))
        out[f"{name}/psnr"] = image_metrics.psnr_from_mse(mse, max_db=100.0)
      soft = detector_lib.soft_mask(rows["detection"])
      out[f"{spec.detector}/fire_fraction"] = tf.reduce_mean(tf.cast(soft > 0.5, tf.float32),
                                                             axis=[1, 2, 3])
      out.update(rows["values"])
    return out

  def compute(self, composite: tf.Tensor, real: tf.Tensor, mask: tf.Tensor) -> dict:
    """Pure TF; composite/real (B, S, S, 3) and mask (B, S, S, 1), all in [0, 1]."""
    b = tf.shape(composite)[0]
    images, detectors, shown = {methods.COMPOSITE: composite}, {}, {}
    for system, spec in zip(self.systems, self.specs):
      rows = system.rows(composite, mask, self.threshold, self.gate)
      images.update(rows["images"])
      soft = detector_lib.soft_mask(rows["detection"])  # (B, S, S, 1)
      detectors[spec.detector] = localisation.localisation_metrics(soft, mask, self.threshold)
      if spec is self.shown:
        shown = {"detection": rows["detection"], "soft_mask": soft}

    k = len(self.methods)
    stacked = tf.concat([images[m] for m in self.methods], axis=0)  # (kB, S, S, 3)
    pixel = image_metrics.image_metrics(stacked, tf.tile(real, [k, 1, 1, 1]),
                                        tf.tile(mask, [k, 1, 1, 1]), value_range=(0.0, 1.0))
    target = self.lpips.normalised_features(real * 2.0 - 1.0)  # ground truth: once
    pixel["lpips"] = self.lpips.distance_to_features(
        stacked * 2.0 - 1.0, [tf.tile(f, [k, 1, 1, 1]) for f in target])  # (kB,)
    metrics = {m: {name: pixel[name][i * b:(i + 1) * b] for name in IMAGE_METRICS}
               for i, m in enumerate(self.methods)}
    return {
        "metrics": metrics,
        **detectors,
        "extra": {"mask_fraction": tf.reduce_mean(mask, axis=[1, 2, 3]),
                  "luminance_ratio": detector_labels.luminance_ratio(composite, real, mask)},
        "images": {**images, **shown},
    }
