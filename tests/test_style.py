"""One formatter for the whole tree: ``ruff format`` with the project's config (pyproject.toml
``[tool.ruff]``: 2 spaces, single quotes, 100 columns), and imports sorted (``ruff check``, rule
``I``). ``ruff check --fix . && ruff format .`` at the repository root fixes both."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('command', [['format', '--check'], ['check']], ids=['format', 'imports'])
def test_tree_is_formatted(command):
  done = subprocess.run(
    [sys.executable, '-m', 'ruff', *command, '.'], cwd=ROOT, capture_output=True, text=True
  )
  assert done.returncode == 0, (
    f'run `ruff check --fix . && ruff format .` at the repository root:\n{done.stdout}{done.stderr}'
  )
