"""A new served model through the systems interface: a stub system (a one-layer network that
brightens the region it finds) is registered in tfharm.systems.SYSTEMS and runs end to end,
without a line of tfharm changed: loaded by name, at S and at any size, with a given mask,
served (both SavedModel signatures, exported and reloaded), on the web page's modules and in
the evaluation graph and its report. What such a model needs in tfharm itself is the network,
its training task, its preset (weights + record), a module in tfharm/systems/ and its SYSTEMS
entry (docs/architecture.md, "Systems")."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfharm import systems
from tfharm.app import handling
from tfharm.evaluation import methods as eval_methods
from tfharm.evaluation import report
from tfharm.evaluation.graph import EvalGraph
from tfharm.metrics import lpips as lpips_lib
from tfharm.models import detector as detector_lib
from tfharm.models.harmoniser import Harmoniser, HarmoniserConfig
from tfharm.serving import exporter
from tfharm.serving.signatures import ServingModule
from tfharm.systems import base
from tfharm.systems.pipeline import PipelineSystem

S = 32


def _network() -> keras.Model:
  """The stub's network: per-pixel logits of {negative, positive, none} from the image."""
  image = keras.Input((None, None, 3))
  logits = keras.layers.Conv2D(3, 1, name="stub_logits")(image)
  return keras.Model(image, logits, name="stub")


class StubSystem(base.System):
  """Finds pixels with its network's softmax; brightens them by 0.2 through the mask."""

  SYSTEM = "stub"

  def __init__(self, network, correction="l_moments", mask_source="predicted", **kwargs):
    super().__init__(correction=correction, mask_source=mask_source, **kwargs)
    self.network = network

  @property
  def image_size(self):
    return S

  def at_size(self, image, mask, mask_source, detect=True):
    detection = detector_lib.detection_channels(tf.nn.softmax(self.network(image), axis=-1))
    if mask_source == "predicted":
      mask = detector_lib.soft_mask(detection)
    return {"harmonised": tf.clip_by_value(image + 0.2 * mask, 0.0, 1.0), "mask": mask,
            "detection": detection}

  def with_correction(self, correction):
    return StubSystem(self.network, correction, self.mask_source)

  def rows(self, composite, mask=None, threshold=0.5, gate=None):
    out = self.at_size(composite, None, "predicted")
    images = {"stub": out["harmonised"]}
    if mask is not None:
      images["stub_gt_mask"] = self.at_size(composite, mask, "ground_truth")["harmonised"]
    return {"images": images, "detection": out["detection"], "values": {}}


def load(files, correction="l_moments", image_size=None):
  """The module's entry point, as tfharm/systems/<name>.py defines it."""
  del image_size
  network = _network()
  with systems.loading("stub_weights", files["stub_weights"], "stub network"):
    network.load_weights(files["stub_weights"])
  return StubSystem(network, correction)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
  """The stub's SYSTEMS entry, as tfharm/systems/__init__.py would hold it."""
  monkeypatch.setitem(systems.SYSTEMS, "stub", systems.Spec(
      __name__, {"stub_weights": "stub"}, "a stub system (tests)", rows=("stub", "stub_gt_mask"),
      photo_rows=("stub",), detector="stub_detector",
      labels={"stub": "stub, mask-free", "stub_gt_mask": "stub, GT mask"}))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  keras.utils.set_random_seed(0)
  network = _network()
  kernel, bias = network.get_layer("stub_logits").get_weights()
  network.get_layer("stub_logits").set_weights([kernel * 4.0, bias])  # a contrasted mask
  path = str(tmp_path_factory.mktemp("stub") / "stub.weights.h5")
  network.save_weights(path)
  return {"stub_weights": path}


def _photo(h=45, w=61, seed=0):
  return (np.random.default_rng(seed).uniform(0, 1, (1, h, w, 3)) * 255).astype("uint8")


def test_loads_by_name_and_refuses_other_systems_weights(weights):
  system = systems.load("stub", weights)
  assert isinstance(system, StubSystem)
  with pytest.raises(ValueError, match="--stub_weights apply to --model=stub"):
    systems.weight_files("joint", weights)
  with pytest.raises(FileNotFoundError, match="missing weights: --stub_weights"):
    systems.load("stub", {"stub_weights": weights["stub_weights"] + ".gone"})
  assert systems.weight_flags()["stub_weights"] == ("stub", "none")


def test_at_size_any_size_and_with_a_mask(weights):
  system = systems.load("stub", weights)
  photo = _photo().astype("float32") / 255.0
  out = system.any_size(photo)
  assert out["harmonised"].shape == (1, 45, 61, 3) and out["detection"].shape == (1, 45, 61, 2)
  assert np.abs(out["harmonised"].numpy() - photo).max() > 1e-3
  zero = system.any_size({"image": photo, "mask": np.zeros((1, 45, 61, 1), "float32")},
                         mask_source="ground_truth")
  np.testing.assert_array_equal(zero["harmonised"], photo)  # mask 0: unchanged
  assert system(photo[:, :S, :S])["harmonised"].shape == (1, S, S, 3)


def test_served_signatures_and_export(weights, tmp_path):
  system = systems.load("stub", weights)
  module = ServingModule(system, jit_compile=False)
  image = _photo()
  served = module.serving_default(image=tf.constant(image))
  reference = system.any_size(image.astype("float32") / 255.0)
  diff = np.abs(served["harmonised"].numpy().astype(int)
                - np.round(np.clip(reference["harmonised"].numpy(), 0, 1) * 255).astype(int))
  assert diff.max() <= 1
  mask = np.zeros((1, 45, 61, 1), "float32")
  np.testing.assert_array_equal(module.harmonise_with_mask(
      image=tf.constant(image), mask=tf.constant(mask))["harmonised"], image)
  path = exporter.export(system, str(tmp_path / "serving"), version=1, jit_compile=False)
  loaded = tf.saved_model.load(path).signatures["serving_default"]
  np.testing.assert_array_equal(loaded(image=tf.constant(image))["harmonised"],
                                served["harmonised"])


def test_the_pages_modules(weights):
  modules = handling.load_modules("stub", weights, jit_compile=False)
  assert list(modules) == ["l_moments", "residual"]
  assert modules["residual"].system.network is modules["l_moments"].system.network


def test_evaluation_rows_and_report(weights):
  keras.utils.set_random_seed(1)
  pipeline = PipelineSystem(detector_lib.Detector(), Harmoniser(HarmoniserConfig(image_size=S)))
  graph = EvalGraph([pipeline, systems.load("stub", weights)],
                    lpips_lib.LPIPS("alex", jit_compile=False), jit_compile=False)
  rng = np.random.default_rng(2)
  composite, real = (tf.constant(rng.uniform(0, 1, (2, S, S, 3)).astype("float32"))
                     for _ in range(2))
  mask = np.zeros((2, S, S, 1), "float32")
  mask[:, 8:20, 8:24] = 1.0
  out = graph.compute(composite, real, tf.constant(mask))
  assert {"stub", "stub_gt_mask"} <= set(out["metrics"]) and "stub_detector" in out
  photos = graph.compute_real_photos(real)
  assert {"stub/psnr", "stub_detector/fire_fraction"} <= set(photos)
  keys = {f"{m}/mse" for m in out["metrics"]} | {"stub_detector/iou"}
  assert eval_methods.methods_in(keys)[-2:] == ("stub", "stub_gt_mask")
  assert eval_methods.detectors_in(keys) == ("detector", "stub_detector")
  assert report.label("stub") == "stub, mask-free"
