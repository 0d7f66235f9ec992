"""Chooses the mask-free path's abstention gate on the validation split, for given weights.

  python scripts/calibrate_gate.py --data_dir=DATA [--detector_weights=...] \
      [--harmoniser_weights=...] [--output=tfharm/presets/gate_256.json]

For every gate of a grid (pixel threshold x minimum confident area, tfharm.models.abstention),
the validation composites and the split's unedited photos go through detector -> gate ->
harmoniser -> L* moment correction. The rule, fixed before looking at any number: among the
gates that do no harm on the photos (median output-vs-input PSNR >= 45 dB, >= 90 % of photos at
>= 40 dB) and make at most 10 % of composites worse by more than 1 dB, the highest mean
composite PSNR; if none qualifies, the gate with the highest photo median PSNR (recorded as
such). Writes the gate with the weights' SHA-256 (the evaluation refuses a gate calibrated for
other weights) and the whole grid. The test split is never read.
"""

from __future__ import annotations

import itertools
import json

from absl import flags, logging
import numpy as np
import tensorflow as tf

from tfharm import presets
from tfharm.data import pipeline
from tfharm.metrics import image as image_metrics
from tfharm.models import abstention, correction, detector as detector_lib, harmoniser as h_lib
from tfharm.weights import store
from tfharm.cli import program

_DATA = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding luminance_composites/256.")
_DETECTOR = flags.DEFINE_string("detector_weights", None, "Default: the shipped detector.")
_HARMONISER = flags.DEFINE_string("harmoniser_weights", None, "Default: the shipped harmoniser.")
_OUTPUT = flags.DEFINE_string("output", presets.GATE_256, "Gate file to write.")
_THRESHOLDS = flags.DEFINE_list("pixel_thresholds", ["0", "0.5", "0.7", "0.8", "0.9", "0.95"],
                                "Grid: soft-mask values below are dropped.")
_AREAS = flags.DEFINE_list("min_areas", ["0", "0.005", "0.01", "0.02", "0.05", "0.1"],
                           "Grid: confident area below which the image is left unchanged.")
flags.mark_flags_as_required(["data_dir"])


def _psnr(a, b):
  return image_metrics.psnr_from_mse(image_metrics.mse(a, b, value_range=(0.0, 1.0)),
                                     max_db=100.0).numpy()


def main(argv):
  del argv
  from tfharm import systems  # pylint: disable=g-import-not-at-top
  files = systems.weight_files("pipeline", {"detector_weights": _DETECTOR.value,
                                            "harmoniser_weights": _HARMONISER.value})
  pipe = systems.load("pipeline", files, image_size=256)
  harmoniser, h_path = pipe.harmoniser, files["harmoniser_weights"]
  detector, d_path = pipe.detector, files["detector_weights"]
  gates = [abstention.Gate(float(t), float(a))
           for t, a in itertools.product(_THRESHOLDS.value, _AREAS.value)]

  composite_psnr, real_psnr = {g: [] for g in gates}, {g: [] for g in gates}
  base, seen = [], set()
  for n, batch in enumerate(pipeline.make_dataset(_DATA.value, "validation", batch_size=8)):
    logging.info("batch %d: %d gates", n, len(gates))
    comp, real = batch["composite"], batch["real"]
    fresh = [i for i, image_id in enumerate(batch["image_id"].numpy()) if int(image_id) not in seen]
    seen.update(int(i) for i in batch["image_id"].numpy())
    photos = tf.gather(real, tf.constant(fresh, tf.int32))  # [] must stay an int index
    soft_c = detector_lib.soft_mask(detector_lib.detection_channels(detector(comp, training=False)))
    soft_p = (detector_lib.soft_mask(detector_lib.detection_channels(detector(photos, training=False)))
              if fresh else None)
    base.append(_psnr(comp, real))
    for g in gates:
      for image, soft, target, store_in in ((comp, soft_c, real, composite_psnr),
                                            (photos, soft_p, photos, real_psnr)):
        if soft is None:
          continue
        m = abstention.apply_gate(soft, g)
        pred = h_lib.harmonise(harmoniser, image, m)
        out = correction.apply_correction("l_moments", image, m, image, m, pred)
        store_in[g].append(_psnr(out, target))
  base = np.concatenate(base)
  grid = []
  for g in gates:
    c, r = np.concatenate(composite_psnr[g]), np.concatenate(real_psnr[g])
    gain = c - base
    grid.append({"pixel_threshold": g.pixel_threshold, "min_area": g.min_area,
                 "composite_mean_psnr": float(c.mean()), "composite_improved": float(np.mean(gain > 0)),
                 "composite_worse_by_1db": float(np.mean(gain < -1.0)),
                 "photo_median_psnr": float(np.median(r)),
                 "photo_share_at_least_40db": float(np.mean(r >= 40))})
  ok = [x for x in grid if x["photo_median_psnr"] >= 45 and x["photo_share_at_least_40db"] >= 0.9
        and x["composite_worse_by_1db"] <= 0.1]
  best = (max(ok, key=lambda x: x["composite_mean_psnr"]) if ok
          else max(grid, key=lambda x: (x["photo_median_psnr"], x["composite_mean_psnr"])))
  gate = abstention.Gate(best["pixel_threshold"], best["min_area"])
  chosen_on = {"split": "validation", "dataset": pipeline.load_builder(_DATA.value, "256").info.full_name,
               "composites": int(base.size), "photos": len(seen),
               "composite_mean_psnr_unchanged": float(base.mean()),
               "rule_met": bool(ok), "chosen": best, "grid": grid}
  abstention.save_gate(_OUTPUT.value, gate, {"detector": store.sha256_file(d_path),
                                             "harmoniser": store.sha256_file(h_path)}, chosen_on)
  print(json.dumps({"gate": best, "rule_met": bool(ok)}, indent=2))


if __name__ == "__main__":
  program.run(main)
