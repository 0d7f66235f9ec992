"""scripts/ship_joint.py: the recorded recipe is the run's newest start, machine paths left out;
the record keeps what a metrics.json scored, with or without the pipeline (--systems=joint)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "ship_joint.py")


def _call(expression: str) -> object:
  """`expression` of the script's module `m`, in its own process (the script defines absl
  flags), as JSON."""
  code = ("import importlib.util, json\n"
          f"spec = importlib.util.spec_from_file_location('s', {SCRIPT!r})\n"
          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
          f"print(json.dumps({expression}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def ship_summary(metrics_path: str, sha256: str) -> dict:
  """What the script records of a tfharm.eval metrics.json that scored the file `sha256`."""
  return _call(f"m._summary({metrics_path!r}, {sha256!r})")


def test_recipe_is_the_last_start_without_machine_paths(tmp_path):
  first = ["--augment", "--batch_size=8", "--learning_rate=0.001", "--workdir=/m/run"]
  resumed = ["--noaugment", "--batch_size=8", "--data_dir=/m/data",
             "--generator_roots=/m/a,/m/b", "--learning_rate=0.0005", "--workdir=/m/run",
             "--test_tmpdir=/tmp/absl_testing", "--verbosity=0"]  # absl's own: not the recipe
  (tmp_path / "flags.txt").write_text("\n".join(first + resumed) + "\n")
  assert _call(f"m.recipe({str(tmp_path)!r})") == [
      "--noaugment", "--batch_size=8", "--learning_rate=0.0005"]


def test_earlier_starts_keep_what_differed_from_the_newest(tmp_path):
  """A run resumed with a lower learning rate: the record must not claim the newest rate for
  the whole run."""
  first = ["--batch_size=8", "--learning_rate=0.0005", "--steps=6000", "--workdir=/m/run"]
  second = ["--batch_size=8", "--learning_rate=0.0005", "--steps=12000", "--data_dir=/m/d",
            "--workdir=/m/run"]
  newest = ["--batch_size=8", "--learning_rate=0.00015", "--steps=12000", "--data_dir=/m/e",
            "--workdir=/m/run"]
  (tmp_path / "flags.txt").write_text("\n".join(first + second + newest) + "\n")
  assert _call(f"m.earlier_starts({str(tmp_path)!r})") == [
      ["--learning_rate=0.0005", "--steps=6000"], ["--learning_rate=0.0005"]]


def test_a_joint_only_metrics_json_is_recorded_without_pipeline_keys(tmp_path):
  """A --systems=joint run (its keys as tfharm.eval writes them; the real file:
  tests/eval_joint_test.py) has no detector, pipeline rows, fire_fraction or abstained."""
  row = {"mse": 10.0, "psnr": 30.0, "lpips": 0.1, "fmse": 100.0, "ssim": 0.9}
  share = {"improved": 0.5, "worse_by_1db": 0.0, "median_gain_db": 0.1}
  photo = {"median_psnr": 50.0, "share_at_least_40db": 1.0, "min_psnr": 45.0}
  metrics = {"num_examples": 2,
             "methods": {m: row for m in ("composite", "joint", "joint_l_moments",
                                          "joint_gt_mask")},
             "joint_detector": {"iou": 0.1, "f1": 0.2, "ap": 0.3},
             "joint_detector_suprathreshold": {"num_examples": 1, "iou": 0.1, "f1": 0.2, "ap": 0.3},
             "shares": {m: share for m in ("joint", "joint_l_moments", "joint_gt_mask")},
             "real_photos": {"num_photos": 2, "joint_fire_fraction": 0.01, "joint": photo,
                             "joint_l_moments": photo},
             "provenance": {"joint_weights": {"path": "/j.h5", "sha256": "ab" * 32},
                            "dataset": {"split": "validation"}}}
  path = tmp_path / "metrics.json"
  path.write_text(json.dumps(metrics))
  record = ship_summary(str(path), "ab" * 32)
  assert record == {"split": "validation", "num_examples": 2,
                    "methods": metrics["methods"], "shares": metrics["shares"],
                    "joint_detector": metrics["joint_detector"],
                    "real_photos": metrics["real_photos"]}


def test_a_run_of_another_config_is_refused_before_a_file_is_made(tmp_path):
  """A `.weights.h5` file holds no config and the joint_256 preset builds the default one: a
  float16 file of another config (e.g. the Lite0 trunk) would not load. The script said
  "made" for the default config only after a traceback for any other."""
  from tests.models.trained_weights import small_joint_model  # pylint: disable=g-import-not-at-top
  small_joint_model().save(str(tmp_path / "joint.keras"))  # narrower than the default
  out = tmp_path / "joint_256.weights.h5"
  proc = subprocess.run([sys.executable, SCRIPT, f"--workdir={tmp_path}", f"--output={out}"],
                        capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert "context_width" in last and "joint.keras" in last and "Traceback" not in proc.stderr
  assert not out.exists()


def test_the_default_config_is_made_in_float16_and_loads_as_the_preset_would(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfharm.models import joint  # pylint: disable=g-import-not-at-top
  model = joint.JointModel(joint.JointConfig(imagenet_weights=False))
  model.save(str(tmp_path / "joint.keras"))
  out = tmp_path / "joint_256.weights.h5"
  proc = subprocess.run([sys.executable, SCRIPT, f"--workdir={tmp_path}", f"--output={out}"],
                        capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith(f"made {out}")
  loaded = joint.load_joint(str(out))  # the default config, as the preset loads it
  for a, b in zip(loaded.get_weights(), model.get_weights()):
    np.testing.assert_allclose(a, b.astype(np.float16).astype(np.float32), rtol=1e-3, atol=1e-4)
