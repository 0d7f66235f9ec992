"""Turns a harmoniser training checkpoint into the shipped harmoniser, with its numbers.

  python scripts/ship_harmoniser.py --workdir=RUN --data_dir=DATA [--checkpoint=ckpt-N]
  python scripts/ship_harmoniser.py --rescore --data_dir=DATA   # the shipped file, new data

Writes tfharm/presets/harmoniser_256.weights.h5 (float16 storage) and
tfharm/presets/harmoniser_256.metrics.json: the scores of the float16 file on the `256` build's
`validation` split (what a checkpoint is chosen on: scripts/select_checkpoint.py) and `test`
split (reported only), the test split's first 16 composites (`test_first_16`: what
tests/models/checkpoints_test.py re-measures in seconds), the float32 weights' scores on both
of those test sets (float16 storage must keep them), and the training step. `--rescore`
keeps the shipped file and its provenance and re-measures it (e.g. after a dataset rebuild).
Commit a new file only when it beats the committed one on validation.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from tfharm import presets
from tfharm.data import pipeline
from tfharm.evaluation import quick_scores
from tfharm.models import checkpoints, harmoniser
from tfharm.cli import program

_WORKDIR = flags.DEFINE_string("workdir", None, "tfharm.train workdir.")
_OUT = flags.DEFINE_string("output", presets.get(presets.DEFAULT_HARMONISER).weights_path, "Shipped weights file.")
_DATA = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites/256.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A checkpoint prefix in <workdir>/checkpoints (e.g. ckpt-3750) instead of "
    "the newest; choose it on the validation split (scripts/select_checkpoint.py).")
_RESCORE = flags.DEFINE_bool("rescore", False, "Re-measure the shipped file; ship nothing.")
flags.mark_flags_as_required(["data_dir"])


SUBSET = 16


def _scores(model, split: str, max_examples: int | None = None) -> dict:
  return quick_scores.harmoniser_scores(model, pipeline.make_dataset(
      _DATA.value, split, config="256", batch_size=16, max_examples=max_examples))


def main(argv):
  del argv
  record_path = _OUT.value.replace(".weights.h5", ".metrics.json")
  if _RESCORE.value:
    with open(record_path) as f:
      old = json.load(f)
    record = {k: old[k] for k in ("training_checkpoint", "step", "weight_average", "recipe")
              if k in old}
  else:
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required unless --rescore")
    model = harmoniser.Harmoniser(harmoniser.HarmoniserConfig(image_size=256))
    latest = checkpoints.restore_training_checkpoint(
        model, os.path.join(_WORKDIR.value, "checkpoints"), _CHECKPOINT.value)
    record = {"training_checkpoint": os.path.basename(latest),
              "step": int(latest.rsplit("-", 1)[-1]),
              "weight_average": checkpoints.checkpoint_has_average(latest),
              "float32_test": _scores(model, "test"),
              f"float32_test_first_{SUBSET}": _scores(model, "test", SUBSET)}
    checkpoints.save_float16_weights(model, _OUT.value)
  shipped = harmoniser.load_harmoniser(_OUT.value)
  builder = pipeline.load_builder(_DATA.value, "256")
  record.update(dataset=f"luminance_composites/256 {builder.info.version} "
                        f"(roots {builder.info.metadata.get('roots')})",
                validation=_scores(shipped, "validation"), test=_scores(shipped, "test"),
                **{f"test_first_{SUBSET}": _scores(shipped, "test", SUBSET)})
  with open(record_path, "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
  print(json.dumps(record, indent=2, sort_keys=True))


if __name__ == "__main__":
  program.run(main)
