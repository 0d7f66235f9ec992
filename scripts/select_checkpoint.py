"""Scores several training checkpoints on the validation split, to choose the one to ship.

  python scripts/select_checkpoint.py --model=harmoniser --workdir=RUN --data_dir=DATA \
      ckpt-5000 ckpt-5500 ckpt-6000

The choice is made on `validation` (whole photos held out of train2017, which no training run
draws from and no reported table uses); the ship scripts then report `test` (val2017), which is
never used to choose anything. Prints one JSON line per checkpoint (and per weight set, when
the run kept an average).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from tfharm.evaluation import quick_scores
from tfharm.data import pipeline
from tfharm.models import checkpoints
from tfharm.cli import program

_MODEL = flags.DEFINE_enum("model", "harmoniser", ["harmoniser", "detector"], "Which network.")
_WORKDIR = flags.DEFINE_string("workdir", None, "tfharm.train workdir.")
_DATA = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites.")
_CONFIG = flags.DEFINE_string("dataset_config", "256", "luminance_composites config to select on.")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation"],
                           "Split to select on: only validation (test is for reporting).")
_MAX = flags.DEFINE_integer("max_examples", 0, "Score at most this many examples (0: all).")
_RAW = flags.DEFINE_bool("also_raw", True, "Where a run kept a weight average, also score the "
                         "raw weights of the same checkpoint.")
flags.mark_flags_as_required(["workdir", "data_dir"])


def _build():
  if _MODEL.value == "harmoniser":
    from tfharm.models import harmoniser  # pylint: disable=g-import-not-at-top
    return harmoniser.Harmoniser(harmoniser.HarmoniserConfig(image_size=256))
  from tfharm.models import detector  # pylint: disable=g-import-not-at-top
  return detector.Detector(detector.DetectorConfig())


def _score(model) -> dict:
  data = pipeline.make_dataset(_DATA.value, _SPLIT.value, config=_CONFIG.value, batch_size=16,
                               max_examples=_MAX.value or None)
  if _MODEL.value == "harmoniser":
    return quick_scores.harmoniser_scores(model, data)
  return quick_scores.detector_scores(model, data)


def main(argv):
  names = argv[1:]
  if not names:
    raise app.UsageError("name the checkpoints to score, e.g. ckpt-5000 ckpt-5500")
  ckpt_dir = os.path.join(_WORKDIR.value, "checkpoints")
  model = _build()
  for name in names:
    has_average = checkpoints.checkpoint_has_average(os.path.join(ckpt_dir, name))
    for use_average in ([True, False] if has_average and _RAW.value else [has_average]):
      checkpoints.restore_training_checkpoint(model, ckpt_dir, name, use_average=use_average)
      print(json.dumps({"checkpoint": name, "weights": "average" if use_average else "raw",
                        "selection": f"{_CONFIG.value}/{_SPLIT.value}", **_score(model)}),
            flush=True)


if __name__ == "__main__":
  program.run(main)
