"""The web page's request handling without a browser: checks and messages, the files offered
for download (the CLI's), the detector overlay's colours, the shipped examples and the
Gradio handler's mapping of errors to messages. The real browser: tests/app_browser_test.py."""
import dataclasses
import functools
import os
import struct
import subprocess
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests import serving_helpers as helpers
from tests.models.trained_weights import small_joint_model
from tfharm.app import examples, handling, overlay
from tfharm.serving import files, image_header


class FakeModule:
  """The ServingModule interface with cheap, input-dependent outputs (tf tensors, as the real
  signatures return), counting its calls."""

  def __init__(self):
    self.calls = {"serving_default": 0, "harmonise_with_mask": 0}

  def serving_default(self, image):
    self.calls["serving_default"] += 1
    x = tf.cast(image, tf.float32) / 255.0
    return {"harmonised": 255 - image, "mask": x[..., :1],
            "detection": tf.concat([x[..., :1], x[..., 1:2]], axis=-1)}

  def harmonise_with_mask(self, image, mask):
    self.calls["harmonise_with_mask"] += 1
    return {"harmonised": tf.cast(tf.cast(image, tf.float32) * (1.0 - mask), tf.uint8)}


def _write(path, array):
  cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)
  return str(path)


@pytest.fixture
def photo(tmp_path):
  rgb = helpers.val_image("000000092660.jpg")[:60, :90]
  return _write(tmp_path / "photo.png", rgb), rgb


@pytest.fixture
def mask_png(tmp_path):
  mask = np.zeros((60, 90), np.uint8)
  mask[10:40, 20:70] = 200
  return _write(tmp_path / "mask.png", mask)


def _app(tmp_path, **modules):
  return handling.App(modules or {"l_moments": FakeModule(), "residual": FakeModule()},
                      work_dir=str(tmp_path / "work"))


def _read(path):
  return cv2.imread(path, cv2.IMREAD_UNCHANGED)


def test_mask_free_result_is_the_cli_files_and_the_detection_overlay(tmp_path, photo):
  path, rgb = photo
  module = FakeModule()
  result = _app(tmp_path, l_moments=module).run(path, None)
  # What tfharm.harmonise writes: FileHarmoniser.write on load_inputs' decoding.
  cli = files.FileHarmoniser(FakeModule())
  cli.write(*files.load_inputs(path), str(tmp_path / "cli.png"), str(tmp_path / "cli_mask.png"))
  np.testing.assert_array_equal(_read(result.harmonised_path), _read(str(tmp_path / "cli.png")))
  np.testing.assert_array_equal(_read(result.mask_path), _read(str(tmp_path / "cli_mask.png")))
  assert os.path.basename(result.harmonised_path) == "photo_harmonised.png"
  assert os.path.basename(result.mask_path) == "photo_mask.png"
  np.testing.assert_array_equal(result.before, rgb)
  np.testing.assert_array_equal(result.after, 255 - rgb)
  detection = np.stack([rgb[..., 0], rgb[..., 1]], axis=-1) / 255.0
  np.testing.assert_array_equal(result.overlay, overlay.overlay_detection(rgb, detection))
  assert module.calls == {"serving_default": 1, "harmonise_with_mask": 0}  # one pass
  assert result.summary.startswith("Result 1: 90 x 60, mask-free")


def test_with_mask_uses_the_mask_for_the_result_and_a_second_pass_for_the_map(
    tmp_path, photo, mask_png):
  path, rgb = photo
  module = FakeModule()
  result = _app(tmp_path, l_moments=module).run(path, mask_png, handling.WITH_MASK)
  mask = _read(mask_png)[..., None] / 255.0
  np.testing.assert_array_equal(result.after, (rgb * (1.0 - mask.astype(np.float32))).astype(np.uint8))
  np.testing.assert_array_equal(_read(result.mask_path), _read(mask_png))  # the mask used
  assert module.calls == {"serving_default": 1, "harmonise_with_mask": 1}
  assert not np.array_equal(result.overlay, rgb)  # the detector's map is drawn


def test_the_chosen_correction_runs_its_own_module(tmp_path, photo):
  modules = {"l_moments": FakeModule(), "residual": FakeModule()}
  _app(tmp_path, **modules).run(photo[0], None, handling.MASK_FREE, "residual")
  assert modules["residual"].calls["serving_default"] == 1
  assert modules["l_moments"].calls["serving_default"] == 0


def test_an_uploaded_mask_is_ignored_mask_free(tmp_path, photo, mask_png):
  module = FakeModule()
  _app(tmp_path, l_moments=module).run(photo[0], mask_png, handling.MASK_FREE)
  assert module.calls == {"serving_default": 1, "harmonise_with_mask": 0}


@pytest.mark.parametrize("case, message", [
    ("no_photo", "upload a photo (JPEG or PNG) or click one of the examples first"),
    ("no_mask", "'with the uploaded mask' needs a mask"),
    ("not_an_image", "broken.png: not a readable JPEG or PNG image"),
    ("empty_file", "empty.jpg: not a readable JPEG or PNG image"),
    ("mask_size", "small_mask.png: mask is 30x20, the image 90x60"),
    ("correction", "unknown correction 'sharpen'"),
])
def test_bad_requests_get_a_sentence_naming_the_upload_not_the_server_path(
    tmp_path, photo, case, message):
  (tmp_path / "broken.png").write_bytes(b"not an image at all")
  (tmp_path / "empty.jpg").write_bytes(b"")
  small = _write(tmp_path / "small_mask.png", np.zeros((20, 30), np.uint8))
  args = {"no_photo": (None, None), "no_mask": (photo[0], None, handling.WITH_MASK),
          "not_an_image": (str(tmp_path / "broken.png"), None),
          "empty_file": (str(tmp_path / "empty.jpg"), None),
          "mask_size": (photo[0], small, handling.WITH_MASK),
          "correction": (photo[0], None, handling.MASK_FREE, "sharpen")}[case]
  app = _app(tmp_path)
  with pytest.raises(handling.UploadError) as e:
    app.run(*args)
  assert message in str(e.value)
  assert str(tmp_path) not in str(e.value)
  assert not os.listdir(app.work_dir)  # refused before any output was written


def _png_declaring(path, width, height):
  """A tiny PNG whose header says width x height (its pixel data is a 1x1 image's)."""
  ok, buf = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
  data = bytearray(buf.tobytes())
  ihdr = struct.pack(">II", width, height) + bytes(data[24:29])  # keep depth, colour type, ...
  data[16:29] = ihdr
  data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
  path.write_bytes(bytes(data))
  return str(path)


def test_size_limits_are_checked_from_the_header_before_decoding(tmp_path, photo):
  limits = handling.Limits(max_megapixels=1.0, max_megabytes=0.001)
  huge = _png_declaring(tmp_path / "huge.png", 40000, 30000)  # 1.2 gigapixels, ~70 bytes
  assert os.path.getsize(huge) < 100
  with pytest.raises(handling.UploadError, match="over 179 megapixels; this page takes up to 1 "):
    handling.check_size(huge, "photo", handling.Limits(max_megapixels=1.0))
  big = _png_declaring(tmp_path / "big.png", 1200, 1000)
  with pytest.raises(handling.UploadError, match="the photo is 1200 x 1000 pixels; this page "
                     "takes up to 1 megapixels"):
    handling.check_size(big, "photo", handling.Limits(max_megapixels=1.0))
  with pytest.raises(handling.UploadError, match=r"the mask is 0.0\d+ MB; this page takes up "
                     "to 0.001 MB"):
    handling.check_size(photo[0], "mask", limits)
  (tmp_path / "text.png").write_text("no header")
  handling.check_size(str(tmp_path / "text.png"), "photo", limits)  # for the decoder to report
  handling.check_size(_png_declaring(tmp_path / "ok.png", 1000, 1000), "photo",
                      handling.Limits(max_megapixels=1.0))  # the limit itself is allowed
  app = handling.App({"l_moments": FakeModule()}, handling.Limits(max_megapixels=1.0),
                     work_dir=str(tmp_path / "work"))
  with pytest.raises(handling.UploadError, match="1200 x 1000 pixels"):
    app.run(big, None)


# Headers of formats Pillow cannot read, declaring 12000 x 9000 pixels (108 megapixels): OpenCV
# allocates that much (1.3 GB of float32 for the HDR) before it reads a pixel.
_UNSIZED = {
    "big.hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 9000 +X 12000\n" + b"\2\2\x2e\xe0" * 4,
    "big.pam": b"P7\nWIDTH 12000\nHEIGHT 9000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n",
    "big.pfm": b"PF\n12000 9000\n-1.0\n",
    "broken.bmp": b"BM" + b"\xff" * 60,  # OpenCV's BMP signature, a header Pillow refuses
}


@pytest.mark.parametrize("name", sorted(_UNSIZED) + ["small.hdr"])
def test_files_whose_size_cannot_be_read_are_refused_before_decoding(
    tmp_path, photo, monkeypatch, name):
  """The 24 MP cap used to be skipped for formats Pillow cannot identify: a Radiance HDR
  declaring 108 MP was decoded in full by OpenCV (~1 GB per request)."""
  path = tmp_path / name
  if name == "small.hdr":  # a real, small HDR: refused too (it could not be harmonised anyway)
    cv2.imwrite(str(path), np.full((20, 30, 3), 0.5, np.float32))
  else:
    path.write_bytes(_UNSIZED[name])
  assert cv2.haveImageReader(str(path))  # OpenCV would decode it
  def decode(*args):
    raise AssertionError(f"decoded {args}")
  monkeypatch.setattr(files, "load_inputs", decode)
  app = _app(tmp_path)
  with pytest.raises(handling.UploadError, match="size cannot be read before decoding|header "
                     "that cannot be read") as e:
    app.run(str(path), None)
  assert str(e.value).startswith("the photo is a") and str(tmp_path) not in str(e.value)
  with pytest.raises(handling.UploadError, match="the mask is a"):
    app.run(photo[0], str(path), handling.WITH_MASK)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".ras",
                                 ".gif", ".avif"])
def test_formats_both_libraries_read_are_sized_from_the_header(tmp_path, ext):
  path = str(tmp_path / f"image{ext}")
  if not cv2.imwrite(path, np.zeros((5, 7, 3), np.uint8)):
    pytest.skip(f"this OpenCV writes no {ext}")
  assert image_header.declared_size(path) == (7, 5)
  handling.check_size(path, "photo", handling.Limits(max_megapixels=1e-6 * 35))
  with pytest.raises(handling.UploadError, match="7 x 5 pixels"):
    handling.check_size(path, "photo", handling.Limits(max_megapixels=1e-6 * 34))


def test_only_the_last_requests_files_are_kept(tmp_path, photo):
  app = _app(tmp_path)
  paths = [app.run(photo[0], None).harmonised_path for _ in range(handling._KEEP_REQUESTS + 2)]
  assert [os.path.exists(p) for p in paths] == [False] * 2 + [True] * handling._KEEP_REQUESTS
  assert len(os.listdir(app.work_dir)) == handling._KEEP_REQUESTS
  assert app.run(photo[0], None).summary.startswith(f"Result {handling._KEEP_REQUESTS + 3}:")


def test_overlay_colours_follow_the_evaluation_figures():
  rgb = np.full((1, 4, 3), 100, np.uint8)
  detection = np.array([[[1, 0], [0, 1], [0, 0], [0.5, 0]]], np.float32)  # neg, pos, none, half
  out = overlay.overlay_detection(rgb, detection, strength=1.0)
  np.testing.assert_array_equal(out[0, 0], [255, 0, 0])  # darker than it should be: red
  np.testing.assert_array_equal(out[0, 1], [0, 255, 0])  # brighter: green
  np.testing.assert_array_equal(out[0, 2], [100, 100, 100])  # nothing seen: the photo
  np.testing.assert_array_equal(out[0, 3], [np.round(50 + 127.5), 50, 50])
  assert overlay.overlay_detection(rgb, detection)[0, 0, 0] == np.round((0.2 * 100 / 255 + 0.8) * 255)
  with pytest.raises(ValueError, match="must be"):
    overlay.overlay_detection(rgb, detection[..., :1])


@pytest.mark.parametrize("model", ["joint", "pipeline"])
def test_real_models_shared_weights_give_the_cli_pixels_of_the_other_correction(
    tmp_path, photo, mask_png, model):
  """load_modules builds the non-default correction's pipeline on the default one's networks
  (one copy of the weights); it must equal what the CLI builds for that --correction (random
  weights, moved off their init), for either --model, also when the page loads that system on
  its first request (as it loads every system but the default). The default one is the CLI's
  own: tests/app_browser_test.py."""
  from tfharm import systems  # pylint: disable=g-import-not-at-top
  from tfharm.serving.signatures import ServingModule  # pylint: disable=g-import-not-at-top
  if model == "joint":
    weights = {"joint_weights": str(tmp_path / "joint.keras")}
    small_joint_model().save(weights["joint_weights"])
  else:
    weights = dict(zip(("detector_weights", "harmoniser_weights"),
                       helpers.save_weights(str(tmp_path))))
  default = "pipeline" if model == "joint" else "joint"  # stood in for: only `model` is real
  app = handling.App({"l_moments": FakeModule(), "residual": FakeModule()}, model=default,
                     work_dir=str(tmp_path / "work"), others={model: functools.partial(
                         handling.load_modules, model, weights, jit_compile=False)})
  assert not app.loaded(model)
  modules = app.modules_of(model)
  assert list(modules) == ["l_moments", "residual"]
  first, other = (modules[c].system for c in ("l_moments", "residual"))
  network = "joint" if model == "joint" else "detector"
  assert getattr(other, network) is getattr(first, network)
  cli = files.FileHarmoniser(ServingModule(
      systems.load(model, weights, correction="residual"), jit_compile=False))
  inputs = files.load_inputs(photo[0], mask_png)
  results = {}
  for system, mask in ((handling.MASK_FREE, None), (handling.WITH_MASK, inputs[1])):
    got = results[system] = app.run(photo[0], mask_png, system, "residual", model)
    want = str(tmp_path / f"cli_{mask is None}.png")
    cli.write(inputs[0], mask, want, want + ".mask.png")
    np.testing.assert_array_equal(_read(got.harmonised_path), _read(want))
    np.testing.assert_array_equal(_read(got.mask_path), _read(want + ".mask.png"))
    assert np.abs(got.after.astype(int) - photo[1]).max() > 0  # it changed the photo
  l_moments = app.run(photo[0], None, handling.MASK_FREE, "l_moments", model)
  assert not np.array_equal(l_moments.after, results[handling.MASK_FREE].after)  # it matters
  assert f"model {model}," in l_moments.summary


def test_another_system_loads_on_its_first_request_only_and_once(tmp_path, photo):
  """Issue 27: the page loaded and traced what it served before answering; a system other than
  the default now loads when a request first asks for it, once, even with two racing."""
  loads = []

  def load_pipeline():
    loads.append(threading.current_thread().name)
    time.sleep(0.2)  # long enough for the second request to arrive while it loads
    return {"l_moments": FakeModule(), "residual": FakeModule()}

  app = handling.App({"l_moments": FakeModule(), "residual": FakeModule()}, model="joint",
                     work_dir=str(tmp_path / "work"), others={"pipeline": load_pipeline})
  assert app.choices == ("joint", "pipeline")
  assert app.run(photo[0], None).summary.startswith("Result 1: 90 x 60, mask-free, model joint,")
  assert loads == [] and not app.loaded("pipeline")
  summaries = []
  racing = [threading.Thread(target=lambda: summaries.append(app.run(
      photo[0], None, handling.MASK_FREE, "l_moments", "pipeline").summary)) for _ in range(2)]
  for thread in racing:
    thread.start()
  for thread in racing:
    thread.join()
  assert len(loads) == 1 and app.loaded("pipeline")
  assert len(summaries) == 2 and all("model pipeline," in s for s in summaries)
  with pytest.raises(handling.UploadError, match="unknown model 'sharpen'"):
    app.run(photo[0], None, model="sharpen")


def test_the_page_says_a_system_is_loading_on_its_first_use(tmp_path, photo):
  from tfharm.app import page  # pylint: disable=g-import-not-at-top  (imports Gradio)
  app = handling.App({"l_moments": FakeModule()}, model="joint", work_dir=str(tmp_path / "w"),
                     others={"pipeline": lambda: {"l_moments": FakeModule()}})
  said = []
  harmonise = page.make_handler(app)
  for _ in range(2):
    harmonise(photo[0], None, handling.MASK_FREE, "l_moments", "pipeline",
              progress=lambda *a, **k: said.append(k["desc"]))
  pipeline = handling.words("pipeline")
  assert said == [pipeline.loading, pipeline.working]


def test_the_pages_words_are_the_running_systems_own(tmp_path, monkeypatch):
  """Issue 27: the page said "the detector finds the region" and "Mask the harmoniser used"
  while the joint model ran. Each system's words come from its spec, for any system."""
  from tfharm import systems  # pylint: disable=g-import-not-at-top
  from tfharm.app import page  # pylint: disable=g-import-not-at-top  (imports Gradio)
  joint, pipeline = handling.words("joint"), handling.words("pipeline")
  assert joint.mask_free == "mask-free (the joint model finds the region)"
  assert joint.used_mask == "Mask the joint model used"
  assert not any(w in text for w in ("detector", "harmoniser")
                 for text in (joint.mask_free, joint.detection, joint.used_mask, joint.working))
  assert pipeline.mask_free == "mask-free (the detector finds the region)"
  assert pipeline.used_mask == "Mask the harmoniser used"
  assert pipeline.detection.startswith("The detector's map: red = darker")
  monkeypatch.setitem(systems.SYSTEMS, "stub", dataclasses.replace(
      systems.SYSTEMS["joint"], title="stub net", finder="the stub", fixer="the stub's head"))
  assert handling.words("stub").used_mask == "Mask the stub's head used"

  def labels(blocks):
    by_id = {getattr(b, "elem_id", None): b for b in blocks}
    return ({v: k for k, v in by_id["system"].choices}[handling.MASK_FREE], by_id["detection"].label,
            by_id["used_mask"].label, by_id["model"].value)

  for default in ("joint", "pipeline"):
    other = "pipeline" if default == "joint" else "joint"
    app = handling.App({"l_moments": FakeModule()}, model=default, work_dir=str(tmp_path / default),
                       others={other: dict})
    said = handling.words(default)
    built = page.build_page(app, [])
    assert labels(built.blocks.values()) == (said.mask_free, said.detection, said.used_mask,
                                             default)
    switched = handling.words(other)  # choosing the other model relabels the same elements
    radio, detection, used_mask = page.relabel(other)
    assert ({v: k for k, v in radio.choices}[handling.MASK_FREE], detection.label, used_mask.label) == (
        switched.mask_free, switched.detection, switched.used_mask)


def _get(url: str) -> int:
  """The HTTP status of a GET (no redirects to follow on these routes)."""
  import urllib.error  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  try:
    with urllib.request.urlopen(url, timeout=60) as response:
      return response.status
  except urllib.error.HTTPError as e:
    return e.code


def test_the_page_serves_only_its_examples_and_results_whatever_the_examples_dir(
    tmp_path, photo):
  """`--examples_dir=.` used to serve every file under it (`.git/config` returned 200)."""
  from tfharm.app import page  # pylint: disable=g-import-not-at-top  (imports Gradio)
  site = tmp_path / "site"
  (site / ".git").mkdir(parents=True)
  (site / ".git" / "config").write_text("[remote]\nurl = secret\n")
  (site / "notes.txt").write_text("private")
  example = _write(site / "example.png", photo[1])
  example_mask = _write(site / "example.mask.png", np.zeros((60, 90), np.uint8))
  app = _app(tmp_path)
  result = app.run(photo[0], None)
  rows = examples.example_rows(str(site))
  with __import__("socket").socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  blocks = page.build_page(app, rows)
  url = page.launch(blocks, app, rows, "127.0.0.1", port, 50.0)
  try:
    file_url = lambda path: f"{url.rstrip('/')}/gradio_api/file={path}"
    for path in (example, example_mask, result.harmonised_path, result.mask_path):
      assert _get(file_url(path)) == 200, path
    for path in (site / ".git" / "config", site / "notes.txt", photo[0],
                 os.path.join(helpers.REPO, "setup.py")):
      assert _get(file_url(path)) == 403, path
  finally:
    blocks.close()


def _listening(port: int = 0):
  """A socket listening on 127.0.0.1 (a busy port); port 0: any free one."""
  import socket  # pylint: disable=g-import-not-at-top
  s = socket.socket()
  s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  s.bind(("127.0.0.1", port))
  s.listen()
  return s


def _temp_dir(tmp_path):
  """The page's TMPDIR: a leaked `tfharm-app-*` folder would show here."""
  tmp = tmp_path / "tmpdir"
  tmp.mkdir()
  return tmp


def _page_folders(tmp) -> list[str]:
  """The page's own temporary folders (Gradio's shared cache, `gradio/`, is Gradio's)."""
  return [n for n in os.listdir(tmp) if n.startswith("tfharm-app-")]


def test_a_busy_or_invalid_port_is_refused_before_the_models_load(tmp_path):
  """Before: the page loaded its models (~20 s), then crashed with a traceback (exit 3) and
  left its temporary folder."""
  tmp = _temp_dir(tmp_path)
  with _listening() as busy:
    port = busy.getsockname()[1]
    proc = helpers.run(["-m", "tfharm.app", f"--port={port}"], env={"TMPDIR": str(tmp)})
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.startswith(f"error: --port {port} on 127.0.0.1: cannot listen there "
                                "(address already in use)"), proc.stderr[-3000:]
  assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
  assert helpers.noise_lines(proc.stderr) == []  # TensorFlow was never started
  assert os.listdir(tmp) == []
  for flag, message in (("--port=70000", "error: flag --port=70000: "),
                        ("--host=no-such-host.invalid", "error: --host no-such-host.invalid: ")):
    proc = helpers.run(["-m", "tfharm.app", flag], env={"TMPDIR": str(tmp)})
    assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
  assert os.listdir(tmp) == []


def test_a_port_taken_while_the_models_load_ends_in_one_line_and_no_leak(tmp_path):
  """The port is free at the check and taken before the server starts: one line, exit 2, the
  temporary folder removed (it used to stay, after a traceback)."""
  tmp = _temp_dir(tmp_path)
  weights = str(tmp_path / "joint.keras")
  small_joint_model().save(weights)
  with _listening() as s:
    port = s.getsockname()[1]
  env = {**os.environ, "TMPDIR": str(tmp)}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  proc = subprocess.Popen([helpers.PYTHON, "-m", "tfharm.app", f"--port={port}",
                           f"--joint_weights={weights}"], cwd=helpers.REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=helpers.ctrl_c_default)
  import threading  # pylint: disable=g-import-not-at-top
  watchdog = threading.Timer(300, proc.kill)  # a page that starts serving would never end
  watchdog.start()
  lines = []
  for line in proc.stderr:  # the check passed, the models are loading: take the port now
    lines.append(line)
    if "loading the models" in line:
      break
  with _listening(port):
    stdout, stderr = proc.communicate(timeout=600)
  watchdog.cancel()
  stderr = "".join(lines) + stderr
  assert proc.returncode == 2, stderr[-3000:]
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: --port {port} on 127.0.0.1: the page's server could not start "
                    f"there (Cannot find empty port in range: {port}-{port})"], stderr[-3000:]
  assert "Traceback" not in stderr and "serving on" not in stdout
  assert _page_folders(tmp) == []


def test_the_first_ctrl_c_stops_the_page_with_one_line_and_exit_130(tmp_path):
  """Issue 26 (21): Ctrl-C on the page printed Gradio's line and a traceback, and did not
  always stop it. The first one ends it: one summary line, exit 130, its folder removed."""
  import signal  # pylint: disable=g-import-not-at-top
  tmp = _temp_dir(tmp_path)
  weights = str(tmp_path / "joint.keras")
  small_joint_model().save(weights)
  env = {**os.environ, "TMPDIR": str(tmp)}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  proc = subprocess.Popen([helpers.PYTHON, "-m", "tfharm.app", "--port=0",
                           f"--joint_weights={weights}"], cwd=helpers.REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=helpers.ctrl_c_default)
  import threading  # pylint: disable=g-import-not-at-top
  watchdog = threading.Timer(300, proc.kill)
  watchdog.start()
  for line in proc.stdout:
    if line.startswith("serving on"):
      break
  proc.send_signal(signal.SIGINT)
  try:
    stdout, stderr = proc.communicate(timeout=60)
  finally:
    proc.kill()
    watchdog.cancel()
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr and "Keyboard interruption" not in stdout, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == ("interrupted (Ctrl-C): the page stopped serving"), (
      stderr[-3000:])
  assert _page_folders(tmp) == []


def test_the_page_starts_without_tensorflow_or_http_client_lines(tmp_path):
  """Issue 26 (22): `make app` printed TensorFlow's start-up lines and httpx's INFO lines
  (`HTTP Request: GET .../startup-events`); the page starts as quietly as the other
  commands (tfharm.cli.quiet)."""
  import signal  # pylint: disable=g-import-not-at-top
  weights = str(tmp_path / "joint.keras")
  small_joint_model().save(weights)
  proc = helpers.start(["-m", "tfharm.app", "--port=0", f"--joint_weights={weights}"])
  try:
    for line in proc.stdout:
      if line.startswith("serving on"):
        break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert "ready: imports" in stderr, stderr[-3000:]
  assert helpers.noise_lines(stderr) == [], stderr[-3000:]
  assert "HTTP Request" not in stderr, stderr[-3000:]


def test_select_takes_half_darkened_half_brightened_big_objects_one_per_photo():
  def example(image_id, shift, fraction):
    mask = np.zeros((10, 10, 1), np.uint8)
    mask.reshape(-1)[:int(fraction * 100)] = 255
    return {"image_id": image_id, "reference_l_mean": 50.0 + shift, "target_l_mean": 50.0,
            "mask": mask}
  pool = [example(1, -30, 0.5), example(1, 40, 0.5),  # same photo: only one can be taken
          example(2, -20, 0.5), example(3, -50, 0.01),  # too small
          example(4, 10, 0.2), example(5, 25, 0.05), example(6, -5, 0.3)]
  chosen = examples.select(pool, 4)
  assert [(e["image_id"], examples.shift(e)) for e in chosen] == [(1, -30), (2, -20), (5, 25),
                                                                   (4, 10)]


def test_shipped_examples_pair_each_composite_with_its_mask_and_stay_small():
  rows = examples.example_rows()
  assert len(rows) == 4
  total = 0
  for composite, mask in rows:
    assert mask is not None and mask.endswith(examples.MASK_SUFFIX)
    image, (m, _) = files.read_image(composite).rgb, files.read_mask(mask, (256, 256))
    assert image.shape == (256, 256, 3) and m.shape == (256, 256, 1)
    assert (m > 0.5).mean() >= examples.MIN_MASK_FRACTION
    total += os.path.getsize(composite) + os.path.getsize(mask)
  assert total < 1_000_000
  assert examples.example_rows("/nonexistent") == []


def test_page_handler_shows_upload_errors_as_messages(tmp_path, photo):
  from tfharm.app import page  # pylint: disable=g-import-not-at-top  (imports Gradio)
  import gradio as gr  # pylint: disable=g-import-not-at-top
  app = _app(tmp_path)
  harmonise = page.make_handler(app)
  with pytest.raises(gr.Error, match="upload a photo"):
    harmonise(None, None, handling.MASK_FREE, "l_moments", progress=lambda *a, **k: None)
  upload = {"path": photo[0], "orig_name": "photo.png", "meta": {"_type": "gradio.FileData"}}
  compare, detection, used_mask, downloads, summary = harmonise(  # preprocess=False: the payload
      upload, None, handling.MASK_FREE, "l_moments", progress=lambda *a, **k: None)
  np.testing.assert_array_equal(_read(compare[0])[..., ::-1], photo[1])  # before, lossless
  assert compare[1] == downloads[0]  # "after" is the downloadable PNG itself
  assert _read(detection).shape == (60, 90, 3)
  assert downloads == [used_mask.replace("_mask", "_harmonised"), used_mask]
  assert summary.startswith("Result 1:")
  broken = handling.App({"l_moments": None}, work_dir=str(tmp_path / "w2"))  # fails inside
  with pytest.raises(gr.Error, match="the model failed on this image"):
    page.make_handler(broken)(photo[0], None, handling.MASK_FREE, "l_moments",
                              progress=lambda *a, **k: None)
  assert isinstance(page.build_page(app, examples.example_rows()), gr.Blocks)


def test_a_float_mask_upload_is_read_as_weights(tmp_path, photo):
  """Issue 26: a float TIFF mask of 0.8 was divided by 255 on the page too (nothing changed)."""
  path, rgb = photo
  weights = np.zeros((60, 90), np.float32)
  weights[10:40, 20:70] = 0.8
  cv2.imwrite(str(tmp_path / "mask.tiff"), weights)
  result = _app(tmp_path).run(path, str(tmp_path / "mask.tiff"), handling.WITH_MASK)
  expected = (rgb * (1.0 - weights[..., None])).astype(np.uint8)
  np.testing.assert_array_equal(result.after, expected)
  np.testing.assert_array_equal(_read(result.mask_path), np.round(weights * 255).astype(np.uint8))
