"""The joint model, the default of the harmonise and export commands (a small random-weight
joint model here), and weight flags of the system that does not run refused."""
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests import serving_helpers as helpers
from tfharm import systems
from tests.models.trained_weights import small_joint_model


@pytest.fixture(scope="module")
def joint_file(tmp_path_factory):
  model = small_joint_model()
  path = str(tmp_path_factory.mktemp("joint") / "joint.keras")
  model.save(path)
  return path


def test_default_is_the_joint_model():
  assert systems.DEFAULT == "joint" and systems.NAMES == ("pipeline", "joint")


def test_weights_of_the_system_that_does_not_run_are_refused():
  with pytest.raises(ValueError, match=r"--detector_weights apply to --model=pipeline.*default"):
    systems.weight_files("joint", {"detector_weights": "d.h5"})
  with pytest.raises(ValueError, match=r"--joint_weights apply to --model=joint"):
    systems.weight_files("pipeline", {"joint_weights": "j.keras"})


def test_model_weights_are_the_files_of_the_system_that_runs(joint_file):
  """What harmonise, export and the app load: the default presets, or the given file, keyed as
  the loaders' arguments; the other system's flags and unknown models are refused."""
  from tfharm import presets  # pylint: disable=g-import-not-at-top
  assert systems.weight_files("joint") == {
      "joint_weights": presets.get("joint_256").weights_path}
  assert systems.weight_files("joint", {"joint_weights": joint_file}) == {
      "joint_weights": joint_file}
  pipeline = systems.weight_files("pipeline")
  assert list(pipeline) == ["detector_weights", "harmoniser_weights"]
  assert all(os.path.isfile(p) for p in pipeline.values())
  with pytest.raises(ValueError, match="--detector_weights apply to --model=pipeline"):
    systems.weight_files("joint", {"detector_weights": pipeline["detector_weights"]})
  with pytest.raises(FileNotFoundError, match="missing weights: --joint_weights .*gone"):
    systems.weight_files("joint", {"joint_weights": joint_file + ".gone"})
  with pytest.raises(ValueError, match="unknown model 'both'"):
    systems.weight_files("both")


def test_harmonise_and_export_run_the_joint_model_by_default(joint_file, tmp_path):
  """No --model: the output is the joint model's (and differs from the photo)."""
  photo = helpers.val_image("000000092660.jpg")[:77, :101]  # odd sizes
  src, dst = tmp_path / "photo.png", tmp_path / "out.png"
  cv2.imwrite(str(src), photo[..., ::-1])
  proc = helpers.run(["-m", "tfharm.harmonise", f"--joint_weights={joint_file}",
                      f"--input={src}", f"--output={dst}", "--nocache"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = cv2.imread(str(dst), cv2.IMREAD_COLOR)[..., ::-1]
  expected = systems.load("joint", {"joint_weights": joint_file}).any_size(photo[None].astype("float32") / 255.0)
  helpers.assert_uint8_matches(out, expected["harmonised"][0].numpy(), max_ties=1e-2)
  assert np.abs(out.astype(int) - photo).max() > 0  # the (perturbed, randomly initialised) model acted
  proc = helpers.run(["-m", "tfharm.export", f"--joint_weights={joint_file}",
                      f"--output_dir={tmp_path / 'serving'}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  served = tf.saved_model.load(str(tmp_path / "serving" / "1")).signatures["serving_default"]
  np.testing.assert_array_equal(served(image=tf.constant(photo[None]))["harmonised"][0], out)


def test_missing_joint_weights_is_a_setup_error_before_work(tmp_path):
  photo = tmp_path / "p.png"
  cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
  for args in (["-m", "tfharm.harmonise", f"--input={photo}", f"--output={tmp_path / 'o.png'}"],
               ["-m", "tfharm.export", f"--output_dir={tmp_path / 'e'}"]):
    proc = helpers.run(args + ["--model=joint", f"--joint_weights={tmp_path / 'none.keras'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "none.keras" in proc.stderr and "--joint_weights" in proc.stderr
  assert not os.path.exists(tmp_path / "o.png") and not os.path.exists(tmp_path / "e" / "1")


def test_pipeline_weights_without_model_pipeline_are_a_setup_error(tmp_path):
  photo = tmp_path / "p.png"
  cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
  for args in (["-m", "tfharm.harmonise", f"--input={photo}", f"--output={tmp_path / 'o.png'}"],
               ["-m", "tfharm.export", f"--output_dir={tmp_path / 'e'}"]):
    proc = helpers.run(args + ["--detector_weights=detector_256"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "add --model=pipeline" in proc.stderr
  assert not os.path.exists(tmp_path / "o.png") and not os.path.exists(tmp_path / "e")
