"""Evaluation throughput on this machine: one `name value unit` line per figure.

  python bench/bench_eval.py                       # needs the demo build (make demo's first step)
  python bench/bench_eval.py --xla=false --examples=8

End to end = `tfharm.evaluation.loop.run` over the demo build at 256x256: decode, detector
once, harmoniser on 4B, pixel metrics on 7 methods, LPIPS (ground truth once + 7 methods),
localisation; the first batch (tracing / XLA compilation) is excluded from the rate. Each XLA
setting runs in its own subprocess. Models are randomly initialised: the cost does not depend
on the weights. The stage breakdown times each part alone as its own tf.function (no XLA) on
one batch. FLOPs per example: tf.compat.v1.profiler's float_operation count on the concrete
function's graph (it has statistics for Conv2D only here), plus an analytic count from the
graph's static shapes for Conv2DBackpropInput (the harmoniser's decoder), MatMul and Einsum;
elementwise work (BN, activations, normalisations, SSIM's filter) is not counted.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

from absl import flags

import measure  # bench/measure.py
from tfharm.cli import program

_DATA_DIR = flags.DEFINE_string("data_dir", "out/demo/tfds", "TFDS data_dir with the 256 build.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to read.")
_BATCH = flags.DEFINE_integer("batch_size", 4, "Examples per graph call.")
_EXAMPLES = flags.DEFINE_integer("examples", 8, "Timed examples after the warm-up batch.")
_XLA = flags.DEFINE_list("xla", ["false", "true"], "jit_compile values for the end-to-end run.")
_ITERS = flags.DEFINE_integer("iters", 2, "Timed calls per stage in the breakdown.")
_ONE = flags.DEFINE_string("one", None, "Internal: run one variant as JSON and print JSON.")

NUM_PAPER_COMPOSITES = 68128
GPU_PEAKS = {"A100 TF32 dense": 156e12, "A100 bf16 dense": 312e12}
UTILISATION = 0.4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(xla: bool):
  import keras  # pylint: disable=g-import-not-at-top
  from tfharm.evaluation.graph import EvalGraph  # pylint: disable=g-import-not-at-top
  from tfharm.metrics import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
  from tfharm.models import detector as det  # pylint: disable=g-import-not-at-top
  from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  from tfharm.systems.pipeline import PipelineSystem  # pylint: disable=g-import-not-at-top
  return EvalGraph([PipelineSystem(det.Detector(det.DetectorConfig()),
                                   Harmoniser(HarmoniserConfig(image_size=256)))],
                   lpips_lib.LPIPS("alex", jit_compile=False), jit_compile=xla)


def graph_flops(graph) -> dict[str, float]:
  """FLOPs of one example through graph.compute: profiler (Conv2D) + analytic for the rest."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = [tf.TensorSpec((1, 256, 256, 3)), tf.TensorSpec((1, 256, 256, 3)),
          tf.TensorSpec((1, 256, 256, 1))]
  cf = tf.function(graph.compute).get_concrete_function(*spec)
  opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  profiled = tf.compat.v1.profiler.profile(graph=cf.graph, options=opts).total_float_ops
  extra = {"Conv2DBackpropInput": 0, "MatMul": 0, "Einsum": 0}
  for op in cf.graph.get_operations():
    if op.type == "Conv2DBackpropInput":  # inputs: input_sizes, filter (kh,kw,out,in), grad
      kh, kw, cout, cin = op.inputs[1].shape.as_list()
      b, h, w, _ = op.inputs[2].shape.as_list()
      extra["Conv2DBackpropInput"] += 2 * b * h * w * kh * kw * cout * cin
    elif op.type == "MatMul":
      a, bm = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
      ta, tb = op.get_attr("transpose_a"), op.get_attr("transpose_b")
      m, k = (a[1], a[0]) if ta else (a[0], a[1])
      n = bm[0] if tb else bm[1]
      extra["MatMul"] += 2 * m * k * n
    elif op.type == "Einsum":
      eq = op.get_attr("equation").decode()
      lhs = eq.split("->")[0].split(",")
      sizes = {}
      for term, t in zip(lhs, op.inputs):
        for letter, dim in zip(term, t.shape.as_list()):
          sizes[letter] = dim
      extra["Einsum"] += 2 * int(np.prod(list(sizes.values())))
  return {"profiler_conv2d": float(profiled), **{k: float(v) for k, v in extra.items()},
          "total": float(profiled + sum(extra.values()))}


def _variant(spec: dict) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfharm.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top
  from tfharm.evaluation import loop, methods  # pylint: disable=g-import-not-at-top
  from tfharm.metrics import image as image_metrics  # pylint: disable=g-import-not-at-top
  from tfharm.metrics import localisation  # pylint: disable=g-import-not-at-top
  from tfharm.models import detector as det  # pylint: disable=g-import-not-at-top
  from tfharm.models.harmoniser import harmonise  # pylint: disable=g-import-not-at-top

  graph = _build(spec["xla"])
  n = spec["batch"] + spec["examples"]
  ds = data_pipeline.make_dataset(spec["data_dir"], spec["split"], batch_size=spec["batch"],
                                  max_examples=n)
  c0 = time.process_time()
  results = loop.run(graph, ds, n, [], progress=False)
  cpu = time.process_time() - c0
  out = {"examples": results.num_examples, "timing": results.timing, "cpu_s": cpu}
  if spec["xla"] or not spec["breakdown"]:
    return out

  # Stage breakdown on one batch, each part alone (no XLA).
  batch = next(iter(ds))
  comp, real, mask = batch["composite"], batch["real"], batch["mask"]
  b, k = int(comp.shape[0]), len(methods.METHODS)
  detector, harmoniser, lp = graph.systems[0].detector, graph.systems[0].harmoniser, graph.lpips
  soft = det.soft_mask(det.detection_channels(detector(comp, training=False)))
  masks = tf.concat([mask, soft, tf.cast(soft > 0.5, tf.float32), tf.zeros_like(mask)], 0)
  comp4 = tf.tile(comp, [4, 1, 1, 1])
  stacked = tf.concat([comp] * k, 0)
  stages = {
      "detector": tf.function(lambda: detector(comp, training=False)),
      "harmoniser_x4": tf.function(lambda: harmonise(harmoniser, comp4, masks)),
      "lpips_x8": tf.function(lambda: lp.distance_to_features(
          stacked * 2 - 1, [tf.tile(f, [k, 1, 1, 1]) for f in lp.normalised_features(real * 2 - 1)])),
      "pixel_metrics_x7": tf.function(lambda: image_metrics.image_metrics(
          stacked, tf.tile(real, [k, 1, 1, 1]), tf.tile(mask, [k, 1, 1, 1]), (0.0, 1.0))),
      "localisation": tf.function(lambda: localisation.localisation_metrics(soft, mask)),
      "whole_step": tf.function(lambda: graph.compute(comp, real, mask)),
  }
  out["stages_s_per_example"] = {}
  for name, fn in stages.items():
    wall, _ = measure.median_time(lambda fn=fn: tf.nest.map_structure(np.asarray, fn()), 1, spec["iters"])
    out["stages_s_per_example"][name] = wall / b
  plain = data_pipeline.make_dataset(spec["data_dir"], spec["split"], batch_size=spec["batch"],
                                     max_examples=n)
  t = time.perf_counter()
  count = sum(int(x["composite"].shape[0]) for x in plain)
  out["stages_s_per_example"]["decode_io"] = (time.perf_counter() - t) / count
  out["flops"] = graph_flops(graph)
  out["peak_flops_per_s"] = measure.peak_conv_flops("float32", spec["iters"] + 1)
  return out


def main(argv):
  del argv
  if _ONE.value:
    print(json.dumps(_variant(json.loads(_ONE.value))), flush=True)
    return
  data_dir = os.path.join(REPO, _DATA_DIR.value) if not os.path.isabs(_DATA_DIR.value) else _DATA_DIR.value
  if not os.path.isdir(data_dir):
    raise program.SetupError(f"{data_dir} missing: python -m tfharm.data.build --flagfile=configs/build_demo.flags")
  print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  for i, xla in enumerate(x.lower() == "true" for x in _XLA.value):
    spec = dict(xla=xla, data_dir=data_dir, split=_SPLIT.value, batch=_BATCH.value,
                examples=_EXAMPLES.value, iters=_ITERS.value, breakdown=(i == 0 and not xla))
    r = measure.spawn_variant(__file__, spec)
    name = f"eval.end_to_end.{'xla' if xla else 'noxla'}"
    t = r["timing"]
    print(f"{name}.examples_per_s {t['examples_per_s_after_first_batch']:.3f} examples/s")
    print(f"{name}.first_batch_s {t['first_batch_s (includes tracing)']:.1f} s")
    print(f"{name}.cpu_s_per_example_incl_first_batch {r['cpu_s'] / r['examples']:.2f} CPU-s/example", flush=True)
    if "flops" in r:
      for stage, s in r["stages_s_per_example"].items():
        print(f"eval.stage.{stage} {s:.3f} s/example", flush=True)
      f = r["flops"]
      print(f"eval.flops.profiler_conv2d {f['profiler_conv2d'] / 1e9:.2f} GFLOP/example")
      print(f"eval.flops.analytic_conv_transpose {f['Conv2DBackpropInput'] / 1e9:.2f} GFLOP/example")
      print(f"eval.flops.analytic_matmul_einsum {(f['MatMul'] + f['Einsum']) / 1e9:.3f} GFLOP/example")
      print(f"eval.flops.total {f['total'] / 1e9:.2f} GFLOP/example")
      print(f"peak_conv3x3.float32 {r['peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
      achieved = f["total"] * t["examples_per_s_after_first_batch"]
      print(f"eval.end_to_end.noxla.gflops_per_s {achieved / 1e9:.1f} GFLOP/s")
      print(f"eval.end_to_end.noxla.fraction_of_peak {achieved / r['peak_flops_per_s']:.3f} ratio")
      for gpu, peak in GPU_PEAKS.items():
        seconds = NUM_PAPER_COMPOSITES * f["total"] / (peak * UTILISATION)
        print(f"eval.estimate.{NUM_PAPER_COMPOSITES}_composites.{gpu.replace(' ', '_')}"
              f"_at_{int(UTILISATION * 100)}pct {seconds:.0f} s")
      cpu_s = NUM_PAPER_COMPOSITES / t["examples_per_s_after_first_batch"]
      print(f"eval.estimate.{NUM_PAPER_COMPOSITES}_composites.this_cpu {cpu_s / 3600:.1f} h",
            flush=True)
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
  program.run(main)
