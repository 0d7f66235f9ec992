"""Parity with the official PyTorch lpips 0.1.4 (golden files in testdata/lpips), atol 1e-5."""

import numpy as np
import pytest

from tfharm.metrics import lpips

ATOL = 1e-5


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_every_pair_matches_official(golden, models, net):
  ref, load, _ = golden
  model = models(net)
  got, want = [], []
  for pair in ref["pairs"]:
    a, b = lpips.from_uint8(load(pair["file_a"])), lpips.from_uint8(load(pair["file_b"]))
    got.append(float(model(a, b)))
    want.append(pair[net])
  assert len(got) == 13  # every committed pair (testdata/lpips/README.md)
  np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_batched_call_matches_official(golden, models, net):
  ref, load, _ = golden
  by_name = {p["name"]: p for p in ref["pairs"]}
  names = ref["batch"]["pairs"]
  a = np.stack([load(by_name[n]["file_a"]) for n in names])
  b = np.stack([load(by_name[n]["file_b"]) for n in names])
  got = models(net)(lpips.from_uint8(a), lpips.from_uint8(b)).numpy()
  assert got.shape == (len(names),)
  np.testing.assert_allclose(got, ref["batch"][net], rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ["p01_64_lumrect", "p13_97x131_lumrect"])
def test_spatial_map_matches_official(golden, models, name):
  ref, load, root = golden
  info = ref["spatial_alex"][name]
  pair = next(p for p in ref["pairs"] if p["name"] == name)
  want = np.load(f"{root}/{info['file']}")
  got = models("alex", spatial=True)(lpips.from_uint8(load(pair["file_a"])),
                                     lpips.from_uint8(load(pair["file_b"]))).numpy()
  assert got.shape == tuple(info["shape"]) == want.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_jit_compiled_path_matches_official(golden, models):
  """XLA (the GPU default) must give the same numbers as the default CPU path."""
  ref, load, _ = golden
  model = models("alex", jit_compile=True)
  for pair in [p for p in ref["pairs"] if p["name"] in ("p01_64_lumrect", "p02_64_gamma",
                                                       "p03_64_blur", "p13_97x131_lumrect")]:
    d = float(model(lpips.from_uint8(load(pair["file_a"])), lpips.from_uint8(load(pair["file_b"]))))
    assert abs(d - pair["alex"]) <= ATOL, pair["name"]

