"""How a built model is traced, compiled and run.

``configure(model, scan=..., remat=..., fast_trace=...)`` is the one door for the options that
change how a model's forward pass is traced without touching its parameters; ``compiler_options``
(``xla_options``) the XLA:CPU options each ``jax.jit`` of an HRNet program gets;
``compile_cache`` JAX's persistent compilation cache for the CLIs; ``fold`` BatchNorm folding for
inference.
"""

from __future__ import annotations

from flax import nnx

from hrnet_jax.models.hrnet import set_scan
from hrnet_jax.runtime import fast_trace as fast_trace_lib
from hrnet_jax.runtime import remat as remat_lib
from hrnet_jax.runtime.xla_options import compiler_options

__all__ = ['compiler_options', 'configure']


def configure(
  model: nnx.Module, *, scan: bool | None = None, remat: str | None = None, fast_trace: bool = False
) -> nnx.Module:
  """Sets how ``model`` (a classifier, backbone or dense HRNet) is traced, in place; returns it.

  Args:
    scan: run identical residual blocks and HR modules through ``jax.lax.scan``
      (``HRNetConfig.scan``); None leaves it as built.
    remat: rematerialization level, ``'none'`` / ``'block'`` / ``'module'`` (``remat.LEVELS``);
      None leaves it as built.
    fast_trace: trace a train step in linear time (``fast_trace.apply``).

  Parameters and results are unchanged; only the traced program differs. Raises ``ValueError``
  for an unknown remat level.
  """
  if scan is not None:
    set_scan(model, scan)
  if fast_trace:
    fast_trace_lib.apply(model)
  if remat is not None:
    remat_lib.apply(model, remat)
  return model
