"""Ships a joint model run as preset `joint_256`: float16 weights + the record of its scores.

  python scripts/ship_joint.py --workdir=RUN --data_dir=DATA \
      --validation_metrics=out/eval/joint_validation/metrics.json \
      --test_metrics=out/eval/joint_test/metrics.json

The scores are `python -m tfharm.eval --joint_weights=<the shipped file>` runs on the
validation and test splits (configs/eval_coco_validation.flags, configs/eval_coco.flags; with
--systems=joint the joint model alone, in minutes): this script checks they scored exactly the
file it ships (SHA-256) and keeps the joint model's rows, shares, detection and unedited-photo
figures, and the pipeline's beside them when the run scored it. It also scores
the file itself on the test split's first 16 composites (`test_first_16`,
tfharm.evaluation.quick_scores.joint_scores: what tests/models/checkpoints_test.py re-measures
in seconds). The file is made first with --metrics unset (it prints the path to evaluate),
then recorded. The recipe is the last invocation in the run's flags.txt (each resume appends
one), machine paths left out; `earlier_starts` lists, per earlier start, the flags that differed
(a resume with a new --steps or --learning_rate).
"""
from __future__ import annotations

import json
import os

from absl import app, flags

from tfharm import presets
from tfharm.weights import store
from tfharm.cli import program

SUBSET = 16

_WORKDIR = flags.DEFINE_string("workdir", None, "tfharm.train --model=joint workdir "
                               "(its exported weight average, joint.weights.h5).")
_OUT = flags.DEFINE_string("output", os.path.join(presets.DIRECTORY, "joint_256.weights.h5"),
                           "Shipped weights file.")
_VALIDATION = flags.DEFINE_string("validation_metrics", None, "tfharm.eval metrics.json, split "
                                  "validation, of the shipped file.")
_TEST = flags.DEFINE_string("test_metrics", None, "Same, split test.")
_DATA = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites/256 "
                            "(the one evaluated): the test split's first composites are "
                            "re-scored here for the record's test_first_16.")
ROWS = ("composite", "detector_harmoniser_l_moments", "detector_harmoniser_abstain_l_moments",
        "harmoniser_gt_mask_l_moments", "joint", "joint_l_moments", "joint_gt_mask")


def _summary(path: str, sha: str) -> dict:
  with open(path) as f:
    m = json.load(f)
  scored = m["provenance"].get("joint_weights", {})
  if scored.get("sha256") != sha:
    raise app.UsageError(f"{path} scored {scored.get('path')} (sha256 {scored.get('sha256')}), "
                         f"not the shipped file (sha256 {sha})")
  # A run without the pipeline (--systems=joint) has no "detector" and no pipeline rows or
  # real-photo keys (fire_fraction, abstained): what it has is kept.
  return {"split": m["provenance"]["dataset"]["split"], "num_examples": m["num_examples"],
          "methods": {k: m["methods"][k] for k in ROWS if k in m["methods"]},
          "shares": {k: m["shares"][k] for k in ROWS if k in m.get("shares", {})},
          **{k: m[k] for k in ("joint_detector", "detector", "real_photos") if k in m}}


MACHINE_FLAGS = ("workdir", "data_dir", "generator_roots")


def _invocations(workdir: str) -> list[list[str]]:
  """The run's starts (tfharm.training.run_flags), each reduced to tfharm.train's own flags
  without machine paths: flags.txt also holds every flag absl and TensorFlow define
  (absl's --test_tmpdir and --verbosity, ...), which say nothing about the recipe."""
  from tfharm import train  # pylint: disable=g-import-not-at-top
  from tfharm.training import run_flags  # pylint: disable=g-import-not-at-top
  own = flags.FlagValues()
  train._define_flags(own)  # pylint: disable=protected-access
  keep = {n for n in own if n not in MACHINE_FLAGS}
  keep |= {"no" + n for n in keep}
  return [[line for line in start if line[2:].split("=", 1)[0] in keep]
          for start in run_flags.invocations(workdir)]


def recipe(workdir: str) -> list[str]:
  """The run's newest invocation, tfharm.train's flags only, machine paths left out."""
  return _invocations(workdir)[-1]


def earlier_starts(workdir: str) -> list[list[str]]:
  """For each earlier start of the run, oldest first, the flags whose values differ from the
  newest start's (machine paths left out): a run resumed with a new --steps or --learning_rate
  was trained partly with the older values, and the recipe alone would hide that."""
  *earlier, newest = _invocations(workdir)
  return [[line for line in start if line not in newest] for start in earlier]


def first_test_scores(weights: str, data_dir: str) -> dict:
  from tfharm.evaluation import quick_scores  # pylint: disable=g-import-not-at-top
  from tfharm.data import pipeline  # pylint: disable=g-import-not-at-top
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  return quick_scores.joint_scores(joint.load_joint(weights), pipeline.make_dataset(
      data_dir, "test", config="256", batch_size=SUBSET, max_examples=SUBSET))


def preset_model(workdir: str):
  """The run's exported model (its `.keras` file carries the config), refused if the preset
  would load its weights into another config: a `.weights.h5` file holds no config, and
  joint_256's entry in tfharm.presets builds the default JointConfig."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  model = joint.load_joint(os.path.join(workdir, "joint.keras"))
  expected = joint.JointConfig(**presets.get("joint_256").config)
  differ = {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(model.cfg)
            if f.name != "imagenet_weights"
            and getattr(model.cfg, f.name) != getattr(expected, f.name)}
  if differ:
    raise program.SetupError(
        f"{workdir} trained a joint model with {differ}, but the joint_256 preset is built "
        "with the default JointConfig, so its float16 file would not load. Score the run's "
        "joint.keras instead (tfharm.eval and tfharm.validation take it); shipping it needs a "
        "preset entry with that config in tfharm/presets/__init__.py")
  return model


def main(argv):
  del argv
  if not os.path.exists(_OUT.value):
    if not _WORKDIR.value:
      raise app.UsageError(f"{_OUT.value} does not exist: pass --workdir to make it")
    model = preset_model(_WORKDIR.value)
    from tfharm.models import checkpoints  # pylint: disable=g-import-not-at-top
    checkpoints.save_float16_weights(model, _OUT.value)
  sha = store.sha256_file(_OUT.value)
  if not (_VALIDATION.value and _TEST.value):
    print(f"made {_OUT.value} (sha256 {sha}); evaluate it with tfharm.eval --joint_weights, "
          "then run again with --validation_metrics and --test_metrics")
    return
  if not _DATA.value:
    raise app.UsageError("--data_dir is required to record (the test_first_16 scores)")
  record = {"sha256": sha, "validation": _summary(_VALIDATION.value, sha),
            "test": _summary(_TEST.value, sha),
            f"test_first_{SUBSET}": first_test_scores(_OUT.value, _DATA.value)}
  if _WORKDIR.value:
    record["recipe"] = recipe(_WORKDIR.value)
    record["earlier_starts"] = earlier_starts(_WORKDIR.value)
  with open(_OUT.value.replace(".weights.h5", ".metrics.json"), "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
  print(json.dumps(record, indent=2, sort_keys=True)[:3000])


if __name__ == "__main__":
  program.run(main)
