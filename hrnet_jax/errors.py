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
wraps its body in :func:`run_cli`.
"""

from __future__ import annotations

import contextlib
import dis
import errno
import functools
import os
import shutil
import signal
import sys
import threading
import traceback
from typing import Callable, Sequence

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_PREEMPTED = 143

VERBOSE_ENV = 'HRNET_JAX_VERBOSE'

# OS errors that say the environment failed, not that the user pointed at the wrong thing.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM,
                                 errno.EROFS})


class BadInputError(ValueError):
  """Bad input or usage (exit 2). The message names the file, key, flag or path at fault."""

  exit_code = EXIT_BAD_INPUT


class EnvironmentFailure(RuntimeError):
  """The environment failed (exit 1): disk full, permission, non-finite training loss, ..."""

  exit_code = EXIT_RUNTIME


class Terminated(BaseException):
  """SIGTERM arrived (see ``interrupts_raise``); like ``KeyboardInterrupt``, it unwinds the
  stack so that ``finally`` blocks remove temporary files. Exit code 143."""

  exit_code = EXIT_PREEMPTED


# Top-level modules whose code an interrupt may land in at any bytecode: none of it holds a lock
# outside a ``with`` block or swallows exceptions. Library code makes no such promise: a SIGTERM
# raised inside ``threading`` between a lock's acquire and its ``with`` left the lock held, and
# the conversion hung at exit joining the thread pool that waited for it; one raised in JAX's gc
# callback was printed and dropped, and the conversion went on.
_INTERRUPTIBLE = frozenset({'__main__', 'hrnet_jax', 'convert', 'train', 'benchmarks'})


def _in_own_code(frame) -> bool:
  return frame.f_globals.get('__name__', '').partition('.')[0] in _INTERRUPTIBLE


# Opcodes the compiler treats as unable to raise. CPython (seen on 3.11, reported for 3.13-3.15)
# can leave such an instruction out of the exception table even inside a ``try``, so an
# exception a trace function raises there skips every ``except`` / ``finally`` / ``with`` of the
# frame (python/cpython#148278; seen here as a ``try:`` line's NOP).
_CANNOT_RAISE = frozenset(dis.opmap[name] for name in
                          ('NOP', 'LOAD_CONST', 'LOAD_SMALL_INT', 'RETURN_CONST', 'POP_TOP')
                          if name in dis.opmap)


@functools.lru_cache(maxsize=256)
def _handled_offsets(code) -> tuple[range, ...]:
  return tuple(range(e.start, e.end)
               for e in getattr(dis.Bytecode(code), 'exception_entries', ()))


def _handlers_see_raise_at(frame) -> bool:
  """Whether an exception raised by a trace function at ``frame``'s next instruction reaches
  the ``except`` / ``finally`` blocks around it: the instruction has an exception-table entry,
  or it is one that can raise (then the compiler gave it every handler it has)."""
  offset = frame.f_lasti
  if any(offset in r for r in _handled_offsets(frame.f_code)):
    return True
  code = frame.f_code.co_code
  return not 0 <= offset < len(code) or code[offset] not in _CANNOT_RAISE


class _Interrupts:
  """The SIGINT / SIGTERM handler of ``interrupts_raise``."""

  def __init__(self):
    self.pending: type[BaseException] | None = None

  def handle(self, signum, frame):
    exc = KeyboardInterrupt if signum == signal.SIGINT else Terminated
    if self.pending is not None:  # a second signal: the user who presses Ctrl-C twice means now
      self.pending = None
      sys.settrace(None)  # first: the trace would raise the first signal's exception
      raise exc()
    if frame is None or _in_own_code(frame):
      raise exc()
    # Raised at the first line our code runs next: on entering one of our functions (global
    # trace), or on the next line of one of ours on the stack (their frame trace) where the
    # frame's handlers would see it.
    self.pending = exc
    while frame is not None:
      if _in_own_code(frame):
        frame.f_trace = self._on_line
      frame = frame.f_back
    sys.settrace(self._on_call)

  def _on_call(self, frame, event, arg):
    # Not on entering ``handle``: a second signal raises its own exception there.
    if self.pending is not None and frame.f_code is not _HANDLE and _in_own_code(frame):
      self._raise_pending()

  def _on_line(self, frame, event, arg):
    if self.pending is not None and event == 'line' and _handlers_see_raise_at(frame):
      self._raise_pending()
    return self._on_line

  def _raise_pending(self):
    exc, self.pending = self.pending, None
    sys.settrace(None)  # Python also stops tracing when a trace function raises
    raise exc()


_HANDLE = _Interrupts.handle.__code__


@contextlib.contextmanager
def interrupts_raise():
  """While active, SIGINT raises ``KeyboardInterrupt`` and SIGTERM raises ``Terminated`` in the
  main thread (instead of killing the process at once), and only where hrnet-jax's own code
  runs: a signal arriving inside a library (Orbax, JAX, the standard library's thread pools) is
  raised at the next line of ours, at the latest when the block ends; a second signal raises at
  once. So a terminated command unwinds through its ``finally`` blocks, removing what it was
  writing, and cannot hang or lose the signal. The previous handlers come back on exit: the
  CLIs' ``main`` is also called in-process (tests, notebooks). Off the main thread, where Python
  cannot install handlers, it changes nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  interrupts = _Interrupts()
  previous = {s: signal.signal(s, interrupts.handle) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    if interrupts.pending is not None:
      interrupts._raise_pending()


def storage_error(exc: BaseException, path: str) -> OSError | None:
  """The ``OSError`` behind a storage failure that TensorStore (Orbax's writer) reports as a
  ``ValueError`` status ('RESOURCE_EXHAUSTED: ... No space left'), naming ``path``; None for
  other errors."""
  text = str(exc)
  for marker, code in (('No space left', errno.ENOSPC), ('RESOURCE_EXHAUSTED', errno.ENOSPC),
                       ('Read-only file system', errno.EROFS),
                       ('PERMISSION_DENIED', errno.EACCES)):
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
    raise OSError(errno.ENOSPC, f'{os.strerror(errno.ENOSPC)}: {what} needs '
                  f'{needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB are free', os.fspath(folder))


def positive_int(text: str) -> int:
  """argparse ``type=`` for a count >= 1 (argparse turns the error into a usage error, exit 2)."""
  import argparse
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
  return value


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
  if isinstance(exc, OSError) and (exc.errno in _ENVIRONMENT_ERRNOS
                                   or isinstance(exc, PermissionError)):
    return EXIT_RUNTIME
  return EXIT_BAD_INPUT


def describe(exc: BaseException) -> str:
  """A one-line(+detail) message: ``OSError`` as ``PATH: strerror``, else ``str(exc)``."""
  if isinstance(exc, OSError) and exc.strerror:  # raised by the OS: name the path
    return f'{exc.filename}: {exc.strerror}' if exc.filename is not None else exc.strerror
  return str(exc) or type(exc).__name__


def report(prog: str, exc: BaseException, *, verbose: bool) -> int:
  """Prints ``PROG: error: MESSAGE`` (traceback first when ``verbose``) to stderr and returns
  the exit code of ``exc``."""
  if verbose:
    traceback.print_exception(exc, file=sys.stderr)
  print(f'{prog}: error: {describe(exc)}', file=sys.stderr)
  return exit_code(exc)


# Expected failures: bad input (BadInputError and other ValueErrors, missing files) and the
# environment (EnvironmentFailure, OSError). Anything else is a bug and keeps its traceback.
EXPECTED = (ValueError, OSError, EnvironmentFailure)


def run_cli(prog: str, body: Callable[[], int | None], *, verbose: bool | None = None) -> int:
  """Runs ``body`` under the error policy; returns its exit code (``None`` counts as 0).

  Expected failures (``EXPECTED``) become one ``PROG: error:`` line; Ctrl-C exits 130 and
  SIGTERM 143, with one line, once ``body`` has unwound (``interrupts_raise``); anything else is
  a bug and keeps its traceback (exit 1).
  """
  verbose = verbose_requested() if verbose is None else verbose
  previous = os.environ.get(VERBOSE_ENV)
  if verbose:  # library messages (key reports) read it too
    os.environ[VERBOSE_ENV] = '1'
  try:
    with interrupts_raise():
      return body() or EXIT_OK
  except KeyboardInterrupt:
    print(f'{prog}: error: interrupted', file=sys.stderr)
    return EXIT_INTERRUPTED
  except Terminated:
    print(f'{prog}: error: terminated (SIGTERM)', file=sys.stderr)
    return EXIT_PREEMPTED
  except EXPECTED as e:
    return report(prog, e, verbose=verbose)
  finally:
    if previous is None:
      os.environ.pop(VERBOSE_ENV, None)
    else:
      os.environ[VERBOSE_ENV] = previous
