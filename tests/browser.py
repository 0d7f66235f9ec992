"""The page driven in headless Chromium, as a person would use it: for the browser test, the
bench and the docs screenshot (Selenium; Debian's chromium and chromium-driver, `make browser`).

  with Server() as server, Page(server.url, download_dir) as page:
    page.upload_photo("photo.png")
    page.harmonise()
    path = page.download("_harmonised.png")

Chromium resolves every host name but 127.0.0.1 to nothing, so the page can reach nothing
outside this machine; `outside_requests` lists any request it tried anyway.
"""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

CHROMIUM = os.environ.get("TFHARM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TFHARM_CHROMEDRIVER", "/usr/bin/chromedriver")
READY = "serving on "  # the line tfharm.app prints when the page is up


def missing_browser() -> str | None:
  """None if Chromium, its driver and Selenium are here, else what is missing."""
  missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
  try:
    import selenium  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    missing.append("the selenium package")
  return ", ".join(missing) + " (make browser)" if missing else None


class Server:
  """`python -m tfharm.app --port=0 [flags]` in a child process, until stop()."""

  def __init__(self, flags: tuple[str, ...] = (), timeout: float = 900.0, cwd: str | None = None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    self.started = time.perf_counter()
    self.proc = subprocess.Popen([sys.executable, "-m", "tfharm.app", "--port=0", *flags],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env, cwd=cwd)
    self.log: list[str] = []
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=self._read, args=(lines,), daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
      try:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        self.stop()
        raise TimeoutError(f"the app did not start in {timeout:.0f} s:\n{self.output()}") from None
      if line is None:
        raise RuntimeError(f"the app exited with {self.proc.wait()}:\n{self.output()}")
      if line.startswith(READY):
        self.url = line[len(READY):].strip()
        self.startup_seconds = time.perf_counter() - self.started
        return

  def _read(self, lines: queue.Queue) -> None:
    for line in self.proc.stdout:
      self.log.append(line)
      lines.put(line)
    lines.put(None)

  def output(self, last: int = 60) -> str:
    return "".join(self.log[-last:])

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


class Page:
  """One headless Chromium window on the page; downloads go to download_dir."""

  def __init__(self, url: str, download_dir: str, width: int = 1400, height: int = 1000,
               timeout: float = 180.0):
    from selenium import webdriver  # pylint: disable=g-import-not-at-top
    from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
    from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
    os.makedirs(download_dir, exist_ok=True)
    self.download_dir = os.path.abspath(download_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-background-networking",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
      options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": self.download_dir,
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    self.timeout = timeout
    self.wait = WebDriverWait(self.driver, timeout, poll_frequency=0.1)
    self._urls: set[str] = set()
    self.driver.get(url)
    self.wait.until(lambda d: self._all("#run"))

  def _all(self, css: str):
    from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
    return self.driver.find_elements(By.CSS_SELECTOR, css)

  def _one(self, css: str):
    self.wait.until(lambda d: self._all(css))
    return self._all(css)[0]

  def upload_photo(self, path: str) -> None:
    self._upload("photo", path)

  def upload_mask(self, path: str) -> None:
    self._upload("mask", path)

  def _upload(self, elem_id: str, path: str) -> None:
    self._one(f"#{elem_id} input[type=file]").send_keys(os.path.abspath(path))
    self.wait.until(lambda d: self._all(f"#{elem_id} img"))  # uploaded and shown

  def load_example(self, index: int) -> None:
    self._all("#examples button.gallery-item")[index].click()
    self.wait.until(lambda d: self._all("#photo img") and self._all("#mask img"))

  def choose(self, elem_id: str, label_start: str) -> None:
    """Clicks the radio button of `elem_id` whose label starts with label_start."""
    for label in self._all(f"#{elem_id} label"):
      if label.text.strip().startswith(label_start):
        label.click()
        return
    raise ValueError(f"no {label_start!r} in #{elem_id}")

  def summary(self) -> str:
    """The result's line ("Result N: ..."), without the progress timer shown meanwhile."""
    found = re.search(r"Result \d+:.*", self._one("#summary").text)
    return found.group(0) if found else ""

  def _results(self) -> int:
    found = re.match(r"Result (\d+):", self.summary())
    return int(found.group(1)) if found else 0

  def errors(self) -> list[str]:
    """The error messages the page shows (Gradio's toasts group them), oldest first; read from
    the DOM, so also while a toast is still fading in."""
    return [t.get_attribute("textContent").strip()
            for t in self._all(".toast-message-text.error")]

  def harmonise(self) -> float:
    """Clicks Harmonise; waits for the next result (numbered in the summary) or a new error
    message. Returns the seconds from the click."""
    results, errors = self._results(), len(self.errors())
    start = time.perf_counter()
    self._one("#run").click()
    self.wait.until(lambda d: self._results() > results or len(self.errors()) > errors)
    if self._results() > results:  # the result's images are on the page too
      self.wait.until(lambda d: len(self._all("#compare img")) >= 2 and
                      self._all("#detection img") and self._all("#used_mask img"))
    return time.perf_counter() - start

  def download(self, suffix: str) -> str:
    """Clicks the download link whose file name ends with suffix; returns the file's path."""
    links = [a for a in self._all("#downloads a") if (a.get_attribute("download") or
                                                     "").endswith(suffix)]
    if not links:
      raise ValueError(f"no download ending in {suffix!r}")
    name = links[0].get_attribute("download")
    path = os.path.join(self.download_dir, name)
    if os.path.exists(path):
      os.remove(path)
    links[0].click()
    self.wait.until(lambda d: os.path.exists(path) and
                    not os.path.exists(path + ".crdownload"))
    return path

  def outside_requests(self) -> list[str]:
    """Every URL the page requested so far that is not on 127.0.0.1 (or inline data)."""
    for entry in self.driver.get_log("performance"):
      message = json.loads(entry["message"])["message"]
      if message["method"] == "Network.requestWillBeSent":
        self._urls.add(message["params"]["request"]["url"])
    return sorted(u for u in self._urls if not u.startswith(
        ("http://127.0.0.1:", "data:", "blob:", "about:")))

  def screenshot(self, path: str) -> None:
    """The whole page (the window grown to its height), top first."""
    height = self.driver.execute_script("return document.documentElement.scrollHeight")
    width = self.driver.get_window_size()["width"]
    self.driver.set_window_size(width, height + 120)
    self.driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    self.driver.save_screenshot(path)

  def close(self) -> None:
    self.driver.quit()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
