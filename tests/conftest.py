"""Shared test set-up: float32 matmuls/convs at full precision for every numerical comparison,
and a summary table of the parity figures the tests measured."""

import os
import tempfile

import jax
import pytest

jax.config.update('jax_default_matmul_precision', 'highest')
# The CLIs enable JAX's persistent compilation cache (hrnet_jax.compile_cache): in tests, in a
# temporary folder rather than the user's ~/.cache.
os.environ.setdefault('HRNET_JAX_COMPILATION_CACHE', tempfile.mkdtemp(prefix='hrnet_jax_cache_'))

_PARITY: list[tuple[str, str, float, float]] = []


@pytest.fixture(scope='session')
def parity_log():
  """``parity_log(case, output, diff, ref_max)`` records one measured comparison."""
  return lambda case, output, diff, ref_max: _PARITY.append((case, output, diff, ref_max))


def pytest_terminal_summary(terminalreporter):
  if not _PARITY:
    return
  terminalreporter.section('parity figures (max abs diff vs oracle)')
  terminalreporter.write_line(f'{"case":<44} {"output":<22} {"max|diff|":>10} {"max|ref|":>10} '
                              f'{"relative":>10}')
  for case, output, diff, ref_max in _PARITY:
    terminalreporter.write_line(f'{case:<44} {output:<22} {diff:>10.3g} {ref_max:>10.4g} '
                                f'{diff / max(ref_max, 10.0):>10.3g}')
