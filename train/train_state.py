"""The train state (one pytree of arrays), the optimizer and the learning-rate schedule.

The NNX model is split once into a static graph (``ModelDef``: module structure, train and eval
variants) and pure array trees: ``params`` (``nnx.Param``) and ``batch_stats`` (BatchNorm
running mean/var). The jitted step merges them back, so the state is a plain pytree that
``jax.jit`` can shard and donate and Orbax can save.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

import hrnet_jax
from hrnet_jax import runtime

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@struct.dataclass
class TrainState:
  """``step``: int32 scalar, optimizer updates done; ``params`` / ``batch_stats``: pure
  ``nnx.State`` trees of float32 arrays; ``opt_state``: the optax state of ``params``."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """Static halves of the model: ``train`` / ``eval`` graphdefs (BatchNorm with batch statistics
  / running averages), and the model's metadata for export (``num_classes``: a classifier's
  classes, a dense model's outputs)."""

  train: Any
  eval: Any
  arch: str
  num_classes: int

  def merge(self, params, batch_stats, *, train: bool) -> hrnet_jax.HighResolutionNet:
    return nnx.merge(self.train if train else self.eval, params, batch_stats)


def parse_dtype(name: str):
  """``'float32'`` / ``'bfloat16'`` -> jnp dtype; ``ValueError`` naming ``config.dtype``."""
  try:
    return DTYPES[name]
  except KeyError:
    raise ValueError(f'config.dtype={name!r}; valid: {", ".join(DTYPES)}') from None


def recipe_model(config, num_classes: int) -> hrnet_jax.HighResolutionNet:
  """``hrnet_jax.create_model`` for a recipe's ``config`` (``model``, ``pretrained``: a release
  folder or '', ``dtype``, ``seed``), with float32 parameters, ``config.remat`` and
  ``config.scan`` (``hrnet_jax.runtime.configure``, with fast tracing); ``ValueError`` if
  ``config.pretrained`` is required but unset or ``config.remat`` is not a level."""
  if config.pretrained is None:
    raise ValueError(
      'this config needs pretrained weights: pass --config.pretrained=DIR '
      '(a folder written by convert_official_weights or save_pretrained)'
    )
  # num_classes: the task's outputs (a pose model's are keypoints).
  outputs = 'num_keypoints' if config.get('task', 'classify') == 'pose' else 'num_classes'
  model = hrnet_jax.create_model(
    config.model,
    pretrained=config.pretrained or None,
    **{outputs: num_classes},
    dtype=parse_dtype(config.dtype),
    param_dtype=jnp.float32,
    rngs=nnx.Rngs(config.seed),
  )
  return runtime.configure(
    model, scan=config.get('scan', False), remat=config.get('remat', 'none'), fast_trace=True
  )


def _num_outputs(model) -> int:
  return model.num_outputs if hasattr(model, 'num_outputs') else model.num_classes


def split_model(model: hrnet_jax.HighResolutionNet) -> tuple[ModelDef, Any, Any]:
  """-> ``(ModelDef, params, batch_stats)``; the state trees hold host (NumPy) arrays."""
  model.eval()
  eval_def, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.train()
  train_def, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  to_host = lambda s: jax.tree.map(np.asarray, nnx.as_pure(s))
  return (
    ModelDef(train_def, eval_def, model.arch, _num_outputs(model)),
    to_host(params),
    to_host(batch_stats),
  )


def planned_steps(config, steps_per_epoch: int) -> int:
  """The schedule's length in steps: ``num_steps`` when > 0, else ``num_epochs`` epochs
  (``max_steps`` stops a run early without changing it)."""
  return config.num_steps if config.get('num_steps', 0) > 0 else config.num_epochs * steps_per_epoch


OPTIMIZERS = ('sgd', 'adam')


def learning_rate_schedule(config, steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
  """lr(step): ``config.optimizer`` (see ``train/recipes/base.py``) with the peak lr scaled by
  ``batch_size / base_batch_size``. ``'step'`` and ``'poly'`` may start with a linear warm-up
  from ``warmup_factor`` x, as mmengine ``LinearLR(start_factor=warmup_factor,
  end=warmup_steps, by_epoch=False)`` times ``MultiStepLR`` / ``PolyLR`` (mmpose's pose
  schedule): the factor reaches 1 at step ``warmup_steps - 1``; ``'cosine'`` warms up over
  ``warmup_epochs``. ``ValueError`` for an unknown schedule, a bad warm-up or ``warmup_steps``
  with ``'cosine'`` (which would ignore it)."""
  opt = config.optimizer
  peak = opt.base_lr * config.batch_size / opt.base_batch_size
  total = planned_steps(config, steps_per_epoch)
  warmup, factor = int(opt.get('warmup_steps', 0)), float(opt.get('warmup_factor', 0.0))
  if warmup < 0 or warmup == 1 or not 0 <= factor <= 1:
    raise ValueError(
      f'config.optimizer.warmup_steps={warmup} / warmup_factor={factor}: need 0 (none) or '
      '>= 2 steps and a factor in [0, 1]'
    )
  if opt.schedule == 'cosine':
    if warmup:
      raise ValueError(
        'config.optimizer.warmup_steps is for the step and poly schedules; cosine warms up '
        'over config.optimizer.warmup_epochs'
      )
    warmup = int(opt.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total, warmup + 1))
  if opt.schedule == 'step':
    base = optax.piecewise_constant_schedule(
      peak, {int(e * steps_per_epoch): opt.decay_factor for e in opt.decay_epochs}
    )
  elif opt.schedule == 'poly':
    base = optax.polynomial_schedule(peak, opt.end_lr, opt.power, max(total, 1))
  else:
    raise ValueError(f"config.optimizer.schedule={opt.schedule!r}; valid: 'step', 'cosine', 'poly'")
  if warmup == 0:
    return base
  ramp = optax.linear_schedule(factor, 1.0, warmup - 1)
  return lambda count: base(count) * ramp(count)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """``config.optimizer.name`` (default ``'sgd'``), PyTorch semantics, with coupled weight
  decay ``g += wd * p`` (on all params or only kernels) first: ``'sgd'``: momentum / Nesterov,
  then ``-lr(step)`` (``torch.optim.SGD``); ``'adam'``: ``torch.optim.Adam`` (betas 0.9 /
  0.999, eps 1e-8 added to the root of the second moment, bias-corrected). ``ValueError``
  naming the field for an unknown optimizer or weight-decay target."""
  opt = config.optimizer
  name = opt.get('name', 'sgd')
  if name not in OPTIMIZERS:
    raise ValueError(f'config.optimizer.name={name!r}; valid: {", ".join(OPTIMIZERS)}')
  if opt.weight_decay_on not in ('all', 'kernels'):
    raise ValueError(
      f"config.optimizer.weight_decay_on={opt.weight_decay_on!r}; valid: 'all', 'kernels'"
    )
  mask = (
    None
    if opt.weight_decay_on == 'all'
    else (lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
  )
  lr = learning_rate_schedule(config, steps_per_epoch)
  if name == 'adam':
    update = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
  else:
    update = optax.sgd(lr, momentum=opt.momentum, nesterov=opt.nesterov)
  return optax.chain(optax.add_decayed_weights(opt.weight_decay, mask=mask), update)


def export_pretrained_cfg(config, base_cfg: dict | None, num_classes: int) -> dict:
  """The ``pretrained_cfg`` of a model trained with ``config``: ``base_cfg`` (that of the
  release folder it was fine-tuned from, if any) with this run's eval preprocessing, so that
  ``hrnet-eval`` / ``hrnet-predict`` preprocess as the training evaluation did."""
  size = config.input.image_size
  return {
    **(base_cfg or {}),
    'num_classes': num_classes,
    'input_size': [3, size, size],
    'crop_pct': config.input.crop_pct,
    'interpolation': config.input.interpolation,
    'mean': list(config.input.mean),
    'std': list(config.input.std),
    'test_input_size': None,
    'test_crop_pct': None,
    'top1': None,
    'top5': None,
    'test_top1': None,
    'test_top5': None,
  }


def init_state(params, batch_stats, tx: optax.GradientTransformation) -> TrainState:
  """The state at step 0 (host arrays; place it with ``mesh.put_replicated_or_sharded``)."""
  opt_state = jax.tree.map(np.asarray, tx.init(params))
  return TrainState(
    step=np.zeros((), np.int32), params=params, batch_stats=batch_stats, opt_state=opt_state
  )
