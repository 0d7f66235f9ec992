"""`evaluate(EvalConfig)`: checks the inputs, runs the graph over the split, writes every
artifact atomically and returns the summary. The CLI (`python -m tfharm.eval`) is a thin
wrapper; tests call this directly."""

from __future__ import annotations

import dataclasses
import os
import platform
import time

from absl import logging
import numpy as np
import tensorflow as tf

from tfharm.cli import outputs
from tfharm.evaluation import (artifacts, dataset, figures, loaders, loop, methods, report,
                               summaries)
from tfharm.evaluation.config import EvalConfig, EvaluationError
from tfharm.evaluation.graph import EvalGraph
from tfharm.metrics import lpips as lpips_lib
from tfharm.models import abstention
from tfharm.weights import store


def check_output_dir(cfg: EvalConfig) -> None:
  """Before any work: no results there unless overwrite, and the directory can be written."""
  from tfharm.cli.program import SetupError  # pylint: disable=g-import-not-at-top
  if os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
    raise EvaluationError(f"--output_dir {os.path.abspath(cfg.output_dir)} is a file, not a "
                          "directory")
  found = artifacts.existing_results(cfg.output_dir)
  if found and not cfg.overwrite:
    raise EvaluationError(f"{cfg.output_dir} already holds evaluation results ({', '.join(found)}); "
                          "pass --overwrite to replace them, or choose another --output_dir")
  try:
    artifacts.check_writable(cfg.output_dir)
  except SetupError as e:
    raise EvaluationError(str(e)) from e
  artifacts.clean_stale_staging(cfg.output_dir)


def evaluate(cfg: EvalConfig) -> dict:
  """Runs the whole evaluation; returns the metrics.json content (also written to disk)."""
  t0 = time.perf_counter()
  if cfg.batch_size <= 0:
    raise EvaluationError(f"batch_size must be positive, got {cfg.batch_size}")
  if not 0.0 <= cfg.threshold < 1.0:  # NaN or >= 1: nothing is positive, IoU and F1 all 0
    raise EvaluationError(f"threshold must be in [0, 1), got {cfg.threshold}")
  if cfg.lpips_net not in ("alex", "vgg"):
    raise EvaluationError(f"lpips_net must be 'alex' or 'vgg', got {cfg.lpips_net!r}")
  check_output_dir(cfg)  # before any expensive work
  builder, size, n = dataset.open_dataset(cfg)
  scored, files = [], {}
  for name in loaders.scored_systems(cfg):
    system, its_files = loaders.open_system(name, cfg, size)
    scored.append(system)
    files.update({flag: os.path.abspath(path) for flag, path in its_files.items()})
  sha = {flag: store.sha256_file(path) for flag, path in files.items()}
  lpips_model = lpips_lib.LPIPS(cfg.lpips_net, jit_compile=False)  # used inside our graph
  # The abstention gate, when the files it is calibrated for are scored (the pipeline's).
  gate = loaders.gate_for(cfg, sha)
  graph = EvalGraph(scored, lpips_model, cfg.threshold, cfg.jit_compile,
                    gate[0] if gate else abstention.Gate())
  setup_s = time.perf_counter() - t0
  logging.info("evaluating %d examples of %s/%s:%s at %dx%d (jit_compile=%s)", n,
               builder.name, cfg.dataset_config, cfg.split, size, size, graph.jit_compile)

  names = builder.info.features["category"].names
  keep = n <= loop.KEEP_IMAGES_MAX_EXAMPLES
  with dataset.reading(builder, cfg.split):  # a damaged TFRecord: named, exit 2
    results = loop.run(graph, dataset.make_eval_dataset(cfg), n, names, cfg.progress, keep)
    if results.num_examples == 0:
      raise EvaluationError("the dataset yielded no examples")
    chosen = loop.select_examples(results.per_image, "mse")
    t = time.perf_counter()
    if keep:
      examples = {name: results.example(i) for name, i in chosen.items()}
    else:
      found = loop.gather_examples(graph, dataset.make_eval_dataset(cfg),
                                   list(chosen.values()))
      examples = {name: found[i] for name, i in chosen.items()}
    gather_s = time.perf_counter() - t

    summary = report.summarise(results.per_image)
    if cfg.real_photos:
      t = time.perf_counter()
      photos = loop.run_real_photos(graph, dataset.make_eval_dataset(cfg), cfg.batch_size)
      summary["real_photos"] = report.summarise_real_photos(photos)
      real_photos_s = time.perf_counter() - t
  categories = report.per_category(results.per_image, names)
  provenance = {
      **{flag: {"path": path, "sha256": sha[flag]} for flag, path in files.items()},
      **({"gate": {"path": gate[1], **dataclasses.asdict(gate[0])}} if gate else {}),
      "dataset": {"name": builder.name, "data_dir": os.path.abspath(cfg.data_dir),
                  "config": cfg.dataset_config,
                  "version": str(builder.info.version), "split": cfg.split,
                  "split_size": int(builder.info.splits[cfg.split].num_examples),
                  "image_size": size, "max_examples": cfg.max_examples},
      "settings": {"batch_size": cfg.batch_size, "lpips_net": cfg.lpips_net,
                   "jit_compile": graph.jit_compile, "threshold": cfg.threshold,
                   "harmonised_output": "raw network output at S (paper section 3); *_gated = "
                                        "C + m * (H - C) with m the mask the harmoniser got; "
                                        "*_l_moments = C with its L* moved onto H's mask-"
                                        "weighted L* mean/std, through m"},
      "timing": {"setup_s": setup_s, **results.timing, "examples_gather_s": gather_s,
                 **({"real_photos_s": real_photos_s} if cfg.real_photos else {})},
      "environment": _environment(),
      "examples": chosen,
  }
  metrics = {**summary, "per_category": categories, "provenance": provenance}

  t_write = time.perf_counter()
  try:
    out = artifacts.StagedOutput(cfg.output_dir)
  except OSError as e:
    if outputs.is_disk_full(e):
      raise EvaluationError(f"--output_dir {os.path.abspath(cfg.output_dir)}: no space left on "
                            "the device; the previous results are unchanged") from e
    raise
  committing = False  # from then on the old results are being replaced (metrics.json last)
  try:
    report.write_per_image_csv(out.path("per_image.csv"), results.per_image, names)
    report.write_per_category_csv(out.path("per_category.csv"), categories)
    with open(out.path("table.md"), "w") as f:
      f.write(report.table_markdown(summary, provenance, cfg.threshold))
    figures.plot_distributions(results.per_image, out.path("fig_distributions.png"))
    figures.plot_differentials(results.per_image, out.path("fig_differentials.png"))
    own, given = methods.compared_system(results.per_image).compared  # the pipeline's: C_p, C_s
    scores = {name: {"index": i, "cp": float(results.per_image[f"{own}/mse"][i]),
                     "cs": float(results.per_image[f"{given}/mse"][i])}
              for name, i in chosen.items()}
    figures.plot_examples(examples, scores, out.path("examples.png"))
    summaries.write_tensorboard(out.path("tensorboard"), summary, results.per_image, examples)
    metrics["provenance"]["timing"]["writing_s"] = time.perf_counter() - t_write
    metrics["provenance"]["timing"]["total_s"] = time.perf_counter() - t0
    report.write_json(out.path(artifacts.METRICS_JSON), metrics)
    committing = True
    out.commit()
  except BaseException as e:
    out.discard()
    if isinstance(e, Exception) and outputs.is_disk_full(e):
      kept = ("it holds no complete results (no metrics.json)" if committing else
              "the previous results are unchanged")
      raise EvaluationError(f"--output_dir {out.output_dir}: no space left on the device while "
                            f"writing the results; {kept}") from e
    raise
  return metrics


def per_image_values(metrics_dir: str) -> dict[str, np.ndarray]:
  """per_image.csv back as arrays (numeric columns), for tests and notebooks."""
  import csv  # pylint: disable=g-import-not-at-top
  with open(os.path.join(metrics_dir, "per_image.csv")) as f:
    rows = list(csv.DictReader(f))
  return {k: np.array([float(r[k]) if r[k] != "" else np.nan for r in rows])
          for k in rows[0] if k != "category"}


def _environment() -> dict[str, str]:
  """Where the timings were measured (metrics.json's provenance)."""
  gpus = tf.config.list_physical_devices("GPU")
  return {"tensorflow": tf.__version__, "python": platform.python_version(),
          "device": "GPU" if gpus else f"CPU ({os.cpu_count()} cores)",
          "machine": platform.machine(), "load_average": " ".join(
              f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""}
