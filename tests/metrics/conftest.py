"""Shared fixtures for the metrics tests: the golden LPIPS data and loaded LPIPS models."""

import json
import os

import numpy as np
import pytest

GOLDEN_LPIPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "lpips")


@pytest.fixture(scope="session")
def golden():
  """(reference.json dict, loader of its PNGs as uint8 RGB, folder path): the official
  package's outputs committed in testdata/lpips (its README says how they were made)."""
  with open(os.path.join(GOLDEN_LPIPS, "reference.json")) as f:
    ref = json.load(f)
  from PIL import Image

  def load(rel):
    return np.asarray(Image.open(os.path.join(GOLDEN_LPIPS, rel)).convert("RGB"))

  return ref, load, GOLDEN_LPIPS


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
