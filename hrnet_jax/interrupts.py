"""SIGINT / SIGTERM for every hrnet-jax command: the one owner of their handlers (no other
module calls ``signal.signal``).

``interrupts_raise()`` makes both raise (``KeyboardInterrupt`` / ``errors.Terminated``) only where
hrnet-jax's own code runs, never inside a library, so that ``finally`` blocks remove what was
being written and no library lock is left held. ``sigterm_polled()`` makes SIGTERM set a flag
instead, for a loop that stops at a point of its choosing (the trainer saves a training
checkpoint at its next step boundary).
"""

from __future__ import annotations

import contextlib
import dis
import functools
import signal
import sys
import threading
from typing import Iterator

from hrnet_jax.errors import Terminated

# Top-level modules whose code an interrupt may land in at any bytecode: none of it holds a lock
# outside a ``with`` block or swallows exceptions. Library code makes no such promise: a SIGTERM
# raised inside ``threading`` between a lock's acquire and its ``with`` left the lock held, and
# the conversion hung at exit joining the thread pool that waited for it; one raised in JAX's gc
# callback was printed and dropped, and the conversion went on.
_INTERRUPTIBLE = frozenset({'__main__', 'hrnet_jax', 'benchmarks'})


def _in_own_code(frame) -> bool:
  return frame.f_globals.get('__name__', '').partition('.')[0] in _INTERRUPTIBLE


# Opcodes the compiler treats as unable to raise. CPython (seen on 3.11, reported for 3.13-3.15)
# can leave such an instruction out of the exception table even inside a ``try``, so an
# exception a trace function raises there skips every ``except`` / ``finally`` / ``with`` of the
# frame (python/cpython#148278; seen here as a ``try:`` line's NOP).
_CANNOT_RAISE = frozenset(
  dis.opmap[name]
  for name in ('NOP', 'LOAD_CONST', 'LOAD_SMALL_INT', 'RETURN_CONST', 'POP_TOP')
  if name in dis.opmap
)


@functools.lru_cache(maxsize=256)
def _handled_offsets(code) -> tuple[range, ...]:
  return tuple(range(e.start, e.end) for e in getattr(dis.Bytecode(code), 'exception_entries', ()))


def _handlers_see_raise_at(frame) -> bool:
  """Whether an exception raised by a trace function at ``frame``'s next instruction reaches
  the ``except`` / ``finally`` blocks around it: the instruction has an exception-table entry,
  or it is one that can raise (then the compiler gave it every handler it has)."""
  offset = frame.f_lasti
  if any(offset in r for r in _handled_offsets(frame.f_code)):
    return True
  code = frame.f_code.co_code
  return not 0 <= offset < len(code) or code[offset] not in _CANNOT_RAISE


class SigtermFlag:
  """What ``sigterm_polled`` yields: ``raised`` turns True on the first SIGTERM in its block."""

  def __init__(self):
    self.raised = False

  def set(self, signum=None, frame=None) -> None:
    """Marks a SIGTERM; also the signal handler when no ``interrupts_raise`` block is active."""
    self.raised = True


class _Interrupts:
  """The SIGINT / SIGTERM handler of ``interrupts_raise``; while ``polled`` is set (by
  ``sigterm_polled``), SIGTERM sets that flag instead of raising."""

  def __init__(self):
    self.pending: type[BaseException] | None = None
    self.polled: SigtermFlag | None = None

  def handle(self, signum, frame):
    if signum == signal.SIGTERM and self.polled is not None:
      self.polled.set()
      return
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

# The handler of the innermost active ``interrupts_raise`` block (main thread only), which
# ``sigterm_polled`` switches to polling rather than installing a handler over it.
_active: _Interrupts | None = None


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
  global _active
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  interrupts = _Interrupts()
  previous = {s: signal.signal(s, interrupts.handle) for s in (signal.SIGINT, signal.SIGTERM)}
  outer, _active = _active, interrupts
  try:
    yield
  finally:
    _active = outer
    for s, handler in previous.items():
      signal.signal(s, handler)
    if interrupts.pending is not None:
      interrupts._raise_pending()


@contextlib.contextmanager
def sigterm_polled(enabled: bool = True) -> Iterator[SigtermFlag]:
  """While active, a SIGTERM sets the yielded ``SigtermFlag`` (``.raised``) instead of raising or
  killing the process, for a loop that polls it and stops cleanly (the trainer: a training
  checkpoint of the current step, then exit 143). SIGINT is unchanged.

  Inside an ``interrupts_raise`` block (the CLIs) it switches that block's handler to polling
  and back; outside one (``train_and_evaluate`` called from a test or a notebook) it installs
  its own SIGTERM handler and restores the previous one on exit. With ``enabled=False`` (runs of
  several processes, where JAX's preemption service owns SIGTERM and agrees on a step across
  processes) and off the main thread, where Python cannot install handlers, it changes nothing
  and the flag stays False."""
  flag = SigtermFlag()
  if not enabled or threading.current_thread() is not threading.main_thread():
    yield flag
    return
  owner = _active
  if owner is not None and signal.getsignal(signal.SIGTERM) == owner.handle:
    outer, owner.polled = owner.polled, flag
    try:
      yield flag
    finally:
      owner.polled = outer
    return
  previous = signal.signal(signal.SIGTERM, flag.set)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)
