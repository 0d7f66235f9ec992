"""tfharm.models.from_preset: a shipped model by name."""
import dataclasses

import pytest

from tfharm import models, presets
from tfharm.models import harmoniser
from tfharm.models import presets as model_presets


def test_from_preset_loads_the_shipped_harmoniser_with_its_config():
  model = models.from_preset("harmoniser_256")
  assert isinstance(model, harmoniser.Harmoniser)
  assert model.cfg == harmoniser.HarmoniserConfig(**presets.get("harmoniser_256").config)
  assert model.count_params() == 8_274_179
  by_name = model_presets.load("harmoniser_256", "harmoniser")  # a flag value: a name or a file
  assert all((a.numpy() == b.numpy()).all() for a, b in zip(model.weights, by_name.weights))


def test_every_kind_has_a_loader_and_unknown_names_fail():
  assert {p.kind for p in presets.PRESETS.values()} <= presets.KINDS.keys()
  for kind in presets.KINDS:  # every kind names a loader and a config class that exist
    loader, config = models.presets._network(kind)  # pylint: disable=protected-access
    assert callable(loader) and dataclasses.is_dataclass(config), kind
  with pytest.raises(KeyError, match="no preset"):
    models.from_preset("harmoniser_1024")
