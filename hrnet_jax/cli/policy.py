"""The error policy every hrnet-jax command-line tool follows (``hrnet_jax.errors`` has the
exit codes): ``run_cli`` turns an expected failure into one ``PROG: error: ...`` line and its exit
code, Ctrl-C into 130 and SIGTERM into 143 (``hrnet_jax.interrupts``)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

from hrnet_jax import interrupts
from hrnet_jax.errors import (
  EXIT_BAD_INPUT,
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
