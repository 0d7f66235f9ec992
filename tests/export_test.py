"""`python -m tfharm.export`: the SavedModel's signatures, loaded in a fresh process, against
the in-process end-to-end model on real photos of odd sizes; PredictRequest round trips; bad input.

One export (module fixture, through the command line) serves every test: each export and each
detector call (~2.5 s per image at 256x256 on this CPU) is expensive.
"""
import os
import sys
import textwrap
import types

import numpy as np
import pytest
import tensorflow as tf

from tests import serving_helpers as helpers
from tfharm import presets
from tfharm import systems
from tfharm.serving import exporter

# Runs in a fresh process: loads the SavedModel, calls both signatures directly and through a
# PredictRequest / PredictResponse round trip, and saves everything for the test to compare.
_LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    model_dir, data, out = sys.argv[1:4]
    d = dict(np.load(data))
    model = tf.saved_model.load(model_dir)
    sigs = model.signatures
    result = {"keys": np.array(sorted(sigs.keys()))}

    def via_request(name, inputs):
      request = predict_pb2.PredictRequest()
      request.model_spec.name = "tfharm"
      request.model_spec.signature_name = name
      for k, v in inputs.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
      wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
      received = {k: tf.make_ndarray(p) for k, p in wire.inputs.items()}
      for k, v in inputs.items():  # the server gets exactly what the client sent
        assert received[k].dtype == v.dtype and np.array_equal(received[k], v), k
      outputs = sigs[wire.model_spec.signature_name](**{k: tf.constant(v) for k, v in received.items()})
      response = predict_pb2.PredictResponse()
      for k, v in outputs.items():
        response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
      wire = predict_pb2.PredictResponse.FromString(response.SerializeToString())
      return {k: tf.make_ndarray(p) for k, p in wire.outputs.items()}

    a, b, mask_b = d["a"], d["b"], d["mask_b"]
    for k, v in via_request("serving_default", {"image": a}).items():
      result["a_" + k] = v
    for k, v in sigs["serving_default"](image=tf.constant(b)).items():
      result["b_" + k] = v.numpy()
    direct = sigs["harmonise_with_mask"](image=tf.constant(b), mask=tf.constant(mask_b))
    result["bm_harmonised"] = direct["harmonised"].numpy()
    result["bm_request"] = via_request("harmonise_with_mask", {"image": b, "mask": mask_b})["harmonised"]
    np.savez(out, **result)
""")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  return helpers.save_weights(str(tmp_path_factory.mktemp("weights")))


@pytest.fixture(scope="module")
def export_run(weights, tmp_path_factory):
  base = str(tmp_path_factory.mktemp("export") / "tfharm")
  proc = helpers.run(["-m", "tfharm.export", f"--output_dir={base}",
                      "--model=pipeline", f"--detector_weights={weights[0]}",
                      f"--harmoniser_weights={weights[1]}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith(os.path.join(base, "1"))
  return base, proc


@pytest.fixture(scope="module")
def export_dir(export_run):
  return export_run[0]


def test_export_is_quiet(export_run):
  """No CUDA/CPU-feature noise, no TensorFlow INFO lines (one was 4,369 characters long)."""
  _, proc = export_run
  assert helpers.noise_lines(proc.stderr) == [], proc.stderr[:3000]
  assert max(len(line) for line in proc.stderr.splitlines()) < 300, proc.stderr[:3000]
  assert "Exported" in proc.stderr


@pytest.fixture(scope="module")
def images():
  a = helpers.val_image("000000092660.jpg")[:213, :317]  # (213, 317, 3): odd H and W
  b = helpers.val_image("000000151938.jpg")  # (320, 235, 3): odd W
  return {"a": a[None], "b": b[None], "mask_b": helpers.box_mask(*b.shape[:2])[None]}


@pytest.fixture(scope="module")
def served(export_dir, images, tmp_path_factory):
  """The signatures' outputs, computed in a fresh process."""
  tmp = tmp_path_factory.mktemp("served")
  np.savez(tmp / "in.npz", **images)
  (tmp / "loader.py").write_text(_LOADER)
  # saved_model_cli starts meanwhile (a TensorFlow import of its own, mostly one core)
  cli = helpers.start(["show", "--all", "--dir", os.path.join(export_dir, "1")],
                      program=os.path.join(os.path.dirname(helpers.PYTHON), "saved_model_cli"))
  proc = helpers.run([str(tmp / "loader.py"), os.path.join(export_dir, "1"),
                      str(tmp / "in.npz"), str(tmp / "out.npz")])
  stdout, stderr = cli.communicate(timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {**np.load(tmp / "out.npz"), "cli": (cli.returncode, stdout, stderr)}


@pytest.fixture(scope="module")
def reference(weights):
  """The in-process end-to-end model, from the same weight files as the export."""
  return systems.load("pipeline", dict(zip(("detector_weights", "harmoniser_weights"), weights)))


@pytest.fixture(scope="module")
def loaded(export_dir):
  return tf.saved_model.load(os.path.join(export_dir, "1"))


def test_serving_default_equals_the_in_process_end_to_end_model(reference, images, served):
  pipe = reference
  for key in ("a", "b"):  # "a" went through a PredictRequest/PredictResponse round trip
    ref = pipe.any_size(images[key].astype(np.float32) / 255.0)
    h, w = images[key].shape[1:3]
    assert served[f"{key}_harmonised"].shape == (1, h, w, 3)
    assert served[f"{key}_mask"].shape == (1, h, w, 1) and served[f"{key}_mask"].dtype == np.float32
    assert served[f"{key}_detection"].shape == (1, h, w, 2)
    # Graph (the shrink inside a while loop) vs eager float32: ~1e-5 apart in probabilities.
    np.testing.assert_allclose(served[f"{key}_detection"], ref["detection"], atol=5e-5)
    np.testing.assert_allclose(served[f"{key}_mask"], ref["mask"], atol=5e-5)
    # The mask is max(p_neg, p_pos) at S, upsampled: the one that gated the correction. Bilinear
    # upsampling is a convex combination, so it is >= the max of the upsampled channels, and
    # equal where one channel dominates the neighbourhood.
    channel_max = served[f"{key}_detection"].max(-1, keepdims=True)
    assert np.all(served[f"{key}_mask"] >= channel_max - 1e-6)
    assert np.mean(np.isclose(served[f"{key}_mask"], channel_max, atol=1e-6)) > 0.5
    helpers.assert_uint8_matches(served[f"{key}_harmonised"], ref["harmonised"].numpy())
    # not trivial: the model changed the photo, and its mask is soft
    assert np.abs(served[f"{key}_harmonised"].astype(int) - images[key]).max() > 10
    assert np.ptp(served[f"{key}_mask"]) > 0.2


def test_predicted_path_in_many_bands_equals_the_end_to_end_model(reference, images):
  """The banded full-resolution path with ~25 blocks (shrink and correction) against
  System.any_size (the whole image in float32)."""
  a = images["a"]
  ref = reference.any_size(a.astype(np.float32) / 255.0)
  out = tf.function(lambda x: reference.predicted_uint8(x, band_pixels=3000))(
      tf.constant(a))
  helpers.assert_uint8_matches(out["harmonised"].numpy(), ref["harmonised"].numpy())
  assert np.abs(out["mask"].numpy().astype(int) - np.round(ref["mask"].numpy() * 255)).max() <= 1


def test_harmonise_with_mask_equals_the_ground_truth_path(reference, images, served):
  pipe = reference
  b, mask = images["b"], images["mask_b"]
  ref = pipe.any_size({"image": b.astype(np.float32) / 255.0, "mask": mask},
                      mask_source="ground_truth")
  helpers.assert_uint8_matches(served["bm_harmonised"], ref["harmonised"].numpy())
  np.testing.assert_array_equal(served["bm_request"], served["bm_harmonised"])
  outside = mask[..., 0] == 0
  np.testing.assert_array_equal(served["bm_harmonised"][outside], b[outside])  # bit-identical
  assert np.abs(served["bm_harmonised"][~outside].astype(int) - b[~outside]).max() > 10


def test_images_of_a_batch_are_independent(loaded, images):
  """Batch of 2 through harmonise_with_mask (harmoniser only: cheap) equals two single calls."""
  b = images["b"][:, :96, :80]
  batch = np.concatenate([b, b[:, ::-1, ::-1]])  # (2, 96, 80, 3)
  masks = np.stack([helpers.box_mask(96, 80), helpers.box_mask(96, 80)[::-1]])
  sig = loaded.signatures["harmonise_with_mask"]
  together = sig(image=tf.constant(batch), mask=tf.constant(masks))["harmonised"].numpy()
  for i in range(2):
    alone = sig(image=tf.constant(batch[i:i + 1]), mask=tf.constant(masks[i:i + 1]))
    helpers.assert_uint8_matches(together[i:i + 1], alone["harmonised"].numpy() / 255.0)
  assert not np.array_equal(together[0], together[1])


def test_saved_model_cli_shows_both_signatures(served):
  returncode, text, stderr = served["cli"]  # the venv's saved_model_cli, run by `served`
  assert returncode == 0, stderr[-2000:]
  blocks = {name: text.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
            for name in ("serving_default", "harmonise_with_mask")}
  sd, hm = blocks["serving_default"], blocks["harmonise_with_mask"]
  for block, inputs in ((sd, ("image",)), (hm, ("image", "mask"))):
    for name in inputs:
      assert f"inputs['{name}'] tensor_info:" in block
  assert _tensor_info(sd, "inputs", "image") == ("DT_UINT8", "(-1, -1, -1, 3)")
  assert _tensor_info(sd, "outputs", "harmonised") == ("DT_UINT8", "(-1, -1, -1, 3)")
  assert _tensor_info(sd, "outputs", "mask") == ("DT_FLOAT", "(-1, -1, -1, 1)")
  assert _tensor_info(sd, "outputs", "detection") == ("DT_FLOAT", "(-1, -1, -1, 2)")
  assert _tensor_info(hm, "inputs", "mask") == ("DT_FLOAT", "(-1, -1, -1, 1)")
  assert _tensor_info(hm, "outputs", "harmonised") == ("DT_UINT8", "(-1, -1, -1, 3)")
  assert "outputs['mask']" not in hm


def _tensor_info(block, kind, name):
  info = block.split(f"{kind}['{name}'] tensor_info:")[1]
  dtype = info.split("dtype:")[1].split()[0]
  shape = info.split("shape:")[1].split("\n")[0].strip()
  return dtype, shape


_BAD_IMAGES = {
    "float32": (tf.zeros([1, 16, 16, 3], tf.float32), "uint8"),
    "rank 3": (tf.zeros([16, 16, 3], tf.uint8), r"\[\?,\?,\?,3\]"),
    "1 channel": (tf.zeros([1, 16, 16, 1], tf.uint8), r"\[\?,\?,\?,3\]"),
    "4 channels": (tf.zeros([1, 16, 16, 4], tf.uint8), r"\[\?,\?,\?,3\]"),
    "zero height": (tf.zeros([1, 0, 16, 3], tf.uint8), "zero-sized image"),
    "zero width": (tf.zeros([1, 16, 0, 3], tf.uint8), "zero-sized image"),
    "empty batch": (tf.zeros([0, 16, 16, 3], tf.uint8), "batch is empty"),
}


@pytest.mark.parametrize("case", sorted(_BAD_IMAGES))
def test_bad_images_are_refused_by_both_signatures(loaded, case):
  image, message = _BAD_IMAGES[case]
  mask = tf.zeros(tf.concat([tf.shape(image)[:-1], [1]], 0)) if image.shape.rank == 4 else \
      tf.zeros([1, 16, 16, 1])
  with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=message):
    loaded.signatures["serving_default"](image=image)
  with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=message):
    loaded.signatures["harmonise_with_mask"](image=image, mask=mask)


@pytest.mark.parametrize("shape,message", [
    ([1, 16, 17, 1], "mask: its batch, height and width must equal those of the image"),
    ([2, 16, 16, 1], "mask: its batch, height and width must equal those of the image"),
    ([1, 16, 16, 3], r"\[\?,\?,\?,1\]"),
    ([16, 16, 1], r"\[\?,\?,\?,1\]")])
def test_a_mask_that_does_not_fit_is_refused(loaded, shape, message):
  image = tf.zeros([1, 16, 16, 3], tf.uint8)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures["harmonise_with_mask"](image=image, mask=tf.zeros(shape))
  small = loaded.signatures["harmonise_with_mask"](image=image, mask=tf.zeros([1, 16, 16, 1]))
  np.testing.assert_array_equal(small["harmonised"], image)  # the same call, fitting: fine


def test_an_existing_version_is_refused_without_overwrite(export_dir, weights):
  pb = os.path.join(export_dir, "1", "saved_model.pb")
  before = os.stat(pb).st_mtime_ns
  proc = helpers.run(["-m", "tfharm.export", f"--output_dir={export_dir}", "--version=1",
                      "--model=pipeline", f"--detector_weights={weights[0]}",
                      f"--harmoniser_weights={weights[1]}"])
  assert proc.returncode == 2
  assert "already exists; pass --overwrite" in proc.stderr
  assert os.stat(pb).st_mtime_ns == before
  assert sorted(os.listdir(export_dir)) == ["1"]


def test_missing_weights_are_named(tmp_path):
  base = tmp_path / "models"
  proc = helpers.run(["-m", "tfharm.export", f"--output_dir={base}",
                      "--model=pipeline", f"--detector_weights={tmp_path}/nope.head.weights.h5",
                      f"--harmoniser_weights={tmp_path}/nope.weights.h5"])
  assert proc.returncode == 2
  assert "missing weights" in proc.stderr
  assert f"{tmp_path}/nope.head.weights.h5" in proc.stderr and f"{tmp_path}/nope.weights.h5" in proc.stderr
  assert not base.exists()
  # the defaults are the shipped presets, resolved from the package, not the cwd
  defaults = (presets.get("detector_256").weights_path, presets.get("harmoniser_256").weights_path)
  missing = [p for p in defaults if not os.path.exists(p)]
  if missing:
    with pytest.raises(FileNotFoundError, match="missing weights: .*" + ".*".join(missing)):
      systems.weight_files("pipeline")
  else:
    assert systems.weight_files("pipeline") == dict(zip(("detector_weights",
                                                         "harmoniser_weights"), defaults))


class _FakeSave:
  """Stands in for tf.saved_model.save: writes a marker, or fails half-way."""

  def __init__(self, marker, fail=False):
    self.marker, self.fail = marker, fail

  def __call__(self, module, path, signatures=None):
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "w") as f:
      f.write(self.marker)
    if self.fail:
      raise RuntimeError("disk full")


def test_versions_overwrite_and_interrupted_writes(tmp_path, monkeypatch):
  monkeypatch.setattr(exporter, "ServingModule",
                      lambda pipeline, jit_compile=None: types.SimpleNamespace(signatures=dict))
  base = str(tmp_path / "m")
  read = lambda v: open(os.path.join(base, str(v), "saved_model.pb")).read()
  monkeypatch.setattr(tf.saved_model, "save", _FakeSave("first"))
  assert exporter.export(None, base) == os.path.join(base, "1")
  monkeypatch.setattr(tf.saved_model, "save", _FakeSave("second"))
  assert exporter.export(None, base) == os.path.join(base, "2")  # next version by default
  with pytest.raises(exporter.VersionExistsError, match="--overwrite"):
    exporter.export(None, base, version=1)
  assert read(1) == "first"
  monkeypatch.setattr(tf.saved_model, "save", _FakeSave("broken", fail=True))
  with pytest.raises(RuntimeError, match="disk full"):
    exporter.export(None, base, version=1, overwrite=True)
  assert read(1) == "first" and sorted(os.listdir(base)) == ["1", "2"]  # no temp left behind
  monkeypatch.setattr(tf.saved_model, "save", _FakeSave("third"))
  exporter.export(None, base, version=1, overwrite=True)
  assert read(1) == "third" and sorted(os.listdir(base)) == ["1", "2"]
  with pytest.raises(ValueError, match="non-negative"):
    exporter.export(None, base, version=-1)


def test_unwritable_export_dirs_are_refused_before_the_models_load(weights, tmp_path):
  flags = ["--model=pipeline", f"--detector_weights={weights[0]}",
           f"--harmoniser_weights={weights[1]}"]
  (tmp_path / "afile").write_text("in the way")
  cases = [(str(tmp_path / "afile"), "is a file, not a directory")]
  with helpers.tmpfs(tmp_path / "ro", "size=1m,ro") as ro, helpers.full_disk(tmp_path / "full") as full:
    cases += [(f"{ro}/models", "read-only file system"), (str(full), "--output_dir")]
    for export_dir, message in cases:
      proc = helpers.run(["-m", "tfharm.export", f"--output_dir={export_dir}", *flags])
      assert proc.returncode == 2, proc.stderr[-2000:]
      assert message in proc.stderr and "Traceback" not in proc.stderr
      assert helpers.noise_lines(proc.stderr) == []  # TensorFlow was never started


def test_an_interrupted_export_is_cleaned_up(tmp_path):
  """A killed export (its pid is gone) leaves `.tmp-<v>-<pid>` (half-written: removed) or,
  with --overwrite, `.old-<v>-<pid>` (the replaced version: put back if <v> is missing)."""
  from tfharm.serving import paths  # pylint: disable=g-import-not-at-top
  dead = 999999999
  for name in (f".tmp-3-{dead}", f".old-1-{dead}", f".old-2-{dead}", "2", f".tmp-4-{os.getpid()}"):
    os.makedirs(tmp_path / name)
    (tmp_path / name / "saved_model.pb").write_text(name)
  done = paths.clean_interrupted(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == [f".tmp-4-{os.getpid()}", "1", "2"]  # ours is running
  assert (tmp_path / "1" / "saved_model.pb").read_text() == f".old-1-{dead}"
  assert (tmp_path / "2" / "saved_model.pb").read_text() == "2"
  assert len(done) == 3


def test_the_model_server_config_example_parses():
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
  with open(os.path.join(helpers.REPO, "serving", "models.config")) as f:
    config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  (model,) = config.model_config_list.config
  assert model.name == "tfharm" and model.model_platform == "tensorflow"
  assert model.base_path.endswith("/tfharm")


@pytest.fixture(scope="module")
def joint_weights(tmp_path_factory):
  """A small joint model's file: an export of it takes seconds (8 MB)."""
  from tests.models.trained_weights import small_joint_model  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("joint") / "joint.keras")
  small_joint_model().save(path)
  return path


def test_a_full_disk_during_the_export_is_one_line_and_keeps_the_old_version(
    tmp_path, joint_weights):
  """Before: TensorFlow's ResourceExhaustedError as a traceback, exit 3."""
  with helpers.tmpfs(tmp_path / "disk", "size=200m,nr_inodes=40") as disk:
    base = os.path.join(disk, "models")
    export = lambda *flags: helpers.run(["-m", "tfharm.export", f"--output_dir={base}",
                                         f"--joint_weights={joint_weights}", *flags])
    assert export().returncode == 0
    pb = os.path.join(base, "1", "saved_model.pb")
    before = (open(pb, "rb").read(), os.stat(pb).st_mtime_ns)
    helpers.fill_inodes(os.path.join(disk, "filler"), leave=3)  # room for the checks' probe only
    for flags in (["--version=1", "--overwrite"], []):
      proc = export(*flags)
      assert proc.returncode == 2, proc.stderr[-3000:]
      errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
      assert errors == [f"error: --output_dir {base}: no space left on the device while "
                        "writing the SavedModel; the existing versions are unchanged"], \
          proc.stderr[-3000:]
      assert "Traceback" not in proc.stderr
      assert sorted(os.listdir(base)) == ["1"]  # no temporaries, no version 2
      assert (open(pb, "rb").read(), os.stat(pb).st_mtime_ns) == before


def _bytes_under(path) -> int:
  return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def test_the_free_space_asked_is_within_2x_of_what_the_export_writes(
    tmp_path, joint_weights, export_dir, reference):
  """Before: 150 MB asked whatever the model, so an 8 MB export was refused on a 30 MB disk."""
  with helpers.tmpfs(tmp_path / "disk", "size=30m") as disk:
    proc = helpers.run(["-m", "tfharm.export", f"--output_dir={disk}/models",
                        f"--joint_weights={joint_weights}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = _bytes_under(os.path.join(disk, "models", "1"))
  joint = systems.load("joint", {"joint_weights": joint_weights})
  assert written <= exporter.export_bytes(joint) <= 2 * written
  written = _bytes_under(os.path.join(export_dir, "1"))  # the detector + harmoniser, ~100 MB
  assert written <= exporter.export_bytes(reference) <= 2 * written


def test_setup_errors_leave_no_folder_and_dot_dot_makes_no_stray_one(tmp_path, joint_weights):
  """Before: a failed export left the folders it had made for --output_dir, and
  `--output_dir=X/nonexist/../models` made X/nonexist."""
  bad = tmp_path / "bad.keras"
  bad.write_bytes(os.urandom(3000))
  export = lambda base, *flags: helpers.run(["-m", "tfharm.export", f"--output_dir={base}",
                                             *flags])
  proc = export(tmp_path / "new" / "models", f"--joint_weights={bad}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert not (tmp_path / "new").exists()
  with helpers.tmpfs(tmp_path / "disk", "size=1m") as disk:
    proc = export(f"{disk}/a/models", f"--joint_weights={joint_weights}")
    assert proc.returncode == 2 and "MB needed" in proc.stderr, proc.stderr[-3000:]
    assert os.listdir(disk) == []
  proc = export(f"{tmp_path}/nonexist/../models", f"--joint_weights={joint_weights}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == f"{tmp_path}/models/1"
  assert not (tmp_path / "nonexist").exists()


def test_a_plain_export_after_one_killed_between_its_renames_recovers_and_goes_on(
    tmp_path, joint_weights):
  """A killed `--version=1 --overwrite` left version 1 only as `.old-1-<pid>` (and a partial
  `.tmp-1-<pid>`). Before: the next plain export chose version 1, put the old one back, then
  refused with "1 already exists"; now it puts version 1 back and writes version 2."""
  base = tmp_path / "models"
  dead = 999999999
  for name, marker in ((f".old-1-{dead}", "old version 1"), (f".tmp-1-{dead}", "partial")):
    (base / name).mkdir(parents=True)
    (base / name / "saved_model.pb").write_text(marker)
  proc = helpers.run(["-m", "tfharm.export", f"--output_dir={base}",
                      f"--joint_weights={joint_weights}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == str(base / "2")
  assert sorted(os.listdir(base)) == ["1", "2"]
  assert (base / "1" / "saved_model.pb").read_text() == "old version 1"
