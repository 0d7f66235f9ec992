"""The demo composites the page offers as clickable examples, and the program that made them.

The PNGs in tfharm/app/examples/ are shipped so that a fresh clone's page has examples
without building the demo dataset (~10 s plus TFDS start-up). They were written by

  python -m tfharm.data.build --flagfile=configs/build_demo.flags
  python -m tfharm.app.examples --flagfile=configs/app_examples.flags

from the test split of that build (256 x 256 composites of the COCO sample in
data_builders/luminance_composites/dummy_data/): `<image_id>_<object_id>.png`, the composite,
and `<image_id>_<object_id>.mask.png`, its ground-truth mask. The choice is fixed by `select`:
the objects covering at least 5 % of the picture, at most one per photo, the largest L* shifts,
half darkened and half brightened.
"""
from __future__ import annotations

import os

from absl import app, flags

from tfharm.cli import program

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
MASK_SUFFIX = ".mask.png"
MIN_MASK_FRACTION = 0.05


def example_rows(directory: str = EXAMPLES_DIR) -> list[list[str]]:
  """[[composite path, mask path], ...] sorted by name; [] if the folder is missing."""
  if not os.path.isdir(directory):
    return []
  names = sorted(n for n in os.listdir(directory) if n.endswith(".png")
                 and not n.endswith(MASK_SUFFIX))
  rows = []
  for name in names:
    mask = os.path.join(directory, name[:-len(".png")] + MASK_SUFFIX)
    rows.append([os.path.join(directory, name), mask if os.path.isfile(mask) else None])
  return rows


def shift(example: dict) -> float:
  """The L* mean shift the builder applied to the object (> 0: the composite's is brighter)."""
  return float(example["reference_l_mean"]) - float(example["target_l_mean"])


def select(examples: list[dict], count: int) -> list[dict]:
  """count // 2 darkened and count - count // 2 brightened objects, the largest |shift| first,
  each covering >= MIN_MASK_FRACTION of the picture, no two from the same photo."""
  big = [e for e in examples if (e["mask"] > 127).mean() >= MIN_MASK_FRACTION]
  chosen, photos = [], set()
  for sign, wanted in ((-1, count // 2), (1, count - count // 2)):
    same_sign = sorted((e for e in big if shift(e) * sign > 0), key=lambda e: -abs(shift(e)))
    taken = 0
    for e in same_sign:
      if taken < wanted and int(e["image_id"]) not in photos:
        chosen.append(e)
        photos.add(int(e["image_id"]))
        taken += 1
  return chosen


def write_examples(data_dir: str, out_dir: str, count: int = 4, config: str = "256",
                   overwrite: bool = False) -> list[str]:
  """Writes the selected test composites and masks of a luminance_composites build; returns
  the composite paths. Refuses to replace existing files unless overwrite."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  builder = tfds.builder("luminance_composites", config=config, data_dir=data_dir)
  examples = list(tfds.as_numpy(builder.as_dataset(split="test")))
  chosen = select(examples, count)
  if len(chosen) < count:
    raise ValueError(f"{data_dir}: only {len(chosen)} test composites qualify, {count} asked")
  targets = []
  for e in chosen:
    stem = os.path.join(out_dir, f"{int(e['image_id'])}_{int(e['object_id'])}")
    targets.append((stem + ".png", stem + MASK_SUFFIX, e))
  existing = [p for t in targets for p in t[:2] if os.path.exists(p)]
  if existing and not overwrite:
    raise FileExistsError(f"{', '.join(existing)} exist; pass --overwrite to replace them")
  for composite, mask, e in targets:
    files.write_image(composite, e["composite"])  # atomic
    files.write_image(mask, e["mask"][..., 0])
  return [t[0] for t in targets]


def _define_flags() -> None:
  global _DATA_DIR, _OUT_DIR, _COUNT, _OVERWRITE
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "A luminance_composites TFDS data_dir.")
  _OUT_DIR = flags.DEFINE_string("output_dir", EXAMPLES_DIR, "Where the PNGs go.")
  _COUNT = flags.DEFINE_integer("count", 4, "How many composites (half darkened, half brightened).")
  _OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace existing example files.")
  from tfharm.cli import aliases  # pylint: disable=g-import-not-at-top
  aliases.define_deprecated("out_dir", "output_dir", __name__)
  flags.mark_flags_as_required(["data_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for path in write_examples(_DATA_DIR.value, _OUT_DIR.value, _COUNT.value,
                             overwrite=_OVERWRITE.value):
    print(path)


if __name__ == "__main__":
  _define_flags()
  program.run(main)
