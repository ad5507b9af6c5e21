"""Input files checked before the first step: ``find_unreadable(paths, check, kind=...)`` runs
``check(path)`` on every file in parallel threads (a tqdm bar on a terminal) and returns the
reason of each one that fails, so that a bad file is named before training starts instead of
surfacing as a TensorFlow traceback in the middle of an epoch.

Successes are cached by ``(absolute path, size, mtime_ns, kind)``: a rerun checks only new or
changed files. Cache folder, first match wins:

1. ``HRNET_JAX_VERIFY_CACHE``: a path, or ``off`` / ``0`` / ``none`` / ``''`` to disable;
2. ``$XDG_CACHE_HOME/hrnet_jax/verify`` (default ``~/.cache/hrnet_jax/verify``), as
   ``hrnet_jax.runtime.compile_cache``.

One JSON file per ``kind`` and folder of checked files (``{name: [size, mtime_ns]}``), so a run
reads only the entries of its folders and rewrites only those that changed; written
atomically. A cache that is missing, damaged or cannot be written is ignored (the files are
then checked again).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import pathlib
from typing import Callable, Sequence

from tqdm import tqdm

from hrnet_jax import atomic
from hrnet_jax.runtime import compile_cache

log = logging.getLogger(__name__)

ENV = 'HRNET_JAX_VERIFY_CACHE'
CACHE_VERSION = 1
# Files per thread-pool task: one future per file would cost ~1 GB for ImageNet's 1.28M files.
CHUNK = 64
# Below this many files checking takes about a second: a bar would only flash.
PROGRESS_MIN_FILES = 1000


def cache_dir(environ: dict | None = None) -> str | None:
  """The cache folder the rules above select (absolute), or ``None`` when disabled. Pure."""
  return compile_cache.user_cache_dir(ENV, 'verify', environ)


def _cache_file(cache: str, kind: str, folder: str) -> str:
  digest = hashlib.sha256(f'{kind}\0{folder}'.encode()).hexdigest()[:24]
  return os.path.join(cache, f'{digest}.json')


def _load(path: str, kind: str, folder: str) -> dict[str, list[int]]:
  """``{file name: [size, mtime_ns]}`` of the cached successes in ``folder``; ``{}`` for a
  missing or damaged file (never an error: the files are checked again)."""
  try:
    with open(path) as f:
      data = json.load(f)
    if (data['version'], data['kind'], data['folder']) != (CACHE_VERSION, kind, folder):
      return {}
    return {k: v for k, v in data['ok'].items() if isinstance(v, list) and len(v) == 2}
  except (OSError, ValueError, TypeError, KeyError, AttributeError):
    return {}


def _save(path: str, kind: str, folder: str, ok: dict[str, list[int]]) -> None:
  text = json.dumps({'version': CACHE_VERSION, 'kind': kind, 'folder': folder, 'ok': ok})
  try:
    atomic.write_file(path, lambda tmp: pathlib.Path(tmp).write_text(text))
  except OSError as e:  # a read-only or full cache folder only costs the next run a re-check
    log.debug('verification cache %s not written: %s', path, e)


def _reason(e: Exception) -> str:
  return ' '.join(str(e).split()) or type(e).__name__


def find_unreadable(
  paths: Sequence[str],
  check: Callable[[str], None],
  *,
  kind: str,
  desc: str = 'checking images',
) -> dict[str, str]:
  """``{path: reason}`` for every path of ``paths`` where ``check(path)`` raises (or that cannot
  be ``stat``-ed), in the order of ``paths``; the reason is the exception's message on one line.

  ``check`` runs in parallel threads (it should release the GIL, as TensorFlow and PIL decoders
  do), behind a tqdm bar titled ``desc`` (shown on a terminal, for ``PROGRESS_MIN_FILES`` files
  or more). Successes are cached (module docstring) by absolute path, size, ``st_mtime_ns`` and
  ``kind``, which names what ``check`` verifies (``'image-tf'``): a file passes from the cache
  only for the same ``kind``, so two checks of one file never share an entry. Failures are not
  cached. Ctrl-C cancels the pending checks.
  """
  absolute = [os.path.abspath(p) for p in paths]
  by_folder: dict[str, list[str]] = {}
  for p in absolute:
    by_folder.setdefault(os.path.dirname(p), []).append(p)
  cache = cache_dir()
  loaded = {d: _load(_cache_file(cache, kind, d), kind, d) for d in by_folder} if cache else {}
  cached = {os.path.join(d, name): key for d, ok in loaded.items() for name, key in ok.items()}
  passed: dict[str, list[int]] = {}
  failed: dict[str, str] = {}

  def run(chunk: Sequence[int]) -> list[tuple[int, list[int] | None, str | None]]:
    out = []
    for i in chunk:
      try:
        st = os.stat(absolute[i])
        key = [st.st_size, st.st_mtime_ns]
        if cached.get(absolute[i]) != key:
          check(paths[i])
        out.append((i, key, None))
      except Exception as e:  # any failure of check is a reason to report, not a crash
        out.append((i, None, _reason(e)))
    return out

  chunks = [range(i, min(i + CHUNK, len(paths))) for i in range(0, len(paths), CHUNK)]
  bar = tqdm(
    total=len(paths),
    desc=desc,
    unit='file',
    leave=False,
    disable=None if len(paths) >= PROGRESS_MIN_FILES else True,  # None: off when not a tty
  )
  pool = concurrent.futures.ThreadPoolExecutor()
  try:
    for future in concurrent.futures.as_completed([pool.submit(run, c) for c in chunks]):
      results = future.result()
      for i, key, reason in results:
        if reason is None:
          passed[absolute[i]] = key
        else:
          failed[paths[i]] = reason
      bar.update(len(results))
  finally:
    pool.shutdown(wait=True, cancel_futures=True)  # running chunks finish; queued ones do not
    bar.close()
  for d, ok in loaded.items():
    if any(cached.get(p) != passed.get(p) for p in by_folder[d]):
      for p in by_folder[d]:
        if p in passed:
          ok[os.path.basename(p)] = passed[p]
        else:
          ok.pop(os.path.basename(p), None)
      _save(_cache_file(cache, kind, d), kind, d, ok)
  return {p: failed[p] for p in paths if p in failed}
