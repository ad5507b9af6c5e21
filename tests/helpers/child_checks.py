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


def run_env(tmp_path_factory) -> dict[str, str]:
  """The environment of a child CLI run (hrnet-train, hrnet-eval): this checkout on the path, CPU
  only, and one persistent compilation cache per pytest run, so the test files' runs share
  their compiles."""
  return dict(
    os.environ,
    PYTHONPATH=str(ROOT),
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='',
    JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.getbasetemp() / 'jax_cache'),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    PYTHONUNBUFFERED='1',
  )
