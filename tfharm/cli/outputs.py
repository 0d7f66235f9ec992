"""Output locations, checked before any work starts: a command that cannot write its results
says so in a second, not after loading its models (or after hours of evaluation).

`check_directory` / `check_file` create what is missing, then write, flush to disk (fsync) and
remove a small probe file, and check the free space: a file in the way, a missing permission,
a read-only or a full file system each give a SetupError naming the flag, the path and the
reason. No TensorFlow.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile

from tfharm.cli.program import SetupError

MIN_FREE_BYTES = 1 << 20  # below this a file system counts as full


def pid_alive(pid: int) -> bool:
  """Whether a process with this id exists (temporaries named after a dead pid are stale)."""
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _reason(e: OSError) -> str:
  if e.errno in (errno.EACCES, errno.EPERM):
    return "permission denied"
  if e.errno == errno.EROFS:
    return "read-only file system"
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    return "no space left on the device"
  return e.strerror or str(e)


def _human(n: int) -> str:
  return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def check_directory(path: str, flag: str, need_bytes: int = 0, create: bool = True) -> str:
  """`path` is (or is made) a directory this process can write files into, with at least
  max(need_bytes, MIN_FREE_BYTES) free. Returns its absolute path; SetupError otherwise."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise SetupError(f"{flag} {path} is a file, not a directory")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise SetupError(f"{flag} {path}: {parent} is a file, not a directory")
  if create:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      raise SetupError(f"{flag} {path}: cannot create it ({_reason(e)})") from e
  probe_dir = path if os.path.isdir(path) else parent
  try:
    fd, probe = tempfile.mkstemp(prefix=".tfharm-probe-", dir=probe_dir)
  except OSError as e:
    raise SetupError(f"{flag} {path}: cannot write into {probe_dir} ({_reason(e)})") from e
  try:
    try:
      os.write(fd, b"\0" * 4096)
      os.fsync(fd)
    finally:
      os.close(fd)
  except OSError as e:
    raise SetupError(f"{flag} {path}: cannot write into {probe_dir} ({_reason(e)})") from e
  finally:
    try:
      os.remove(probe)
    except OSError:
      pass
  st = os.statvfs(probe_dir)
  free = st.f_bavail * st.f_frsize
  need = max(int(need_bytes), MIN_FREE_BYTES)
  if free < need:
    raise SetupError(f"{flag} {path}: only {_human(free)} free on its file system, about "
                     f"{_human(need)} needed")
  return path


def check_file(path: str, flag: str, need_bytes: int = 0) -> str:
  """`path` can be written (its directory as in check_directory; not a directory itself)."""
  path = os.path.abspath(path)
  if os.path.isdir(path):
    raise SetupError(f"{flag} {path} is a directory, not a file")
  check_directory(os.path.dirname(path), flag, need_bytes)
  return path


_DISK_FULL_MESSAGES = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or an error it was raised from, says the file system is full: an OSError
  with ENOSPC/EDQUOT, or TensorFlow's ResourceExhaustedError and the RuntimeError TFDS wraps
  it in, which carry only the message ("No space left on device")."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if any(m in str(error) for m in _DISK_FULL_MESSAGES):
      return True
    error = error.__cause__ or error.__context__
  return False


@contextlib.contextmanager
def removed_if_left_empty(path: str):
  """On an exception inside, removes the folders `path` needed that did not exist before (it
  and its missing parents), as far as they are empty: a command that fails after
  check_directory created its output folder leaves no empty folder behind."""
  path = os.path.abspath(path)
  created = []
  while not os.path.lexists(path):
    created.append(path)
    path = os.path.dirname(path)
  try:
    yield
  except BaseException:
    for folder in created:  # the deepest first
      try:
        os.rmdir(folder)
      except OSError:  # not empty (or already gone): keep it and what holds it
        if os.path.lexists(folder):
          break
    raise
