"""Turns the newest detector training checkpoint into the shipped detector, with its numbers.

  python scripts/ship_detector.py --workdir=/work/runs/detector256 --data_dir=/work/runs/tfds

Writes checkpoints/detector_256.head.weights.h5 (only the layers we trained; the frozen VGG16
is rebuilt from the converted ImageNet weights) and checkpoints/detector_256.metrics.json: the
scores of the shipped file, reloaded, on the `256` config's test split (coco_mini val2017), on
all of it and on its first 16 examples (what the fast test re-checks), and the training step.
Commit both only when the scores are better than those already committed.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfharm import validation  # pylint: disable=wrong-import-position
from tfharm.data import pipeline  # pylint: disable=wrong-import-position
from tfharm.models import checkpoints, detector  # pylint: disable=wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "tfharm.train workdir.")
_OUT = flags.DEFINE_string("output", checkpoints.DETECTOR_256, "Shipped head weights file.")
_DATA = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites/256.")
_SUBSET = flags.DEFINE_integer("subset", 16, "Also score the split's first N examples.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "Training checkpoint to ship, e.g. ckpt-900 (default: newest).")
flags.mark_flags_as_required(["workdir", "data_dir"])


def main(argv):
  del argv
  model = detector.Detector(detector.DetectorConfig())
  latest = checkpoints.restore_training_checkpoint(
      model, os.path.join(_WORKDIR.value, "checkpoints"), _CHECKPOINT.value)
  tmp = _OUT.value + ".tmp"
  detector.save_head_weights(model, tmp)
  shipped = detector.load_detector(tmp)
  for a, b in zip(model.weights, shipped.weights):  # the file holds exactly these weights
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  data = lambda n=None: pipeline.make_dataset(_DATA.value, "test", config="256", batch_size=8,
                                              max_examples=n)
  record = {"training_checkpoint": os.path.basename(latest),
            "step": int(latest.rsplit("-", 1)[-1]),
            "weight_average": checkpoints.checkpoint_has_average(latest),
            "split": "luminance_composites/256 test (coco_mini val2017)",
            "threshold": 0.5,
            "all": validation.detector_scores(shipped, data()),
            f"first_{_SUBSET.value}": validation.detector_scores(shipped, data(_SUBSET.value))}
  os.replace(tmp, _OUT.value)
  with open(_OUT.value.replace(".head.weights.h5", ".metrics.json"), "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
  print(json.dumps(record, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
