"""`python -m tfharm.harmonise` on real JPEG and PNG files: a folder (grey, RGBA with transparent
pixels, an EXIF-rotated JPEG, unreadable, corrupt and empty files, a non-image), single images
with masks (soft, 0/1 binary), the cache, and everything refused before any work: colliding
paths, unwritable or full output folders."""
import os
import re

import cv2
import numpy as np
from PIL import Image, ImageOps
import pytest

from tests import serving_helpers as helpers
from tfharm import systems


def _pipeline(weights):
  return systems.load("pipeline", dict(zip(("detector_weights", "harmoniser_weights"), weights)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  return helpers.save_weights(str(tmp_path_factory.mktemp("weights")))


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
  """One cache for the module: the first run fills it, later runs load it."""
  return {"TFHARM_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def _flags(weights):
  """These tests are of the two-network pipeline's command (the joint default: cli_joint_test)."""
  return ["--model=pipeline", f"--detector_weights={weights[0]}",
          f"--harmoniser_weights={weights[1]}"]


def _harmonise(*args, env=None):
  return helpers.run(["-m", "tfharm.harmonise", *args], env=env)


def _scrambled_jpeg(photo: np.ndarray) -> bytes:
  """A JPEG whose entropy-coded data has 200 random bytes: OpenCV decodes it (with garbage
  blocks) and says nothing; libjpeg warns of corrupt data."""
  ok, buf = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
  data = bytearray(buf.tobytes())
  rng = np.random.default_rng(0)
  for i in rng.integers(len(data) // 3, 2 * len(data) // 3, 200):
    data[i] = rng.integers(0, 256)
  assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED) is not None
  return bytes(data)


def _save_with_orientation(path, rgb_stored: np.ndarray, orientation: int) -> None:
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(rgb_stored).save(path, quality=95, exif=exif)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("in")
  photo = helpers.val_image("000000092660.jpg")[:213, :317]  # RGB, odd H and W
  cv2.imwrite(str(d / "photo.jpg"), photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
  grey = cv2.cvtColor(helpers.val_image("000000151938.jpg"), cv2.COLOR_RGB2GRAY)  # (320, 235)
  cv2.imwrite(str(d / "grey.png"), grey)
  rgb = helpers.val_image("000000099053.jpg")[:101, :77]
  alpha = np.tile(np.linspace(0, 255, 77).astype(np.uint8), (101, 1))
  alpha[:, :10] = 0  # fully transparent columns
  cv2.imwrite(str(d / "rgba.png"), np.dstack([rgb[..., ::-1], alpha]))
  # Stored sideways (as a camera held upright writes it), tagged Orientation=6.
  _save_with_orientation(d / "exif6.jpg", np.rot90(photo[:160, :120], 1).copy(), 6)
  (d / "scrambled.jpg").write_bytes(_scrambled_jpeg(photo))
  (d / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
  (d / "empty.png").write_bytes(b"")  # a zero-sized file
  (d / "notes.txt").write_text("not an image")
  return d


@pytest.fixture(scope="module")
def folder_run(weights, inputs, cache_env, tmp_path_factory):
  out = tmp_path_factory.mktemp("out")
  proc = _harmonise(f"--input={inputs}", f"--output={out}/images", f"--save_mask={out}/masks",
                    *_flags(weights), env=cache_env)
  return proc, out


def test_folder_writes_every_readable_image_and_counts_the_skips(folder_run, inputs):
  proc, out = folder_run
  assert proc.returncode == 1, proc.stderr[-3000:]  # some images skipped
  assert sorted(os.listdir(out / "images")) == ["exif6.jpg", "grey.png", "photo.jpg", "rgba.png"]
  assert sorted(os.listdir(out / "masks")) == ["exif6.png", "grey.png", "photo.png", "rgba.png"]
  assert re.search(r"harmonised 4 image\(s\) into .*; skipped 3 \{'unreadable': 3\}; "
                   r"ignored 1 non-image", proc.stderr), proc.stderr[-3000:]
  assert "broken.jpg: not a readable JPEG or PNG image" in proc.stderr
  assert "empty.png: not a readable JPEG or PNG image" in proc.stderr
  assert re.search(r"scrambled.jpg: not a readable JPEG or PNG image \(corrupt data", proc.stderr)
  assert "grey.png: grayscale converted to RGB" in proc.stderr
  assert "7/7" in proc.stderr  # the progress bar: every .jpg/.png tried
  photo = cv2.imread(str(out / "images" / "photo.jpg"))
  assert photo.shape == (213, 317, 3)
  umask = os.umask(0)
  os.umask(umask)
  for written in (out / "images" / "photo.jpg", out / "masks" / "photo.png"):
    assert os.stat(written).st_mode & 0o777 == 0o666 & ~umask, written  # not mkstemp's 0600


def test_folder_run_is_quiet(folder_run):
  """Only tfharm's own lines: no CUDA, cpu_feature_guard or absl pre-init noise, no
  library INFO lines (TensorFlow's logging is on, as a user has it)."""
  proc, _ = folder_run
  assert helpers.noise_lines(proc.stderr) == [], proc.stderr[:3000]
  log_lines = [l for l in proc.stderr.splitlines() if re.match(r"[IWEF]\d{4} ", l)]
  assert log_lines and all(re.search(r" (harmonise|files|cache)\.py:\d+\]", l) for l in log_lines), (
      log_lines)
  assert max(len(l) for l in proc.stderr.splitlines()) < 1000


def test_alpha_is_kept_and_transparent_pixels_are_unchanged(folder_run, inputs):
  proc, out = folder_run
  assert proc.returncode == 1, proc.stderr[-3000:]
  rgba_in = cv2.imread(str(inputs / "rgba.png"), cv2.IMREAD_UNCHANGED)
  rgba_out = cv2.imread(str(out / "images" / "rgba.png"), cv2.IMREAD_UNCHANGED)
  assert rgba_out.shape == (101, 77, 4)
  np.testing.assert_array_equal(rgba_out[..., 3], rgba_in[..., 3])  # alpha kept
  transparent = rgba_in[..., 3] == 0
  np.testing.assert_array_equal(rgba_out[transparent], rgba_in[transparent])
  assert np.abs(rgba_out[~transparent].astype(int) - rgba_in[~transparent]).max() > 0
  saved = cv2.imread(str(out / "masks" / "rgba.png"), cv2.IMREAD_UNCHANGED)
  assert saved[transparent].max() == 0 and saved[~transparent].max() > 0


def test_exif_orientation_is_applied(folder_run, inputs, weights):
  """The tagged JPEG comes out upright (tag gone) and equals harmonising the upright pixels."""
  proc, out = folder_run
  assert "exif6.jpg: EXIF orientation 6 applied" in proc.stderr
  stored = cv2.imread(str(inputs / "exif6.jpg"), cv2.IMREAD_UNCHANGED)[..., ::-1]  # sideways
  upright = np.rot90(stored, -1)
  got = cv2.imread(str(out / "images" / "exif6.jpg"), cv2.IMREAD_UNCHANGED)
  assert got.shape == (160, 120, 3)  # (H, W) as the user sees it, not the stored (120, 160)
  assert Image.open(out / "images" / "exif6.jpg").getexif().get(0x0112) is None
  mask = cv2.imread(str(out / "masks" / "exif6.png"), cv2.IMREAD_UNCHANGED)
  ref = _pipeline(weights).any_size(upright[None].astype(np.float32) / 255.0)
  assert np.abs(mask.astype(int) - np.round(ref["mask"].numpy()[0, ..., 0] * 255)).max() <= 1


def test_folder_output_equals_the_end_to_end_model(folder_run, inputs, weights):
  """The grey PNG (lossless out): pixels and saved mask equal HarmonisationPipeline.any_size."""
  proc, out = folder_run
  grey = cv2.imread(str(inputs / "grey.png"), cv2.IMREAD_UNCHANGED)
  ref = _pipeline(weights).any_size(grey[None, ..., None].astype(np.float32) / 255.0)
  got = cv2.imread(str(out / "images" / "grey.png"), cv2.IMREAD_COLOR)[..., ::-1]
  helpers.assert_uint8_matches(got[None], ref["harmonised"].numpy())
  assert np.abs(got.astype(int) - grey[..., None]).max() > 10  # it did change the image
  mask = cv2.imread(str(out / "masks" / "grey.png"), cv2.IMREAD_UNCHANGED)
  assert mask.shape == grey.shape and mask.dtype == np.uint8
  assert np.abs(mask.astype(int) - np.round(ref["mask"].numpy()[0, ..., 0] * 255)).max() <= 1


def test_single_jpeg_with_a_mask_keeps_everything_outside_it_cached_or_not(
    weights, inputs, cache_env, folder_run, tmp_path):
  """The second run loads the model the folder run cached; --nocache builds it in-process:
  byte-identical outputs."""
  photo = cv2.imread(str(inputs / "photo.jpg"))  # BGR, decoded as the CLI decodes it
  mask = helpers.box_mask(*photo.shape[:2])
  mask8 = np.round(mask[..., 0] * 255).astype(np.uint8)
  cv2.imwrite(str(tmp_path / "mask.png"), mask8)
  runs = {}
  for name, extra in (("cached", []), ("built", ["--nocache"])):
    runs[name] = _harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/{name}.png",
                            f"--mask={tmp_path}/mask.png", f"--save_mask={tmp_path}/{name}_m.png",
                            *_flags(weights), *extra, env=cache_env)
    assert runs[name].returncode == 0, runs[name].stderr[-3000:]
  assert "model from the cache" in runs["cached"].stderr
  assert "model from the cache" not in runs["built"].stderr
  assert (tmp_path / "cached.png").read_bytes() == (tmp_path / "built.png").read_bytes()
  out = cv2.imread(str(tmp_path / "cached.png"))
  outside = mask8 == 0
  np.testing.assert_array_equal(out[outside], photo[outside])
  assert np.abs(out[~outside].astype(int) - photo[~outside]).max() > 10
  np.testing.assert_array_equal(cv2.imread(str(tmp_path / "cached_m.png"), cv2.IMREAD_UNCHANGED),
                                mask8)
  assert sorted(os.listdir(tmp_path)) == ["built.png", "built_m.png", "cached.png", "cached_m.png",
                                          "mask.png"]


def test_a_binary_0_1_mask_means_harmonise_fully(weights, inputs, cache_env, folder_run, tmp_path):
  photo = cv2.imread(str(inputs / "photo.jpg"))
  binary = (helpers.box_mask(*photo.shape[:2])[..., 0] > 0).astype(np.uint8)  # values 0 and 1
  cv2.imwrite(str(tmp_path / "m01.png"), binary)
  cv2.imwrite(str(tmp_path / "m255.png"), binary * 255)
  procs = {}
  for name in ("m01", "m255"):
    procs[name] = _harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/{name}_out.png",
                             f"--mask={tmp_path}/{name}.png", *_flags(weights), env=cache_env)
    assert procs[name].returncode == 0, procs[name].stderr[-3000:]
  assert "binary 0/1 mask" in procs["m01"].stderr
  assert "binary 0/1 mask" not in procs["m255"].stderr
  a, b = (cv2.imread(str(tmp_path / f"{n}_out.png")) for n in ("m01", "m255"))
  np.testing.assert_array_equal(a, b)
  assert np.abs(a[binary == 1].astype(int) - photo[binary == 1]).max() > 10


def test_unreadable_and_corrupt_single_files_are_skips(weights, inputs, tmp_path):
  for name in ("broken.jpg", "scrambled.jpg"):
    proc = _harmonise(f"--input={inputs}/{name}", f"--output={tmp_path}/out.jpg", *_flags(weights))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"{name}: not a readable JPEG or PNG image" in proc.stderr
    assert "skipped 1 {'unreadable': 1}" in proc.stderr
    assert "Traceback" not in proc.stderr
  assert os.listdir(tmp_path) == []


def test_a_folder_where_every_image_is_skipped_exits_1_and_cleans_stale_temporaries(
    weights, inputs, tmp_path):
  src, dst = tmp_path / "src", tmp_path / "dst"
  src.mkdir()
  dst.mkdir()
  for name in ("broken.jpg", "empty.png", "scrambled.jpg"):
    (src / name).write_bytes((inputs / name).read_bytes())
  stale = dst / ".broken.jpg.tfharm-999999999-abc.tmp"  # a killed run's temporary (pid gone)
  stale.write_bytes(b"half")
  proc = _harmonise(f"--input={src}", f"--output={dst}", *_flags(weights))
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "harmonised 0 image(s)" in proc.stderr and "skipped 3 {'unreadable': 3}" in proc.stderr
  assert os.listdir(dst) == []  # the stale temporary is gone, nothing else written
  assert helpers.noise_lines(proc.stderr) == []  # TensorFlow was never started


def _refused(proc, *messages):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  for m in messages:
    assert m in proc.stderr, proc.stderr[-2000:]


def test_collisions_are_refused_before_any_work(weights, inputs, tmp_path):
  """No output or saved mask may replace an input or another output; the files are named."""
  photo = tmp_path / "photo.png"
  photo.write_bytes(cv2.imencode(".png", cv2.imread(str(inputs / "photo.jpg")))[1].tobytes())
  before = photo.read_bytes()
  _refused(_harmonise(f"--input={photo}", f"--output={tmp_path}/out.png", f"--save_mask={photo}",
                      *_flags(weights)), f"mask {photo} would replace the input {photo}")
  _refused(_harmonise(f"--input={photo}", f"--output={tmp_path}/x.png",
                      f"--save_mask={tmp_path}/x.png", *_flags(weights)),
           f"mask {tmp_path}/x.png would overwrite the output of {photo}")
  _refused(_harmonise(f"--input={photo}", f"--output={photo}", *_flags(weights)),
           "would replace the input")
  # Folder mode: masks saved into the input folder would replace its <stem>.png inputs.
  _refused(_harmonise(f"--input={inputs}", f"--output={tmp_path}/o", f"--save_mask={inputs}",
                      *_flags(weights)), f"mask {inputs}/grey.png would replace the input")
  # a.jpg and a.png: both masks would be a.png.
  pair = tmp_path / "pair"
  pair.mkdir()
  for name in ("a.jpg", "a.png"):
    (pair / name).write_bytes(photo.read_bytes())
  _refused(_harmonise(f"--input={pair}", f"--output={tmp_path}/po", f"--save_mask={tmp_path}/pm",
                      *_flags(weights)),
           f"mask {tmp_path}/pm/a.png would overwrite the mask of {pair}/a.jpg")
  assert photo.read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == ["pair", "photo.png"]  # nothing created


def test_unwritable_outputs_are_refused_before_the_models_load(weights, inputs, tmp_path):
  (tmp_path / "afile").write_text("in the way")
  _refused(_harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/afile/out.png",
                      *_flags(weights)), "afile is a file, not a directory")
  with helpers.tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
    _refused(_harmonise(f"--input={inputs}/photo.jpg", f"--output={ro}/out.png", *_flags(weights)),
             "read-only file system")
    # Folder mode: an unwritable --save_mask folder stops the run before the first image.
    proc = _harmonise(f"--input={inputs}", f"--output={tmp_path}/imgs", f"--save_mask={ro}/m",
                      *_flags(weights))
    _refused(proc, "--save_mask", "read-only file system")
    assert not os.listdir(tmp_path / "imgs")
  with helpers.full_disk(tmp_path / "full") as full:
    _refused(_harmonise(f"--input={inputs}/photo.jpg", f"--output={full}/out.png",
                        *_flags(weights)), "--output")


def test_single_file_errors(weights, inputs, tmp_path):
  wrong = np.zeros((50, 60), np.uint8)
  cv2.imwrite(str(tmp_path / "wrong.png"), wrong)
  proc = _harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/out.jpg",
                    f"--mask={tmp_path}/wrong.png", *_flags(weights))
  assert proc.returncode == 1
  assert "mask is 60x50, the image 317x213 (width x height); they must match" in proc.stderr
  proc = _harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/out.jpg",
                    "--model=pipeline", f"--detector_weights={tmp_path}/none.h5",
                    f"--harmoniser_weights={weights[1]}")
  _refused(proc, f"missing weights: --detector_weights {tmp_path}/none.h5")
  _refused(_harmonise(f"--input={tmp_path}/none.jpg", f"--output={tmp_path}/out.jpg"),
           "--input", "does not exist")
  _refused(_harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/out.gif",
                      *_flags(weights)), "must end in .jpg, .jpeg or .png")
  assert sorted(os.listdir(tmp_path)) == ["wrong.png"]  # nothing written, not even a temp


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pillow(tmp_path, orientation):
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  stored = helpers.val_image("000000099053.jpg")[:40, :64]
  path = tmp_path / "o.png"  # lossless, so the pixels can be compared exactly
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(stored).save(path, exif=exif)
  expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
  decoded = files.read_image(str(path))
  np.testing.assert_array_equal(decoded.rgb, expected)
  assert bool([n for n in decoded.notes if "EXIF orientation" in n]) == (orientation != 1)


def test_mask_scales(tmp_path):
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  binary = np.zeros((6, 8), np.uint8)
  binary[2:4, 3:6] = 1
  cv2.imwrite(str(tmp_path / "b.png"), binary)
  mask, notes = files.read_mask(str(tmp_path / "b.png"), (6, 8))
  np.testing.assert_array_equal(mask[..., 0], binary.astype(np.float32))
  assert any("binary 0/1 mask" in n for n in notes)
  mask, notes = files.read_mask(str(tmp_path / "b.png"), (6, 8), scale="255")
  np.testing.assert_allclose(mask[..., 0], binary / 255.0)
  assert not notes
  soft = (np.arange(48).reshape(6, 8) * 5).astype(np.uint8)
  cv2.imwrite(str(tmp_path / "s.png"), soft)
  np.testing.assert_allclose(files.read_mask(str(tmp_path / "s.png"), (6, 8))[0][..., 0],
                             soft / 255.0)
  deep = (np.arange(48).reshape(6, 8) * 1000).astype(np.uint16)
  cv2.imwrite(str(tmp_path / "d.png"), deep)
  np.testing.assert_allclose(files.read_mask(str(tmp_path / "d.png"), (6, 8))[0][..., 0],
                             deep / 65535.0, rtol=1e-6)


def test_decoding_matches_as_rgb_and_notes_every_conversion(inputs, tmp_path):
  """In-process (no model): the CLI's TF-free channel conversion equals detector.as_rgb."""
  from tfharm.models.detector import as_rgb  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  for name, note in (("grey.png", "grayscale"), ("rgba.png", "alpha"), ("photo.jpg", None)):
    raw = cv2.imread(str(inputs / name), cv2.IMREAD_UNCHANGED)
    raw = raw[..., None] if raw.ndim == 2 else raw[..., [2, 1, 0, 3][: raw.shape[-1]]]
    decoded = files.read_image(str(inputs / name))
    expected = np.round(as_rgb(raw).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded.rgb, expected)
    assert [n for n in decoded.notes if note and note in n] or (note is None and not decoded.notes)
  deep = (np.arange(12 * 10 * 3).reshape(12, 10, 3) * 1000 % 65536).astype(np.uint16)
  cv2.imwrite(str(tmp_path / "deep.png"), deep)
  decoded = files.read_image(str(tmp_path / "deep.png"))
  np.testing.assert_array_equal(decoded.rgb, np.round(deep[..., ::-1] / 257.0).astype(np.uint8))
  assert decoded.notes == ["16-bit image scaled to 8 bits"]
  with pytest.raises(files.HarmoniseError, match="must match"):
    files.read_mask(str(tmp_path / "deep.png"), (10, 12))
  with pytest.raises(files.HarmoniseError, match="output must end in"):
    files.write_image(str(tmp_path / "x.gif"), decoded.rgb)


def test_mask_scale_choices_equal_the_library_ones():
  """harmonise.py spells the --mask_scale choices out; they must equal files.MASK_SCALES."""
  import ast  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  tree = ast.parse(open(os.path.join(helpers.REPO, "tfharm", "harmonise.py")).read())
  (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
             and isinstance(n.args[0], ast.Constant) and n.args[0].value == "mask_scale"]
  assert tuple(ast.literal_eval(call.args[2])) == files.MASK_SCALES


def _one_line_error(proc, start):
  _refused(proc)
  assert proc.stderr.startswith(start) and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_existing_outputs_are_refused_without_overwrite(weights, inputs, cache_env, tmp_path):
  """Issue 26: a file at --output or --save_mask was silently replaced. Refused before any
  work (exit 2, one line); folder mode refuses a re-run into the same folders; --overwrite
  replaces only the files the run writes."""
  photo = f"--input={inputs}/photo.jpg"
  mine = tmp_path / "mine.jpg"
  mine.write_text("not yours")
  _one_line_error(_harmonise(photo, f"--output={mine}", *_flags(weights)),
                  f"error: --output {mine} exists; pass --overwrite")
  _one_line_error(_harmonise(photo, f"--output={tmp_path}/new.jpg", f"--save_mask={mine}",
                             *_flags(weights)), f"error: --save_mask {mine} exists")
  assert mine.read_text() == "not yours" and not (tmp_path / "new.jpg").exists()
  src, dst = tmp_path / "src", tmp_path / "dst"
  src.mkdir()
  dst.mkdir()
  small = cv2.imread(str(inputs / "photo.jpg"))[:48, :64]
  for name in ("a.png", "b.png"):
    cv2.imwrite(str(src / name), small)
  (dst / "a.png").write_text("an earlier result")
  (dst / "keep.txt").write_text("not an output")
  _one_line_error(_harmonise(f"--input={src}", f"--output={dst}", *_flags(weights)),
                  f"error: 1 file this run would write exists already ({dst}/a.png); pass "
                  "--overwrite")
  assert sorted(os.listdir(dst)) == ["a.png", "keep.txt"]
  proc = _harmonise(f"--input={src}", f"--output={dst}", "--overwrite", *_flags(weights),
                    env=cache_env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert cv2.imread(str(dst / "a.png")).shape == (48, 64, 3)
  assert (dst / "keep.txt").read_text() == "not an output"


def test_a_float_mask_is_read_by_its_range(tmp_path):
  """Issue 26: a float TIFF mask whose maximum is below 1 was divided by 255, so nothing was
  harmonised. Floats in [0, 1] are weights; above 1 they are on a 0-255 (or 0-65535) scale;
  --mask_scale still decides when given."""
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  weights = np.zeros((6, 8), np.float32)
  weights[2:4, 3:6] = 0.8
  weights[0, 0] = 0.3
  cv2.imwrite(str(tmp_path / "w.tiff"), weights)
  mask, notes = files.read_mask(str(tmp_path / "w.tiff"), (6, 8))
  np.testing.assert_array_equal(mask[..., 0], weights)
  assert any("float mask with values in [0, 1]: read as weights" in n for n in notes), notes
  cv2.imwrite(str(tmp_path / "w255.tiff"), weights * 255)
  mask, notes = files.read_mask(str(tmp_path / "w255.tiff"), (6, 8))
  np.testing.assert_allclose(mask[..., 0], weights, rtol=1e-6)
  assert any("read on a 0-255 scale" in n for n in notes), notes
  np.testing.assert_allclose(files.read_mask(str(tmp_path / "w.tiff"), (6, 8), "255")[0][..., 0],
                             weights / 255, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nan_or_infinite_mask_is_a_named_skip(weights, inputs, tmp_path, bad):
  """Issue 26: a float mask with NaN crashed at int(mask.max()) (exit 3); with --mask_scale
  given, NaN reached the model. Now a counted skip naming the values, in a single run (exit 1,
  before TensorFlow starts) and in folder mode."""
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  mask = np.zeros((213, 317), np.float32)
  mask[50:60, 70:90] = bad
  cv2.imwrite(str(tmp_path / "bad.tiff"), mask)
  for scale in ("auto", "255"):
    with pytest.raises(files.HarmoniseError, match=r"200 NaN or infinite value\(s\)") as e:
      files.read_mask(str(tmp_path / "bad.tiff"), (213, 317), scale)
    assert e.value.reason == "bad_mask"
  proc = _harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/out.jpg",
                    f"--mask={tmp_path}/bad.tiff", *_flags(weights))
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "bad.tiff: mask has 200 NaN or infinite value(s)" in proc.stderr
  assert "skipped 1 {'bad_mask': 1}" in proc.stderr and "Traceback" not in proc.stderr
  src, masks = tmp_path / "src", tmp_path / "masks"
  src.mkdir()
  masks.mkdir()
  (src / "photo.jpg").write_bytes((inputs / "photo.jpg").read_bytes())
  (masks / "photo.png").write_bytes((tmp_path / "bad.tiff").read_bytes())  # a TIFF named .png
  proc = _harmonise(f"--input={src}", f"--output={tmp_path}/o", f"--mask={masks}",
                    *_flags(weights))
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "harmonised 0 image(s)" in proc.stderr and "skipped 1 {'bad_mask': 1}" in proc.stderr
  assert helpers.noise_lines(proc.stderr) == []  # TensorFlow was never started


def test_a_colour_mask_counts_each_pixel_as_its_largest_channel(tmp_path):
  """Issue 26: colour masks were applied at their luminance (pure red at 30 %, blue at 11 %)
  and the log said only "converted to grey". The rule: a pixel counts as its largest channel;
  the log says so (and that alpha is ignored)."""
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  bgr = np.zeros((6, 8, 3), np.uint8)
  bgr[0, :, 2] = 255  # red
  bgr[1, :, 1] = 255  # green
  bgr[2, :, 0] = 255  # blue
  bgr[3] = (40, 200, 90)
  cv2.imwrite(str(tmp_path / "c.png"), bgr)
  mask, notes = files.read_mask(str(tmp_path / "c.png"), (6, 8))
  np.testing.assert_array_equal(mask[:3, :, 0], 1.0)
  np.testing.assert_allclose(mask[3, :, 0], 200 / 255)
  assert notes == ["colour mask: each pixel counts as its largest channel (pure red, green or "
                   "blue = harmonise fully)"]
  cv2.imwrite(str(tmp_path / "a.png"), np.dstack([bgr, np.full((6, 8), 7, np.uint8)]))
  mask, notes = files.read_mask(str(tmp_path / "a.png"), (6, 8))
  np.testing.assert_array_equal(mask[:3, :, 0], 1.0)
  assert "its alpha channel is ignored" in notes[0]
  grey = np.repeat((np.arange(48).reshape(6, 8) * 5).astype(np.uint8)[..., None], 3, axis=-1)
  cv2.imwrite(str(tmp_path / "g.png"), grey)
  mask, notes = files.read_mask(str(tmp_path / "g.png"), (6, 8))
  np.testing.assert_allclose(mask[..., 0], grey[..., 0] / 255)
  assert notes == ["grey mask stored as colour (equal channels): read as grey"]


def test_folder_mode_counts_and_names_every_entry_it_cannot_read(weights, inputs, cache_env,
                                                                  tmp_path):
  """Issue 26: broken symlinks, link loops, FIFOs (and devices, folders) with image names
  were dropped without a word: exit 0, "skipped 0". Each is a counted skip naming its cause;
  none is opened for reading (a FIFO would block)."""
  src = tmp_path / "src"
  src.mkdir()
  cv2.imwrite(str(src / "good.png"), cv2.imread(str(inputs / "photo.jpg"))[:48, :64])
  os.symlink(tmp_path / "gone.png", src / "dangling.png")
  os.symlink(src / "loop_b.png", src / "loop_a.png")
  os.symlink(src / "loop_a.png", src / "loop_b.png")
  os.mkfifo(src / "pipe.jpg")
  os.symlink("/dev/null", src / "device.jpeg")
  (src / "folder.png").mkdir()
  proc = _harmonise(f"--input={src}", f"--output={tmp_path}/out", *_flags(weights),
                    env=cache_env)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert re.search(r"harmonised 1 image\(s\) into .*; skipped 6 \{'broken_link': 3, "
                   r"'not_a_file': 3\}", proc.stderr), proc.stderr[-3000:]
  for message in (f"dangling.png: a broken symbolic link (to {tmp_path}/gone.png)",
                  "loop_a.png: a symbolic link loop", "loop_b.png: a symbolic link loop",
                  "pipe.jpg: a FIFO (named pipe), not a regular file",
                  "device.jpeg: a character device, not a regular file",
                  "folder.png: a directory, not a regular file"):
    assert message in proc.stderr, message
  assert os.listdir(tmp_path / "out") == ["good.png"]


def test_a_file_that_vanished_is_reported_as_gone(tmp_path):
  """Issue 26: an input removed after the run listed it was "not a readable JPEG or PNG"."""
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  jobs = [files.Job(str(tmp_path / "gone.jpg"), str(tmp_path / "out.jpg"))]
  with pytest.raises(files.HarmoniseError, match="no such file any more") as e:
    files.load_inputs(jobs[0].src)
  assert e.value.reason == "missing"
  assert files.harmonise_jobs(None, jobs, progress=False) == {"missing": 1}
  cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((4, 4, 3), np.uint8))
  os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
  with pytest.raises(files.HarmoniseError, match="link.png: a broken symbolic link") as e:
    files.load_inputs(str(tmp_path / "photo.png"), str(tmp_path / "link.png"))
  assert e.value.reason == "missing_mask"


def test_a_damaged_cache_entry_is_named_and_rebuilt(weights, inputs, tmp_path):
  """Issue 26: a corrupted cache entry crashed every later run (a traceback that did not name
  the cache) and was never rebuilt. Now the run says which entry, builds the model, finishes,
  and caches it anew."""
  env = {"TFHARM_CACHE_DIR": str(tmp_path / "cache")}
  args = (f"--input={inputs}/grey.png", *_flags(weights))
  proc = _harmonise(*args, f"--output={tmp_path}/first.png", env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (entry,) = os.listdir(tmp_path / "cache")
  entry = tmp_path / "cache" / entry
  pb = entry / "harmonise" / "saved_model.pb"
  good = pb.read_bytes()
  pb.write_bytes(good[:len(good) // 3])  # a truncated write, a bad disk block
  proc = _harmonise(*args, f"--output={tmp_path}/second.png", env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"the cached model {entry} cannot be loaded" in proc.stderr, proc.stderr[-3000:]
  assert f"cached the model in {entry}" in proc.stderr
  assert pb.read_bytes() != good[:len(good) // 3]
  assert (tmp_path / "first.png").read_bytes() == (tmp_path / "second.png").read_bytes()


def test_the_longest_file_names_fit_their_temporary(tmp_path):
  """Issue 26: outputs named with >= ~230 characters could not be written: the temporary
  name added ~25 to it, past the 255 a name may have. Killed runs' temporaries of the old
  form are still cleaned up."""
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  name = "p" * 251 + ".png"  # 255 characters, the most Linux allows
  files.write_image(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
  assert os.listdir(tmp_path) == [name]
  for stale in (".tfharm-999999999-abc.tmp", ".x.png.tfharm-999999999-abc.tmp"):
    (tmp_path / stale).write_bytes(b"half")
  assert files.clean_stale_temporaries(str(tmp_path)) == 2
  assert os.listdir(tmp_path) == [name]


# Headers only (a few bytes), declaring 12000 x 9000 pixels: OpenCV allocates that much (the
# HDR: 1.3 GB of float32) before it reads a pixel; Pillow cannot read their size.
_HDR_108MP = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 9000 +X 12000\n" + b"\2\2\x2e\xe0" * 4
_PAM_108MP = b"P7\nWIDTH 12000\nHEIGHT 9000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n"


def _no_decoding(monkeypatch):
  """Any decoder call fails the test: nothing may be decoded (memory spent) before the cap."""
  from PIL import Image as PILImage  # pylint: disable=g-import-not-at-top

  def trap(*args, **kwargs):
    raise AssertionError("decoded before the pixel cap was checked")
  monkeypatch.setattr(cv2, "imdecode", trap)
  monkeypatch.setattr(PILImage.Image, "load", trap)


@pytest.mark.parametrize("name,data", [("big.hdr", _HDR_108MP), ("big.jpg", _HDR_108MP),
                                       ("big.pam", _PAM_108MP)],
                         ids=["hdr", "hdr_named_jpg", "pam"])
def test_the_cli_caps_pixels_before_decoding_as_the_page_does(tmp_path, monkeypatch, name, data):
  """Issue 26 (3): the CLI's reader decoded formats Pillow cannot size with no pixel cap (a
  Radiance HDR declaring 108 MP took 1.3 GB). It applies the page's rule
  (image_header.check_pixels) before any decoder runs, to images and masks."""
  from tfharm.app import handling  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  path = tmp_path / name
  path.write_bytes(data)
  with pytest.raises(handling.UploadError):  # the page's rule refuses it ...
    handling.check_size(str(path), "photo", handling.Limits())
  _no_decoding(monkeypatch)
  for read in (files.read_image, lambda p: files.read_mask(p, (9000, 12000))):
    with pytest.raises(files.HarmoniseError) as e:  # ... and so does the CLI, undecoded
      read(str(path))
    message = str(e.value)
    assert message.startswith(f"{path}: a ") and "BytesIO" not in message, message
    assert ("Radiance HDR" if data is _HDR_108MP else "PAM") in message, message


class _Inverting:
  """A Runner without a model: the CLI's file handling around it is real."""

  def predicted(self, rgb):
    return 255 - rgb, np.zeros(rgb.shape[:2], np.uint8)

  def with_mask(self, rgb, mask):
    return 255 - rgb


def test_images_over_the_cap_are_counted_named_skips_and_the_run_goes_on(tmp_path, monkeypatch):
  """Issue 26 (10): a photo over Pillow's limit (179 MP; lowered here to 2,000 pixels so the
  photo is small) raised DecompressionBombError out of the folder loop: the run stopped with
  a traceback, exit 3, after OpenCV had decoded it. Now a counted `too_large` skip naming the
  file and the cap, before decoding, and the next image is done."""
  from PIL import Image as PILImage  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses over 2,000 pixels
  src = tmp_path / "src"
  src.mkdir()
  for name, shape in (("a.png", (20, 30)), ("b.png", (50, 60)), ("c.png", (30, 20))):
    cv2.imwrite(str(src / name), np.full((*shape, 3), 90, np.uint8))
  jobs, _ = files.plan_folder(str(src), str(tmp_path / "out"))
  counts = files.harmonise_jobs(files.FileHarmoniser(_Inverting()), jobs, progress=False)
  assert counts == {"done": 2, "too_large": 1}
  assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]
  with pytest.raises(files.HarmoniseError, match=re.escape(f"{src}/b.png: over 0.002 "
                                                           "megapixels")) as e:
    files.read_image(str(src / "b.png"))
  assert e.value.reason == "too_large"


def _other_formats(directory) -> dict:
  """{name: (file, what the message must say)}: still images of other formats named .jpg or
  .png, and multi-frame files (an APNG, an animated GIF, a two-page TIFF)."""
  rgb = np.full((24, 32, 3), 120, np.uint8)
  rgb[6:18, 8:24] = (200, 40, 60)
  frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
  made = {}
  for name, fmt, what in (("gif.jpg", "GIF", "a GIF image named .jpg"),
                          ("webp.jpg", "WEBP", "a WebP image named .jpg"),
                          ("tiff.png", "TIFF", "a TIFF image named .png"),
                          ("bmp.png", "BMP", "a BMP image named .png")):
    frames[0].save(directory / name, format=fmt)
    made[name] = (directory / name, what)
  for name, fmt, what in (("apng.png", "PNG", "an animated PNG (2 frames)"),
                          ("anim.jpg", "GIF", "a GIF image named .jpg"),
                          ("pages.png", "TIFF", "a TIFF image named .png")):
    frames[0].save(directory / name, format=fmt, save_all=True, append_images=frames[1:])
    made[name] = (directory / name, what)
  return made


def test_images_are_read_by_their_content_and_other_formats_are_refused(tmp_path):
  """Issue 26 (23): GIF, WebP, TIFF, BMP and APNG files named .jpg or .png were harmonised
  silently (the first frame of an animation only). The reader decides by the content: JPEG
  or PNG, one frame (masks: TIFF too, for float weights); anything else is a counted
  `unsupported_format` skip naming the file and what it is, never a BytesIO repr."""
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  made = _other_formats(tmp_path)
  for name, (path, what) in made.items():
    with pytest.raises(files.HarmoniseError) as e:
      files.read_image(str(path))
    assert e.value.reason == "unsupported_format", (name, str(e.value))
    assert str(e.value).startswith(f"{path}: {what}"), (name, str(e.value))
    assert "BytesIO" not in str(e.value)
  with pytest.raises(files.HarmoniseError, match="a TIFF image named .png with 2 frames") as e:
    files.read_mask(str(made["pages.png"][0]), (24, 32))
  assert e.value.reason == "unsupported_format"
  mask, _ = files.read_mask(str(made["tiff.png"][0]), (24, 32))  # a still TIFF mask is read
  assert mask.shape == (24, 32, 1)
  (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x07" * 200)
  with pytest.raises(files.HarmoniseError) as e:
    files.read_image(str(tmp_path / "garbage.png"))
  assert "BytesIO" not in str(e.value) and str(e.value).startswith(f"{tmp_path}/garbage.png: ")
  jpeg_named_png = tmp_path / "jpeg.png"  # a JPEG or PNG under the other's name is read
  jpeg_named_png.write_bytes(cv2.imencode(".jpg", np.full((8, 8, 3), 99, np.uint8))[1].tobytes())
  assert files.read_image(str(jpeg_named_png)).rgb.shape == (8, 8, 3)


def test_a_weights_file_of_another_model_or_garbage_is_one_line_and_exit_2(inputs, tmp_path):
  """Issue 26 (13): --joint_weights=<the harmoniser's preset file> ended in a Keras traceback
  and warnings (up to 209 lines, exit 3); a garbage .keras file said "File not found". Now
  one line naming the flag, the file and why, exit 2, before anything is written."""
  from tfharm import presets  # pylint: disable=g-import-not-at-top
  from tfharm.cli import program  # pylint: disable=g-import-not-at-top
  harmoniser = presets.get(presets.DEFAULT_HARMONISER).weights_path
  detector = presets.get(presets.DEFAULT_DETECTOR).weights_path
  garbage = tmp_path / "garbage.keras"
  garbage.write_bytes(np.random.default_rng(0).bytes(3000))
  for kwargs, start in (
      ({"joint_weights": harmoniser}, f"--joint_weights {harmoniser}: cannot be loaded as the "
       "joint model (its weights do not fit"),
      ({"joint_weights": str(garbage)}, f"--joint_weights {garbage}: cannot be loaded as the "
       "joint model (not a .keras model file"),
      ({"detector_weights": detector, "harmoniser_weights": str(garbage)},
       f"--harmoniser_weights {garbage}: cannot be loaded as the harmoniser"),
      ({"detector_weights": harmoniser, "harmoniser_weights": harmoniser},
       f"--detector_weights {harmoniser}: cannot be loaded as the detector")):
    with pytest.raises(program.SetupError) as e:
      systems.load("joint" if "joint_weights" in kwargs else "pipeline", kwargs)
    assert str(e.value).startswith(start) and "\n" not in str(e.value), str(e.value)
    assert "File not found" not in str(e.value)
  proc = _harmonise(f"--input={inputs}/photo.jpg", f"--output={tmp_path}/out.jpg",
                    f"--joint_weights={harmoniser}", "--nocache")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.startswith(f"error: --joint_weights {harmoniser}: cannot be loaded"), (
      proc.stderr[-3000:])
  assert len(proc.stderr.splitlines()) == 1, proc.stderr[-3000:]
  assert not (tmp_path / "out.jpg").exists()


def test_ctrl_c_ends_a_folder_run_with_one_summary_line_and_exit_130(weights, inputs, cache_env,
                                                                      tmp_path):
  """Issue 26 (21): Ctrl-C printed a ~58-line traceback and no summary. Now the run stops
  with one line saying what was done, exit 130 (128 + SIGINT), no file half-written."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  src, out = tmp_path / "src", tmp_path / "out"
  src.mkdir()
  photo = cv2.imread(str(inputs / "photo.jpg"))
  for i in range(40):
    cv2.imwrite(str(src / f"{i:02d}.png"), photo)
  with open(tmp_path / "stderr.txt", "w") as err:
    proc = subprocess.Popen([helpers.PYTHON, "-m", "tfharm.harmonise", f"--input={src}",
                             f"--output={out}", *_flags(weights)], cwd=helpers.REPO,
                            env={**helpers._env(), **cache_env}, stdout=subprocess.DEVNULL,
                            stderr=err, preexec_fn=helpers.ctrl_c_default)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not (
        out.is_dir() and [n for n in os.listdir(out) if n.endswith(".png")]):
      time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # once it has harmonised an image
    proc.wait(timeout=120)
  stderr = (tmp_path / "stderr.txt").read_text()
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert re.fullmatch(r"interrupted \(Ctrl-C\): harmonised (\d+) of 40 image\(s\) into .*; the "
                      r"others were not started, no file is half-written", last), last
  written = os.listdir(out)
  assert 1 <= len(written) < 40 and all(n.endswith(".png") for n in written), written


def test_photos_between_pillows_two_limits_read_without_its_warning(tmp_path, monkeypatch):
  """Issue 26 (22): a 90-179 MP photo printed Pillow's DecompressionBombWarning (a "could be
  decompression bomb DOS attack" line per open). The cap (files.max_pixels, Pillow's upper
  limit) already decides what is read, so the warning is not passed on (limits lowered here
  to 1,000 / 2,000 pixels: the photo is 1,600)."""
  import warnings  # pylint: disable=g-import-not-at-top
  from PIL import Image as PILImage  # pylint: disable=g-import-not-at-top
  from tfharm.serving import files  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
  cv2.imwrite(str(tmp_path / "p.png"), np.full((40, 40, 3), 90, np.uint8))
  cv2.imwrite(str(tmp_path / "m.png"), np.full((40, 40), 255, np.uint8))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    decoded, mask = files.load_inputs(str(tmp_path / "p.png"), str(tmp_path / "m.png"))
  assert decoded.rgb.shape == (40, 40, 3) and mask.shape == (40, 40, 1)
  assert [str(w.message) for w in caught] == []
