"""Rematerialization (gradient checkpointing) of an HRNet's residual blocks or HR modules.

``apply(model, 'block')`` makes every ``BasicBlock`` / ``Bottleneck`` keep only its input for the
backward pass and recompute its inside (convs, BN, ReLU) there; ``'module'`` does the same for each
``HighResolutionModule`` (branches + fuse) and the stage-1 blocks, trading more recomputation for
less activation memory. ``'none'`` leaves the model as it is. Results (logits, gradients, BN
statistics) are the same: only what is stored between the forward and backward pass changes.

It works by giving the chosen instances a subclass whose ``__call__`` is wrapped in
``flax.nnx.remat`` (JAX's ``jax.checkpoint``, lifted to NNX modules, BN statistic updates
included), so the model code and its parameter layout stay as they are: checkpoints, the
converter and ``nnx.split`` / ``merge`` see the same state tree.
"""

from __future__ import annotations

import functools

from flax import nnx

from hrnet_jax.models.hrnet import HighResolutionModule
from hrnet_jax.models.layers import BasicBlock, Bottleneck

LEVELS = ('none', 'block', 'module')


@functools.cache
def _remat_class(cls: type) -> type:
  """``cls`` with ``__call__`` under ``nnx.remat`` (one subclass per class, so graphdefs of two
  models built the same way compare equal and jit caches hit)."""
  return type(
    f'Remat{cls.__name__}',
    (cls,),
    {
      '__call__': nnx.remat(cls.__call__),
      '__module__': __name__,
      '__doc__': f'{cls.__name__} whose activations are recomputed in the backward pass.',
    },
  )


def apply(model: nnx.Module, level: str) -> nnx.Module:
  """Sets rematerialization ``level`` (one of ``LEVELS``) on ``model`` in place and returns it.

  ``'block'``: every residual block; ``'module'``: every ``HighResolutionModule``, and the
  residual blocks outside them (stage 1). ``ValueError`` naming the level for anything else.
  """
  if level not in LEVELS:
    raise ValueError(f'remat={level!r}; valid: {", ".join(LEVELS)}')
  if level == 'none':
    return model
  outer = (HighResolutionModule,) if level == 'module' else ()
  blocks = (BasicBlock, Bottleneck)
  inside_outer = set()
  if outer:
    for _, m in nnx.iter_modules(model):
      if isinstance(m, outer):
        inside_outer.update(id(sub) for _, sub in nnx.iter_modules(m) if sub is not m)
  for _, m in list(nnx.iter_modules(model)):
    if type(m).__module__ == __name__:
      continue  # already wrapped
    if isinstance(m, outer) or (isinstance(m, blocks) and id(m) not in inside_outer):
      m.__class__ = _remat_class(type(m))
  return model
