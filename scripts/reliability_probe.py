"""Re-runs the 26 reproductions of issue 26 ("Bad input and faults") as a user would.

  python scripts/reliability_probe.py [--only=1,2] [--timeout=300] [--keep]

Each case runs the real commands (`python -m tfharm....`) as subprocesses, from a scratch
folder of its own (tempfile), and checks:
  - the exit code of every command: never 3, and the one docs/cli.md gives for the case
    ("Reliability under abuse (issue 26)"); no traceback on stderr;
  - no hang: a command still running after --timeout seconds is a failure;
  - no data loss: the files that must survive are byte-identical afterwards;
  - the message the docs' table promises (a short substring of it);
  - for the cases that once gave a wrong result without an error, the right result (a 0.8
    float mask changes the photo, a 16-bit grey PNG scores ~0 against its 8-bit copy, ...).
The page's cases (3, 4, 5, 14, 21, 22) start `python -m tfharm.app` on a free port and talk
HTTP to it. The eval cases (8, 16, 17, 22) share the demo sample built once (a "setup" row).
The commands share a graph cache in the scratch folder (cases 9 and 22 start one of their
own), so the user's ~/.cache/tfharm is not touched. The full-disk cases (15, 16) need a small
tmpfs (`mount`, so root): where none can be mounted they print "covered by test ..." instead
of a verdict (case 24 then leaves out what the export asks for).

Prints one row per case (number, name, the exit codes of its commands in order, seconds,
verdict) and exits 0 only if every case selected passed (1 otherwise).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from absl import app, flags
import cv2
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The probe tests the tfharm of its own checkout, in this process and in the commands it starts
# from scratch folders (PYTHONPATH), even when the installed (editable) one is another's.
sys.path.insert(0, REPO)
from tfharm.cli import program  # pylint: disable=g-import-not-at-top,wrong-import-position

_ONLY = flags.DEFINE_list("only", None, "Case numbers to run, e.g. 1,2 (default: all 26).")
_TIMEOUT = flags.DEFINE_float("timeout", 300.0, "Seconds a command may run; longer is a hang, "
                              "which fails its case.")
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the scratch folder (its path is printed).")

PYTHON = sys.executable
EX = os.path.join(REPO, "tfharm", "app", "examples", "22892_22287.png")  # the example photo
EX_MASK = os.path.join(REPO, "tfharm", "app", "examples", "22892_22287.mask.png")  # its mask
DEMO_ROOT = os.path.join(REPO, "data_builders", "luminance_composites", "dummy_data")
HARMONISER = os.path.join(REPO, "tfharm", "presets", "harmoniser_256.weights.h5")
JOINT = os.path.join(REPO, "tfharm", "presets", "joint_256.weights.h5")  # the default model
EVAL_FLAGS = os.path.join(REPO, "configs", "eval_demo.flags")
DEAD_PID = 999999999  # a process id no live process has (a killed run's)

# Lines a user must not see (issue 26, "More noise"); the probe's own list, not tfharm's.
NOISE = ("cudart_stub", "cpu_feature_guard", "absl::InitializeLog", "cuInit", "cuda_",
         "To enable the following instructions", "oneDNN supports", "UserWarning",
         "build() was called", "cache_dataset_ops", "did not fully read the dataset",
         "HTTP Request", "DecompressionBomb", "decompression bomb")


class Failed(Exception):
  """A check of the case failed: the message says which and why."""


class Skipped(Exception):
  """The case cannot be reproduced here; the message names the test that covers it."""


# --------------------------------------------------------------------------- running commands
@dataclasses.dataclass
class Ran:
  name: str  # the command, for messages ("harmonise", "lpips", ...)
  rc: int
  stdout: str
  stderr: str
  seconds: float

  def last_line(self) -> str:
    lines = self.stderr.strip().splitlines()
    return lines[-1][:200] if lines else "(no stderr)"


class Case:
  """One case's scratch folder, environment and the exit codes of its commands."""

  def __init__(self, root: str):
    self.dir = root
    self.tmp = self.path("tmp")  # the commands' TMPDIR: a leaked temporary folder shows here
    os.makedirs(self.tmp)
    self.env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    self.env.update(TMPDIR=self.tmp, TFHARM_CACHE_DIR=_shared("cache"), PYTHONPATH=path)
    self.rcs: list[str] = []

  def path(self, *parts) -> str:
    return os.path.join(self.dir, *parts)

  def run(self, module: str, *args, cwd: str | None = None, env: dict | None = None) -> Ran:
    """`python -m <module> args...` from the case's folder; a hang, an exit code 3 or a
    traceback fail the case whatever it expects."""
    name = module.removeprefix("tfharm.")
    start = time.monotonic()
    try:
      proc = subprocess.run([PYTHON, "-m", module, *map(str, args)], cwd=cwd or self.dir,
                            env={**self.env, **(env or {})}, capture_output=True, text=True,
                            timeout=_TIMEOUT.value, preexec_fn=_ctrl_c_default)
    except subprocess.TimeoutExpired:
      self.rcs.append("hang")
      raise Failed(f"{name}: still running after {_TIMEOUT.value:g} s (a hang)") from None
    ran = Ran(name, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    self.rcs.append(str(ran.rc))
    _no_crash(ran)
    return ran

  def run_interrupted(self, src: str, out: str, interrupt, grace: float) -> Ran:
    """`tfharm.harmonise` from src into out in the background; once out holds a PNG,
    interrupt(proc) runs, then the command has `grace` seconds to end (longer is a hang)."""
    with open(self.path("harmonise.stderr"), "w") as err:
      proc = subprocess.Popen([PYTHON, "-m", "tfharm.harmonise", f"--input={src}",
                               f"--output={out}"], cwd=self.dir, env=self.env,
                              stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_ctrl_c_default)
      deadline = time.monotonic() + _TIMEOUT.value
      while proc.poll() is None and time.monotonic() < deadline and not (
          os.path.isdir(out) and [n for n in os.listdir(out) if n.endswith(".png")]):
        time.sleep(0.05)
      interrupt(proc)
      try:
        proc.wait(timeout=grace)
      except subprocess.TimeoutExpired:
        proc.kill()
        self.rcs.append("hang")
        raise Failed(f"harmonise: still running {grace:g} s after the interruption") from None
    self.rcs.append(str(proc.returncode))
    ran = Ran("harmonise", proc.returncode, "", open(self.path("harmonise.stderr")).read(), 0)
    _no_crash(ran)
    return ran


def _ctrl_c_default() -> None:
  """A child gets the default SIGINT, as from a terminal (not a background job's ignored one)."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def _no_crash(ran: Ran) -> None:
  if ran.rc == program.INTERNAL:
    raise Failed(f"{ran.name}: rc 3: {ran.last_line()}")
  if "Traceback" in ran.stderr:
    raise Failed(f"{ran.name}: a traceback (rc {ran.rc}): {ran.last_line()}")


def expect(ran: Ran, rc: int, *messages: str, where: str = "stderr") -> Ran:
  """rc as expected and every message in stderr (or stdout)."""
  if ran.rc != rc:
    raise Failed(f"{ran.name}: rc {ran.rc}, expected {rc}: {ran.last_line()}")
  text = ran.stderr if where == "stderr" else ran.stdout
  for message in messages:
    if message not in text:
      raise Failed(f"{ran.name}: no '{message}' on {where}; last line: {ran.last_line()}")
  return ran


def check(condition: bool, why: str) -> None:
  if not condition:
    raise Failed(why)


def one_error_line(ran: Ran, start: str) -> None:
  lines = ran.stderr.strip().splitlines()
  check(len(lines) == 1 and lines[0].startswith(start),
        f"{ran.name}: expected the one line '{start}...', got {len(lines)}: {ran.last_line()}")


def noise(text: str) -> list[str]:
  """The lines a user should not see; progress bars' carriage returns and cursor moves end a
  line too."""
  return [line.strip()[:100] for line in re.split(r"[\r\n]|\x1b\[[0-9;]*[A-Za-z]", text)
          if any(n in line for n in NOISE)]


# --------------------------------------------------------------------------- files
def digest(path: str) -> str:
  """The bytes of a file, or of every file under a folder (names included)."""
  h = hashlib.sha256()
  if os.path.isdir(path):
    for d, dirs, names in sorted(os.walk(path)):
      dirs.sort()
      for n in sorted(names):
        h.update(os.path.relpath(os.path.join(d, n), path).encode())
        with open(os.path.join(d, n), "rb") as f:
          h.update(f.read())
  else:
    with open(path, "rb") as f:
      h.update(f.read())
  return h.hexdigest()


@contextlib.contextmanager
def must_survive(*paths: str):
  """The files (or folders) are byte-identical after the block: no data loss."""
  before = {p: digest(p) for p in paths}
  yield
  for p in paths:
    check(os.path.exists(p) and digest(p) == before[p], f"data loss: {p} changed or is gone")


def write(path: str, array: np.ndarray) -> str:
  """An RGB (or grey, or float) array as an image file, by its extension."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  ok = cv2.imwrite(path, array[..., ::-1] if array.ndim == 3 else array)
  check(ok, f"the probe could not write {path}")
  return path


def photo() -> np.ndarray:
  return cv2.imread(EX, cv2.IMREAD_COLOR)[..., ::-1].copy()


def region() -> np.ndarray:
  """The example's own object mask, as a boolean (H, W)."""
  return cv2.imread(EX_MASK, cv2.IMREAD_GRAYSCALE) > 127


def read_rgb(path: str) -> np.ndarray:
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  check(image is not None, f"{path} is not a readable image")
  return image[..., ::-1].astype(int)


def copies(folder: str, n: int, name: str = "{:02d}.png") -> list[str]:
  os.makedirs(folder, exist_ok=True)
  paths = [os.path.join(folder, name.format(i)) for i in range(n)]
  for p in paths:
    shutil.copy(EX, p)
  return paths


# --------------------------------------------------------------------------- shared resources
_SCRATCH: dict = {}


def _shared(name: str) -> str:
  return os.path.join(_SCRATCH["root"], "shared", name)


def build_demo(c: Case):
  """Setup of the eval cases: the embedded demo sample built once (`python -m tfharm.data.build`);
  case 22 checks this run's output too."""
  _SCRATCH["build"] = expect(c.run("tfharm.data.build", f"--manual_dir={DEMO_ROOT}",
                                   f"--data_dir={_shared('tfds')}", "--dataset_config=256",
                                   "--workers=2"), 0)


def demo_build() -> str:
  """The demo build's data_dir (made by the setup row)."""
  check("build" in _SCRATCH, "the demo build (setup) failed")
  return _shared("tfds")


def eval_args(data_dir: str, output_dir: str, *extra) -> list[str]:
  return [f"--flagfile={EVAL_FLAGS}", f"--data_dir={data_dir}", f"--output_dir={output_dir}",
          "--max_examples=2", "--batch_size=1", "--progress=false", *extra]


# --------------------------------------------------------------------------- tmpfs (cases 15, 16)
@contextlib.contextmanager
def tmpfs(path: str, options: str, covered_by: str):
  """A tmpfs at `path`; Skipped (naming the test that covers the case) where mounting is not
  allowed (it needs root)."""
  os.makedirs(path)
  try:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                          capture_output=True, text=True)
    why = proc.returncode and (proc.stderr.strip()[:60] or f"mount: rc {proc.returncode}")
  except OSError as e:
    why = str(e)[:60]
  if why:
    raise Skipped(f"covered by test {covered_by} (no tmpfs here: {why})")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", path], capture_output=True)


def fill_inodes(directory: str, leave: int) -> None:
  """Empty files until the file system has `leave` inodes free: a new file then fails with
  ENOSPC whatever the free bytes, past the commands' free-space checks (as
  tests/serving_helpers.fill_inodes)."""
  os.makedirs(directory)
  made = []
  while True:
    try:
      path = os.path.join(directory, str(len(made)))
      open(path, "w").close()
    except OSError:
      break
    made.append(path)
  for path in made[:leave]:
    os.remove(path)


# --------------------------------------------------------------------------- the page
@dataclasses.dataclass
class Page:
  url: str
  pid: int


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def page(case: Case, *args, cwd: str | None = None, stopped: dict | None = None):
  """`python -m tfharm.app --port=P args` until it prints "serving on URL"; after the block
  one Ctrl-C (SIGINT) must end it: rc 130 and its summary line, within 60 s. `stopped`
  receives that run's Ran and how long the stop took."""
  out, err = case.path("page.stdout"), case.path("page.stderr")
  start = time.monotonic()
  with open(out, "w") as o, open(err, "w") as e:
    proc = subprocess.Popen([PYTHON, "-m", "tfharm.app", f"--port={_free_port()}", *args],
                            cwd=cwd or case.dir, env=case.env, stdout=o, stderr=e,
                            preexec_fn=_ctrl_c_default)
  ran = lambda: Ran("app", proc.returncode, open(out).read(), open(err).read(),
                    time.monotonic() - start)
  try:
    url = None
    while url is None:
      if proc.poll() is not None:
        case.rcs.append(str(proc.returncode))
        _no_crash(ran())
        raise Failed(f"app: ended (rc {proc.returncode}) before serving: {ran().last_line()}")
      check(time.monotonic() - start < _TIMEOUT.value,
            f"app: not serving after {_TIMEOUT.value:g} s (a hang)")
      found = re.search(r"^serving on (\S+)", open(out).read(), re.M)
      url = found and found.group(1).rstrip("/") + "/"
      time.sleep(0.2)
    yield Page(url, proc.pid)
  except BaseException:
    if proc.poll() is None:  # the case failed already: stop the page, say nothing more
      proc.send_signal(signal.SIGINT)
      try:
        proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    raise
  proc.send_signal(signal.SIGINT)
  sent = time.monotonic()
  try:
    proc.wait(timeout=60)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    case.rcs.append("hang")
    raise Failed("app: still running 60 s after the first Ctrl-C") from None
  case.rcs.append(str(proc.returncode))
  stop = ran()
  _no_crash(stop)
  if stopped is not None:
    stopped.update(ran=stop, seconds=time.monotonic() - sent)
  expect(stop, program.INTERRUPTED, "interrupted (Ctrl-C): the page stopped serving")


def http_get(url: str) -> tuple[int, bytes]:
  try:
    with urllib.request.urlopen(url, timeout=60) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as e:
    return e.code, e.read()


def _post(url: str, body: bytes, content_type: str) -> bytes:
  request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
  with urllib.request.urlopen(request, timeout=120) as response:
    return response.read()


def upload(p: Page, path: str) -> dict:
  """Uploads a file as the page's file input does; the FileData payload of the upload."""
  boundary = uuid.uuid4().hex
  name = os.path.basename(path)
  with open(path, "rb") as f:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\""
            f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + f.read() + (
                f"\r\n--{boundary}--\r\n").encode()
  (server_path,) = json.loads(_post(p.url + "gradio_api/upload", body,
                                    f"multipart/form-data; boundary={boundary}"))
  return {"path": server_path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def harmonise_request(p: Page, photo_path: str, mask_path: str | None = None) -> tuple:
  """The page's "Harmonise" button through Gradio's HTTP API: ("complete", outputs) or
  ("error", the message the page shows)."""
  data = [upload(p, photo_path), upload(p, mask_path) if mask_path else None,
          "with the uploaded mask" if mask_path else "mask-free", "l_moments", None]
  body = json.dumps({"data": data}).encode()
  event = json.loads(_post(p.url + "gradio_api/call/harmonise", body,
                           "application/json"))["event_id"]
  status, stream = http_get(p.url + f"gradio_api/call/harmonise/{event}")
  check(status == 200, f"app: the result stream answered {status}")
  kind, payload = None, None
  for line in stream.decode().splitlines():
    if line.startswith("event: "):
      kind = line[len("event: "):].strip()
    elif line.startswith("data: ") and kind in ("complete", "error"):
      payload = json.loads(line[len("data: "):])
      if kind == "error" and isinstance(payload, dict):
        payload = payload.get("message") or payload.get("error") or payload
      return kind, payload
  raise Failed(f"app: no result in the stream: {stream[:200]!r}")


def peak_rss_mb(pid: int) -> float:
  """The process's peak resident memory so far (VmHWM), in MB."""
  with open(f"/proc/{pid}/status") as f:
    return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


# =========================================================================== the 26 cases
# Each returns a short note for its row (or None) and raises Failed on a wrong result.

def c01_lpips_output_is_an_input(c: Case):
  """`python -m tfharm.metrics.lpips A/ B/ --out=A/keep.png` replaced a compared image."""
  a, b = c.path("A"), c.path("B")
  keep = copies(a, 1, "keep.png")[0]
  copies(b, 1, "keep.png")
  with must_survive(keep):
    for extra in ([], ["--overwrite"]):
      ran = c.run("tfharm.metrics.lpips", a, b, f"--out={keep}", *extra)
      expect(ran, 2, "is one of the images compared")


def c02_harmonise_replaces_existing(c: Case):
  """harmonise replaced an unrelated file at --output or --save_mask silently."""
  mine = c.path("mine.png")
  with open(mine, "w") as f:
    f.write("not yours")
  with must_survive(mine):
    one_error_line(expect(c.run("tfharm.harmonise", f"--input={EX}", f"--output={mine}"), 2),
                   f"error: --output {mine} exists; pass --overwrite")
    one_error_line(expect(c.run("tfharm.harmonise", f"--input={EX}",
                                f"--output={c.path('new.png')}", f"--save_mask={mine}"), 2),
                   f"error: --save_mask {mine} exists")
  check(not os.path.exists(c.path("new.png")), "harmonise wrote --output although it refused")


def c03_page_hdr_upload(c: Case):
  """A 6.9 MB Radiance HDR declaring 108 MP was decoded in full (~1 GB per request, kept)."""
  hdr = c.path("big.hdr")
  cv2.imwrite(hdr, np.full((9000, 12000, 3), .5, np.float32))  # the issue's own file
  with page(c) as p:
    before = peak_rss_mb(p.pid)
    kind, message = harmonise_request(p, hdr)
    grew = peak_rss_mb(p.pid) - before
  check(kind == "error", f"app: the HDR upload was not refused ({kind})")
  check("Radiance HDR image, whose size cannot be read before decoding" in str(message),
        f"app: refused with '{str(message)[:120]}'")
  check(grew < 300, f"app: peak memory grew by {grew:.0f} MB for a refused upload")
  return f"peak memory +{grew:.0f} MB"


def c04_page_examples_dir_dot(c: Case):
  """`--examples_dir=.` served every file under it, .git/config included (200)."""
  site = c.path("site")
  os.makedirs(os.path.join(site, ".git"))
  secret = os.path.join(site, ".git", "config")
  with open(secret, "w") as f:
    f.write("[remote \"origin\"]\n\turl = https://user:token@example.invalid/repo\n")
  example = shutil.copy(EX, os.path.join(site, "example.png"))
  shutil.copy(EX_MASK, os.path.join(site, "example.mask.png"))
  with page(c, "--examples_dir=.", cwd=site) as p:
    status = {path: http_get(p.url + f"gradio_api/file={path}")[0]
              for path in (secret, example, os.path.join(REPO, "setup.py"))}
  check(status[example] == 200, f"app: the example itself answered {status[example]}")
  check(status[secret] == 403, f"app: .git/config answered {status[secret]}")
  check(status[os.path.join(REPO, "setup.py")] == 403, "app: a file outside the page was served")
  return ".git/config 403, the example 200"


def _float_mask(c: Case, value: float) -> str:
  mask = np.where(region(), value, 0.0).astype(np.float32)
  return write(c.path(f"mask_{value:g}.tiff"), mask)


def _mean_change_inside(out: str, what: str) -> float:
  """The output's mean change inside the example's object; nothing may change outside it."""
  change = np.abs(read_rgb(out) - photo().astype(int)).max(axis=-1)
  check(change[~region()].max() == 0, f"{what}: pixels outside the mask changed")
  return float(change[region()].mean())


def c05_float_mask_08(c: Case):
  """A float TIFF mask of 0.8 was divided by 255 (a weight of 0.003): nothing harmonised, in
  the CLI and on the page. The shipped model changes this photo by a few levels only, so the
  0.8 mask's change is compared with the example's own 0/255 mask's."""
  mask, full, out = _float_mask(c, 0.8), c.path("full.png"), c.path("out.png")
  expect(c.run("tfharm.harmonise", f"--input={EX}", f"--mask={EX_MASK}", f"--output={full}"), 0)
  expect(c.run("tfharm.harmonise", f"--input={EX}", f"--mask={mask}", f"--output={out}"), 0,
         "float mask with values in [0, 1]: read as weights")
  whole, weighted = (_mean_change_inside(p, "harmonise") for p in (full, out))
  check(whole > 0.5, f"harmonise: the photo hardly changes even with its own mask "
                     f"({whole:.2f}): the case cannot show anything")
  check(weighted >= 0.3 * whole, f"harmonise: mean change {weighted:.2f} inside with 0.8, "
                                 f"{whole:.2f} with the full mask: hardly harmonised")
  with page(c) as p:
    kind, outputs = harmonise_request(p, EX, mask)
    check(kind == "complete", f"app: the float mask was refused: {str(outputs)[:120]}")
    status, data = http_get(outputs[0][1]["url"])  # the "after" image of the slider
    check(status == 200, f"app: the result answered {status}")
  with open(c.path("page.png"), "wb") as f:
    f.write(data)
  check(np.array_equal(read_rgb(c.path("page.png")), read_rgb(out)),
        "app: the page's result differs from the CLI's for the same float mask")
  return f"mean change inside {weighted:.2f} (full mask {whole:.2f}); page = CLI"


def c06_lpips_16_bit_grey(c: Case):
  """LPIPS turned a 16-bit grey PNG white: 0.88 against its own 8-bit copy."""
  grey8 = cv2.imread(EX, cv2.IMREAD_GRAYSCALE)
  g16 = write(c.path("grey16.png"), grey8.astype(np.uint16) * 257)
  g8 = write(c.path("grey8.png"), grey8)
  ran = expect(c.run("tfharm.lpips", g16, g8), 0, "16-bit grayscale -> scaled to 8 bits")
  found = re.search(r"Distance: ([\d.e-]+)", ran.stdout)
  check(found is not None, f"lpips: no distance printed: {ran.stdout[:100]}")
  check(float(found.group(1)) < 0.01, f"lpips: distance {found.group(1)}, expected ~0")
  return f"distance {float(found.group(1)):.4f}"


def c07_folder_odd_entries(c: Case):
  """Folder mode dropped broken links, FIFOs and link loops: rc 0, "skipped 0"."""
  src = c.path("src")
  copies(src, 1, "good.png")
  os.symlink(c.path("gone.png"), os.path.join(src, "dangling.png"))
  os.symlink(os.path.join(src, "loop_b.png"), os.path.join(src, "loop_a.png"))
  os.symlink(os.path.join(src, "loop_a.png"), os.path.join(src, "loop_b.png"))
  os.mkfifo(os.path.join(src, "pipe.jpg"))
  ran = c.run("tfharm.harmonise", f"--input={src}", f"--output={c.path('out')}")
  expect(ran, 1, "skipped 4", "dangling.png: a broken symbolic link",
         "loop_a.png: a symbolic link loop", "pipe.jpg: a FIFO (named pipe), not a regular file")
  check(os.listdir(c.path("out")) == ["good.png"], "harmonise: the good image was not written")


def c08_eval_threshold(c: Case):
  """`tfharm.eval --threshold=nan` (or 2) was accepted: IoU and F1 0, rc 0."""
  data_dir = demo_build()
  for threshold in ("nan", "2"):
    out = c.path(f"eval_{threshold}")
    ran = c.run("tfharm.eval", *eval_args(data_dir, out, f"--threshold={threshold}"))
    one_error_line(expect(ran, 2), f"error: --threshold must be in [0, 1), got "
                                   f"{float(threshold)}")
    check(not os.path.exists(out), f"eval: {out} was made although it refused")


def c09_damaged_cache(c: Case):
  """A corrupted cache entry crashed every later run and was never rebuilt."""
  env = {"TFHARM_CACHE_DIR": c.path("cache")}
  first = c.path("first.png")
  expect(c.run("tfharm.harmonise", f"--input={EX}", f"--output={first}", env=env), 0)
  (entry,) = os.listdir(c.path("cache"))
  entry = c.path("cache", entry)
  pb = os.path.join(entry, "harmonise", "saved_model.pb")
  with open(pb, "rb") as f:
    good = f.read()
  with open(pb, "wb") as f:
    f.write(good[:len(good) // 3])  # a truncated write
  second = c.path("second.png")
  expect(c.run("tfharm.harmonise", f"--input={EX}", f"--output={second}", env=env), 0,
         f"the cached model {entry} cannot be loaded", f"cached the model in {entry}")
  check(digest(first) == digest(second), "harmonise: the rebuilt model's output differs")
  expect(c.run("tfharm.harmonise", f"--input={EX}", f"--output={c.path('third.png')}", env=env),
         0, "model from the cache")


def c10_over_179_mp(c: Case):
  """An image over ~179 MP raised DecompressionBombError and stopped the folder run."""
  src = c.path("src")
  copies(src, 1, "a_small.png")
  write(os.path.join(src, "b_huge.png"), np.zeros((13500, 13500), np.uint8))  # 182 MP
  copies(src, 1, "c_small.png")
  ran = c.run("tfharm.harmonise", f"--input={src}", f"--output={c.path('out')}")
  expect(ran, 1, "b_huge.png: ", "megapixels (Pillow's limit)", "'too_large': 1")
  check(sorted(os.listdir(c.path("out"))) == ["a_small.png", "c_small.png"],
        "harmonise: the images around the huge one were not both written")


def c11_nan_inf_mask(c: Case):
  """A NaN or inf float mask crashed at int(mask.max())."""
  for bad in (np.nan, np.inf):
    mask = np.where(region(), 0.5, 0.0).astype(np.float32)
    mask[100:110, 100:110] = bad
    path = write(c.path(f"mask_{bad}.tiff"), mask)
    out = c.path(f"out_{bad}.png")
    expect(c.run("tfharm.harmonise", f"--input={EX}", f"--mask={path}", f"--output={out}"), 1,
           "mask has 100 NaN or infinite value(s)", "'bad_mask': 1")
    check(not os.path.exists(out), "harmonise wrote an output for a NaN mask")


def c12_lpips_fifo(c: Case):
  """`tfharm.metrics.lpips` waited forever on a FIFO."""
  a, b = c.path("A"), c.path("B")
  copies(a, 1, "good.png")
  copies(b, 2, "{}.png")
  os.rename(os.path.join(b, "0.png"), os.path.join(b, "good.png"))
  os.rename(os.path.join(b, "1.png"), os.path.join(b, "pipe.png"))
  os.mkfifo(os.path.join(a, "pipe.png"))
  expect(c.run("tfharm.metrics.lpips", a, b), 1, "'not_a_file': 1",
         "pipe.png: a FIFO (named pipe), not a regular file")
  expect(c.run("tfharm.metrics.lpips", os.path.join(b, "pipe.png"), os.path.join(a, "pipe.png")),
         1, "pipe.png: a FIFO (named pipe), not a regular file")


def c13_wrong_weights(c: Case):
  """--joint_weights=<the harmoniser's file> gave up to 209 lines."""
  out = c.path("out.png")
  ran = expect(c.run("tfharm.harmonise", f"--input={EX}", f"--output={out}",
                     f"--joint_weights={HARMONISER}"), 2)
  one_error_line(ran, f"error: --joint_weights {HARMONISER}: cannot be loaded as the joint model")
  garbage = c.path("garbage.keras")
  with open(garbage, "wb") as f:
    f.write(np.random.default_rng(0).bytes(3000))
  ran = expect(c.run("tfharm.harmonise", f"--input={EX}", f"--output={out}",
                     f"--joint_weights={garbage}"), 2)
  one_error_line(ran, f"error: --joint_weights {garbage}: cannot be loaded")
  check(not os.path.exists(out), "harmonise wrote an output with unusable weights")


def _page_folders(c: Case) -> list[str]:
  return [n for n in os.listdir(c.tmp) if n.startswith("tfharm-app-")]


def c14_page_busy_port(c: Case):
  """The page on a busy port crashed after ~20 s of model loading and leaked its folder."""
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    busy_run = c.run("tfharm.app", f"--port={port}")
  one_error_line(expect(busy_run, 2), f"error: --port {port} on 127.0.0.1: cannot listen there "
                                      "(address already in use)")
  expect(c.run("tfharm.app", "--port=70000"), 2, "error: flag --port=70000")
  check(_page_folders(c) == [], f"app: left {_page_folders(c)}")
  return f"busy port refused in {busy_run.seconds:.1f} s"


def c15_export_full_disk(c: Case):
  """A full disk during export raised ResourceExhaustedError (the old version survived)."""
  with tmpfs(c.path("disk"), "size=200m,nr_inodes=40", "tests/export_test.py::test_a_full_"
             "disk_during_the_export_is_one_line_and_keeps_the_old_version") as disk:
    base = os.path.join(disk, "models")
    expect(c.run("tfharm.export", f"--output_dir={base}"), 0)
    fill_inodes(os.path.join(disk, "filler"), leave=3)  # room for the checks' probe only
    with must_survive(os.path.join(base, "1")):
      for extra in (["--version=1", "--overwrite"], []):
        expect(c.run("tfharm.export", f"--output_dir={base}", *extra), 2,
               f"error: --output_dir {base}: no space left on the device while writing the "
               "SavedModel; the existing versions are unchanged")
        check(sorted(os.listdir(base)) == ["1"], f"export: left {sorted(os.listdir(base))}")


def c16_eval_full_disk(c: Case):
  """A full disk while eval writes its results raised OSError (ENOSPC)."""
  data_dir = demo_build()
  with tmpfs(c.path("disk"), "size=50m,nr_inodes=64", "tests/eval_test.py::test_a_full_disk_"
             "while_writing_is_a_setup_error_and_keeps_the_old_results") as disk:
    out = os.path.join(disk, "eval")
    expect(c.run("tfharm.eval", *eval_args(data_dir, out)), 0)
    listing = sorted(os.listdir(out))
    fill_inodes(os.path.join(disk, "filler"), leave=4)  # the check's probe, staging, 2 files
    with must_survive(out):
      expect(c.run("tfharm.eval", *eval_args(data_dir, out, "--overwrite")), 2,
             f"error: --output_dir {out}: no space left on the device while writing the "
             "results; the previous results are unchanged")
    check(sorted(os.listdir(out)) == listing, f"eval: left {sorted(os.listdir(out))}")


def c17_corrupt_tfrecord(c: Case):
  """A corrupted TFRecord raised DataLossError in eval."""
  damaged = c.path("tfds")
  shutil.copytree(demo_build(), damaged)
  folder = os.path.join(damaged, "luminance_composites", "256")
  (record,) = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names
               if n.startswith("luminance_composites-test.tfrecord")]
  with open(record, "r+b") as f:
    f.seek(5000)
    f.write(b"\xff" * 64)
  out = c.path("eval")
  ran = expect(c.run("tfharm.eval", *eval_args(damaged, out)), 2,
               f"error: {record}: a damaged record")
  errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
  check(len(errors) == 1, f"eval: {len(errors)} error lines")
  check(not os.path.exists(out) or os.listdir(out) == [],
        "eval: wrote results from a damaged split")


def c18_data_build_contract(c: Case):
  """data.build: --help, flag and setup errors exited 1 with tracebacks; partial folders left."""
  expect(c.run("tfharm.data.build", "--help"), 0, "--manual_dir", where="stdout")
  expect(c.run("tfharm.data.build", "--no_such_flag=1"), 2, "error: Unknown command line flag")
  data_dir = c.path("tfds")
  one_error_line(expect(c.run("tfharm.data.build", f"--manual_dir={c.path('nope')}",
                              f"--data_dir={data_dir}"), 2, "does not exist"), "error: ")
  twin = shutil.copytree(DEMO_ROOT, c.path("twin"))  # the same photos in two roots
  expect(c.run("tfharm.data.build", f"--manual_dir={DEMO_ROOT},{twin}", f"--data_dir={data_dir}"),
         2, "occur in two roots")
  check(not os.path.exists(data_dir), f"data.build left {data_dir}")


def c19_export_killed_between_renames(c: Case):
  """After an export killed between its renames, a plain export refused "already exists"."""
  base = c.path("models")
  expect(c.run("tfharm.export", f"--output_dir={base}"), 0)
  old = os.path.join(base, f".old-1-{DEAD_PID}")
  os.rename(os.path.join(base, "1"), old)  # what `--version=1 --overwrite` killed there leaves
  os.makedirs(os.path.join(base, f".tmp-1-{DEAD_PID}"))
  version1 = digest(old)
  ran = expect(c.run("tfharm.export", f"--output_dir={base}"), 0)
  check(ran.stdout.strip() == os.path.join(base, "2"), f"export: wrote {ran.stdout.strip()}")
  check(sorted(os.listdir(base)) == ["1", "2"], f"export: left {sorted(os.listdir(base))}")
  check(digest(os.path.join(base, "1")) == version1, "data loss: version 1 was not put back")


def c20_long_names(c: Case):
  """Input names of >= ~230 characters failed (the temporary name added ~25)."""
  src = shutil.copy(EX, c.path("p" * 246 + ".png"))
  out = c.path("o" * 251 + ".png")
  expect(c.run("tfharm.harmonise", f"--input={src}", f"--output={out}"), 0)
  check(os.path.isfile(out), "harmonise: the long-named output is missing")
  a, b = c.path("A"), c.path("B")
  copies(a, 1, "x.png")
  copies(b, 1, "x.png")
  out = c.path("d" * 251 + ".txt")
  expect(c.run("tfharm.lpips", a, b, f"--output={out}"), 0)
  check(os.path.isfile(out), "lpips: the long-named --output is missing")


def c21_ctrl_c(c: Case):
  """Ctrl-C printed ~58-line tracebacks with no summary; the page ignored the first one."""
  src, out = c.path("src"), c.path("out")
  copies(src, 40)
  ran = c.run_interrupted(src, out, lambda proc: proc.send_signal(signal.SIGINT), grace=60)
  expect(ran, program.INTERRUPTED)
  check(re.fullmatch(r"interrupted \(Ctrl-C\): harmonised \d+ of 40 image\(s\) into .*",
                     ran.last_line()) is not None, f"harmonise: last line '{ran.last_line()}'")
  written = sorted(os.listdir(out))
  check(1 <= len(written) < 40 and all(read_rgb(os.path.join(out, n)).shape == photo().shape
                                       for n in written), f"harmonise: left {written[:5]}")
  stop = {}
  with page(c, stopped=stop):
    pass
  check(stop["seconds"] < 15, f"app: took {stop['seconds']:.0f} s to stop after Ctrl-C")
  check(_page_folders(c) == [], f"app: left {_page_folders(c)}")
  return f"{len(written)} of 40 done; page stopped in {stop['seconds']:.1f} s"


def c22_noise(c: Case):
  """Warnings: Keras' build() on the first run, eval's cache lines, TensorFlow's start-up lines
  (data.build, data.summary, the page), httpx's, Pillow's decompression-bomb warning (90-179
  MP). Not here: `tfharm.weights` converting (it downloads; tests/weights/weights_cli_test.py::
  test_converting_prints_no_tensorflow_start_up_lines)."""
  env = {"TFHARM_CACHE_DIR": c.path("cache")}  # a first, cache-filling run
  seen = {"harmonise (first run)": expect(c.run("tfharm.harmonise", f"--input={EX}",
                                                f"--output={c.path('out.png')}", env=env), 0)}
  data_dir = demo_build()
  seen["data.build"] = _SCRATCH["build"]
  seen["data.summary"] = expect(c.run("tfharm.data.summary", f"--data_dir={data_dir}"), 0)
  seen["eval"] = expect(c.run("tfharm.eval", *eval_args(data_dir, c.path("eval"))), 0)
  stop = {}
  with page(c, stopped=stop):
    pass
  seen["app"] = stop["ran"]
  # A 95 MP photo (between Pillow's two limits) is opened; its 1x1 mask is refused after.
  big = write(c.path("big.png"), np.zeros((9500, 10000), np.uint8))
  tiny = write(c.path("tiny.png"), np.zeros((1, 1), np.uint8))
  seen["harmonise (95 MP)"] = expect(
      c.run("tfharm.harmonise", f"--input={big}", f"--mask={tiny}",
            f"--output={c.path('big_out.png')}"), 1, "they must match")
  noisy = {name: noise(ran.stderr) for name, ran in seen.items()}
  check(not any(noisy.values()), "; ".join(f"{name}: {len(lines)} line(s), first '{lines[0]}'"
                                           for name, lines in noisy.items() if lines))
  return "none in " + ", ".join(seen)


def c23_other_formats(c: Case):
  """GIF, WebP, TIFF, APNG and BMP named .jpg/.png were processed silently (first frame)."""
  src = c.path("src")
  copies(src, 1, "good.png")
  rgb = photo()[:64, :64]
  frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
  expected = {"gif.jpg": "a GIF image named .jpg", "webp.jpg": "a WebP image named .jpg",
              "tiff.png": "a TIFF image named .png", "bmp.png": "a BMP image named .png",
              "apng.png": "an animated PNG (2 frames)"}
  for name, fmt in (("gif.jpg", "GIF"), ("webp.jpg", "WEBP"), ("tiff.png", "TIFF"),
                    ("bmp.png", "BMP")):
    frames[0].save(os.path.join(src, name), format=fmt)
  frames[0].save(os.path.join(src, "apng.png"), format="PNG", save_all=True,
                 append_images=frames[1:])
  ran = c.run("tfharm.harmonise", f"--input={src}", f"--output={c.path('out')}")
  expect(ran, 1, "'unsupported_format': 5", *[f"{n}: {m}" for n, m in expected.items()])
  check(os.listdir(c.path("out")) == ["good.png"], "harmonise: wrote another format's file")
  hdr = c.path("small.jpg")
  cv2.imwrite(c.path("small.hdr"), np.full((20, 30, 3), .5, np.float32))
  os.rename(c.path("small.hdr"), hdr)
  ran = expect(c.run("tfharm.harmonise", f"--input={hdr}", f"--output={c.path('hdr.png')}"), 1,
               "Radiance HDR")
  check("BytesIO" not in ran.stderr, "harmonise: a message shows a BytesIO repr")


def c24_export_free_space(c: Case):
  """Export asked 150 MB for an 11 MB export; setup errors left empty folders; nonexist/.."""
  written_to = c.path("nonexist", "..", "models")
  ran = expect(c.run("tfharm.export", f"--output_dir={written_to}"), 0)
  check(ran.stdout.strip() == c.path("models", "1"), f"export: printed {ran.stdout.strip()}")
  check(not os.path.exists(c.path("nonexist")), "export: made the stray folder nonexist/")
  written = sum(os.path.getsize(os.path.join(d, n))
                for d, _, names in os.walk(c.path("models", "1")) for n in names)
  garbage = c.path("garbage.keras")
  with open(garbage, "wb") as f:
    f.write(np.random.default_rng(0).bytes(3000))
  expect(c.run("tfharm.export", f"--output_dir={c.path('new', 'models')}",
               f"--joint_weights={garbage}"), 2, "cannot be loaded")
  check(not os.path.exists(c.path("new")), "export: a failed export left new/")
  # A disk with room for the weights but not for the export: the refusal says what is asked.
  size = (os.path.getsize(JOINT) + written) // 2 // 4096 * 4096
  try:
    with tmpfs(c.path("disk"), f"size={size}", "") as disk:
      ran = expect(c.run("tfharm.export", f"--output_dir={disk}/models"), 2, "MB needed")
      asked = float(re.search(r"about ([\d.]+) MB needed", ran.stderr).group(1)) * 1e6
      check(os.listdir(disk) == [], f"export: a refused export left {os.listdir(disk)}")
  except Skipped:
    return f"wrote {written / 1e6:.1f} MB (no tmpfs here to see what it asks)"
  check(written <= asked <= 2 * written, f"export: asked {asked / 1e6:.1f} MB for "
                                         f"{written / 1e6:.1f} MB")
  return f"asked {asked / 1e6:.1f} MB, wrote {written / 1e6:.1f} MB"


def c25_colour_mask(c: Case):
  """Colour masks were applied at their luminance (pure red at 30 %, blue at 11 %)."""
  inside = region()
  outs = {}
  for name, colour in (("white", (255, 255, 255)), ("red", (255, 0, 0)), ("blue", (0, 0, 255))):
    mask = np.zeros((*inside.shape, 3), np.uint8)
    mask[inside] = colour
    path = write(c.path(f"mask_{name}.png"), mask)
    outs[name] = c.path(f"out_{name}.png")
    ran = expect(c.run("tfharm.harmonise", f"--input={EX}", f"--mask={path}",
                       f"--output={outs[name]}"), 0)
    if name != "white":
      expect(ran, 0, "colour mask: each pixel counts as its largest channel")
  for name in ("red", "blue"):
    check(np.array_equal(read_rgb(outs[name]), read_rgb(outs["white"])),
          f"harmonise: a pure {name} mask does not harmonise as a white one")


def c26_vanished_and_too_small(c: Case):
  """A file that vanished mid-run was "not a readable JPEG or PNG"; LPIPS called a too-small
  pair "unreadable"."""
  src, out = c.path("src"), c.path("out")
  inputs = copies(src, 40)  # the last is removed once the first is written: far ahead of it
  # The last input is removed after the run listed it, before it reached it.
  ran = c.run_interrupted(src, out, lambda proc: os.remove(inputs[-1]), grace=_TIMEOUT.value)
  expect(ran, 1, "39.png: no such file any more", "'missing': 1")
  a, b = c.path("A"), c.path("B")
  tiny = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
  write(os.path.join(a, "tiny.png"), tiny)
  write(os.path.join(b, "tiny.png"), tiny)
  expect(c.run("tfharm.lpips", a, b), 1, "'too_small': 1", "smaller than LPIPS-alex's minimum")


CASES = [  # (number, short name, function)
    (1, "lpips --out=A/keep.png (an input)", c01_lpips_output_is_an_input),
    (2, "harmonise onto an existing file", c02_harmonise_replaces_existing),
    (3, "page: 108 MP HDR upload", c03_page_hdr_upload),
    (4, "page: --examples_dir=. (.git/config)", c04_page_examples_dir_dot),
    (5, "float mask 0.8 (CLI, page)", c05_float_mask_08),
    (6, "lpips: 16-bit grey vs 8-bit copy", c06_lpips_16_bit_grey),
    (7, "folder: broken link, loop, FIFO", c07_folder_odd_entries),
    (8, "eval --threshold=nan / 2", c08_eval_threshold),
    (9, "damaged harmonise cache entry", c09_damaged_cache),
    (10, "folder with a 182 MP image", c10_over_179_mp),
    (11, "NaN / inf float mask", c11_nan_inf_mask),
    (12, "lpips on a FIFO", c12_lpips_fifo),
    (13, "weights of another model, garbage", c13_wrong_weights),
    (14, "page: busy / invalid port", c14_page_busy_port),
    (15, "full disk during export", c15_export_full_disk),
    (16, "full disk during eval", c16_eval_full_disk),
    (17, "eval on a damaged TFRecord", c17_corrupt_tfrecord),
    (18, "data.build exit codes, no leftovers", c18_data_build_contract),
    (19, "export killed between its renames", c19_export_killed_between_renames),
    (20, "names of 250 characters", c20_long_names),
    (21, "Ctrl-C: harmonise folder, page", c21_ctrl_c),
    (22, "noise: warnings, start-up lines", c22_noise),
    (23, "GIF/WebP/TIFF/BMP/APNG as .jpg/.png", c23_other_formats),
    (24, "export free space, stray folders", c24_export_free_space),
    (25, "colour masks (red, blue)", c25_colour_mask),
    (26, "vanished input; lpips too small", c26_vanished_and_too_small),
]


def _selected() -> list:
  if not _ONLY.value:
    return CASES
  try:
    wanted = {int(n) for n in _ONLY.value}
  except ValueError:
    raise app.UsageError(f"--only takes case numbers, got {_ONLY.value}") from None
  unknown = wanted - {n for n, _, _ in CASES}
  if unknown:
    raise app.UsageError(f"--only: no case {sorted(unknown)} (cases 1-{len(CASES)})")
  return [case for case in CASES if case[0] in wanted]


NEEDS_BUILD = {8, 16, 17, 22}


def _row(number: str, name: str, function) -> str:
  """Runs one case in its own scratch folder and prints its row; returns the verdict."""
  case = Case(os.path.join(_SCRATCH["root"], f"case{number}"))
  start = time.monotonic()
  try:
    note = function(case)
    verdict = "ok" + (f" ({note})" if note else "")
  except Failed as e:
    verdict = f"FAIL: {e}"
  except Skipped as e:
    verdict = str(e)
  print(f"{number:>5}  {name:<38} {' '.join(case.rcs) or '-':<11} "
        f"{time.monotonic() - start:>6.1f}  {verdict}", flush=True)
  return verdict


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cases = _selected()
  _SCRATCH["root"] = os.path.realpath(tempfile.mkdtemp(prefix="tfharm-probe-"))
  os.makedirs(_shared("cache"))
  tested = subprocess.run([PYTHON, "-c", "import tfharm; print(tfharm.__file__)"],
                          cwd=_SCRATCH["root"], env=Case(_shared("check")).env,
                          capture_output=True, text=True).stdout.strip()
  if not tested.startswith(REPO + os.sep):
    raise program.SetupError(f"the commands would run the tfharm of {tested}, not {REPO}'s")
  print(f"tfharm of {REPO}; scratch {_SCRATCH['root']}", flush=True)
  print(f"{'case':>5}  {'name':<38} {'rc':<11} {'s':>6}  verdict", flush=True)
  start = time.monotonic()
  try:
    if NEEDS_BUILD & {number for number, _, _ in cases}:
      _row("setup", "demo build for eval (data.build)", build_demo)
    verdicts = [_row(str(number), name, function) for number, name, function in cases]
  finally:
    if _KEEP.value:
      print(f"scratch folder kept: {_SCRATCH['root']}")
    else:
      shutil.rmtree(_SCRATCH["root"], ignore_errors=True)
  ok = sum(v.startswith("ok") for v in verdicts)
  failed = sum(v.startswith("FAIL") for v in verdicts)
  print(f"{ok} of {len(verdicts)} case(s) ok, {failed} failed, {len(verdicts) - ok - failed} "
        f"not run here (covered by tests); {time.monotonic() - start:.0f} s")
  return program.SUCCESS if ok == len(verdicts) else 1


if __name__ == "__main__":
  program.run(main)
