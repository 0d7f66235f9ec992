"""How L*-only the builder's corruption is: a*/b* change and luminance ratios, before and after.

  python scripts/corruption_report.py --manual_dir=COCO_MINI[,COCO128] --split=test \
      [--data_dir=DATA]   # DATA: also summarise the built `256` split

For every target of the one-per-object plan, its first planned reference is applied three ways:
per-channel clipping after the L* move (the builder before dataset 2.0.0), chroma reduction at
constant L* and hue (`colour.gamut_map_chroma`), and the built examples (gamut mapping plus the
chroma and ratio bounds, which reject composites and try further references). Prints the
percentiles of max(mean |da*|, mean |db*|) inside the object and of the achieved mean-L* ratio.
"""

from __future__ import annotations

import json

from absl import flags
import numpy as np

from tfharm import colour
from tfharm.data import coco, composites, generation
from tfharm.cli import program

_ROOTS = flags.DEFINE_list("manual_dir", None, "COCO root(s).")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Dataset split.")
_DATA = flags.DEFINE_string("data_dir", None, "Optional: a `256` build to summarise too.")
flags.mark_flags_as_required(["manual_dir"])
_PERCENTILES = (50, 75, 90, 95, 99, 100)


def _chroma(moved_u8: np.ndarray, lab: np.ndarray) -> float:
  achieved = colour.u8_to_lab(moved_u8).astype(np.float64)
  return max(float(np.abs(achieved[..., c] - lab[..., c]).mean()) for c in (1, 2))


def _summary(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"n": int(v.size), "over_1.0": int(np.sum(v > 1.0)),
          **{f"p{p}": round(float(np.percentile(v, p)), 3) for p in _PERCENTILES}}


def main(argv):
  del argv
  opts = composites.CompositeOptions()
  splits = coco.load_dataset_splits(_ROOTS.value, opts.validation_fraction)
  split = splits[_SPLIT.value]
  tasks, stats, skips = generation.compute_statistics(split, opts, generation.default_workers())
  extra = {}
  if _SPLIT.value in generation.REFERENCE_SPLITS:
    ref = splits[generation.REFERENCE_SPLITS[_SPLIT.value]]
    extra = generation.compute_statistics(ref, opts, generation.default_workers())[1]
  plan = generation.plan_split(split, _SPLIT.value, tasks, stats, skips, opts, None,
                               (splits["train"], extra) if extra else None)
  clipped, mapped, ratios = [], [], []
  for image_id, specs in plan.specs_by_image.items():
    task = tasks[image_id]
    real = composites.resize(coco.read_image(task.image_dir, task.image), opts.image_size)
    for spec in specs:
      mask = composites.object_mask(task.object(spec.target_id), task.image, opts.image_size)
      l_map = composites.reinhard_map(plan.stats[spec.target_id],
                                      plan.stats[spec.candidates[0][0]])
      lab = colour.u8_to_lab(real[mask][:, None, :])
      target = lab.copy()
      target[..., 0] = np.clip(l_map(lab[..., 0].astype(np.float64)), *colour.L_RANGE)
      clipped.append(_chroma(colour.lab_to_u8(target), lab))
      moved = composites.move_lightness(real, mask, l_map)
      mapped.append(moved.chroma_change)
      ratios.append(moved.luminance_ratio)
  report = {"split": _SPLIT.value, "roots": _ROOTS.value,
            "targets": len(clipped), "distinct_pairs": plan.summary.distinct_pairs,
            "chroma_change": {"per_channel_clipping": _summary(clipped),
                              "gamut_mapped_first_reference": _summary(mapped)},
            "luminance_ratio_first_reference": _summary(ratios)}
  if _DATA.value:
    from tfharm.data import pipeline  # pylint: disable=g-import-not-at-top
    built = pipeline.load_builder(_DATA.value, "256").as_dataset(split=_SPLIT.value)
    rows = [(float(ex["chroma_change"]), float(ex["luminance_ratio"]),
             float(ex["l_clipped_fraction"])) for ex in built.as_numpy_iterator()]
    report["built"] = {"chroma_change": _summary([r[0] for r in rows]),
                       "luminance_ratio": _summary([r[1] for r in rows]),
                       "l_clipped_fraction": _summary([r[2] for r in rows]),
                       "any_l_clipped": int(sum(r[2] > 0 for r in rows))}
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  program.run(main)
