"""`--model=joint` in the harmonise and export commands (a small random-weight joint model),
and the default staying the two-network pipeline."""
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests import serving_helpers as helpers
from tfharm.models.joint_pipeline import load_joint_pipeline
from tfharm.serving import paths
from tests.models.trained_weights import small_joint_model


@pytest.fixture(scope="module")
def joint_file(tmp_path_factory):
  model = small_joint_model()
  path = str(tmp_path_factory.mktemp("joint") / "joint.keras")
  model.save(path)
  return path


def test_default_is_the_pipeline():
  assert paths.DEFAULT_MODEL == "pipeline" and paths.MODELS == ("pipeline", "joint")


def test_harmonise_and_export_with_the_joint_model(joint_file, tmp_path):
  photo = helpers.val_image("000000092660.jpg")[:77, :101]  # odd sizes
  src, dst = tmp_path / "photo.png", tmp_path / "out.png"
  cv2.imwrite(str(src), photo[..., ::-1])
  proc = helpers.run(["-m", "tfharm.harmonise", "--model=joint", f"--joint_weights={joint_file}",
                      f"--input={src}", f"--output={dst}", "--nocache"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = cv2.imread(str(dst), cv2.IMREAD_COLOR)[..., ::-1]
  expected = load_joint_pipeline(joint_file).any_size(photo[None].astype("float32") / 255.0)
  helpers.assert_uint8_matches(out, expected["harmonised"][0].numpy(), max_ties=1e-2)
  proc = helpers.run(["-m", "tfharm.export", "--model=joint", f"--joint_weights={joint_file}",
                      f"--export_dir={tmp_path / 'serving'}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  served = tf.saved_model.load(str(tmp_path / "serving" / "1")).signatures["serving_default"]
  np.testing.assert_array_equal(served(image=tf.constant(photo[None]))["harmonised"][0], out)


def test_missing_joint_weights_is_a_setup_error_before_work(tmp_path):
  photo = tmp_path / "p.png"
  cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
  for args in (["-m", "tfharm.harmonise", f"--input={photo}", f"--output={tmp_path / 'o.png'}"],
               ["-m", "tfharm.export", f"--export_dir={tmp_path / 'e'}"]):
    proc = helpers.run(args + ["--model=joint", f"--joint_weights={tmp_path / 'none.keras'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "none.keras" in proc.stderr and "--joint_weights" in proc.stderr
  assert not os.path.exists(tmp_path / "o.png") and not os.path.exists(tmp_path / "e" / "1")
