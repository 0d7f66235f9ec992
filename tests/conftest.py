"""Builds shared by the tests: the embedded demo sample, and coco_mini when it is present."""

import os
import shutil

import pytest

from tfharm.data import build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_ROOT = os.path.join(REPO, "data_builders", "luminance_composites", "dummy_data")
COCO_MINI = os.path.join(os.path.dirname(REPO), "shared", "data", "coco_mini")


def copy_demo_root(dst: str) -> str:
  """A writable copy of the demo COCO root, for tests that damage it."""
  shutil.copytree(DEMO_ROOT, dst)
  return dst


@pytest.fixture(scope="session", autouse=True)
def _private_graph_cache(tmp_path_factory):
  """tfharm.harmonise caches traced graphs in ~/.cache/tfharm by default: the tests (and the
  commands they start, which inherit the environment) use one of their own, so they never
  touch the user's and two pytest-xdist workers never share one."""
  from tfharm.serving import cache  # pylint: disable=g-import-not-at-top
  os.environ[cache.ENV_VAR] = str(tmp_path_factory.mktemp("graph_cache"))


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("demo_tfds"))
  return build.build(DEMO_ROOT, data_dir, "256", workers=2)


@pytest.fixture(scope="session")
def coco_mini_build(tmp_path_factory):
  if not os.path.isdir(COCO_MINI):
    pytest.skip(f"{COCO_MINI} not present (the CI and developer machines have it)")
  data_dir = str(tmp_path_factory.mktemp("coco_mini_tfds"))
  return build.build(COCO_MINI, data_dir, "256", workers=2)
