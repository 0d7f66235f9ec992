"""Input files, read so that nothing hangs and every failure names its real cause.

Only regular files are opened: a FIFO blocks its reader until a writer comes (forever, for a
FIFO with an image's name in a folder), and a device may never end. The type is checked with
`stat` before the open, and again on the open descriptor (opened non-blocking, so even a file
swapped for a FIFO in between cannot block). A file that cannot be read says why: gone since
the run listed it, a broken symbolic link or a loop, not a regular file (which kind), or the
system's reason (no permission, an I/O error). No TensorFlow.
"""
from __future__ import annotations

import errno
import os
import stat

# InputError.kind: the callers' skip counters use it as the reason.
MISSING, BROKEN_LINK, NOT_A_FILE, UNREADABLE = "missing", "broken_link", "not_a_file", "unreadable"
_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class InputError(OSError):
  """An input file that cannot be read; `kind` is one of the four kinds above."""

  def __init__(self, kind: str, message: str):
    super().__init__(message)
    self.kind = kind

  def __str__(self) -> str:
    return self.args[0]


def _not_regular(path: str, mode: int) -> InputError:
  what = next((name for test, name in _TYPES if test(mode)), "not a file")
  return InputError(NOT_A_FILE, f"{path}: {what}, not a regular file")


def _error(path: str, e: OSError) -> InputError:
  """The real cause of a failed stat or open of `path`."""
  if e.errno == errno.ELOOP:
    return InputError(BROKEN_LINK, f"{path}: a symbolic link loop")
  if e.errno == errno.ENOENT:
    if os.path.islink(path):
      return InputError(BROKEN_LINK, f"{path}: a broken symbolic link (to {os.readlink(path)})")
    return InputError(MISSING, f"{path}: no such file any more (removed after the run started?)")
  return InputError(UNREADABLE, f"{path}: cannot read it ({e.strerror})")


def check(path: str) -> None:
  """InputError unless `path` is (or links to) a regular file; nothing is opened."""
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    raise _error(path, e) from None
  if not stat.S_ISREG(mode):
    raise _not_regular(path, mode)


def read_bytes(path: str) -> bytes:
  """The whole content of the regular file `path` (b"" if empty); InputError otherwise."""
  check(path)
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
  except OSError as e:
    raise _error(path, e) from None
  try:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped since check()
      raise _not_regular(path, mode)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
      fd = None
      return f.read()
  except InputError:
    raise
  except OSError as e:
    raise InputError(UNREADABLE, f"{path}: cannot read it ({e.strerror or e})") from None
  finally:
    if fd is not None:
      os.close(fd)
