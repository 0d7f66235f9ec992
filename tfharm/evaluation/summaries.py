"""TensorBoard event files of an evaluation: mean scalars, a histogram of every per-image
metric, and the example images (best / median / worst)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfharm.evaluation import columns, figures
from tfharm.evaluation.methods import detectors_in, methods_in


def write_tensorboard(logdir: str, summary: dict, per_image: dict[str, np.ndarray],
                      examples: dict[str, dict], step: int = 0) -> None:
  """Scalars `{method}/{metric}` and `{detector}/{metric}` of every row and detection scored,
  histograms of the same per image, and one image per example row (the figure's six columns
  side by side)."""
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default(step=step):
    for m in methods_in(summary["methods"]):
      for k in (c.key for c in columns.IMAGE_COLUMNS):
        value = summary["methods"][m][k]
        if value is not None:
          tf.summary.scalar(f"{m}/{k}", value)
        finite = per_image[f"{m}/{k}"][np.isfinite(per_image[f"{m}/{k}"])]
        if finite.size:
          tf.summary.histogram(f"{m}/{k}", finite)
    for d in detectors_in(summary):
      for k in (c.key for c in columns.DETECTOR_COLUMNS):
        if summary[d][k] is not None:
          tf.summary.scalar(f"{d}/{k}", summary[d][k])
        finite = per_image[f"{d}/{k}"][np.isfinite(per_image[f"{d}/{k}"])]
        if finite.size:
          tf.summary.histogram(f"{d}/{k}", finite)
    for name, item in examples.items():
      row = np.concatenate([img for _, img in figures.example_columns(item)], axis=1)
      tf.summary.image(f"examples/{name}", np.clip(row, 0.0, 1.0)[None], max_outputs=1,
                       description=figures.example_description(item))
  writer.flush()
  writer.close()
