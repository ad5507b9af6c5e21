"""Rematerialization (``hrnet_jax.runtime.remat``) changes what the backward pass stores, never the
results: gradients, outputs and BN statistics equal the plain model's, and the checkpoint
primitive is really in the traced program. Run on stage 1 and the first HR module of
hrnet_w18_small (Bottleneck, BasicBlock and HighResolutionModule, the three wrapped classes) at
a small input, so the compile stays cheap."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import hrnet_jax
from hrnet_jax.models.layers import run_sequential
from hrnet_jax.runtime import remat


def _loss_and_model(level):
  model = hrnet_jax.create_model('hrnet_w18_small', rngs=nnx.Rngs(0))
  remat.apply(model, level)
  model.train()
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def loss(params, stats, x, xs):
    m = nnx.merge(graphdef, params, stats, copy=True)
    outs = [run_sequential(m.layer1, x), *m.stage2[0](xs)]
    return sum(jnp.sum(o * jnp.cos(o)) for o in outs), (outs, nnx.state(m, nnx.BatchStat))

  return loss, model, params, stats


def _inputs(model):
  keys = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(keys[0], (2, 8, 8, 64))
  xs = [
    jax.random.normal(keys[1], (2, 8, 8, model.cfg.stages[0].out_channels[0])),
    jax.random.normal(keys[2], (2, 4, 4, model.cfg.stages[0].out_channels[1])),
  ]
  return x, xs


def _run(level):
  loss, model, params, stats = _loss_and_model(level)
  x, xs = _inputs(model)
  fn = jax.value_and_grad(loss, argnums=(0, 2, 3), has_aux=True)
  jaxpr = str(jax.make_jaxpr(fn)(params, stats, x, xs))
  (value, (outs, new_stats)), grads = jax.jit(fn)(params, stats, x, xs)
  return jaxpr.count('remat2['), (value, outs, new_stats, grads)


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)))


@pytest.fixture(scope='module')
def plain():
  with jax.default_matmul_precision('highest'):
    return _run('none')


@pytest.mark.parametrize('level', ['block', 'module'])
def test_remat_keeps_gradients_outputs_and_bn_statistics(plain, level):
  n_plain, ref = plain
  with jax.default_matmul_precision('highest'):
    n, got = _run(level)
  assert n_plain == 0 and n > 0, (n_plain, n)
  bound = 1e-5 * max(10.0, max(float(jnp.max(jnp.abs(l))) for l in jax.tree.leaves(ref)))
  assert _max_diff(ref, got) <= bound


def test_remat_levels():
  model = hrnet_jax.create_model('hrnet_w18_small', rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="remat='blocks'"):
    remat.apply(model, 'blocks')
  n_blocks = sum(
    isinstance(m, (hrnet_jax.models.layers.BasicBlock, hrnet_jax.models.layers.Bottleneck))
    for _, m in nnx.iter_modules(model)
  )
  remat.apply(model, 'block')
  wrapped = [m for _, m in nnx.iter_modules(model) if type(m).__name__.startswith('Remat')]
  assert len(wrapped) == n_blocks
  again = remat.apply(model, 'block')  # idempotent
  assert sum(type(m).__name__.startswith('Remat') for _, m in nnx.iter_modules(again)) == n_blocks


def test_fast_trace_keeps_results_and_state_tree():
  """``hrnet_jax.runtime.fast_trace`` (linear-time tracing of BN statistic writes): bit-identical
  outputs, BN statistics and gradients, the same state paths."""
  from hrnet_jax.runtime import fast_trace

  loss, model, params, stats = _loss_and_model('none')
  x, xs = _inputs(model)
  ref = jax.jit(jax.value_and_grad(loss, argnums=(0, 2, 3), has_aux=True))(params, stats, x, xs)
  fast_trace.apply(model)
  graphdef, params2, stats2 = nnx.split(model, nnx.Param, nnx.BatchStat)
  assert jax.tree.structure(nnx.as_pure(stats2)) == jax.tree.structure(nnx.as_pure(stats))
  assert all(
    type(v) is fast_trace.RunningStat
    for v in jax.tree.leaves(stats2, is_leaf=lambda v: isinstance(v, nnx.Variable))
  )

  def loss2(params, stats, x, xs):
    m = nnx.merge(graphdef, params, stats, copy=True)
    outs = [run_sequential(m.layer1, x), *m.stage2[0](xs)]
    return sum(jnp.sum(o * jnp.cos(o)) for o in outs), (outs, nnx.state(m, nnx.BatchStat))

  got = jax.jit(jax.value_and_grad(loss2, argnums=(0, 2, 3), has_aux=True))(params2, stats2, x, xs)
  assert _max_diff(nnx.as_pure(ref), nnx.as_pure(got)) == 0.0
