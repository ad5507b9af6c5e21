"""One error policy for every hrnet-jax command-line tool.

An expected failure prints exactly one ``PROG: error: ...`` line naming the file, key, flag or
path at fault (an optional indented detail block may follow, e.g. a key report), no traceback
unless ``--verbose`` is given or ``HRNET_JAX_VERBOSE=1`` is set. Exit codes:

======  ==================================================================
0       ok
1       runtime / environment failure (disk full, permission, NaN loss, ...)
2       bad input or usage (missing file, bad flag, corrupt checkpoint, ...)
130     interrupted (Ctrl-C)
143     terminated by SIGTERM, after cleaning up (``hrnet-train``: after saving a checkpoint)
======  ==================================================================

Library code raises :class:`BadInputError` / :class:`EnvironmentFailure` (or the built-in
``FileNotFoundError`` / ``ValueError`` / ``OSError``, classified by :func:`exit_code`); each CLI
wraps its body in ``hrnet_jax.cli.policy.run_cli``, and ``hrnet_jax.interrupts`` turns SIGINT /
SIGTERM into ``KeyboardInterrupt`` / :class:`Terminated`.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from typing import Sequence

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_PREEMPTED = 143

VERBOSE_ENV = 'HRNET_JAX_VERBOSE'

# OS errors that say the environment failed, not that the user pointed at the wrong thing.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS})


class BadInputError(ValueError):
  """Bad input or usage (exit 2). The message names the file, key, flag or path at fault."""

  exit_code = EXIT_BAD_INPUT


class EnvironmentFailure(RuntimeError):
  """The environment failed (exit 1): disk full, permission, non-finite training loss, ..."""

  exit_code = EXIT_RUNTIME


class Terminated(BaseException):
  """SIGTERM arrived (see ``hrnet_jax.interrupts``); like ``KeyboardInterrupt``, it unwinds the
  stack so that ``finally`` blocks remove temporary files. Exit code 143."""

  exit_code = EXIT_PREEMPTED


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
  """``--verbose`` in ``argv`` (default ``sys.argv``) or ``HRNET_JAX_VERBOSE`` set non-empty
  and not ``0``."""
  argv = sys.argv[1:] if argv is None else argv
  return '--verbose' in argv or os.environ.get(VERBOSE_ENV, '') not in ('', '0')


def exit_code(exc: BaseException) -> int:
  """The exit code of an expected failure ``exc``: 1 environment, 2 bad input."""
  code = getattr(exc, 'exit_code', None)
  if code is not None:
    return code
  if isinstance(exc, OSError) and (
    exc.errno in _ENVIRONMENT_ERRNOS or isinstance(exc, PermissionError)
  ):
    return EXIT_RUNTIME
  return EXIT_BAD_INPUT


def describe(exc: BaseException) -> str:
  """A one-line(+detail) message: ``OSError`` as ``PATH: strerror``, else ``str(exc)``."""
  if isinstance(exc, OSError) and exc.strerror:  # raised by the OS: name the path
    return f'{exc.filename}: {exc.strerror}' if exc.filename is not None else exc.strerror
  return str(exc) or type(exc).__name__


# What C++ bindings append to a message that tells a user nothing: TensorStore's spec dumps (a
# bound method's repr, a JSON spec) and pybind11's casting errors and C++ type names.
_BINDING_NOISE = (
  re.compile(r'\s*See full TensorStore details:.*'),
  re.compile(r'\s*\[tensorstore_spec(\[\d+\])?=.*'),
  re.compile(r'\s*Unable to cast (Python instance|from non-held to held instance).*'),
  re.compile(r'\s*<[^<>]*pybind11[^<>]*>?'),
  re.compile(r'\S*pybind11_\w+\S*'),
)


def library_reason(exc: BaseException) -> str:
  """``TYPE: first line`` of the innermost exception of ``exc``'s chain (``__cause__`` /
  ``__context__``) that still says something once the bindings' noise is removed: the reason a
  library call (Orbax, TensorStore) failed, for a one-line message that names the file at fault
  itself."""
  chain = []
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    chain.append(exc)
    exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
  for e in reversed(chain):
    text = str(e).strip().splitlines()[0] if str(e).strip() else ''
    for pattern in _BINDING_NOISE:
      text = pattern.sub('', text)
    text = text.strip().rstrip('.')
    if text:
      return f'{type(e).__name__}: {text}'
  return type(chain[0]).__name__
