"""The image each evaluated method produces: one definition for the evaluation
(tfharm.evaluation.graph), its quick scores (tfharm.evaluation.quick_scores) and the training
metrics (tfharm.training.tasks.harmoniser), so that a row name means the same pixels in all three.

A method is named after the mask its harmoniser input was given (`harmoniser_gt_mask`: the
ground-truth mask, the paper's C_s; `detector_harmoniser`: the detector's soft mask, C_p; ...),
with a suffix saying what is done with the raw output H (at S x S, in [0, 1]):

  <name>             H as it is (the paper's Table 1 reports the network's output)
  <name>_gated       C + m * (H - C): H pasted into the composite C through the mask m
  <name>_l_moments   C with the object moved onto H's L* mean/std (tfharm.models.correction):
                     what tfharm returns by default

plus `composite` (nothing done) and `ring_l_mean_gt_mask` (the training-free baseline of
tfharm.models.baselines, with the ground-truth mask). docs/architecture.md describes the rows.
A joint model's rows (`joint_images`) are `joint` (its own output), `joint_l_moments` (what
`--model=joint` returns) and `joint_gt_mask` (its L* change through the ground-truth mask).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from tfharm.models import baselines
from tfharm.models import correction
from tfharm.models import detector as detector_lib
from tfharm.models import harmoniser as harmoniser_lib
from tfharm.models import joint as joint_lib

COMPOSITE = "composite"
GT_MASK = "harmoniser_gt_mask"
RING = "ring_l_mean_gt_mask"
GATED, L_MOMENTS = "_gated", "_l_moments"


def harmonise_masks(harmoniser, composite: tf.Tensor,
                    masks: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """H for every named (B, S, S, 1) mask, from one harmoniser call on a len(masks) * B batch
  (inference mode, so the examples do not interact); composite (B, S, S, 3) in [0, 1]."""
  names = list(masks)
  b = tf.shape(composite)[0]
  out = harmoniser_lib.harmonise(harmoniser, tf.tile(composite, [len(names), 1, 1, 1]),
                                 tf.concat([masks[n] for n in names], axis=0))
  return {n: out[i * b:(i + 1) * b] for i, n in enumerate(names)}


def _base(method: str, suffix: str, raw: Mapping[str, tf.Tensor]) -> str:
  name = method[:-len(suffix)]
  if name not in raw:
    raise ValueError(f"method {method!r} needs the harmoniser output {name!r}; have {sorted(raw)}")
  return name


def method_images(composite: tf.Tensor, raw: Mapping[str, tf.Tensor],
                  masks: Mapping[str, tf.Tensor], methods: Sequence[str]) -> dict[str, tf.Tensor]:
  """{method: (B, S, S, 3) image in [0, 1]} for `methods`, from the composite, the raw outputs
  `raw` (e.g. `harmonise_masks`) and the masks they were given (same keys)."""
  images = {}
  for method in methods:
    if method == COMPOSITE:
      images[method] = composite
    elif method == RING:
      images[method] = baselines.ring_l_mean(composite, masks[GT_MASK])
    elif method in raw:
      images[method] = raw[method]
    elif method.endswith(GATED):
      name = _base(method, GATED, raw)
      images[method] = composite + masks[name] * (raw[name] - composite)
    elif method.endswith(L_MOMENTS):
      name = _base(method, L_MOMENTS, raw)
      m = masks[name]
      images[method] = correction.apply_correction("l_moments", composite, m, composite, m,
                                                   raw[name])
    else:
      raise ValueError(f"unknown method {method!r}: not {COMPOSITE!r}, {RING!r}, a harmoniser "
                       f"output ({sorted(raw)}) or one of them with {GATED!r}/{L_MOMENTS!r}")
  return images


def joint_images(joint, composite: tf.Tensor, mask: tf.Tensor | None = None,
                 shift: joint_lib.LightnessShift | None = None, outputs=None
                 ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
  """The joint rows' images from one call of `joint` (a JointModel, inference mode) on the
  (B, S, S, 3) composite in [0, 1], and its soft mask m (B, S, S, 1); with the ground-truth
  (B, S, S, 1) `mask` also "joint_gt_mask". `shift`: a LightnessShift to reuse (it has no
  weights; a caller inside a loop passes one rather than make a layer per call). `outputs`:
  that call's result, when the caller needs it too (then `joint` is not called again)."""
  out = outputs if outputs is not None else joint(composite, training=False)
  m = detector_lib.soft_mask(tf.cast(out["probs"], tf.float32))
  own = tf.cast(out["harmonised"], tf.float32)
  images = {"joint": own, "joint_l_moments": correction.apply_correction(
      "l_moments", composite, m, composite, m, own)}
  if mask is not None:
    shift = shift or joint_lib.LightnessShift(dtype="float32", name="gt_mask_shift")
    images["joint_gt_mask"] = shift(composite, out["delta_l"], mask)
  return images, m
