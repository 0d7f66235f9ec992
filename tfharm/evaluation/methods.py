"""The evaluation's rows (methods), and which of them a run scored; the metrics are the
column table's (tfharm.evaluation.columns), re-exported here for the graph."""
from __future__ import annotations

from tfharm.evaluation.columns import (  # pylint: disable=unused-import  (re-exported)
    DETECTOR_METRICS, IMAGE_METRICS, LOWER_IS_BETTER)

# The paper's rows first (Table 1), then the ablations, then the corrected variants.
METHODS = ("composite", "harmoniser_gt_mask", "detector_harmoniser",
           "harmoniser_binarised_pred_mask", "harmoniser_empty_mask",
           "harmoniser_gt_mask_gated", "detector_harmoniser_gated",
           "harmoniser_gt_mask_l_moments", "detector_harmoniser_l_moments",
           "detector_harmoniser_abstain_l_moments", "ring_l_mean_gt_mask")
# The harmoniser's five inputs, in the order of its one 5B call (the last: the gated mask).
HARMONISER_METHODS = ("harmoniser_gt_mask", "detector_harmoniser",
                      "harmoniser_binarised_pred_mask", "harmoniser_empty_mask",
                      "detector_harmoniser_abstain")
# Unedited photos through the mask-free path: output vs input (the do-no-harm check).
REAL_PHOTO_METHODS = ("detector_harmoniser_l_moments", "detector_harmoniser_abstain_l_moments")
# With a joint model (EvalConfig.joint_weights): its own output at S (L* += m * delta_l), and
# what tfharm returns with --model=joint (the composite moved onto that output's L* moments
# through m); both mask-free. Its detection is scored as `joint_detector/...`.
# The joint model's rows: mask-free at S, mask-free as --model=joint returns it, and its L*
# change through the ground-truth mask (what --model=joint --mask returns at S: the reference
# its mask-free rows are measured against, as C_p against C_s). Unedited photos: the first two.
JOINT_METHODS = ("joint", "joint_l_moments", "joint_gt_mask")
JOINT_MASK_FREE_METHODS = JOINT_METHODS[:2]



def methods_in(keys) -> tuple[str, ...]:
  """METHODS, then the joint rows if they were scored. `keys`: per-image columns
  ("method/metric") or method names."""
  keys = set(keys)
  return METHODS + tuple(m for m in JOINT_METHODS if m in keys or f"{m}/mse" in keys)


def detectors_in(keys) -> tuple[str, ...]:
  """"detector", then "joint_detector" if the joint model's detection was scored."""
  keys = set(keys)
  joint = any(k == "joint_detector" or k.startswith("joint_detector/") for k in keys)
  return ("detector",) + (("joint_detector",) if joint else ())
