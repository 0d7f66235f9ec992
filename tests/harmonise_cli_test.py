"""`python -m tfharm.harmonise` on real JPEG and PNG files: a folder (grey, RGBA, unreadable and
empty files, a non-image), a single image with a mask, and the errors of bad input."""
import os
import re

import cv2
import numpy as np
import pytest

from tests import serving_helpers as helpers
from tfharm.models.pipeline import load_pipeline


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  return helpers.save_weights(str(tmp_path_factory.mktemp("weights")))


def _flags(weights):
  return [f"--detector_weights={weights[0]}", f"--harmoniser_weights={weights[1]}"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("in")
  photo = helpers.val_image("000000092660.jpg")[:213, :317]  # RGB, odd H and W
  cv2.imwrite(str(d / "photo.jpg"), photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
  grey = cv2.cvtColor(helpers.val_image("000000151938.jpg"), cv2.COLOR_RGB2GRAY)  # (320, 235)
  cv2.imwrite(str(d / "grey.png"), grey)
  rgb = helpers.val_image("000000099053.jpg")[:101, :77]
  alpha = np.tile(np.linspace(0, 255, 77).astype(np.uint8), (101, 1))
  cv2.imwrite(str(d / "rgba.png"), np.dstack([rgb[..., ::-1], alpha]))
  (d / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
  (d / "empty.png").write_bytes(b"")  # a zero-sized file
  (d / "notes.txt").write_text("not an image")
  return d


@pytest.fixture(scope="module")
def folder_run(weights, inputs, tmp_path_factory):
  out = tmp_path_factory.mktemp("out")
  proc = helpers.run(["-m", "tfharm.harmonise", f"--input={inputs}", f"--output={out}/images",
                      f"--save_mask={out}/masks", *_flags(weights)])
  return proc, out


def test_folder_writes_every_readable_image_and_counts_the_skips(folder_run, inputs):
  proc, out = folder_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(out / "images")) == ["grey.png", "photo.jpg", "rgba.png"]  # no temps
  assert sorted(os.listdir(out / "masks")) == ["grey.png", "photo.png", "rgba.png"]
  assert re.search(r"harmonised 3 image\(s\) into .*; skipped 2 \{'unreadable': 2\}; "
                   r"ignored 1 non-image", proc.stderr), proc.stderr[-3000:]
  assert "broken.jpg: not a readable JPEG or PNG image" in proc.stderr
  assert "empty.png: not a readable JPEG or PNG image" in proc.stderr
  assert "grey.png: grayscale converted to RGB" in proc.stderr
  assert "rgba.png: alpha channel dropped" in proc.stderr
  assert "5/5" in proc.stderr  # the progress bar: every .jpg/.png tried
  photo = cv2.imread(str(out / "images" / "photo.jpg"))
  assert photo.shape == (213, 317, 3)
  umask = os.umask(0)
  os.umask(umask)
  for written in (out / "images" / "photo.jpg", out / "masks" / "photo.png"):
    assert os.stat(written).st_mode & 0o777 == 0o666 & ~umask, written  # not mkstemp's 0600
  rgba_in = cv2.imread(str(inputs / "rgba.png"), cv2.IMREAD_UNCHANGED)
  rgba_out = cv2.imread(str(out / "images" / "rgba.png"), cv2.IMREAD_UNCHANGED)
  assert rgba_out.shape == (101, 77, 4)
  np.testing.assert_array_equal(rgba_out[..., 3], rgba_in[..., 3])  # alpha kept in PNG output


def test_folder_output_equals_the_end_to_end_model(folder_run, inputs, weights):
  """The grey PNG (lossless out): pixels and saved mask equal HarmonisationPipeline.any_size."""
  proc, out = folder_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  grey = cv2.imread(str(inputs / "grey.png"), cv2.IMREAD_UNCHANGED)
  ref = load_pipeline(*weights).any_size(grey[None, ..., None].astype(np.float32) / 255.0)
  got = cv2.imread(str(out / "images" / "grey.png"), cv2.IMREAD_COLOR)[..., ::-1]
  helpers.assert_uint8_matches(got[None], ref["harmonised"].numpy())
  assert np.abs(got.astype(int) - grey[..., None]).max() > 10  # it did change the image
  mask = cv2.imread(str(out / "masks" / "grey.png"), cv2.IMREAD_UNCHANGED)
  assert mask.shape == grey.shape and mask.dtype == np.uint8
  assert np.abs(mask.astype(int) - np.round(ref["mask"].numpy()[0, ..., 0] * 255)).max() <= 1


def test_single_jpeg_with_a_mask_keeps_everything_outside_it(weights, inputs, tmp_path):
  photo = cv2.imread(str(inputs / "photo.jpg"))  # BGR, decoded as the CLI decodes it
  mask = helpers.box_mask(*photo.shape[:2])
  mask8 = np.round(mask[..., 0] * 255).astype(np.uint8)
  cv2.imwrite(str(tmp_path / "mask.png"), mask8)
  proc = helpers.run(["-m", "tfharm.harmonise", f"--input={inputs}/photo.jpg",
                      f"--output={tmp_path}/out.png", f"--mask={tmp_path}/mask.png",
                      f"--save_mask={tmp_path}/used.png", *_flags(weights)])
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = cv2.imread(str(tmp_path / "out.png"))
  outside = mask8 == 0
  np.testing.assert_array_equal(out[outside], photo[outside])
  assert np.abs(out[~outside].astype(int) - photo[~outside]).max() > 10
  np.testing.assert_array_equal(cv2.imread(str(tmp_path / "used.png"), cv2.IMREAD_UNCHANGED), mask8)
  assert sorted(os.listdir(tmp_path)) == ["mask.png", "out.png", "used.png"]


def test_single_file_errors(weights, inputs, tmp_path):
  wrong = np.zeros((50, 60), np.uint8)
  cv2.imwrite(str(tmp_path / "wrong.png"), wrong)
  proc = helpers.run(["-m", "tfharm.harmonise", f"--input={inputs}/photo.jpg",
                      f"--output={tmp_path}/out.jpg", f"--mask={tmp_path}/wrong.png",
                      *_flags(weights)])
  assert proc.returncode != 0
  assert "mask is 60x50, the image 317x213 (width x height); they must match" in proc.stderr
  proc = helpers.run(["-m", "tfharm.harmonise", f"--input={inputs}/broken.jpg",
                      f"--output={tmp_path}/out.jpg", *_flags(weights)])
  assert proc.returncode != 0 and "broken.jpg: not a readable JPEG or PNG image" in proc.stderr
  proc = helpers.run(["-m", "tfharm.harmonise", f"--input={inputs}/photo.jpg",
                      f"--output={tmp_path}/out.jpg", f"--detector_weights={tmp_path}/none.h5",
                      f"--harmoniser_weights={weights[1]}"])
  assert proc.returncode != 0 and f"missing weights: {tmp_path}/none.h5" in proc.stderr
  assert sorted(os.listdir(tmp_path)) == ["wrong.png"]  # nothing written, not even a temp


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
