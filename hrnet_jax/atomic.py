"""Every write that readers must see whole or not at all, and the storage errors around it.

``write_file(path, write)`` has ``write`` fill a temporary file beside ``path`` (same
filesystem), then renames it over ``path``; ``replace(src, dst)`` puts a finished file or folder
``src`` in place of ``dst``, the old ``dst`` moved aside (``.NAME.old-PID``) and removed only once
the new one is in place. On any failure, Ctrl-C included, the temporary file is removed and
``path`` is left as it was. Files get the usual permissions (``0o666`` minus the umask), not
``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import tempfile
from typing import Callable


def write_file(path: str | os.PathLike, write: Callable[[str], None]) -> pathlib.Path:
  """Atomically replaces ``path`` by what ``write(tmp_path)`` writes; creates the parent folder.
  Returns ``path``. Raises what ``write`` or the filesystem raises (``OSError``)."""
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{out.name}.', dir=out.parent)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    write(tmp)
    os.replace(tmp, out)
  except BaseException:
    os.unlink(tmp)
    raise
  return out


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


def storage_error(exc: BaseException, path: str) -> OSError | None:
  """The ``OSError`` behind a storage failure that TensorStore (Orbax's writer) reports as a
  ``ValueError`` status ('RESOURCE_EXHAUSTED: ... No space left'), naming ``path``; None for
  other errors."""
  text = str(exc)
  for marker, code in (
    ('No space left', errno.ENOSPC),
    ('RESOURCE_EXHAUSTED', errno.ENOSPC),
    ('Read-only file system', errno.EROFS),
    ('PERMISSION_DENIED', errno.EACCES),
  ):
    if marker in text:
      return OSError(code, os.strerror(code), path)
  return None


def ensure_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
  """``OSError(ENOSPC)`` naming ``folder`` unless its filesystem has ``needed`` bytes free: a
  write that would fill the disk is refused before it starts, instead of failing half-way
  inside TensorStore's threads."""
  existing = os.path.abspath(os.fspath(folder))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  free = shutil.disk_usage(existing).free
  if free < needed:
    raise OSError(
      errno.ENOSPC,
      f'{os.strerror(errno.ENOSPC)}: {what} needs '
      f'{needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB are free',
      os.fspath(folder),
    )
