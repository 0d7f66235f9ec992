"""Per-device defaults decided by measurement (bench/RESULTS.md): `jit_compile`, and whether
bfloat16 convolutions are faster than float32 (LPIPS's fast mode).

On this project's 2-core AVX2 CPU, TensorFlow's default kernels (oneDNN convolutions, Eigen
reductions) beat XLA for both LPIPS (XLA's CPU convolutions are slower) and the memory-bound
pixel metrics (XLA's CPU reductions ran up to 3x slower). On a GPU, XLA fuses the normalisation,
differences and reductions into few kernels and is the usual right choice, so it is the default
there. Every metric still runs under jit_compile=True (tested), whatever the default.
"""

import functools

import tensorflow as tf


@functools.lru_cache(maxsize=1)
def default_jit_compile() -> bool:
  return bool(tf.config.list_physical_devices("GPU"))


@functools.lru_cache(maxsize=1)
def bfloat16_is_fast() -> bool:
  """Whether bfloat16 convolutions beat float32 here: always on a GPU; on a CPU, measured once
  per process (~0.5 s). CPU flags do not tell: the Xeon of bench/RESULTS.md lists amx_bf16, yet
  LPIPS's bfloat16 mode ran at 0.44x the official package there against 1.61x for float32
  (oneDNN converted and ran them without AMX), as on the AVX2 EPYC."""
  if tf.config.list_physical_devices("GPU"):
    return True
  return bfloat16_wins(_conv_seconds)


def bfloat16_wins(seconds, margin: float = 0.8) -> bool:
  """bfloat16 counts as fast only if `seconds(dtype)` is below `margin` x float32's."""
  return seconds(tf.bfloat16) < margin * seconds(tf.float32)


def _conv_seconds(dtype, repeats: int = 3) -> float:
  """Best time of a 3x3, 64 -> 64 convolution on a 96x96 batch of 4 (LPIPS-sized) in `dtype`."""
  import time  # pylint: disable=g-import-not-at-top
  x = tf.random.stateless_uniform((4, 96, 96, 64), (0, 1), dtype=tf.float32)
  k = tf.random.stateless_uniform((3, 3, 64, 64), (0, 2), dtype=tf.float32)
  x, k = tf.cast(x, dtype), tf.cast(k, dtype)
  conv = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
  conv(x, k).numpy()  # trace and create the primitive
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    conv(x, k).numpy()
    best = min(best, time.perf_counter() - start)
  return best
