"""hrnet_jax.linen: HRNet inside a user's Linen model, weights from a checkpoint folder; one
training step, then the Linen and NNX models agree (hrnet_w18_small, 64x64)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from oracles import assert_close

import hrnet_jax
from hrnet_jax.linen import HRNet, load_variables, variables_of


class Classifier(nn.Module):
  """A user's Linen model: HRNet's 1000 logits -> their own 10-way head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    logits = HRNet('hrnet_w18_small', name='backbone')(x, train=train)
    return logits, nn.Dense(10, name='head')(logits)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
  model = hrnet_jax.create_model('hrnet_w18_small', rngs=nnx.Rngs(5))
  rng = np.random.default_rng(0)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.BatchStat)):  # not 0 / 1
    value = rng.uniform(0.5, 1.5, var.shape) if path[-1] == 'var' else rng.normal(0, 0.1, var.shape)
    var.set_value(jnp.asarray(value, jnp.float32))
  out = tmp_path_factory.mktemp('linen') / 'ckpt'
  hrnet_jax.save_pretrained(model, out)
  return out


def test_one_training_step_matches_nnx(ckpt):
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 64, 64, 3)), jnp.float32)
  labels = jnp.array([3, 7])
  net = Classifier()
  # The backbone's variables come from the checkpoint, so only their structure is initialized
  # (a compiled init of the whole model would cost more than the rest of the test).
  variables = jax.eval_shape(net.init, jax.random.key(0), x)
  apply = jax.jit(net.apply)  # eval mode
  loaded = load_variables(ckpt)
  assert jax.tree.all(
    jax.tree.map(np.array_equal, loaded, variables_of(hrnet_jax.load_pretrained(ckpt)))
  )
  assert jax.tree.structure(loaded['params']) == jax.tree.structure(variables['params']['backbone'])
  head = nn.Dense(10).init(jax.random.key(1), jnp.zeros((1, 1000)))['params']
  params = {'backbone': loaded['params'], 'head': head}
  assert jax.tree.structure(params) == jax.tree.structure(variables['params'])
  stats = {'backbone': loaded['batch_stats']}

  nnx_model = hrnet_jax.load_pretrained(ckpt)  # eval mode
  nnx_forward = nnx.jit(lambda model, x: model(x))
  logits, _ = apply({'params': params, 'batch_stats': stats}, x)
  assert_close(logits, np.asarray(nnx_forward(nnx_model, x)), 'linen vs nnx logits (loaded)')

  tx = optax.sgd(0.1)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state):
    def loss_fn(params):
      (_, out), updates = net.apply(
        {'params': params, 'batch_stats': stats}, x, train=True, mutable=['batch_stats']
      )
      return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    new_updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, new_updates), updates['batch_stats'], opt_state, loss

  new_params, new_stats, opt_state, loss = step(params, stats, opt_state)
  assert np.isfinite(loss)
  moved = jax.tree.map(
    lambda a, b: float(jnp.abs(a - b).max()), new_params['backbone'], params['backbone']
  )
  assert max(jax.tree.leaves(moved)) > 0  # the backbone was trained
  assert not np.allclose(jax.tree.leaves(new_stats)[0], jax.tree.leaves(stats)[0])

  # The NNX model given the trained Linen variables computes the Linen model's logits.
  _assign(nnx_model, new_params['backbone'], new_stats['backbone'])
  logits, _ = apply({'params': new_params, 'batch_stats': new_stats}, x)
  assert_close(
    logits, np.asarray(nnx_forward(nnx_model, x)), 'linen vs nnx logits (after one step)'
  )


def _assign(model, params, stats):
  """Writes Linen ``HRNet`` variables (``{'hrnet': ...}``) into the NNX ``model``."""
  for collection in (params['hrnet'], stats['hrnet']):
    for path, value in jax.tree_util.tree_flatten_with_path(collection)[0]:
      node = model
      keys = [k.key for k in path]
      for key in keys[:-1]:
        node = node[key] if isinstance(key, int) else getattr(node, key)
      getattr(node, keys[-1]).set_value(value)
