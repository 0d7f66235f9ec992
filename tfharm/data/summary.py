"""Prints what a built `luminance_composites` holds: counts, categories, luminance shifts, skips.

  python -m tfharm.data.summary --data_dir=out/demo/tfds --dataset_config=256
"""

from __future__ import annotations

import collections

from absl import app, flags, logging
import numpy as np

from tfharm.data import coco
from tfharm.data import composites


def _define_flags() -> None:
  """Flags exist only when this runs as a program (importing `summarise` claims none)."""
  global _DATA_DIR, _CONFIG
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding the build.")
  _CONFIG = flags.DEFINE_string("dataset_config", "256", "Builder config.")
  from tfharm.cli import aliases  # pylint: disable=g-import-not-at-top
  aliases.define_deprecated("config", "dataset_config", __name__)
  flags.mark_flag_as_required("data_dir")


def summarise(data_dir: str, config: str = "256") -> str:
  """A plain-text summary of every split of a prepared build."""
  from tfharm.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = pipeline.load_builder(data_dir, config)
  lines = [f"luminance_composites/{config} at {builder.data_dir}"]
  for name in sorted(builder.info.splits):
    ds = builder.as_dataset(split=name).map(lambda ex: {k: v for k, v in ex.items()
                                                        if k not in ("composite", "real")})
    cats, roots, ratios, areas = collections.Counter(), collections.Counter(), [], []
    names = builder.info.metadata.get("roots") or []
    for ex in ds.as_numpy_iterator():
      cats[coco.CLASS_NAMES[ex["category"]]] += 1
      r = int(ex["root"])
      roots[names[r] if r < len(names) else str(r)] += 1
      ratios.append(ex["reference_l_mean"] / max(ex["target_l_mean"], 1e-6))
      areas.append(float((ex["mask"] > 0).mean()))
    ratios = np.asarray(ratios)
    lines.append(f"  {name}: {len(ratios)} composites, {len(cats)} categories "
                 f"(top: {', '.join(f'{c} {n}' for c, n in cats.most_common(5))}); by root: "
                 f"{', '.join(f'{r} {n}' for r, n in sorted(roots.items()))}")
    if len(ratios):
      lo, hi = composites.TAU_NEG, composites.TAU_POS
      lines.append(f"    L* mean ratio composite/real: median {np.median(ratios):.3f}, "
                   f"darker <{lo}: {np.mean(ratios < lo):.0%}, brighter >{hi}: "
                   f"{np.mean(ratios > hi):.0%}; mask area median {np.median(areas):.1%}")
  lines.append(f"  skipped while building: {builder.info.metadata.get('skipped')}")
  return "\n".join(lines)


def main(argv):
  from tfharm.cli import program, quiet  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet.start_tensorflow(flags.FLAGS.verbosity >= 1, keras=False)
  logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens at INFO
  try:
    text = summarise(_DATA_DIR.value, _CONFIG.value)
  except FileNotFoundError as e:
    raise program.SetupError(str(e)) from None
  print(text)


if __name__ == "__main__":
  from tfharm.cli import program as _program  # pylint: disable=g-import-not-at-top
  _define_flags()
  _program.run(main)
