"""Times one hrnet-jax configuration (``Spec``) and prints its CSV row.

Inference: eval-mode forward, ``jax.jit`` over the split state (functional NNX pattern).
Training: forward, softmax cross-entropy on random labels, backward, SGD (Nesterov momentum
0.9, weight decay 1e-4, lr 1e-4 as timm's benchmark) and the BatchNorm statistics update, in
one jitted step that donates parameters, statistics and optimizer state.
"""

from __future__ import annotations

import functools
import os

from benchmarks.common import (
  Spec,
  base_row,
  peak_rss_mb,
  synthetic_batch,
  task_columns,
  time_steps,
  versions,
  worker_main,
)

LR, MOMENTUM, WEIGHT_DECAY = 1e-4, 0.9, 1e-4
# 'xla': jitted as the library's command-line tools jit (hrnet_jax.runtime.compiler_options).
# Experiments on top: '+stockflags' (XLA's default CPU options instead), '+foldbn' (BatchNorm
# folded into the convs, inference only, hrnet_jax.fold_batchnorm), '+dot1x1' (1x1 convs as matrix
# products, benchmarks/pointwise.py), '+dp' (the batch sharded over all devices; on a CPU host
# each core becomes one XLA device, see run.worker_env).
MODES = (
  'xla',
  'xla+stockflags',
  'xla+dot1x1',
  'xla+foldbn',
  'xla+foldbn+stockflags',
  'xla+foldbn+dot1x1',
  'xla+dp',
  'xla+foldbn+dp',
)
# Experiments that change the process (flags, devices), not the model's arithmetic.
_RUNTIME_ONLY = ('+dp', '+stockflags')


def numerics_mode(mode: str) -> str:
  """The mode without its runtime-only parts: the arithmetic the parity gate checks."""
  for part in _RUNTIME_ONLY:
    mode = mode.replace(part, '')
  return mode


def jit_options(spec: Spec) -> dict[str, str]:
  """The ``compiler_options`` of ``spec``'s jitted step."""
  from hrnet_jax import runtime

  return {} if '+stockflags' in spec.mode else runtime.compiler_options(spec.task)


def apply_mode(model, mode: str) -> None:
  """Applies the experiments named in ``mode`` to ``model`` in place (eval mode for foldbn)."""
  from benchmarks.pointwise import use_dot_for_pointwise
  from hrnet_jax import fold_batchnorm

  if mode not in MODES:
    raise ValueError(f'JAX mode must be one of {MODES}, got {mode!r}')
  mode = numerics_mode(mode)
  if 'dot1x1' in mode:
    use_dot_for_pointwise(model)
  if 'foldbn' in mode:
    fold_batchnorm(model)


def _peak_mem_mb(device) -> tuple[float, str]:
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2**20, 'device'
  return peak_rss_mb(), 'rss'


def build_step(spec: Spec):
  """The jitted step of ``spec`` on its input. Returns ``(step, lower, param_count, device)``:
  ``step()`` runs one step and returns its (unsynchronised) output, ``lower()`` the step's
  ``jax.stages.Lowered`` (its ``cost_analysis()``, ``compile().as_text()``)."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from jax.sharding import NamedSharding, PartitionSpec

  import hrnet_jax

  options = jit_options(spec)
  dtype = jnp.bfloat16 if spec.dtype == 'bf16' else jnp.float32
  model = hrnet_jax.create_model(spec.model, pretrained=spec.weights or None, dtype=dtype)
  param_count = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  device = jax.devices()[0]
  x_np, y_np = synthetic_batch(spec)
  if '+dp' in spec.mode:
    mesh = jax.make_mesh((len(jax.devices()),), ('data',))
    batch_sharding = NamedSharding(mesh, PartitionSpec('data'))
    place_state = lambda tree: jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
  else:
    batch_sharding, place_state = device, lambda tree: tree
  x, y = jax.device_put(x_np, batch_sharding), jax.device_put(y_np, batch_sharding)

  if spec.task == 'infer':
    model.eval()
    apply_mode(model, spec.mode)
    graphdef, state = nnx.split(model)
    state = place_state(state)

    @functools.partial(jax.jit, compiler_options=options)
    def forward(state, x):
      return nnx.merge(graphdef, state)(x)

    step = lambda: forward(state, x)
    return step, lambda: forward.lower(state, x), param_count, device

  if 'foldbn' in spec.mode:
    raise ValueError('BatchNorm folding is for inference only')
  apply_mode(model, spec.mode)
  model.train()
  graphdef, params, stats = nnx.split(model, nnx.Param, ...)
  tx = optax.chain(
    optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LR, momentum=MOMENTUM, nesterov=True)
  )
  opt_state = tx.init(params)
  params, stats, opt_state = place_state((params, stats, opt_state))

  def loss_fn(params, stats, x, y):
    # copy=True: the merged model's BatchStats are mutated inside the grad trace.
    m = nnx.merge(graphdef, params, stats, copy=True)
    logits = m(x).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, nnx.state(m, nnx.Not(nnx.Param))

  if spec.remat:
    # Keep only conv outputs for the backward pass; BN/ReLU/add are recomputed (cheap,
    # memory-bound) instead of stored, which shrinks activation memory at large batch.
    loss_fn = jax.checkpoint(loss_fn, policy=jax.checkpoint_policies.dots_saveable)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2), compiler_options=options)
  def train_step(params, stats, opt_state, x, y):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  carry = [params, stats, opt_state]

  def step():
    carry[0], carry[1], carry[2], loss = train_step(*carry, x, y)
    return loss

  return step, lambda: train_step.lower(*carry, x, y), param_count, device


def run(spec: Spec) -> dict:
  import jax

  step, _, param_count, device = build_step(spec)
  timing = time_steps(step, jax.block_until_ready, spec)
  peak, kind = _peak_mem_mb(device)
  row = base_row(spec)
  row.update(task_columns(spec, timing, peak))
  row.update(
    layout='NHWC',
    compiled=True,
    device_name=device.device_kind,
    param_count=round(param_count / 1e6, 3),
    peak_mem_kind=kind,
    num_threads=os.cpu_count(),
    versions=versions('jax', 'jaxlib', 'flax', 'optax'),
    note=' '.join(
      [os.environ.get('XLA_FLAGS', '')] + [f'{k}={v}' for k, v in jit_options(spec).items()]
    ).strip(),
  )
  return row


if __name__ == '__main__':
  worker_main(run)
