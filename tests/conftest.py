"""Shared test set-up: float32 matmuls/convs at full precision for every numerical comparison,
a summary table of the parity figures the tests measured, and the order in which pytest-xdist
hands test files to its workers."""

import atexit
import json
import os
import shutil
import tempfile

import jax
import pytest

jax.config.update('jax_default_matmul_precision', 'highest')
# The CLIs enable JAX's persistent compilation cache (hrnet_jax.runtime.compile_cache): in tests, in a
# temporary folder rather than the user's ~/.cache.
if 'HRNET_JAX_COMPILATION_CACHE' not in os.environ:
  os.environ['HRNET_JAX_COMPILATION_CACHE'] = tempfile.mkdtemp(prefix='hrnet_jax_cache_')
  atexit.register(shutil.rmtree, os.environ['HRNET_JAX_COMPILATION_CACHE'], ignore_errors=True)
# The same for the training data verification cache (hrnet_jax.train.data.verify).
if 'HRNET_JAX_VERIFY_CACHE' not in os.environ:
  os.environ['HRNET_JAX_VERIFY_CACHE'] = tempfile.mkdtemp(prefix='hrnet_jax_verify_')
  atexit.register(shutil.rmtree, os.environ['HRNET_JAX_VERIFY_CACHE'], ignore_errors=True)

_PARITY: list[tuple[str, str, float, float]] = []


@pytest.fixture(scope='session')
def parity_log():
  """``parity_log(case, output, diff, ref_max)`` records one measured comparison."""
  return lambda case, output, diff, ref_max: _PARITY.append((case, output, diff, ref_max))


# The README's test command runs the files on two pytest-xdist workers (`-n 2 --dist loadfile`:
# each file on one worker, so its module fixtures run once). Handing out the longest files first
# (durations measured on 2 cores) keeps the two workers busy to the end; the command's
# `--no-loadscope-reorder` keeps this order (xdist >= 3.7 otherwise hands out the files with the
# most tests first, which left the two longest files for last).
_LONGEST_FIRST = (
  'test_train_runs',
  'test_train_sharded',
  'test_newcomer_finetune',
  'test_parity_paddle',
  'test_export',
  'test_hardening',
  'test_hub',
  'test_parity_timm',
  'test_model',
  'test_benchmarks',
  'test_train_notebook',
  'test_parity_dense',
  'test_checkpoints',
  'test_train_segment',
  'test_predict_dense',
  'test_segment_step',
  'test_linen',
  'test_scan',
)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def pytest_sessionfinish(session):
  if hasattr(session.config, 'workeroutput'):  # an xdist worker: send its figures to the main
    session.config.workeroutput['parity'] = json.dumps(_PARITY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
  _PARITY.extend(tuple(row) for row in json.loads(node.workeroutput.get('parity', '[]')))


def pytest_terminal_summary(terminalreporter):
  if not _PARITY:
    return
  terminalreporter.section('parity figures (max abs diff vs oracle)')
  terminalreporter.write_line(
    f'{"case":<44} {"output":<22} {"max|diff|":>10} {"max|ref|":>10} {"relative":>10}'
  )
  for case, output, diff, ref_max in sorted(_PARITY):
    terminalreporter.write_line(
      f'{case:<44} {output:<22} {diff:>10.3g} {ref_max:>10.4g} {diff / max(ref_max, 10.0):>10.3g}'
    )
