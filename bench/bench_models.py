"""Model throughput on this machine: one `name value unit` line per figure.

  python bench/bench_models.py                      # harmoniser, all variants
  python bench/bench_models.py --models=harmoniser --iters=3
  python bench/bench_models.py --models=detector,end_to_end --iters=3 --warmup=1
  taskset -c 1 python bench/bench_models.py --models=joint --precisions=float32 --xla=false
  python bench/bench_models.py --models=joint_lite0 --modes=inference,train  # EfficientNet trunk
  python bench/bench_models.py --models=joint --modes=photo  # one 1024x768 photo, as harmonise

Each (model, mode, precision, XLA) variant runs in its own subprocess, so the dtype
policy and the peak RSS belong to that variant alone. The CPU's reachable peak is
measured per precision in the same run with one large convolution, and every
throughput is also reported as a fraction of it (analytic FLOPs / time / peak).
"""
from __future__ import annotations

import functools
import json
import os
import resource
import time

from absl import flags

import measure  # bench/measure.py
from tfharm.cli import program

_MODELS = flags.DEFINE_list("models", ["harmoniser"], "Models to benchmark (see BENCHES).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Images per step (0: the model's default, "
                              "16 for the harmoniser, 8 for the detector and end to end).")
DEFAULT_BATCH = {"harmoniser": 16, "detector": 8, "end_to_end": 8, "joint": 8, "joint_lite0": 8}
_SIZE = flags.DEFINE_integer("size", 256, "Image size.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed steps per variant (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps (tracing, XLA compilation).")
_PRECISIONS = flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Dtype policies.")
_XLA = flags.DEFINE_list("xla", ["false", "true"], "jit_compile values to try.")
_PHOTO = flags.DEFINE_string("photo_size", "1024x768", "WxH of the photo for --modes=photo.")
_MODES = flags.DEFINE_list("modes", ["inference", "train", "train_cached"],
                          "What to time (train_cached: the detector's trained layers on "
                          "cached frozen-encoder features).")
_ONE = flags.DEFINE_string("one", None, "Internal: run one variant as JSON and print JSON.")


def _rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB


def forward_flops(model, only_frozen: bool = False, size: int = 256) -> int:
  """Analytic multiply-add FLOPs (2 per MAC) of one image through conv/deconv/dense layers.

  Batch norm, ELU/ReLU, pooling, upsampling and the skip sums are elementwise and ignored
  (< 1 %). `only_frozen`: count only layers that are not trainable (the detector's VGG16).
  Models with dynamic spatial dims (the detector) get their shapes from one size x size call.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  kinds = (keras.layers.Conv2DTranspose, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
           keras.layers.Dense)
  counted = [l for l in model.layers if isinstance(l, kinds)
             and not (only_frozen and l.trainable)]
  shapes = {id(l): (tuple(l.input.shape), tuple(l.output.shape)) for l in counted}
  if any(None in s[1:] for pair in shapes.values() for s in pair):
    if len(model.inputs) != 1:
      raise ValueError("dynamic shapes are probed for single-input models only")
    probe = keras.Model(model.inputs, [(l.input, l.output) for l in counted])
    outs = probe(np.zeros((1, size, size, model.inputs[0].shape[-1]), "float32"))
    shapes = {id(l): (tuple(i.shape), tuple(o.shape)) for l, (i, o) in zip(counted, outs)}
  total = 0
  for layer in counted:
    in_shape, out_shape = shapes[id(layer)]
    if isinstance(layer, keras.layers.Conv2DTranspose):
      _, h, w, cin = in_shape  # every input pixel scatters a k x k x cout patch
      kh, kw = layer.kernel_size
      total += 2 * h * w * cin * kh * kw * layer.filters
    elif isinstance(layer, keras.layers.Conv2D):
      _, h, w, cout = out_shape
      kh, kw = layer.kernel_size
      total += 2 * h * w * cout * kh * kw * in_shape[-1]
    elif isinstance(layer, keras.layers.DepthwiseConv2D):  # each output channel sees one input
      _, h, w, cout = out_shape
      kh, kw = layer.kernel_size
      total += 2 * h * w * cout * kh * kw
    else:
      total += 2 * in_shape[-1] * layer.units
  return total


def _harmoniser_variant(mode: str, precision: str, xla: bool, batch: int, size: int,
                        warmup: int, iters: int) -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig  # pylint: disable=g-import-not-at-top

  keras.mixed_precision.set_global_policy(precision)
  model = Harmoniser(HarmoniserConfig(image_size=size))
  rng = np.random.default_rng(0)
  inputs = {"image": tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)), tf.float32),
            "mask": tf.constant(rng.uniform(0, 1, (batch, size, size, 1)), tf.float32)}
  target = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)), tf.float32)
  if mode == "inference":
    fn = tf.function(lambda: model(inputs, training=False), jit_compile=xla)
  else:
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)

    def step():
      with tf.GradientTape() as tape:
        pred = tf.cast(model(inputs, training=True)["image"], tf.float32)
        loss = tf.reduce_mean(tf.square(pred - target))
      optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
      return loss
    fn = tf.function(step, jit_compile=xla)
  seconds, cpu_seconds = measure.median_time(lambda: np.asarray(fn()), warmup, iters)
  flops = forward_flops(model) * (3 if mode == "train" else 1)  # backward ~ 2x forward
  return {"images_per_s": batch / seconds, "flops_per_s": flops * batch / seconds,
          "images_per_cpu_s": batch / cpu_seconds,
          "params": model.count_params(), "forward_flops": forward_flops(model),
          "peak_flops_per_s": measure.peak_conv_flops(precision, iters), "peak_rss_gib": _rss_gib()}


def _detector_variant(mode: str, precision: str, xla: bool, batch: int, size: int,
                      warmup: int, iters: int) -> dict:
  """The detector with its frozen ImageNet VGG16 (training updates only the trained layers)."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfharm.models.detector import Detector, DetectorConfig  # pylint: disable=g-import-not-at-top

  keras.mixed_precision.set_global_policy(precision)
  model = Detector(DetectorConfig())
  rng = np.random.default_rng(0)
  image = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)), tf.float32)
  labels = tf.constant(rng.integers(0, 3, (batch, size, size)), tf.int32)
  trained, inputs = model, image
  if mode == "train_cached":
    # Feature caching: the frozen VGG16's five taps (block1..5_pool) are read from a cache
    # instead of computed, so a step is the trained layers alone. Random features of the
    # right shapes stand in for the cache; reading it (8 MB float32 per 256^2 image) is not
    # timed.
    taps = [model.get_layer(f"block{b}_pool").output for b in range(1, 6)]
    trained = keras.Model(taps, model.output)
    inputs = [tf.constant(rng.uniform(0, 4, (batch, size // 2 ** min(b, 3),
                                             size // 2 ** min(b, 3), t.shape[-1])), tf.float32)
              for b, t in zip(range(1, 6), taps)]
  if mode == "inference":
    fn = tf.function(lambda: model(image, training=False), jit_compile=xla)
  else:
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(trained.trainable_variables)

    def step():
      with tf.GradientTape() as tape:
        probs = tf.cast(trained(inputs, training=True), tf.float32)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
      optimizer.apply(tape.gradient(loss, trained.trainable_variables),
                      trained.trainable_variables)
      return loss
    fn = tf.function(step, jit_compile=xla)
  seconds, cpu_seconds = measure.median_time(lambda: np.asarray(fn()), warmup, iters)
  forward = forward_flops(model, size=size)
  frozen = forward_flops(model, only_frozen=True, size=size)
  # Trained layers: forward + input and weight gradients (3x); frozen ones: forward + input
  # gradient (2x, an upper bound: nothing flows below block1_pool); cached: trained only.
  flops = {"inference": forward, "train": 3 * (forward - frozen) + 2 * frozen,
           "train_cached": 3 * (forward - frozen)}[mode]
  return {"images_per_s": batch / seconds, "flops_per_s": flops * batch / seconds,
          "images_per_cpu_s": batch / cpu_seconds, "step_flops": flops,
          "params": model.count_params(), "forward_flops": forward,
          "peak_flops_per_s": measure.peak_conv_flops(precision, iters), "peak_rss_gib": _rss_gib()}


def _end_to_end_variant(mode: str, precision: str, xla: bool, batch: int, size: int,
                        warmup: int, iters: int) -> dict:
  """Detector -> max(p0, p1) -> harmoniser as one graph (tfharm.systems.base.inference_fn)."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfharm.models import (Detector, DetectorConfig, Harmoniser,  # pylint: disable=g-import-not-at-top
                             HarmoniserConfig)
  from tfharm.systems.base import inference_fn  # pylint: disable=g-import-not-at-top
  from tfharm.systems.pipeline import PipelineSystem  # pylint: disable=g-import-not-at-top

  if mode != "inference":
    raise ValueError("end_to_end is inference only (the two networks train separately)")
  keras.mixed_precision.set_global_policy(precision)
  detector, harmoniser = Detector(DetectorConfig()), Harmoniser(HarmoniserConfig(image_size=size))
  fn = inference_fn(PipelineSystem(detector, harmoniser), "predicted", jit_compile=xla)
  image = tf.constant(np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)), tf.float32)
  seconds, cpu_seconds = measure.median_time(lambda: fn(image)["harmonised"].numpy(), warmup, iters)
  flops = forward_flops(detector, size=size) + forward_flops(harmoniser)
  return {"images_per_s": batch / seconds, "flops_per_s": flops * batch / seconds,
          "images_per_cpu_s": batch / cpu_seconds, "step_flops": flops,
          "params": detector.count_params() + harmoniser.count_params(), "forward_flops": flops,
          "peak_flops_per_s": measure.peak_conv_flops(precision, iters), "peak_rss_gib": _rss_gib()}


def _joint_variant(mode: str, precision: str, xla: bool, batch: int, size: int,
                   warmup: int, iters: int, trunk: str = "vgg16",
                   photo_size: str = "1024x768") -> dict:
  """The joint model (tfharm.models.joint); training: its task's loss (detection CE + output
  MSE against a target), the frozen trunk (VGG16 or EfficientNet-Lite0) forward only
  (stop_gradient)."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfharm.models.joint import JointConfig, JointModel  # pylint: disable=g-import-not-at-top

  keras.mixed_precision.set_global_policy(precision)
  model = JointModel(JointConfig(trunk=trunk))
  rng = np.random.default_rng(0)
  image = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)), tf.float32)
  target = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)), tf.float32)
  labels = tf.constant(rng.integers(0, 3, (batch, size, size)), tf.int32)
  if mode == "photo":  # the default system on one photo: the network at S, the correction at WxH
    from tfharm.systems.base import inference_fn  # pylint: disable=g-import-not-at-top
    from tfharm.systems.joint import JointSystem  # pylint: disable=g-import-not-at-top
    width, height = map(int, photo_size.split("x"))
    photo = tf.constant(rng.uniform(0, 1, (batch, height, width, 3)), tf.float32)
    system_fn = inference_fn(JointSystem(model, size), "predicted", jit_compile=xla,
                             any_size=True)
    fn = lambda: system_fn(photo)["harmonised"]  # pylint: disable=unnecessary-lambda-assignment
  elif mode == "inference":
    fn = tf.function(lambda: model(image, training=False)["harmonised"], jit_compile=xla)
  else:
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)

    def step():
      with tf.GradientTape() as tape:
        out = model(image, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, out["probs"])) + tf.reduce_mean(tf.square(out["harmonised"] - target))
      optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
      return loss
    fn = tf.function(step, jit_compile=xla)
  seconds, cpu_seconds = measure.median_time(lambda: np.asarray(fn()), warmup, iters)
  forward = forward_flops(model, size=size)
  frozen = forward_flops(model, only_frozen=True, size=size)
  # Trained layers: forward + input and weight gradients (3x); the frozen trunk: forward only.
  # A photo counts the network's forward only (its S x S shrink); the full-size correction's
  # element-wise work is not counted, so its fraction of peak is a lower bound.
  flops = {"inference": forward, "photo": forward, "train": 3 * (forward - frozen) + frozen}[mode]
  return {"images_per_s": batch / seconds, "flops_per_s": flops * batch / seconds,
          "images_per_cpu_s": batch / cpu_seconds, "step_flops": flops,
          "params": model.count_params(), "forward_flops": forward,
          "peak_flops_per_s": measure.peak_conv_flops(precision, iters), "peak_rss_gib": _rss_gib()}


# Each entry runs one variant in-process.
BENCHES = {"harmoniser": _harmoniser_variant, "detector": _detector_variant,
           "end_to_end": _end_to_end_variant, "joint": _joint_variant,
           "joint_lite0": functools.partial(_joint_variant, trunk="efficientnet_lite0")}


def _run_one(spec: dict) -> dict:
  extra = {"photo_size": spec["photo_size"]} if spec["mode"] == "photo" else {}
  return BENCHES[spec["model"]](spec["mode"], spec["precision"], spec["xla"], spec["batch"],
                                spec["size"], spec["warmup"], spec["iters"], **extra)


def main(argv):
  del argv
  if _ONE.value:
    print(json.dumps(_run_one(json.loads(_ONE.value))), flush=True)
    return
  print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  for model in _MODELS.value:
    batch = _BATCH.value or DEFAULT_BATCH[model]
    for precision in _PRECISIONS.value:
      results = []
      for mode in _MODES.value:
        if (model == "end_to_end" and mode != "inference") or (
            model != "detector" and mode == "train_cached") or (
            mode == "photo" and not model.startswith("joint")):
          continue
        for xla in (x.lower() == "true" for x in _XLA.value):
          spec = dict(model=model, mode=mode, precision=precision, xla=xla,
                      batch=1 if mode == "photo" else batch, size=_SIZE.value,
                      warmup=_WARMUP.value, iters=_ITERS.value, photo_size=_PHOTO.value)
          results.append((spec, measure.spawn_variant(__file__, spec)))
      if precision == _PRECISIONS.value[0]:
        r = results[0][1]
        print(f"{model}.params {r['params']} count")
        print(f"{model}.forward_flops_per_image {r['forward_flops'] / 1e9:.2f} GFLOP")
        train = [r for spec, r in results if spec["mode"] == "train"]
        if train:
          flops = train[0].get("step_flops", 3 * r["forward_flops"])
          print(f"{model}.train_flops_per_image {flops / 1e9:.2f} GFLOP")
      peak = max(r["peak_flops_per_s"] for _, r in results)  # least disturbed by other load
      print(f"peak_conv3x3.{precision} {peak / 1e9:.1f} GFLOP/s")
      for spec, r in results:
        mode = f"photo{spec['photo_size']}" if spec["mode"] == "photo" else spec["mode"]
        name = f"{model}.{mode}.{precision}.{'xla' if spec['xla'] else 'noxla'}"
        print(f"{name}.images_per_s {r['images_per_s']:.2f} img/s")
        print(f"{name}.images_per_cpu_s {r['images_per_cpu_s']:.2f} img/CPU-s")
        print(f"{name}.gflops_per_s {r['flops_per_s'] / 1e9:.1f} GFLOP/s")
        print(f"{name}.fraction_of_peak {r['flops_per_s'] / peak:.3f} ratio")
        print(f"{name}.peak_rss {r['peak_rss_gib']:.2f} GiB", flush=True)
  print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
  program.run(main)
