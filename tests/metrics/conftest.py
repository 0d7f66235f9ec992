"""Shared fixtures for the metrics tests: the golden LPIPS data and loaded LPIPS models."""

import json
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_LPIPS = os.path.join(REPO, "..", "shared", "lpips")


@pytest.fixture(scope="session")
def golden():
  """(reference.json dict, loader of its PNGs as uint8 RGB, folder path)."""
  path = os.path.join(SHARED_LPIPS, "reference.json")
  if not os.path.isfile(path):
    pytest.skip(f"LPIPS golden data not found at {os.path.abspath(SHARED_LPIPS)} "
                "(the shared/ folder beside the repo; CI provides it)")
  with open(path) as f:
    ref = json.load(f)
  from PIL import Image

  def load(rel):
    return np.asarray(Image.open(os.path.join(SHARED_LPIPS, rel)).convert("RGB"))

  return ref, load, SHARED_LPIPS


@pytest.fixture(scope="session")
def models():
  """LPIPS instances keyed by (net, spatial), built lazily and shared across tests."""
  from tfharm.metrics import lpips
  cache = {}

  def get(net="alex", spatial=False, **kw):
    key = (net, spatial, tuple(sorted(kw.items())))
    if key not in cache:
      cache[key] = lpips.LPIPS(net, spatial=spatial, **kw)
    return cache[key]

  return get
