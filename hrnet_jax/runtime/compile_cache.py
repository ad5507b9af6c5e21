"""JAX's persistent compilation cache for the command-line tools.

``hrnet-train``, ``hrnet-eval`` and ``hrnet-predict`` call :func:`enable` before their first
``jax.jit``: compiled XLA executables are then written to a folder and reused by the next process
that compiles the same program (same model, shapes, shardings, compiler options, jax/jaxlib and
device), so a resumed or repeated run skips XLA compilation. JAX keys each entry by a hash of
all of these, so a stale entry is never used for a different program.

Directory, first match wins:

1. ``HRNET_JAX_COMPILATION_CACHE``: a path, or ``off`` / ``0`` / ``none`` / ``''`` to disable;
2. ``JAX_COMPILATION_CACHE_DIR`` (JAX's own variable): left to JAX as it is;
3. ``$XDG_CACHE_HOME/hrnet_jax/jax`` (default ``~/.cache/hrnet_jax/jax``).

Mirrors ``jax.experimental.compilation_cache`` usage documented in JAX's "Persistent
compilation cache" guide (``jax_compilation_cache_dir``,
``jax_persistent_cache_min_compile_time_secs``, ``jax_persistent_cache_min_entry_size_bytes``).
"""

from __future__ import annotations

import os

import jax

ENV = 'HRNET_JAX_COMPILATION_CACHE'
JAX_ENV = 'JAX_COMPILATION_CACHE_DIR'
_OFF = frozenset({'', '0', 'off', 'none', 'false', 'no'})
# Programs that compile faster than this are not worth a disk write (JAX's default is 1 s).
MIN_COMPILE_SECS = 0.5


def default_dir(name: str = 'jax', environ: dict | None = None) -> str:
  """``$XDG_CACHE_HOME/hrnet_jax/<name>``, or ``~/.cache/hrnet_jax/<name>`` when it is unset."""
  environ = os.environ if environ is None else environ
  base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'hrnet_jax', name)


def user_cache_dir(env: str, name: str, environ: dict | None = None) -> str | None:
  """A cache folder of this library: ``environ[env]`` when set (a path, ``~`` expanded; ``off``
  / ``0`` / ``none`` / ``''`` disable it: None), else ``default_dir(name)``. Pure: reads
  ``environ`` (default ``os.environ``), touches nothing. Also the rule of the training data
  verification cache (``hrnet_jax.train.data.verify``)."""
  environ = os.environ if environ is None else environ
  if env in environ:
    value = environ[env].strip()
    return None if value.lower() in _OFF else os.path.abspath(os.path.expanduser(value))
  return default_dir(name, environ)


def resolve_dir(environ: dict | None = None) -> str | None:
  """The cache folder the rules above select (absolute, ``~`` expanded), or ``None`` when the
  cache is disabled. Pure: reads ``environ`` (default ``os.environ``), touches nothing."""
  environ = os.environ if environ is None else environ
  if ENV not in environ and environ.get(JAX_ENV):
    return os.path.abspath(os.path.expanduser(environ[JAX_ENV]))
  return user_cache_dir(ENV, 'jax', environ)


def enable(environ: dict | None = None) -> str | None:
  """Turns the persistent compilation cache on in this process (before the first compile) and
  returns its folder, or ``None`` if disabled. A folder that cannot be created is not an error
  of the tool: the cache stays off and JAX compiles as usual."""
  path = resolve_dir(environ)
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECS)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path
