"""Evaluate every system (the paper's detector + harmoniser, Table 1 and Figs. 4-5, and the
default joint model) on a luminance_composites split, or those named by --systems:
--systems=joint scores the joint model alone (about a fifth of the time on CPU: the pipeline's
VGG detector is most of an evaluation's cost), --systems=pipeline the pipeline alone.

  python -m tfharm.eval --flagfile=configs/eval_demo.flags    # embedded demo data (make demo)
  python -m tfharm.eval --flagfile=configs/eval_coco.flags    # the coco_mini 256 build
  python -m tfharm.eval --flagfile=configs/eval_coco_validation.flags --systems=joint \\
      --joint_weights=RUN/joint.weights.h5 --output_dir=OUT  # a joint model alone

Writes metrics.json, per_image.csv, per_category.csv, table.md, fig_distributions.png,
fig_differentials.png, examples.png and tensorboard/ into --output_dir (all or nothing), and
prints the summary table. Each holds the systems scored; what needs a system left out is left
out (without the pipeline: no paper columns and no gate, the figures compare the joint model's
own output with its GT-mask row, and table.md and the terminal say in one line that the
pipeline was not scored). --output_dir is checked first (a file in the way, no permission, a
full disk: an error within a second, before TensorFlow starts); staging directories of
interrupted runs are removed. Exit status: 0 done, 2 usage or setup error, 3 internal error.
"""

from __future__ import annotations

from absl import app, flags

from tfharm import systems  # no TensorFlow
from tfharm.cli import program


def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: importing this module must not
  claim flag names (e.g. --data_dir) that other programs define too."""
  global _DATA_DIR, _DATASET_CONFIG, _SPLIT, _OUTPUT_DIR, _DETECTOR_WEIGHTS, _HARMONISER_WEIGHTS
  global _JOINT_WEIGHTS, _SYSTEMS, _MAX_EXAMPLES, _BATCH_SIZE, _LPIPS_NET, _JIT_COMPILE
  global _THRESHOLD, _GATE_FILE, _REAL_PHOTOS, _OVERWRITE, _PROGRESS
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites.")
  _DATASET_CONFIG = flags.DEFINE_string("dataset_config", "256",
                                        "Builder config (256, paper_256, ...).")
  _SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
  _OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the results go.")
  _DETECTOR_WEIGHTS = flags.DEFINE_string(
      "detector_weights", None,
      "Detector file (head file, .keras or .weights.h5) or preset name. Default: preset "
      "detector_256, package data of tfharm (not relative to the cwd).")
  _HARMONISER_WEIGHTS = flags.DEFINE_string(
      "harmoniser_weights", None,
      "Harmoniser .weights.h5/.keras or preset name. Default: preset harmoniser_256.")
  _JOINT_WEIGHTS = flags.DEFINE_string(
      "joint_weights", None, "The joint model scored (tfharm.models.joint; .keras, .weights.h5 or "
      "a preset name). Default: preset joint_256. Rows joint, joint_l_moments (mask-free), "
      "joint_gt_mask, and its detection (joint_detector).")
  _SYSTEMS = flags.DEFINE_list(
      "systems", None, f"The systems scored ({', '.join(systems.NAMES)}), each with its rows, "
      f"detection and unedited-photo rows, beside the composite's row. Default: all, so the "
      f"default system ({systems.DEFAULT}) has rows in every table beside the paper's pipeline "
      "(Table 1). --systems=joint scores the joint model alone (no VGG detector: about a fifth of "
      "the time on CPU; no paper columns, and table.md says the pipeline was not scored); "
      "--systems=pipeline the pipeline alone. Weight flags or --gate_file of a system left out "
      "are an error.")
  _MAX_EXAMPLES = flags.DEFINE_integer("max_examples", None, "Score at most this many examples.")
  _BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per graph call.")
  _LPIPS_NET = flags.DEFINE_enum("lpips_net", "alex", ["alex", "vgg"], "LPIPS backbone.")
  _JIT_COMPILE = flags.DEFINE_bool(
      "jit_compile", None, "XLA for the evaluation graph. Default: on with a GPU, off on CPU "
      "(tfharm.metrics.device.default_jit_compile).")
  _THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Binarised-mask and IoU/F1 threshold, in "
                                  "[0, 1): a soft mask value above it counts as positive.")
  _GATE_FILE = flags.DEFINE_string(
      "gate_file", None, "Abstention gate of the pipeline's abstaining rows "
      "(scripts/calibrate_gate.py). Default: tfharm/presets/gate_256.json when present (it must "
      "match the weights), else none; no gate when the pipeline is not scored.")
  _REAL_PHOTOS = flags.DEFINE_bool("real_photos", True, "Also run the split's unedited photos "
                                   "through the mask-free rows (do-no-harm section).")
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace results already in --output_dir.")
  _PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar (examples/s).")
  flags.mark_flags_as_required(["data_dir", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not 0.0 <= _THRESHOLD.value < 1.0:  # also refuses NaN
    raise app.UsageError(f"--threshold must be in [0, 1), got {_THRESHOLD.value} (a mask value "
                         "counts as positive above it)")
  from tfharm.cli import outputs, quiet  # pylint: disable=g-import-not-at-top (no TensorFlow)
  # Before TensorFlow starts (~5 s): the results must be writable (evaluator repeats this).
  outputs.check_directory(_OUTPUT_DIR.value, "--output_dir", 20 << 20)
  quiet.start_tensorflow(flags.FLAGS.verbosity >= 1)
  from tfharm import evaluation  # pylint: disable=g-import-not-at-top (TF import after parsing)
  from tfharm.evaluation import report  # pylint: disable=g-import-not-at-top
  cfg = evaluation.EvalConfig(
      data_dir=_DATA_DIR.value, output_dir=_OUTPUT_DIR.value,
      dataset_config=_DATASET_CONFIG.value, split=_SPLIT.value,
      detector_weights=_DETECTOR_WEIGHTS.value, harmoniser_weights=_HARMONISER_WEIGHTS.value,
      joint_weights=_JOINT_WEIGHTS.value,
      systems=None if _SYSTEMS.value is None else tuple(_SYSTEMS.value),
      max_examples=_MAX_EXAMPLES.value, batch_size=_BATCH_SIZE.value, lpips_net=_LPIPS_NET.value,
      jit_compile=_JIT_COMPILE.value, threshold=_THRESHOLD.value, gate_file=_GATE_FILE.value,
      real_photos=_REAL_PHOTOS.value, overwrite=_OVERWRITE.value, progress=_PROGRESS.value)
  try:
    metrics = evaluation.evaluate(cfg)
  except evaluation.EvaluationError as e:
    raise program.SetupError(str(e)) from e
  print()
  print(report.terminal_table(metrics))
  timing = metrics["provenance"]["timing"]
  print(f"{metrics['num_examples']} examples in {timing['loop_s']:.1f} s "
        f"({timing['examples_per_s']:.2f} examples/s); results in {cfg.output_dir}")
  return program.SUCCESS


if __name__ == "__main__":
  _define_flags()
  program.run(main)
