"""The detector's map drawn over the photo, in the evaluation figures' colours.

red = p_negative (the region looks darker than it should), green = p_positive (brighter):
tfharm.evaluation.figures.detection_rgb. Where the detector is sure of neither, the photo shows
through; where it is sure, its colour covers the photo up to `strength`.
"""
from __future__ import annotations

import numpy as np

from tfharm import colour as colour_lib
from tfharm.evaluation.figures import detection_rgb


def overlay_detection(rgb: np.ndarray, detection: np.ndarray, strength: float = 0.8) -> np.ndarray:
  """(H, W, 3) uint8 photo, (H, W, 2) [p_neg, p_pos] in [0, 1] -> (H, W, 3) uint8.

  out = photo * (1 - s * max(p)) + s * 255 * (p_neg, p_pos, 0): a pixel with p = (1, 0) becomes
  s-red, one with p = (0, 0) stays the photo."""
  if rgb.shape[:2] != detection.shape[:2] or detection.shape[-1] != 2:
    raise ValueError(f"photo {rgb.shape} and detection {detection.shape} must be (H, W, 3) and "
                     "(H, W, 2)")
  colour = detection_rgb(np.nan_to_num(detection).astype(np.float32))  # (H, W, 3) in [0, 1]
  weight = strength * colour.max(axis=-1, keepdims=True)  # (H, W, 1)
  out = rgb.astype(np.float32) / 255.0 * (1.0 - weight) + strength * colour
  return colour_lib.to_uint8(out)
