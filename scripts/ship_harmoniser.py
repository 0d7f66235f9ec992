"""Turns the newest training checkpoint into the shipped harmoniser, with its numbers.

  python scripts/ship_harmoniser.py --workdir=/work/runs/harmoniser256 --data_dir=/work/runs/tfds

Writes checkpoints/harmoniser_256.weights.h5 (float16 storage) and
checkpoints/harmoniser_256.metrics.json: the validation scores of the float32 weights and of the
float16 file on the `256` config's test split, and the training step. Commit both only when the
scores are better than those already committed.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfharm import validation  # pylint: disable=wrong-import-position
from tfharm.data import pipeline  # pylint: disable=wrong-import-position
from tfharm.models import checkpoints, harmoniser  # pylint: disable=wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "tfharm.train workdir.")
_OUT = flags.DEFINE_string("output", checkpoints.HARMONISER_256, "Shipped weights file.")
_DATA = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites/256.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A checkpoint prefix in <workdir>/checkpoints (e.g. ckpt-3750) instead of "
    "the newest; choose it on the training run's own validation split, not on the split scored "
    "here.")
flags.mark_flags_as_required(["workdir", "data_dir"])


def main(argv):
  del argv
  model = harmoniser.Harmoniser(harmoniser.HarmoniserConfig(image_size=256))
  latest = checkpoints.restore_training_checkpoint(
      model, os.path.join(_WORKDIR.value, "checkpoints"), _CHECKPOINT.value)
  data = lambda: pipeline.make_dataset(_DATA.value, "test", config="256", batch_size=16)
  float32_scores = validation.harmoniser_scores(model, data())
  checkpoints.save_float16_weights(model, _OUT.value)
  shipped = harmoniser.load_harmoniser(_OUT.value)
  float16_scores = validation.harmoniser_scores(shipped, data())
  record = {"training_checkpoint": os.path.basename(latest),
            "step": int(latest.rsplit("-", 1)[-1]),
            "weight_average": checkpoints.checkpoint_has_average(latest),
            "split": "luminance_composites/256 test (coco_mini val2017)",
            "float32": float32_scores, "float16_file": float16_scores}
  with open(_OUT.value.replace(".weights.h5", ".metrics.json"), "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
  print(json.dumps(record, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
