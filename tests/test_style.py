"""One formatter for the whole tree: ``ruff format`` with the project's config (pyproject.toml
``[tool.ruff]``: 2 spaces, single quotes, 100 columns). Run ``ruff format`` to fix."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tree_is_formatted():
  done = subprocess.run(
    [sys.executable, '-m', 'ruff', 'format', '--check', '.'],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert done.returncode == 0, (
    f'run `ruff format` at the repository root:\n{done.stdout}{done.stderr}'
  )
