"""``HRNetConfig.scan`` (``hrnet_jax.models.hrnet.scan_layers``) changes how the forward pass is traced,
never its results: outputs, gradients and BatchNorm statistics in train mode, and outputs in eval
mode, equal the unrolled model's, with and without rematerialization, SE blocks, the pose models'
single-output last module and ``fast_trace``; the state tree is unchanged.

Cheap set-up: stage-1-like Bottlenecks (a differing first block, then two identical ones) and
three 2-branch HighResolutionModules of BasicBlocks at 8x8, the last of which outputs branch 0
only in the pose case (so it is not scanned with the others); the whole-model wiring is checked
on the traced program only."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from hrnet_jax.models.configs import BASIC, BOTTLENECK, HRNetConfig, StageConfig
from hrnet_jax.models.hrnet import (
  HighResolutionModule,
  HighResolutionNet,
  _run_layers,
  _structure_runs,
  set_scan,
)
from hrnet_jax.models.layers import Precision, make_layer
from hrnet_jax.runtime import fast_trace, remat

STAGE = StageConfig(3, BASIC, (2, 2), (4, 8))


class Tiny(nnx.Module):
  """``layer1``-like blocks and three HR modules; ``pose``: the last outputs branch 0 only."""

  def __init__(self, *, se: bool, pose: bool, scan: bool):
    kw = dict(precision=Precision(), rngs=nnx.Rngs(0))
    self.layer1 = make_layer(BOTTLENECK, 8, 4, 3, se=se, **kw)
    self.stage = nnx.List(
      [
        HighResolutionModule(
          STAGE.out_channels,
          STAGE,
          se=se,
          scan=scan,
          multi_scale_output=not (pose and m == 2),
          **kw,
        )
        for m in range(3)
      ]
    )
    self.scan = scan

  def __call__(self, x, xs):
    return [_run_layers(self.layer1, x, self.scan), *_run_layers(self.stage, xs, self.scan)]


def _model(case, *, scan, level='none', fast=False):
  model = Tiny(se=case == 'se_pose', pose=case == 'se_pose', scan=scan)
  if fast:
    fast_trace.apply(model)
  return remat.apply(model, level)


def _run(model):
  """Train-mode outputs, new BN statistics and gradients (w.r.t. params and inputs) of
  ``sum(o * cos(o))`` over the outputs, eval-mode outputs, and the jaxpr text."""
  keys = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(keys[0], (2, 8, 8, 8))
  xs = [jax.random.normal(keys[1], (2, 8, 8, 4)), jax.random.normal(keys[2], (2, 4, 4, 8))]
  model.train()
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.eval()
  eval_def = nnx.graphdef(model)

  def loss(params, stats, x, xs):
    m = nnx.merge(graphdef, params, stats, copy=True)
    outs = m(x, xs)
    return sum(jnp.sum(o * jnp.cos(o)) for o in outs), (outs, nnx.state(m, nnx.BatchStat))

  def both(params, stats, x, xs):
    train = jax.value_and_grad(loss, argnums=(0, 2, 3), has_aux=True)(params, stats, x, xs)
    return train, nnx.merge(eval_def, params, stats, copy=True)(x, xs)

  jaxpr = jax.make_jaxpr(both)(params, stats, x, xs)
  return str(jaxpr), nnx.as_pure(jax.jit(both)(params, stats, x, xs))


def _max_diff(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  # SE at width 4 squeezes to int(4 / 16) = 0 channels: empty leaves.
  diff = lambda u, v: float(jnp.max(jnp.abs(u - v))) if u.size else 0.0
  return max(jax.tree.leaves(jax.tree.map(diff, a, b)))


@pytest.fixture(scope='module')
def unrolled():
  """The reference (no scan, no remat) of each case, computed once."""
  refs = {}

  def get(name):
    if name not in refs:
      with jax.default_matmul_precision('highest'):
        refs[name] = _run(_model(name, scan=False))
    return refs[name]

  return get


@pytest.mark.parametrize(
  'name,level,fast',
  [('plain', 'none', False), ('plain', 'module', True), ('se_pose', 'block', True)],
)
def test_scan_keeps_outputs_gradients_and_bn_statistics(unrolled, name, level, fast):
  ref_jaxpr, ref = unrolled(name)
  with jax.default_matmul_precision('highest'):
    jaxpr, got = _run(_model(name, scan=True, level=level, fast=fast))
  # One copy of each repeated body: fewer convolutions in the program, inside scans.
  assert ref_jaxpr.count('scan[') == 0 and jaxpr.count('scan[') > 0
  assert jaxpr.count('conv_general_dilated[') < ref_jaxpr.count('conv_general_dilated[')
  assert (level == 'none') == (jaxpr.count('remat2[') == 0)
  bound = 1e-5 * max(10.0, *(float(jnp.max(jnp.abs(l))) for l in jax.tree.leaves(ref) if l.size))
  assert _max_diff(ref, got) <= bound


def test_scan_runs_state_tree_and_model_wiring():
  """Runs group consecutive layers of one structure only; ``set_scan`` toggles the option,
  leaves the state (paths, shapes, values) as it is, and puts the scans in the whole model's
  traced forward (traced only, not compiled)."""
  tiny = HRNetConfig(
    stage1=StageConfig(1, BOTTLENECK, (3,), (4,)),
    stage2=StageConfig(2, BASIC, (2, 2), (4, 8)),
    stage3=StageConfig(1, BASIC, (1, 1, 1), (4, 8, 16)),
    stage4=StageConfig(3, BASIC, (2, 2, 2, 2), (4, 8, 16, 32)),
    se=True,
    multi_scale_output=False,
  )
  model = HighResolutionNet(tiny, head='', num_classes=0, rngs=nnx.Rngs(0))
  assert [len(r) for _, r, _ in _structure_runs(model.layer1)] == [1, 2]
  assert [len(r) for _, r, _ in _structure_runs(model.stage2)] == [2]
  assert [len(r) for _, r, _ in _structure_runs(model.stage4)] == [2, 1]  # last: branch 0 only
  assert [len(r) for _, r, _ in _structure_runs(model.stage4[0].branches[3])] == [2]
  before = nnx.state(model)
  set_scan(model, True)
  assert model.cfg.scan and all(m.scan for m in model.stage4)
  assert _max_diff(nnx.as_pure(before), nnx.as_pure(nnx.state(model))) == 0.0
  x = jnp.zeros((1, 8, 8, 64))  # the stem's output
  graphdef, state = nnx.split(model)
  traced = str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s).stages(x))(state))
  # layer1 blocks 1-2; stage2 modules 0-1; and inside them / stage3-4 the branch blocks.
  assert traced.count('scan[') >= 3


def test_trainer_config_turns_scan_on():
  """``hrnet-train``'s ``config.scan`` (off by default) reaches every HR module."""
  from hrnet_jax.train import train_state
  from hrnet_jax.train.recipes import digits

  config = digits.get_config()
  assert config.scan is False
  config.scan = True
  model = train_state.recipe_model(config, num_classes=10)
  assert model.cfg.scan and all(m.scan for s in (2, 3, 4) for m in getattr(model, f'stage{s}'))
