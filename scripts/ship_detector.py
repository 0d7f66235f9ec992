"""Turns a detector training checkpoint into the shipped detector, with its numbers.

  python scripts/ship_detector.py --workdir=RUN --data_dir=DATA [--checkpoint=ckpt-N]
  python scripts/ship_detector.py --rescore --data_dir=DATA   # the shipped file, new data

Writes tfharm/presets/detector_256.head.weights.h5 (only the layers we trained; the frozen VGG16
is rebuilt from the converted ImageNet weights) and tfharm/presets/detector_256.metrics.json: the
scores of the shipped file, reloaded, on the `256` build's `validation` split (what a checkpoint
is chosen on) and `test` split (reported only), the test split's first 16 examples (what the
fast test re-checks), and the training step. `--rescore` keeps the shipped file and its
provenance and re-measures it. Commit a new file only when it beats the committed one on
validation.
"""

from __future__ import annotations

import json
import os

from absl import app, flags
import numpy as np

from tfharm.evaluation import quick_scores
from tfharm.data import pipeline
from tfharm import presets
from tfharm.models import checkpoints, detector, layer_files
from tfharm.cli import program

_WORKDIR = flags.DEFINE_string("workdir", None, "tfharm.train workdir.")
_OUT = flags.DEFINE_string("output", presets.get(presets.DEFAULT_DETECTOR).weights_path, "Shipped head weights file.")
_DATA = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites/256.")
_SUBSET = flags.DEFINE_integer("subset", 16, "Also score the test split's first N examples.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "Training checkpoint to ship, e.g. ckpt-900 (default: newest).")
_RESCORE = flags.DEFINE_bool("rescore", False, "Re-measure the shipped file; ship nothing.")
flags.mark_flags_as_required(["data_dir"])


def _scores(model, split: str, n: int | None = None) -> dict:
  return quick_scores.detector_scores(model, pipeline.make_dataset(
      _DATA.value, split, config="256", batch_size=8, max_examples=n))


def main(argv):
  del argv
  record_path = _OUT.value.replace(".head.weights.h5", ".metrics.json")
  tmp = None
  if _RESCORE.value:
    with open(record_path) as f:
      old = json.load(f)
    record = {k: old[k] for k in ("training_checkpoint", "step", "weight_average", "recipe")
              if k in old}
    shipped = detector.load_detector(_OUT.value)
  else:
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required unless --rescore")
    model = detector.Detector(detector.DetectorConfig())
    latest = checkpoints.restore_training_checkpoint(
        model, os.path.join(_WORKDIR.value, "checkpoints"), _CHECKPOINT.value)
    tmp = _OUT.value + ".tmp"
    layer_files.save_head_weights(model, tmp)
    shipped = detector.load_detector(tmp)
    for a, b in zip(model.weights, shipped.weights):  # the file holds exactly these weights
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    record = {"training_checkpoint": os.path.basename(latest),
              "step": int(latest.rsplit("-", 1)[-1]),
              "weight_average": checkpoints.checkpoint_has_average(latest)}
  builder = pipeline.load_builder(_DATA.value, "256")
  record.update(dataset=f"luminance_composites/256 {builder.info.version} "
                        f"(roots {builder.info.metadata.get('roots')})",
                threshold=0.5, validation=_scores(shipped, "validation"),
                test=_scores(shipped, "test"),
                **{f"test_first_{_SUBSET.value}": _scores(shipped, "test", _SUBSET.value)})
  if tmp:
    os.replace(tmp, _OUT.value)
  with open(record_path, "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
  print(json.dumps(record, indent=2, sort_keys=True))


if __name__ == "__main__":
  program.run(main)
