"""Checks that run in a child process of their own (a test module run as a script), for code
that must own the process: TensorFlow's input pipeline (imported before torch / torchvision it
can crash them) and its C++ logging. The parent test gets one result per check."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import traceback
from typing import Callable

ROOT = pathlib.Path(__file__).resolve().parents[2]


def report(checks: dict[str, Callable], *args) -> None:
  """In the child: runs every check with ``args``; prints one ``RESULT {name: "ok" |
  traceback}`` line."""
  results = {}
  for name, fn in checks.items():
    try:
      fn(*args)
      results[name] = 'ok'
    except Exception:  # reported per check by the parent
      results[name] = traceback.format_exc()
  print('RESULT ' + json.dumps(results))


def results(script: str, tmp, *, timeout: int) -> dict[str, str]:
  """In the parent: runs ``script tmp`` (a test module whose ``__main__`` calls ``report``) and
  returns its results; the child's stderr tail if it did not report."""
  path = os.pathsep.join([str(ROOT), str(ROOT / 'tests' / 'helpers')])
  proc = subprocess.run(
    [sys.executable, script, str(tmp)],
    env=dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS='cpu'),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
  assert proc.returncode == 0 and lines, proc.stderr[-4000:]
  return json.loads(lines[-1][len('RESULT ') :])


def compile_cache_env() -> dict[str, str]:
  """The variables that point a child's JAX at the one persistent compilation cache of this
  pytest run (conftest's ``HRNET_JAX_COMPILATION_CACHE``, which the CLIs use and both xdist
  workers inherit), for children that call the library without a CLI: a notebook kernel,
  ``train_and_evaluate`` called directly. So they reuse what the CLI runs compiled."""
  return dict(
    JAX_COMPILATION_CACHE_DIR=os.environ['HRNET_JAX_COMPILATION_CACHE'],
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )


def run_env() -> dict[str, str]:
  """The environment of a child run (hrnet-train, hrnet-eval, or the library called directly):
  this checkout on the path, CPU only, and the pytest run's one compilation cache."""
  return dict(
    os.environ,
    PYTHONPATH=str(ROOT),
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='',
    PYTHONUNBUFFERED='1',
    **compile_cache_env(),
  )
