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
  """Whether bfloat16 convolutions beat float32 here: on a GPU, or on a CPU with AMX (its
  `amx_bf16` flag). Without a bfloat16 matrix unit oneDNN converts and runs them slower: LPIPS
  fast mode measured 0.44x the official package against 1.61x for float32 on an AVX-512 Xeon
  and the AVX2 EPYC alike (bench/RESULTS.md)."""
  if tf.config.list_physical_devices("GPU"):
    return True
  try:
    with open("/proc/cpuinfo") as f:
      return any(line.startswith("flags") and " amx_bf16" in line for line in f)
  except OSError:
    return False
