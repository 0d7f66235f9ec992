"""Per-device default for `jit_compile`, decided by measurement (bench/RESULTS.md).

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
