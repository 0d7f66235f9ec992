"""The build's costs behind docs/table1.md: pass 1 per photo and pass 2 per composite, in CPU time.

  python bench/bench_table1.py --coco_root=COCO_MINI [--photos=80]

A full-COCO `paper_256` build differs from a coco_mini one: its 68,128 composites are far
fewer than its eligible objects, so each target gets one composite and almost every composite
decodes its own photo, while pass 1 reads every photo with an eligible object. So this times
the two passes separately, one process, on the root's photos: pass 1 (decode, resize, masks,
L* statistics) per photo, and pass 2 with one composite per target photo (decode, resize, mask,
the L* move and its bounds, three PNGs) per composite made. CPU seconds (`time.process_time`):
a machine shared with other jobs inflates them far less than wall time. Also the root's
eligible objects per annotation and photos with one, to scale to COCO's annotation counts.
Prints `name value unit` lines.
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import flags, logging

from tfharm.data import luminance_composites as lcb
from tfharm.data import coco, composites
from tfharm.cli import program

_ROOT = flags.DEFINE_string("coco_root", None, "A COCO 2017 root (e.g. coco_mini).")
_PHOTOS = flags.DEFINE_integer("photos", 80, "Photos timed per pass and split.")
_CONFIG = flags.DEFINE_string("dataset_config", "paper_256", "Builder config whose options are timed.")


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  options = next(c for c in lcb.LuminanceComposites.BUILDER_CONFIGS if c.name == _CONFIG.value).options
  print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  annotations = photos = eligible = with_eligible = 0
  pass1 = [0.0, 0]  # CPU-s, photos
  pass2 = [0.0, 0, 0]  # CPU-s, composites made, rejected
  for split_name in ("train", "test"):
    if not coco.has_split(_ROOT.value, split_name):
      continue
    split = coco.load_split(_ROOT.value, split_name)
    by_image = composites.eligible_objects(split, options)
    annotations += len(split.objects)
    photos += len(split.images)
    eligible += sum(len(ids) for ids in by_image.values())
    with_eligible += len(by_image)
    tasks = composites.image_tasks(split, options)[:_PHOTOS.value]
    stats = {}
    for task in tasks:
      start = time.process_time()
      stats.update(composites.object_statistics(task, options).stats)
      pass1[0] += time.process_time() - start
      pass1[1] += 1
    # One composite per target photo, from one reference (a paper plan's spec): as in a
    # full-COCO paper build, where targets far outnumber the composites.
    specs, _, _ = composites.plan_composites(split.object_labels(), split_name, stats, options)
    first = {}
    for spec in specs:
      first.setdefault(spec.target_image_id, dataclasses.replace(spec,
                                                                 candidates=spec.candidates[:1]))
    for task in tasks:
      if task.image.id in first:
        start = time.process_time()
        made, skips = composites.image_composites(task, [first[task.image.id]], stats, options)
        pass2[0] += time.process_time() - start
        pass2[1] += len(made)
        pass2[2] += len(skips)
  print(f"table1.annotations {annotations} count ({photos} photos)")
  print(f"table1.eligible_per_annotation {eligible / annotations:.3f} ratio "
        f"({eligible} of {annotations}, non-crowd and >= {options.min_area_fraction:.0%} of the photo)")
  print(f"table1.photos_with_eligible_object {with_eligible / photos:.3f} ratio")
  print(f"table1.pass1_cpu_s_per_photo {pass1[0] / pass1[1]:.4f} CPU-s ({pass1[1]} photos)")
  print(f"table1.pass2_cpu_s_per_composite {pass2[0] / max(pass2[1], 1):.4f} CPU-s "
        f"({pass2[1]} made, {pass2[2]} rejected by the bounds, their time included)")
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["coco_root"])
  program.run(main)
