"""The web page in a real browser (headless Chromium): `python -m tfharm.app` on a free port, a
demo composite uploaded and harmonised, the downloads compared with the files
`python -m tfharm.harmonise` writes for the same input; bad uploads shown as messages; no
request leaves this machine.

Slow (the app's start-up and two CLI runs): `make test-browser` runs it, and .ci/run calls
that after `make test`. With TFHARM_REQUIRE_BROWSER=1 (set by make) a missing browser fails
the test instead of skipping it.
"""
import os

import cv2
import numpy as np
import pytest

from tests import browser
from tests import serving_helpers as helpers
from tfharm.app import examples

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PHOTO, MASK = examples.example_rows()[0]  # a shipped demo composite and its ground-truth mask
MAX_MEGAPIXELS = 1.0  # small, so that "too large" is cheap to provoke


def _cli(out_dir, *flags):
  return helpers.start(["-m", "tfharm.harmonise", "--flagfile=configs/harmonise.flags",
                        f"--input={PHOTO}", f"--output={out_dir}/harmonised.png",
                        f"--save_mask={out_dir}/mask.png", *flags])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(server, CLI outputs): the two CLI runs overlap the app's start-up."""
  missing = browser.missing_browser()
  if missing:
    if os.environ.get("TFHARM_REQUIRE_BROWSER") == "1":
      pytest.fail(f"missing {missing}")
    pytest.skip(f"missing {missing}")
  out = {"mask_free": tmp_path_factory.mktemp("cli_mask_free"),
         "with_mask": tmp_path_factory.mktemp("cli_with_mask")}
  procs = {"mask_free": _cli(out["mask_free"]),
           "with_mask": _cli(out["with_mask"], f"--mask={MASK}")}
  # The CLI's flagfile and the app's configs/app.flags agree on --nojit_compile.
  with browser.Server(("--flagfile=configs/app.flags", "--port=0",
                       f"--max_megapixels={MAX_MEGAPIXELS}"), cwd=helpers.REPO) as server:
    for name, proc in procs.items():
      _, stderr = proc.communicate(timeout=600)
      assert proc.returncode == 0, stderr[-3000:]
    yield server, out


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
  with browser.Page(runs[0].url, str(tmp_path_factory.mktemp("downloads"))) as p:
    yield p


def _pixels(path):
  return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _assert_downloads_equal(page, cli_dir):
  """Downloads both files in the browser; each equals the CLI's, pixel for pixel."""
  harmonised, mask = page.download("_harmonised.png"), page.download("_mask.png")
  np.testing.assert_array_equal(_pixels(harmonised), _pixels(cli_dir / "harmonised.png"))
  np.testing.assert_array_equal(_pixels(mask), _pixels(cli_dir / "mask.png"))
  return _pixels(harmonised)


def test_uploaded_composite_downloads_equal_the_cli_files(runs, page):
  page.upload_photo(PHOTO)
  page.harmonise()
  assert page.errors() == [], runs[0].output()
  assert "mask-free" in page.summary()
  _assert_downloads_equal(page, runs[1]["mask_free"])
  # The model ran (its soft mask came through). A cautious default model may leave a photo's
  # pixels unchanged mask-free (joint_256 v1 did on every demo composite), so the pixels alone
  # could not tell a run from a pass-through; the mask can.
  assert _pixels(runs[1]["mask_free"] / "mask.png").max() > 0


def test_clicked_example_with_its_mask_equals_the_cli_with_mask(runs, page):
  page.load_example(0)
  page.choose("system", "with the uploaded mask")
  page.harmonise()
  assert page.errors() == [], runs[0].output()
  assert "with the uploaded mask" in page.summary()
  harmonised = _assert_downloads_equal(page, runs[1]["with_mask"])
  assert not np.array_equal(harmonised, _pixels(PHOTO))  # it did harmonise
  page.choose("system", "mask-free")


@pytest.mark.parametrize("case, message", [
    ("not_an_image", "broken.png: not a readable JPEG or PNG image"),
    ("too_large", f"this page takes up to {MAX_MEGAPIXELS:g} megapixels"),
    ("mask_size", "mask is 40x30, the image 256x256"),
])
def test_bad_upload_shows_a_message_not_a_stack_trace(page, tmp_path, case, message):
  if case == "not_an_image":
    (tmp_path / "broken.png").write_text("this is not an image")
    page.upload_photo(str(tmp_path / "broken.png"))
  elif case == "too_large":
    big = str(tmp_path / "big.png")
    cv2.imwrite(big, np.full((1000, 1200, 3), 128, np.uint8))  # 1.2 megapixels, a few kB
    page.upload_photo(big)
  else:
    page.upload_photo(PHOTO)
    cv2.imwrite(str(tmp_path / "small_mask.png"), np.zeros((30, 40), np.uint8))
    page.upload_mask(str(tmp_path / "small_mask.png"))
    page.choose("system", "with the uploaded mask")
  before = page.errors()
  page.harmonise()
  new = page.errors()[len(before):]
  assert len(new) == 1 and message in new[0], new
  assert "Traceback" not in page.driver.page_source
  assert str(tmp_path) not in new[0]  # the upload's name, not a server path
  page.choose("system", "mask-free")


def test_the_page_requests_nothing_outside_this_machine(page):
  assert page.outside_requests() == []
