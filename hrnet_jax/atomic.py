"""Every write that readers must see whole or not at all, the one replace policy, and the
storage errors around it.

``write_file(path, write)`` has ``write`` fill a temporary file beside ``path`` (same
filesystem), then renames it over ``path``; ``replace(src, dst)`` puts a finished file or folder
``src`` in place of ``dst``, the old ``dst`` moved aside (``.NAME.old-PID``) and removed only once
the new one is in place. On any failure, Ctrl-C included, the temporary file is removed and
``path`` is left as it was. Files get the usual permissions (``0o666`` minus the umask), not
``mkstemp``'s private ``0o600``.

The replace policy every tool that writes follows: the output path is resolved (symlinks
included) before any check (``resolve_output``); the root, home and current folder (or an
ancestor of it) and any folder holding an input are never replaced (``refuse_unsafe_output``);
the tool replaces only what it recognises as its own; and the temporary (``.NAME.tmp-PID-*``,
``temp_dir``) and aside (``.NAME.old-PID``) entries of a killed writer are removed, or put back,
by the next run (``recover_leftovers``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import re
import shutil
import tempfile
import time
from typing import Callable, Iterable

from hrnet_jax import errors
from hrnet_jax.errors import BadInputError

log = logging.getLogger(__name__)


def write_file(
  path: str | os.PathLike,
  write: Callable[[str], None],
  *,
  size: int | None = None,
  what: str = 'the file',
) -> pathlib.Path:
  """Atomically replaces ``path`` by what ``write(tmp_path)`` writes; creates the parent folder.
  Returns ``path``. Raises what ``write`` or the filesystem raises (``OSError``).

  With ``size`` (about the bytes ``write`` writes; ``what`` names them), the free space is
  checked first (``ensure_free_space``) and a write that fails on a full disk, whatever the
  writer raised (``torch.save`` says only 'unexpected pos'), is an ``OSError(ENOSPC)`` naming
  the folder and the sizes."""
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  free = ensure_free_space(out.parent, size, what) if size is not None else None
  fd, tmp = tempfile.mkstemp(prefix=f'.{out.name}.', dir=out.parent)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    write(tmp)
    os.replace(tmp, out)
  except BaseException as e:
    full = None
    if size is not None and isinstance(e, Exception):
      full = write_error(e, out.parent, what=what, needed=size, free=free, written=tmp)
    os.unlink(tmp)
    if full is not None:
      raise full from None
    raise
  return out


def remove_settled(
  path: str | os.PathLike, *, settle_s: float = 0.2, timeout_s: float = 10
) -> None:
  """Removes the file or folder ``path`` a failed write left, and again whenever it reappears
  within ``settle_s``: the worker threads of a writer that failed (TensorStore's, still finishing
  after Orbax raised) go on creating files, parent folders included, for a moment."""
  deadline = time.monotonic() + timeout_s
  while os.path.lexists(path) and time.monotonic() < deadline:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    time.sleep(settle_s)


def aside_name(dst: str | os.PathLike) -> pathlib.Path:
  """Where ``replace`` keeps the old ``dst`` while the new one is renamed in."""
  dst = pathlib.Path(dst)
  return dst.with_name(f'.{dst.name}.old-{os.getpid()}')


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Renames the finished file or folder ``src`` (on ``dst``'s filesystem) to ``dst``. An
  existing ``dst`` is first moved aside (``aside_name``) and deleted once ``src`` is in place,
  so a killed process leaves the old or the new one under ``dst``, never a mix. The caller
  decides whether ``dst`` may be replaced."""
  old = None
  if os.path.lexists(dst):
    old = aside_name(dst)
    os.replace(dst, old)
  os.replace(src, dst)
  if old is not None:
    if old.is_dir() and not old.is_symlink():
      shutil.rmtree(old)
    else:
      old.unlink()


def resolve_output(path: str | os.PathLike) -> pathlib.Path:
  """The absolute, symlink-free path an output named ``path`` is written to: checks and the
  replace act on what a link points to, and a link is never removed in its place."""
  return pathlib.Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def temp_dir(out: pathlib.Path) -> pathlib.Path:
  """A new temporary folder beside ``out`` (same filesystem) that ``recover_leftovers`` knows by
  this process's pid."""
  return pathlib.Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-{os.getpid()}-', dir=out.parent))


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


def recover_leftovers(out: pathlib.Path, *, ours: Callable[[pathlib.Path], bool]) -> None:
  """Cleans up after writers of ``out`` that were killed (``temp_dir`` and ``aside_name``
  entries whose pid is gone): an old ``out`` moved aside but never replaced is put back; other
  entries for which ``ours(entry)`` holds are removed, the rest left in place with a warning.
  Live writers' entries are left."""
  if not out.parent.is_dir():
    return
  pattern = re.compile(rf'^\.{re.escape(out.name)}\.(tmp|old)-(\d+)(-.*)?$')
  for entry in sorted(out.parent.iterdir()):
    m = pattern.match(entry.name)
    if not m or entry.is_symlink() or _pid_alive(int(m.group(2))):
      continue
    if m.group(1) == 'old' and not os.path.lexists(out):
      entry.rename(out)
      kind = 'folder' if out.is_dir() else 'file'
      log.warning('%s: restored the previous %s, left aside by an interrupted run', out, kind)
    elif ours(entry):
      shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
      log.warning('%s: removed %s, left by an interrupted run', out, entry.name)
    else:
      log.warning(
        '%s: %s looks like a leftover of an interrupted run but holds other files; left in place',
        out,
        entry,
      )


def _is_within(path: pathlib.Path, folder: pathlib.Path) -> bool:
  try:
    path.relative_to(folder)
  except ValueError:
    return False
  return True


def refuse_unsafe_output(
  out: pathlib.Path, given: str | os.PathLike, *, protect: Iterable[str | os.PathLike], noun: str
) -> None:
  """``BadInputError`` naming ``given`` when the resolved output ``out`` exists and is the root,
  home or current folder or an ancestor of it, or when a ``protect`` path (an input) is ``out``
  or inside it. ``noun`` names what is written (``'checkpoint'``)."""
  if out.exists():
    cwd = pathlib.Path(os.path.realpath(os.getcwd()))
    special = {
      pathlib.Path('/'): 'the root folder',
      pathlib.Path(os.path.realpath(os.path.expanduser('~'))): 'the home folder',
    }
    if out in special or _is_within(cwd, out):
      what = special.get(out) or (
        'the current folder' if out == cwd else 'an ancestor of the current folder'
      )
      raise BadInputError(f'{given}: is {what}; write the {noun} to a new folder')
  for p in protect:
    p = resolve_output(p)
    if _is_within(p, out):
      raise BadInputError(
        f'{given}: the input {p} is inside the output folder; choose another output folder'
      )


# A write that failed for want of space or writability (not a missing or forbidden path).
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def _mib(n: int) -> str:
  return f'{n / 2**20:.0f} MiB'


def storage_error(
  exc: BaseException,
  path: str | os.PathLike,
  *,
  what: str | None = None,
  needed: int | None = None,
  free: int | None = None,
) -> OSError | None:
  """The ``OSError`` naming ``path`` (the folder written to) behind a storage failure: an
  ``OSError`` with a storage errno, or a library's error whose text says so (TensorStore, Orbax's
  writer, reports a full disk as a ``ValueError`` status 'RESOURCE_EXHAUSTED: ... No space left
  on device'; an out-of-memory status says nothing of the disk); None for other errors. A full
  disk's message says how much ``what`` needed and how much was ``free`` when the write began
  (``ensure_free_space``'s figures), when given."""
  code = exc.errno if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS else None
  text = str(exc)
  for marker, marker_code in (
    ('No space left', errno.ENOSPC),
    ('Disk quota exceeded', errno.EDQUOT),
    ('Read-only file system', errno.EROFS),
    ('PERMISSION_DENIED', errno.EACCES),
  ):
    if code is None and marker in text:
      code = marker_code
  if code is None:
    return None
  if code in (errno.ENOSPC, errno.EDQUOT) and what and needed is not None:
    return _no_space(path, what, needed, free, code)
  return OSError(code, os.strerror(code), os.fspath(path))


def size_bytes(path: str | os.PathLike) -> int:
  """Bytes of the file ``path``, or of every file under the folder ``path`` (0 if missing)."""
  if os.path.isdir(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  return os.path.getsize(path) if os.path.exists(path) else 0


def write_error(
  exc: BaseException,
  folder: str | os.PathLike,
  *,
  what: str,
  needed: int,
  free: int | None,
  written: str | os.PathLike,
) -> OSError | None:
  """``storage_error(exc, folder, ...)`` for a write of ``what`` (``needed`` bytes, ``free``
  bytes free when it began) into ``written`` (its temporary file or folder, still there), also
  when ``exc`` says nothing of the disk (``torch.save``: 'unexpected pos', TensorFlow's
  writers) but what was written plus the space left is less than ``needed``."""
  full = storage_error(exc, folder, what=what, needed=needed, free=free)
  if full is None and size_bytes(written) + shutil.disk_usage(folder).free < needed:
    full = _no_space(folder, what, needed, free)
  return full


def _no_space(
  folder: str | os.PathLike, what: str, needed: int, free: int | None, code: int = errno.ENOSPC
) -> OSError:
  """A write of ``what`` (``needed`` bytes) into ``folder`` that filled the disk, ``free`` bytes
  being free when it began."""
  message = f'{os.strerror(code)}: {what} needs {_mib(needed)}'
  if free is not None:
    message += f'; {_mib(free)} were free when writing began, and the disk filled before it ended'
  return OSError(code, message, os.fspath(folder))


def ensure_free_space(folder: str | os.PathLike, needed: int, what: str) -> int:
  """The bytes free on ``folder``'s filesystem; ``OSError(ENOSPC)`` naming ``folder`` unless
  ``needed`` of them are: a write that would fill the disk is refused before it starts, instead
  of failing half-way inside TensorStore's threads."""
  existing = os.path.abspath(os.fspath(folder))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  free = shutil.disk_usage(existing).free
  if free < needed:
    raise OSError(
      errno.ENOSPC,
      f'{os.strerror(errno.ENOSPC)}: {what} needs {_mib(needed)}, {_mib(free)} are free',
      os.fspath(folder),
    )
  return free


class _StorageFailureRecords(logging.Filter):
  """Drops the error records in which Orbax (through absl) and asyncio report, with tracebacks
  from their worker threads, a write that failed for a storage reason (``storage_error``): the
  failure reaches the caller as an exception, which reports it once. Kept with ``--verbose``
  (``errors.verbose_requested``)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or errors.verbose_requested():
      return True
    texts = [record.getMessage()]
    if record.exc_info and record.exc_info[1] is not None:
      texts.append(str(record.exc_info[1]))
    return not any(storage_error(RuntimeError(text), '') for text in texts)


def quiet_storage_failure_logs() -> None:
  """Installs ``_StorageFailureRecords`` on the loggers Orbax and asyncio write to (once)."""
  for name in ('absl', 'asyncio'):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _StorageFailureRecords) for f in logger.filters):
      logger.addFilter(_StorageFailureRecords())
