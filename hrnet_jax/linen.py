"""HRNet for Flax Linen code, through ``flax.nnx.bridge.ToLinen``.

    import flax.linen as nn
    from hrnet_jax.linen import HRNet, load_variables

    class Classifier(nn.Module):                      # a user's Linen model
      @nn.compact
      def __call__(self, x, train: bool = False):
        emb = HRNet('hrnet_w18', num_classes=0, name='backbone')(x, train)  # [B, 2048]
        return nn.Dense(10)(emb)

    variables = Classifier().init(jax.random.key(0), x)
    pretrained = load_variables('converted/hrnet_w18', num_classes=0)
    variables = {'params': {**variables['params'], 'backbone': pretrained['params']},
                 'batch_stats': {'backbone': pretrained['batch_stats']}}
    logits, updates = Classifier().apply(variables, x, train=True, mutable=['batch_stats'])

``HRNet(arch, **kwargs)`` builds ``hrnet_jax.create_model(arch, **kwargs)`` inside ``ToLinen``
(``LinenHRNet``, a Linen module with the options as one ``kwargs`` field): the same
module, the same numbers. Its Linen variables are the NNX model's state by collection
(``params``: every ``nnx.Param``, ``batch_stats``: every ``nnx.BatchStat``), nested by attribute
path, as plain arrays (no ``NNXMeta`` boxes). ``train=True`` uses batch statistics and updates
``batch_stats`` (pass ``mutable=['batch_stats']``), as ``model.train()`` does in NNX.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import variablelib

from hrnet_jax.factory import create_model
from hrnet_jax.pretrained import checkpoint

_WRAPPED = 'hrnet'  # the ToLinen child's name inside ``HRNet``


def _forward(module, x, *, train: bool):
  """Runs the NNX model in the requested mode (``nnx_method`` of ``ToLinen``)."""
  if train:
    module.train()
  else:
    module.eval()
  return module(x)


def _create(arch: str, *, rngs: nnx.Rngs, **kwargs):
  return create_model(arch, rngs=rngs, **kwargs)


def HRNet(
  arch: str, kwargs: dict[str, Any] | None = None, /, *, name: str | None = None, **options: Any
) -> LinenHRNet:
  """``create_model(arch, **options)`` as a Linen module (a :class:`LinenHRNet`).

  ``HRNet('hrnet_w18', num_classes=0, name='backbone')``, as ``create_model`` takes its options;
  the options as one dict, ``HRNet('hrnet_w18', {'num_classes': 0})``, are the same module.
  ``name`` is the Linen submodule name. ``TypeError`` when an option is given both ways.
  """
  both = sorted(set(kwargs or {}) & set(options))
  if both:
    raise TypeError(f'HRNet({arch!r}): {", ".join(both)} given both in the dict and as keywords')
  return LinenHRNet(arch, FrozenDict({**(kwargs or {}), **options}), name=name)


class LinenHRNet(nn.Module):
  """``create_model(arch, **kwargs)`` as a Linen module; build it with :func:`HRNet`.

  Attributes:
    arch: a ``hrnet_jax.list_models()`` name.
    kwargs: ``create_model`` keyword arguments (``num_classes``, ``features_only``,
      ``out_indices``, ``dtype``, ...), not ``pretrained`` (load with :func:`load_variables`).

  ``__call__(x, train=False)``: ``x [B, H, W, 3]`` float32, normalized; returns what the NNX
  model returns (logits ``[B, num_classes]``, the embedding, or the feature maps).
  """

  arch: str
  kwargs: FrozenDict = FrozenDict()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    if 'pretrained' in self.kwargs:
      raise ValueError('HRNet: load weights with hrnet_jax.linen.load_variables, not pretrained=')
    wrapped = nnx.bridge.ToLinen(
      functools.partial(_create, self.arch), kwargs=self.kwargs, metadata_fn=None, name=_WRAPPED
    )
    return wrapped(x, nnx_method=functools.partial(_forward, train=train))


def variables_of(model: nnx.Module) -> dict[str, Any]:
  """The Linen variables of an ``HRNet`` holding the NNX ``model``'s state:
  ``{'params': {...}, 'batch_stats': {...}}``."""
  out: dict[str, Any] = {}
  for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.RngState))):
    collection = variablelib.variable_name_from_type(type(leaf), allow_register=True)
    node = out.setdefault(collection, {}).setdefault(_WRAPPED, {})
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf.get_value()
  return out


def load_variables(ckpt_dir: str | os.PathLike, **kwargs) -> dict[str, Any]:
  """The Linen variables of ``HRNet(arch, **kwargs)`` loaded from a checkpoint folder
  (``convert_official_weights`` / ``save_pretrained`` / ``hrnet-train``), its arch read from
  ``config.json``. Loading is strict, as ``create_model(..., pretrained=ckpt_dir)``, whose
  errors it raises."""
  arch = checkpoint.read_config(ckpt_dir)['arch']
  return variables_of(create_model(arch, pretrained=ckpt_dir, **kwargs))
