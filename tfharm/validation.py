"""Quick scores of a harmoniser or joint checkpoint on a `luminance_composites` split
(tfharm.evaluation.quick_scores: what the scores are and why).

  python -m tfharm.validation --data_dir=DATA --dataset_config=256 --split=test \
      [--weights=tfharm/presets/harmoniser_256.weights.h5] [--output=out.json]
  python -m tfharm.validation --data_dir=DATA --split=validation --joint_weights=RUN/joint.keras \
      --output=out.json

Without --joint_weights: the harmoniser's rows (`harmoniser_scores`), the numbers in
tfharm/presets/README.md. With it: the joint model's gains over the composite with standard
errors, overall and per root (`joint_summary`), and the weights' provenance: what checkpoints
and recipes are chosen on, and what scripts/scaling_curve.py plots.
"""

from __future__ import annotations

import json
import math
import os

from absl import app, flags, logging

from tfharm.cli import program


def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: importing the library part
  must not claim flag names (e.g. --data_dir) that other programs define too."""
  global _WEIGHTS, _DATA_DIR, _CONFIG, _SPLIT, _BATCH, _OUTPUT
  _WEIGHTS = flags.DEFINE_string("weights", None, "Harmoniser weights (default: the shipped one).")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir with luminance_composites.")
  _CONFIG = flags.DEFINE_string("dataset_config", "256", "luminance_composites config.")
  _SPLIT = flags.DEFINE_string("split", "test", "Split to score.")
  _BATCH = flags.DEFINE_integer("batch_size", 16, "Batch size.")
  _OUTPUT = flags.DEFINE_string("output", None, "Also write the scores here (JSON).")
  global _JOINT, _MAX
  _JOINT = flags.DEFINE_string("joint_weights", None, "Score this joint model (a file or a preset "
                               "name) instead of a harmoniser.")
  _MAX = flags.DEFINE_integer("max_examples", None, "Score at most this many examples.")
  global _OVERWRITE, _GAINS
  _GAINS = flags.DEFINE_list("gate_gains", [], "With --joint_weights: also score the mask-free "
                             "row with its soft mask m scaled to min(1, g * m), for each g.")
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
  from tfharm.cli import aliases  # pylint: disable=g-import-not-at-top
  aliases.define_deprecated("config", "dataset_config", __name__)
  aliases.define_deprecated("output_json", "output", __name__)
  flags.mark_flag_as_required("data_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  out = _OUTPUT.value
  if out and os.path.exists(out) and not _OVERWRITE.value:
    raise program.SetupError(f"--output {out} exists (--overwrite replaces it)")
  if out and os.path.isdir(out):
    raise program.SetupError(f"--output {out} is a folder")
  try:
    gains = [float(g) for g in _GAINS.value]
  except ValueError:
    gains = [float("nan")]
  if any(not math.isfinite(g) or g <= 0 for g in gains):
    raise program.SetupError(f"--gate_gains must be positive numbers, got {_GAINS.value}")
  # pylint: disable=g-import-not-at-top  (TensorFlow after the flags are checked)
  from tfharm.cli import quiet
  quiet.start_tensorflow(flags.FLAGS.verbosity >= 1)
  from tfharm.data import pipeline
  from tfharm.evaluation import quick_scores
  try:
    builder = pipeline.load_builder(_DATA_DIR.value, _CONFIG.value)
  except FileNotFoundError as e:
    raise program.SetupError(str(e)) from None
  dataset = pipeline.make_dataset(_DATA_DIR.value, _SPLIT.value, config=_CONFIG.value,
                                  batch_size=_BATCH.value, max_examples=_MAX.value)
  if _JOINT.value:
    scores = _joint_record(dataset, builder, gains)
  else:
    from tfharm.models import presets as model_presets
    scores = quick_scores.harmoniser_scores(model_presets.load(_WEIGHTS.value, "harmoniser"),
                                            dataset)
  text = json.dumps(scores, indent=2, sort_keys=True)
  print(text)
  if out:  # atomically: a killed run leaves the old file or none, never half a file
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tfharm-{os.getpid()}.tmp")
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, out)
  logging.info("scored %d examples", scores["num_examples"])


def _joint_record(dataset, builder, gains) -> dict:
  """The joint model's summary, with the provenance a record needs (file, hash, build)."""
  # pylint: disable=g-import-not-at-top
  from tfharm import presets
  from tfharm.data import pipeline
  from tfharm.evaluation import quick_scores
  from tfharm.models import joint as joint_lib
  from tfharm.weights import store
  path = presets.weight_files({"joint_weights": _JOINT.value},
                              {"joint_weights": "joint"})["joint_weights"]
  roots = builder.info.metadata.get("roots")
  summary = quick_scores.joint_summary(
      quick_scores.joint_per_image(joint_lib.load_joint(path), dataset, gate_gains=gains), roots)
  return {"num_examples": summary["overall"]["num_examples"], **summary,
          "provenance": {"weights": _JOINT.value, "file": os.path.abspath(path),
                         "sha256": store.sha256_file(path),
                         "dataset": f"{pipeline.DATASET}/{_CONFIG.value} {builder.version}",
                         "split": _SPLIT.value, "roots": roots}}


if __name__ == "__main__":
  _define_flags()
  program.run(main)
