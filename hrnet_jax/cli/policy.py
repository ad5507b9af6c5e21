"""The error policy every hrnet-jax command-line tool follows (``hrnet_jax.errors`` has the
exit codes): ``run_cli`` turns an expected failure into one ``PROG: error: ...`` line and its exit
code, Ctrl-C into 130 and SIGTERM into 143 (``hrnet_jax.interrupts``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from typing import Any, Callable

from hrnet_jax import interrupts
from hrnet_jax.errors import (
  EXIT_INTERRUPTED,
  EXIT_OK,
  EXIT_PREEMPTED,
  VERBOSE_ENV,
  EnvironmentFailure,
  Terminated,
  describe,
  exit_code,
  verbose_requested,
)


def positive_int(text: str) -> int:
  """argparse ``type=`` for a count >= 1 (argparse turns the error into a usage error, exit 2)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
  return value


# Lines libraries log on every successful run, by logger: noise to a user (``--verbose`` shows
# them). onnx_ir warns once per intermediate value jax2onnx gives no type (40 on an HRNet).
_NOISE = {
  'onnx_ir.serde': ('The value type for shape',),
}


class _DropNoise(logging.Filter):
  def __init__(self, prefixes: tuple[str, ...]):
    super().__init__()
    self.prefixes = prefixes

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(self.prefixes)


def quiet_libraries(verbose: bool) -> None:
  """Unless ``verbose``, keeps the libraries' own log lines off stderr for this process:
  TensorFlow's C++ INFO and WARNING lines and its ``oneDNN custom operations are on`` notice
  (``TF_ENABLE_ONEDNN_OPTS=0``; set before TensorFlow is imported, explicit values win) and the ``_NOISE``
  records. Warnings and errors of hrnet-jax itself are unaffected."""
  if verbose:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # The oneDNN notice ignores TF_CPP_MIN_LOG_LEVEL; only switching those ops off silences it.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  for name, prefixes in _NOISE.items():
    logger = logging.getLogger(name)
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
      logger.addFilter(_DropNoise(prefixes))


def command_start(argv: Any) -> float:
  """The ``time.perf_counter()`` value a command's wall time counts from: when the process
  started for a console script (``argv`` None: Python's start and the library imports count),
  else now (``main(argv)`` called in a running process). Linux reads the start from
  ``/proc/self/stat``; elsewhere it is now."""
  now = time.perf_counter()
  if argv is not None:
    return now
  try:
    with open('/proc/self/stat') as f:  # field 22, after the parenthesised command name
      ticks = int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, ValueError, IndexError):
    return now
  age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf('SC_CLK_TCK')
  return now - max(age, 0.0)


def report(prog: str, exc: BaseException, *, verbose: bool) -> int:
  """Prints ``PROG: error: MESSAGE`` (traceback first when ``verbose``) to stderr and returns
  the exit code of ``exc``."""
  if verbose:
    traceback.print_exception(exc, file=sys.stderr)
  print(f'{prog}: error: {describe(exc)}', file=sys.stderr)
  return exit_code(exc)


def _late_loop_callback(unraisable: Any) -> bool:
  """A ``RuntimeError('Event loop is closed')`` raised in asyncio's ``call_soon_threadsafe``:
  TensorStore finishing a read or write after Orbax closed the event loop of the operation,
  which had already failed (a damaged or full checkpoint) and is reported as such."""
  exc = unraisable.exc_value
  if not isinstance(exc, RuntimeError) or str(exc) != 'Event loop is closed':
    return False
  return any(
    frame.name == 'call_soon_threadsafe' and frame.filename.endswith('base_events.py')
    for frame in traceback.extract_tb(unraisable.exc_traceback)
  )


def _hide_late_loop_callbacks() -> None:
  """Keeps ``_late_loop_callback`` tracebacks off stderr for the rest of the process (they also
  come during interpreter shutdown, after ``run_cli`` returned); other unraisable exceptions go
  to the hook that was there."""
  previous = sys.unraisablehook
  if getattr(previous, 'hides_late_loop_callbacks', False):
    return

  def hook(unraisable: Any) -> None:
    if not _late_loop_callback(unraisable):
      previous(unraisable)

  hook.hides_late_loop_callbacks = True
  sys.unraisablehook = hook


# Expected failures: bad input (BadInputError and other ValueErrors, missing files) and the
# environment (EnvironmentFailure, OSError). Anything else is a bug and keeps its traceback.
EXPECTED = (ValueError, OSError, EnvironmentFailure)


def run_cli(prog: str, body: Callable[[], int | None], *, verbose: bool | None = None) -> int:
  """Runs ``body`` under the error policy; returns its exit code (``None`` counts as 0).

  Expected failures (``EXPECTED``) become one ``PROG: error:`` line; Ctrl-C exits 130 and
  SIGTERM 143, with one line, once ``body`` has unwound (``interrupts_raise``); anything else is
  a bug and keeps its traceback (exit 1). Without ``verbose``, the event-loop tracebacks
  TensorStore leaves after a failed Orbax read or write are not printed
  (``_late_loop_callback``).
  """
  verbose = verbose_requested() if verbose is None else verbose
  previous = os.environ.get(VERBOSE_ENV)
  if verbose:  # library messages (key reports) read it too
    os.environ[VERBOSE_ENV] = '1'
  else:
    _hide_late_loop_callbacks()
  try:
    with interrupts.interrupts_raise():
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
