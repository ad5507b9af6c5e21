"""The jitted train and eval steps over global (sharded) batches.

Both take batches as built by ``hrnet_jax.train.data`` (uint8 images, normalized here on the
device). Computation runs in the model's dtype (bf16 or f32); logits are cast to float32 before
the loss, so the loss, gradients, BN statistics and optimizer state stay float32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from hrnet_jax import runtime
from hrnet_jax.data.transforms import normalize
from hrnet_jax.train.train_state import ModelDef, TrainState


def _topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """bool ``[B]``: label among the ``k`` largest logits (``k`` capped at the class count)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1)


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  model_def: ModelDef,
  tx: optax.GradientTransformation,
  lr_fn: Callable,
  mean,
  std,
  label_smoothing: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD update on the global batch. Returns the new state and float32 scalar metrics:
  ``loss`` (mean cross-entropy with label smoothing), ``top1`` (batch accuracy), ``lr`` (used for
  this update) and ``grad_norm`` (global L2 norm, before weight decay)."""
  images = normalize(batch['image'], mean, std)
  labels = batch['label']

  def loss_fn(params):
    model = model_def.merge(params, state.batch_stats, train=True)
    logits = model(images).astype(jnp.float32)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, (logits, nnx.as_pure(nnx.state(model, nnx.BatchStat)))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    'loss': loss,
    'top1': _topk_correct(logits, labels, 1).mean(dtype=jnp.float32),
    'lr': jnp.asarray(lr_fn(state.step), jnp.float32),
    'grad_norm': optax.tree.norm(grads).astype(jnp.float32),
  }
  new_state = TrainState(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


def eval_step(
  params, batch_stats, batch: dict[str, jax.Array], *, model_def: ModelDef, mean, std
) -> dict[str, jax.Array]:
  """int32 counts over the real (``mask``) rows of the global batch: ``correct1``, ``correct5``
  and ``count``. BatchNorm uses its running averages."""
  model = model_def.merge(params, batch_stats, train=False)
  logits = model(normalize(batch['image'], mean, std)).astype(jnp.float32)
  mask = batch['mask']
  count = lambda c: jnp.sum(c & mask, dtype=jnp.int32)
  return {
    'correct1': count(_topk_correct(logits, batch['label'], 1)),
    'correct5': count(_topk_correct(logits, batch['label'], 5)),
    'count': jnp.sum(mask, dtype=jnp.int32),
  }


def jit_train_step(
  state_shardings: Any, batch_sharding: NamedSharding, replicated: NamedSharding, **kwargs
) -> Callable:
  """``train_step`` jitted for the mesh: the state keeps ``state_shardings`` and is donated (its
  buffers are reused for the new state), the batch is split on the data axes, metrics are
  replicated; XLA:CPU gets ``hrnet_jax.runtime``'s options. ``kwargs`` are ``train_step``'s
  keyword arguments."""
  return jax.jit(
    functools.partial(train_step, **kwargs),
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
    compiler_options=runtime.compiler_options('train'),
  )


def jit_eval_step(
  params_shardings: Any,
  stats_shardings: Any,
  batch_sharding: NamedSharding,
  replicated: NamedSharding,
  **kwargs,
) -> Callable:
  """``eval_step`` jitted for the mesh; ``kwargs`` are its keyword arguments."""
  return jax.jit(
    functools.partial(eval_step, **kwargs),
    in_shardings=(params_shardings, stats_shardings, batch_sharding),
    out_shardings=replicated,
    compiler_options=runtime.compiler_options('infer'),
  )
