"""XLA:CPU settings that hrnet-jax's command-line tools apply, for scripts to apply too.

XLA reads ``XLA_FLAGS`` once per process, when JAX first starts a backend, so
``configure_xla_cpu()`` must run before the first array or device call. The flags change only
XLA:CPU's choice of kernels; GPU and TPU programs ignore them.

Why (jaxlib 0.10, x86-64; numbers in docs/benchmarks.md, "Profile"): XLA:CPU hands every
convolution to YNNPACK by default (``individual_convolution`` in
``--xla_cpu_experimental_ynn_fusion_type``). HRNet's convolutions run ~1.6x faster in XLA's own
Eigen kernels, while YNNPACK's reductions (``reduce``) compute BatchNorm's batch statistics
~1.4x faster than XLA's emitted loops. Results stay within float32 rounding of the stock flags
(tests/test_runtime.py).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import MutableMapping

# Each entry is one '--name=value'; a name the user already put in XLA_FLAGS is left alone.
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce',)


def _flag_name(flag: str) -> str:
  return flag.split('=', 1)[0]


def _backends_started() -> bool:
  try:  # private, hence best effort: only used to warn
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def configure_xla_cpu(environ: MutableMapping[str, str] | None = None) -> str:
  """Adds ``CPU_XLA_FLAGS`` to ``environ['XLA_FLAGS']`` (default ``os.environ``).

  A flag whose name already appears in ``XLA_FLAGS`` keeps the user's value, so
  ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution``
  restores XLA's stock choice. Returns the resulting ``XLA_FLAGS``. Warns (``RuntimeWarning``)
  when JAX's backends already run in this process, since XLA then ignores the change.
  """
  environ = os.environ if environ is None else environ
  current = environ.get('XLA_FLAGS', '').split()
  present = {_flag_name(f) for f in current}
  added = [f for f in CPU_XLA_FLAGS if _flag_name(f) not in present]
  if added:
    environ['XLA_FLAGS'] = ' '.join(current + added)
    if environ is os.environ and _backends_started():
      warnings.warn('hrnet_jax.runtime.configure_xla_cpu: JAX backends are already '
                    'initialised, so XLA ignores the new XLA_FLAGS '
                    f"({' '.join(added)}); call it before the first JAX computation.",
                    RuntimeWarning, stacklevel=2)
  return environ.get('XLA_FLAGS', '')
