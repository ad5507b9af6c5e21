"""Writing a file so that readers see the old one or the whole new one, never a part.

``write_file(path, write)`` has ``write`` fill a temporary file beside ``path`` (same
filesystem), then renames it over ``path``; on any failure, Ctrl-C included, the temporary file
is removed and ``path`` is left as it was. The file gets the usual permissions (``0o666`` minus
the umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import pathlib
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
