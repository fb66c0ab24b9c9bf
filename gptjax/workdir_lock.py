"""One training run per workdir: a second trainer started on the same directory would delete the
first's checkpoint in progress and interleave its metrics. The lock is an flock on
WORKDIR/.lock, which the kernel releases when its holder exits in any way (kill -9 included), so
a lock is never stale; the file keeps the holder's pid for the message."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from gptjax.files import file_in_the_way

LOCK_FILE = '.lock'


class WorkdirInUse(ValueError):
  """Another live process trains in this workdir."""


class WorkdirUnusable(ValueError):
  """The workdir is a file, under a file, or not writable."""


def _problem(workdir: Path, error: OSError) -> str:
  blocking = file_in_the_way(workdir)
  if blocking is not None:
    return f'{blocking} is a file, not a directory'
  return f'{error.strerror or error} ({error.filename})' if error.filename else str(error)


@contextlib.contextmanager
def hold(workdir: str | os.PathLike):
  """Holds the workdir's lock for the block; raises WorkdirInUse, naming the holder's pid, if
  another process holds it."""
  path = Path(workdir) / LOCK_FILE
  try:  # the first write into the workdir: where an unusable one is named, in one line
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirUnusable(f'cannot train in workdir {workdir}: {_problem(Path(workdir), e)}; '
                          'use a writable directory') from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown'
      raise WorkdirInUse(f'{workdir} is in use by another training run (pid {holder}); wait for '
                         'it to finish or stop it, or train into another workdir') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def is_held(workdir: str | os.PathLike) -> bool:
  """Whether a live process holds the workdir's lock now (False where there is no lock file)."""
  path = Path(workdir) / LOCK_FILE
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return False
  except BlockingIOError:
    return True
  finally:
    os.close(fd)
