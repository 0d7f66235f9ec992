"""How far the shipped detector's outputs move under `mixed_bfloat16`: one line per figure.

  python bench/bench_detector_precision.py --data_dir=out/demo/tfds --examples=16

Runs the same weights (tfharm/presets/detector_256.head.weights.h5) in float32 and in
mixed_bfloat16 on real composites and reports the largest and mean change of the 2-channel
map, how many pixels flip across the 0.5 threshold of max(p_neg, p_pos), and the IoU between
the two thresholded masks. Each precision runs in its own process (the dtype policy is global).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import flags
import numpy as np

from tfharm.cli import program

_DATA_DIR = flags.DEFINE_string("data_dir", "out/demo/tfds", "TFDS data_dir with the 256 build.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to read.")
_EXAMPLES = flags.DEFINE_integer("examples", 16, "Composites to compare.")
_ONE = flags.DEFINE_string("one", None, "Internal: precision,output.npy")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _detect(precision: str, out: str) -> None:
  import keras  # pylint: disable=g-import-not-at-top
  from tfharm.data import pipeline  # pylint: disable=g-import-not-at-top
  from tfharm.models import detector, from_preset  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy(precision)
  model = from_preset("detector_256")
  maps = []
  for batch in pipeline.make_dataset(_DATA_DIR.value, _SPLIT.value, batch_size=8,
                                     max_examples=_EXAMPLES.value):
    probs = model(batch["composite"], training=False)
    maps.append(np.asarray(detector.detection_channels(probs), np.float32))
  np.save(out, np.concatenate(maps))


def main(argv):
  del argv
  if _ONE.value:
    precision, out = _ONE.value.split(",")
    _detect(precision, out)
    return
  with tempfile.TemporaryDirectory() as tmp:
    maps = {}
    for precision in ("float32", "mixed_bfloat16"):
      out = os.path.join(tmp, f"{precision}.npy")
      subprocess.run([sys.executable, os.path.abspath(__file__), f"--one={precision},{out}",
                      f"--data_dir={_DATA_DIR.value}", f"--split={_SPLIT.value}",
                      f"--examples={_EXAMPLES.value}"], check=True, cwd=_REPO,
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True)
      maps[precision] = np.load(out)
  a, b = maps["float32"], maps["mixed_bfloat16"]
  diff = np.abs(a - b)
  ma, mb = a.max(-1) >= 0.5, b.max(-1) >= 0.5
  union = np.logical_or(ma, mb).sum()
  print(f"detector_bf16.examples {len(a)} count")
  print(f"detector_bf16.max_abs_change {diff.max():.4f} probability")
  print(f"detector_bf16.mean_abs_change {diff.mean():.5f} probability")
  print(f"detector_bf16.flipped_pixels {np.mean(ma != mb):.5f} fraction")
  print(f"detector_bf16.mask_iou_vs_float32 "
        f"{(np.logical_and(ma, mb).sum() / union) if union else 1.0:.4f} ratio")
  print(json.dumps({"float32_mask_fraction": float(ma.mean()),
                    "bf16_mask_fraction": float(mb.mean())}))


if __name__ == "__main__":
  program.run(main)
