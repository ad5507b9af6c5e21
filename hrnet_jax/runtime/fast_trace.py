"""Tracing a training step in linear instead of quadratic time.

In train mode every ``flax.nnx.BatchNorm`` writes its running statistics with
``self.mean[...] = new``. Under ``jax.jit`` (flax 0.12, jax 0.10) that write takes flax's
"full replace" check in ``Variable.set_value``, which reads ``getattr(new, 'sharding', None)``
from a tracer; JAX answers with an ``AttributeError`` whose message names the value's origin,
found by walking every equation traced so far (``DynamicJaxprTracer._origin_msg`` ->
``find_progenitors``). With one write per BatchNorm that is quadratic in the model size
(docs/benchmarks.md, "Compile time: where tracing went, and the fix").

:func:`apply` gives the BatchNorm statistics a ``BatchStat`` subclass whose ``x[...] = v`` is the
plain replacement ``x.set_value(v)`` (what flax's check decides anyway for a same-shape, same-dtype
value), so nothing else changes: same values, same state tree, same ``nnx.BatchStat`` filter
matches.
"""

from __future__ import annotations

from flax import nnx


class RunningStat(nnx.BatchStat):
  """``nnx.BatchStat`` whose full write ``x[...] = v`` skips flax's tracer ``sharding`` probe."""

  def __setitem__(self, key, value):
    if key is Ellipsis:
      self.set_value(value)
    else:
      super().__setitem__(key, value)


def apply(model: nnx.Module) -> nnx.Module:
  """Makes every BatchNorm's ``mean`` / ``var`` of ``model`` a :class:`RunningStat` (in place);
  returns ``model``."""
  for _, m in nnx.iter_modules(model):
    if isinstance(m, nnx.BatchNorm):
      for stat in (m.mean, m.var):
        if type(stat) is nnx.BatchStat:
          stat.__class__ = RunningStat
  return model
