"""Folders of generated datasets (``digit_scenes``, ``pose_scenes``): written whole or not at all.

A generator writes into a temporary folder beside ``root`` that is renamed over it at the end
(``hrnet_jax.atomic``); an existing ``root`` is replaced only when it is empty or a set of the
same generator (its manifest names it), and the temporary folders of killed writers (holding
nothing but the generator's entries) are removed first.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
from typing import Iterator

from hrnet_jax import atomic
from hrnet_jax.errors import BadInputError


def is_generated(path: pathlib.Path, manifest: str, generator: str) -> bool:
  """Whether ``path`` holds a set written by ``generator`` (its ``manifest`` JSON says so)."""
  try:
    return json.loads((path / manifest).read_text()).get('generator') == generator
  except (OSError, ValueError, AttributeError):
    return False


@contextlib.contextmanager
def writing(
  root: str | os.PathLike, *, manifest: str, generator: str, entries: tuple[str, ...], what: str
) -> Iterator[pathlib.Path]:
  """Yields the temporary folder to write the set into; renames it over ``root`` when the block
  ends, removes it when the block raises. Raises ``BadInputError`` (before anything is
  written) for a ``root`` that exists and is neither empty nor ``what`` (e.g. ``'a digit
  scenes dataset'``), and ``atomic``'s errors for a folder that may not be written."""
  out = atomic.resolve_output(root)
  atomic.refuse_unsafe_output(out, root, protect=(), noun='dataset')
  if out.exists() and not (
    out.is_dir() and (not any(out.iterdir()) or is_generated(out, manifest, generator))
  ):
    raise BadInputError(f'{root}: exists and is not {what}; choose a new folder')
  out.parent.mkdir(parents=True, exist_ok=True)
  atomic.recover_leftovers(
    out, ours=lambda p: p.is_dir() and {q.name for q in p.iterdir()} <= set(entries)
  )
  tmp = atomic.temp_dir(out)
  try:
    yield tmp
    atomic.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
