"""Owning a training workdir: checked before anything is written, held by one run at a time, and
its small files replaced atomically.

The lock is ``WORKDIR/.hrnet-train.lock``, held with ``fcntl.flock`` by process 0 of a run for
its whole life: the kernel releases it when the process dies, however it dies, so a lock left by
a killed run is simply taken over (the file's pid/host record says whose it was). On a shared
filesystem flock needs NFSv4 / a POSIX-lock-capable mount, as Orbax's own multi-host saves do.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import pathlib
import socket
from typing import Any, Sequence

from hrnet_jax import atomic
from hrnet_jax.errors import BadInputError

log = logging.getLogger(__name__)

LOCK_FILE = '.hrnet-train.lock'


def check_workdir(workdir: str) -> str:
  """The absolute ``workdir``; ``BadInputError`` if it is a file or cannot be written (nothing
  is created here)."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise BadInputError(f'--workdir={workdir}: is a file, not a folder')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise BadInputError(
      f'--workdir={workdir}: cannot be written ({existing} is not a writable folder)'
    )
  return path


def read_json(path: str, what: str, *, required: Sequence[str] = ()) -> Any:
  """The JSON document in the file ``path`` (``what`` says what it is, e.g. "the run's config").

  Raises ``BadInputError`` naming ``path`` when it is not valid JSON (with the error's line and
  column: a file cut short by a kill or a full disk, or edited), or when ``required`` keys are
  given and it is not an object holding each; ``OSError`` when it cannot be read.
  """
  try:
    with open(path, encoding='utf-8') as f:
      doc = json.load(f)
  except json.JSONDecodeError as e:
    raise BadInputError(
      f'{path}: {what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): it was '
      'cut short or edited'
    ) from None
  except UnicodeDecodeError as e:
    raise BadInputError(f'{path}: {what} is not UTF-8 text (byte {e.start})') from None
  missing = [k for k in required if not isinstance(doc, dict) or k not in doc]
  if missing:
    keys = ', '.join(f'"{k}"' for k in missing)
    raise BadInputError(f'{path}: {what} has no {keys} entry')
  return doc


def write_text_atomic(path: str, text: str) -> None:
  """Replaces the file ``path`` by ``text`` at once (a temporary file beside it, renamed)."""
  atomic.write_file(path, lambda tmp: pathlib.Path(tmp).write_text(text))


def truncate_jsonl(path: str, last_step: int) -> int:
  """Drops the lines of the JSON-lines file ``path`` whose ``step`` is after ``last_step``
  (logged by a run that was stopped before its next checkpoint), atomically; returns how many."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      step = json.loads(line).get('step', 0)
    except (json.JSONDecodeError, AttributeError):  # a line cut by a kill: dropped
      continue
    if step <= last_step:
      kept.append(line if line.endswith('\n') else line + '\n')
  if len(kept) != len(lines):
    write_text_atomic(path, ''.join(kept))
  return len(lines) - len(kept)


class WorkdirLock:
  """Exclusive ownership of ``workdir`` (created if missing) while held.

  ``acquire`` raises ``BadInputError`` naming the workdir and the holder's pid and host when
  another live run holds it.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def acquire(self) -> 'WorkdirLock':
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise BadInputError(
        f'--workdir={self.workdir}: in use by another hrnet-train run (pid '
        f'{holder.get("pid", "?")} on {holder.get("host", "?")}, since '
        f'{holder.get("since", "?")}); wait for it to end or use another workdir'
      ) from None
    previous = _read_holder(fd)
    if previous:
      log.warning(
        '%s: took over the lock of an earlier run (pid %s on %s) that is no longer running',
        self.workdir,
        previous.get('pid'),
        previous.get('host'),
      )
    record = json.dumps(
      {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'since': datetime.datetime.now().isoformat(timespec='seconds'),
      }
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # an empty record: the run ended cleanly
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _read_holder(fd: int) -> dict:
  try:
    data = os.pread(fd, 4096, 0)
    return json.loads(data) if data.strip() else {}
  except (OSError, ValueError):
    return {}
