"""The command line: two images, paired directories, and a clear error for mismatched sizes."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "tfharm.lpips", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_two_images_and_directory_mode(golden, tmp_path):
  ref, _, root = golden
  pairs = [p for p in ref["pairs"] if p["name"] in ("p01_64_lumrect", "p13_97x131_lumrect")]
  d0, d1 = tmp_path / "d0", tmp_path / "d1"
  d0.mkdir()
  d1.mkdir()
  for p in pairs:
    shutil.copy(os.path.join(root, p["file_a"]), d0 / f"{p['name']}.png")
    shutil.copy(os.path.join(root, p["file_b"]), d1 / f"{p['name']}.png")
  out = tmp_path / "dists.txt"
  res = _run(str(d0), str(d1), f"--output={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  lines = out.read_text().splitlines()
  assert [l.split(":")[0] for l in lines] == [f"{p['name']}.png" for p in pairs]
  for line, p in zip(lines, pairs):
    assert abs(float(line.split(":")[1]) - p["alex"]) < 1e-5
  # Two files, vgg, and a size mismatch in the same process-free way the user would see it.
  res = _run("--net=vgg", str(d0 / "p01_64_lumrect.png"), str(d1 / "p01_64_lumrect.png"))
  assert res.returncode == 0, res.stderr[-2000:]
  assert abs(float(res.stdout.split("Distance:")[1]) - pairs[0]["vgg"]) < 1e-5
  res = _run(str(d0 / "p01_64_lumrect.png"), str(d1 / "p13_97x131_lumrect.png"))
  assert res.returncode != 0 and "shapes differ" in res.stderr


def _corrupt_png(path_in, path_out):
  data = bytearray(open(path_in, "rb").read())
  data[len(data) // 2:len(data) // 2 + 40] = bytes(40)  # zeros over the compressed data
  open(path_out, "wb").write(bytes(data))


def test_skips_are_counted_and_exit_1_usage_errors_exit_2(golden, tmp_path):
  ref, _, root = golden
  p = next(p for p in ref["pairs"] if p["name"] == "p01_64_lumrect")
  d0, d1 = tmp_path / "d0", tmp_path / "d1"
  d0.mkdir()
  d1.mkdir()
  for d, key in ((d0, "file_a"), (d1, "file_b")):
    shutil.copy(os.path.join(root, p[key]), d / "good.png")
    _corrupt_png(os.path.join(root, p[key]), d / "bad.png")
  shutil.copy(os.path.join(root, p["file_a"]), d0 / "lonely.png")  # no partner in d1
  out = tmp_path / "dists.txt"
  res = _run(str(d0), str(d1), f"--output={out}")
  assert res.returncode == 1, res.stderr[-2000:]
  assert out.read_text().splitlines()[0].startswith("good.png: ")
  assert len(out.read_text().splitlines()) == 1
  assert "skipped 2 {'no_partner': 1, 'unreadable': 1}" in res.stderr
  res = _run(str(d0 / "bad.png"), str(d1 / "good.png"))
  assert res.returncode == 1 and "bad.png: not a readable image" in res.stderr
  res = _run(str(d0 / "good.png"))
  assert res.returncode == 2 and res.stderr.startswith("error: expected two images")
  (tmp_path / "afile").write_text("x")
  res = _run(str(d0), str(d1), f"--output={tmp_path}/afile/dists.txt")
  assert res.returncode == 2 and "is a file, not a directory" in res.stderr
  assert "Traceback" not in res.stderr


def _pair_dirs(golden, tmp_path, name="good.png"):
  """d0/<name> and d1/<name>: one scorable pair of the golden data."""
  ref, _, root = golden
  p = next(p for p in ref["pairs"] if p["name"] == "p01_64_lumrect")
  d0, d1 = tmp_path / "d0", tmp_path / "d1"
  d0.mkdir()
  d1.mkdir()
  shutil.copy(os.path.join(root, p["file_a"]), d0 / name)
  shutil.copy(os.path.join(root, p["file_b"]), d1 / name)
  return d0, d1


def test_output_never_replaces_a_file_it_did_not_create(golden, tmp_path):
  """Issue 26: --out=A/keep.png (now --output) replaced a compared image with text (exit 0)."""
  d0, d1 = _pair_dirs(golden, tmp_path, "keep.png")
  image = (d0 / "keep.png").read_bytes()
  for extra in ([], ["--overwrite"]):
    res = _run(str(d0), str(d1), f"--output={d0}/keep.png", *extra)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.startswith(f"error: --output {d0}/keep.png is one of the images compared")
    assert (d0 / "keep.png").read_bytes() == image
  other = tmp_path / "notes.txt"
  other.write_text("mine")
  res = _run(str(d0), str(d1), f"--output={other}")
  assert res.returncode == 2 and res.stderr.startswith(f"error: --output {other} exists;")
  assert len(res.stderr.splitlines()) == 1 and other.read_text() == "mine"
  res = _run(str(d0), str(d1), f"--output={other}", "--overwrite")
  assert res.returncode == 0, res.stderr[-2000:]
  assert other.read_text().startswith("keep.png: ")


def test_nothing_waits_on_a_fifo_or_a_device(golden, tmp_path):
  """Issue 26: a FIFO with an image name was opened and waited on forever. Files that are not
  regular are named skips (exit 1), found without opening them."""
  d0, d1 = _pair_dirs(golden, tmp_path)
  os.mkfifo(d0 / "pipe.png")
  os.symlink("/dev/zero", d0 / "zero.png")
  for name in ("pipe.png", "zero.png"):
    shutil.copy(d1 / "good.png", d1 / name)
  res = _run(str(d0), str(d1), timeout=120)  # before: killed by the timeout
  assert res.returncode == 1, res.stderr[-2000:]
  assert "skipped 2 {'not_a_file': 2}" in res.stderr
  assert f"{d0}/pipe.png: a FIFO (named pipe), not a regular file" in res.stderr
  assert f"{d0}/zero.png: a character device, not a regular file" in res.stderr
  res = _run(str(d1 / "good.png"), str(d0 / "pipe.png"), timeout=120)
  assert res.returncode == 1 and "pipe.png: a FIFO (named pipe), not a regular file" in res.stderr


def test_output_may_have_the_longest_name(golden, tmp_path):
  """Issue 26: --out's temporary added ~10 characters to its name, so a 250-character name
  failed (a traceback after the scoring)."""
  d0, d1 = _pair_dirs(golden, tmp_path)
  out = tmp_path / ("d" * 251 + ".txt")
  res = _run(str(d0), str(d1), f"--output={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  assert out.read_text().startswith("good.png: ")
  assert sorted(os.listdir(tmp_path)) == sorted(["d0", "d1", out.name])


def test_skips_are_counted_under_their_real_cause(golden, tmp_path):
  """Issue 26: a pair smaller than LPIPS' minimum was counted (and so reported) as
  'unreadable'; a file removed after the listing likewise."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  d0, d1 = _pair_dirs(golden, tmp_path)
  tiny = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
  for d in (d0, d1):
    Image.fromarray(tiny).save(d / "tiny.png")
  os.symlink(tmp_path / "gone.png", d0 / "gone.png")
  shutil.copy(d1 / "good.png", d1 / "gone.png")
  res = _run(str(d0), str(d1))
  assert res.returncode == 1, res.stderr[-2000:]
  assert "skipped 2 {'broken_link': 1, 'too_small': 1}" in res.stderr, res.stderr[-2000:]
  assert (f"skipped tiny.png: {d0}/tiny.png is 24x20, smaller than LPIPS-alex's minimum 31x31"
          in res.stderr), res.stderr[-2000:]


def test_load_image_names_the_file_and_refuses_animations(tmp_path):
  """Issue 26 (23): an unidentifiable file was reported as `cannot identify image file
  <_io.BytesIO object at 0x...>`, and an animated PNG or WebP was scored on its first frame."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tfharm import lpips  # pylint: disable=g-import-not-at-top
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(OSError) as e:
    lpips.load_image(str(tmp_path / "text.png"))
  assert str(e.value).startswith(f"{tmp_path}/text.png: ") and "BytesIO" not in str(e.value)
  frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
  frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
  with pytest.raises(OSError, match="anim.png: PNG with 2 frames"):
    lpips.load_image(str(tmp_path / "anim.png"))


def test_a_16_bit_grey_image_is_read_by_its_range(tmp_path):
  """Issue 26 (6): Pillow's convert("RGB") clips 16-bit levels at 255, so a 16-bit grey PNG
  turned white and scored 0.88 against its own 8-bit copy. 16-bit levels are scaled to 8 bits
  (/257, as the harmonise reader), grey repeated to RGB: the pair is equal, distance 0."""
  import cv2  # pylint: disable=g-import-not-at-top
  from tfharm import lpips  # pylint: disable=g-import-not-at-top
  grey8 = cv2.imread(os.path.join(REPO, "tfharm", "app", "examples", "22892_22287.png"),
                     cv2.IMREAD_GRAYSCALE)
  cv2.imwrite(str(tmp_path / "grey16.png"), grey8.astype(np.uint16) * 257)
  cv2.imwrite(str(tmp_path / "grey8.png"), grey8)
  a, b = (lpips.load_image(str(tmp_path / n)) for n in ("grey16.png", "grey8.png"))
  assert a.dtype == np.uint8 and a.shape == (*grey8.shape, 3)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[..., 0], grey8)


def test_the_old_names_still_work_with_one_warning_line(golden, tmp_path):
  """`python -m tfharm.metrics.lpips` and `--out` are the old spellings (one version): each
  prints one warning line naming the new one, and the result is the new command's."""
  ref, _, root = golden
  pair = ref["pairs"][0]
  d0, d1 = tmp_path / "d0", tmp_path / "d1"
  for d, key in ((d0, "file_a"), (d1, "file_b")):
    d.mkdir()
    shutil.copy(os.path.join(root, pair[key]), d / "p.png")
  out = tmp_path / "dists.txt"
  res = subprocess.run([sys.executable, "-m", "tfharm.metrics.lpips", str(d0), str(d1),
                        f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  warnings = [l for l in res.stderr.splitlines() if l.startswith("warning:")]
  assert warnings == [
      "warning: python -m tfharm.metrics.lpips is deprecated, use python -m tfharm.lpips (the "
      "old name goes in version 0.2.0)",
      "warning: --out is deprecated, use --output (--out goes in version 0.2.0)"], res.stderr
  assert out.read_text().startswith("p.png: ")


def test_the_mode_choices_are_the_librarys():
  """tfharm.lpips spells the modes out (importing the library starts TensorFlow)."""
  import inspect  # pylint: disable=g-import-not-at-top
  from tfharm import lpips as command  # pylint: disable=g-import-not-at-top
  from tfharm.metrics import lpips  # pylint: disable=g-import-not-at-top
  assert str(list(lpips.MODES)).replace("'", "\"") in inspect.getsource(command._define_flags)  # pylint: disable=protected-access
