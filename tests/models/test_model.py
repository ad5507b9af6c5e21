"""The Flax model itself: sizes, API in timm's terms, input sizes, dtypes, BatchNorm modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from oracles import assert_close, inputs

import hrnet_jax
from hrnet_jax.models.layers import upsample_nearest

# Published parameter counts (official README / timm results CSVs / hrnet_reference.md §1.6).
OFFICIAL_PARAMS = {
  'hrnet_w18_small': 13_187_464,
  'hrnet_w18_small_v2': 15_597_464,
  'hrnet_w18': 21_299_004,
  'hrnet_w30': 37_712_220,
  'hrnet_w32': 41_232_680,
  'hrnet_w40': 57_557_160,
  'hrnet_w44': 67_064_984,
  'hrnet_w48': 77_469_864,
  'hrnet_w64': 128_059_944,
  'hrnet_w18_ssld': 21_295_164,
  'hrnet_w48_ssld': 77_466_024,
}


def _count(model, kind):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, kind)))


@pytest.fixture(scope='module')
def small():
  model = hrnet_jax.create_model('hrnet_w18_small')
  model.eval()
  return model


# PaddleClas-only variants; their counts are checked against PaddleClas in test_parity_paddle.py.
PADDLECLAS_ONLY = ['hrnet_w60'] + [f'se_hrnet_w{w}' for w in (18, 30, 32, 40, 44, 48, 60, 64)]


def test_every_variant_is_listed():
  assert sorted(hrnet_jax.list_models()) == sorted([*OFFICIAL_PARAMS, *PADDLECLAS_ONLY])


@pytest.mark.parametrize('name', sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name):
  model = hrnet_jax.create_model(name)
  assert _count(model, nnx.Param) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize('name', ['hrnet_w18_small', 'hrnet_w48_ssld'])
def test_parameter_count_equals_timm(name):
  import timm

  reference = timm.create_model(name)
  assert _count(hrnet_jax.create_model(name), nnx.Param) == sum(
    p.numel() for p in reference.parameters()
  )
  bn_buffers = sum(b.numel() for n, b in reference.named_buffers() if 'running' in n)
  assert _count(hrnet_jax.create_model(name), nnx.BatchStat) == bn_buffers


def test_unknown_name_is_a_clear_error():
  with pytest.raises(ValueError, match='hrnet_w19.*valid names'):
    hrnet_jax.create_model('hrnet_w19')


def test_api_shapes(small):
  x = jnp.asarray(inputs(2, 224, 224))
  features = small.forward_features(x)
  assert features.shape == (2, 7, 7, 2048)
  pooled = small.forward_head(features, pre_logits=True)
  assert pooled.shape == (2, small.num_features) == (2, 2048)
  np.testing.assert_allclose(small.forward_head(features), small(x), rtol=1e-6, atol=1e-6)
  assert small.feature_info[-1] == dict(num_chs=1024, reduction=32, module='stage4', index=4)


def test_num_classes_zero_returns_embedding(small):
  x = jnp.asarray(inputs(2, 64, 64))
  embedder = hrnet_jax.create_model('hrnet_w18_small', num_classes=0)
  nnx.update(embedder, nnx.state(small, nnx.Not(nnx.PathContains('classifier'))))
  embedder.eval()
  out = embedder(x)
  assert out.shape == (2, 2048)
  np.testing.assert_allclose(
    out, small.forward_head(small.forward_features(x), pre_logits=True), rtol=1e-6, atol=1e-6
  )


def test_custom_num_classes():
  model = hrnet_jax.create_model('hrnet_w18_small', num_classes=10)
  model.eval()
  assert model(jnp.asarray(inputs(1, 64, 64))).shape == (1, 10)


@pytest.mark.parametrize('indices', [(0, 1, 2, 3, 4), (4,), (1, 3)])
def test_features_only_out_indices(indices):
  model = hrnet_jax.create_model('hrnet_w18_small', features_only=True, out_indices=indices)
  model.eval()
  maps = model(jnp.asarray(inputs(1, 224, 224)))
  assert len(maps) == len(model.feature_info) == len(indices)
  for m, info in zip(maps, model.feature_info):
    assert m.shape == (1, 224 // info['reduction'], 224 // info['reduction'], info['num_chs'])


def test_features_only_rejects_bad_arguments():
  with pytest.raises(ValueError, match='out_indices'):
    hrnet_jax.create_model('hrnet_w18_small', features_only=True, out_indices=(5,))
  with pytest.raises(ValueError, match='feature_location'):
    hrnet_jax.create_model('hrnet_w18_small', features_only=True, feature_location='final')


@pytest.mark.parametrize('size', [(225, 225), (240, 240), (257, 193), (32, 32)])
def test_runs_at_sizes_the_official_code_rejects(small, size):
  """ceil(H/4) % 8 != 0 breaks the official fuse; ours resizes to the target branch."""
  out = small(jnp.asarray(inputs(2, *size)))
  assert out.shape == (2, 1000) and bool(jnp.isfinite(out).all())
  features = hrnet_jax.create_model('hrnet_w18_small', features_only=True)
  features.eval()
  maps = features(jnp.asarray(inputs(1, *size)))
  h, w = size
  for m in maps:  # strides 2, 4, ..., 32: each stride-2 conv (pad 1) rounds up
    h, w = (h + 1) // 2, (w + 1) // 2
    assert m.shape[1:3] == (h, w)


@pytest.mark.parametrize(
  'in_size,out_size',
  [((7, 7), (14, 14)), ((15, 8), (29, 29)), ((4, 6), (15, 23)), ((29, 15), (57, 60))],
)
def test_upsample_matches_torch_interpolate(in_size, out_size):
  """At exact factors nn.Upsample(scale_factor); otherwise F.interpolate(size=...)."""
  x = np.random.RandomState(0).randn(2, *in_size, 3).astype(np.float32)
  ref = torch.nn.functional.interpolate(
    torch.from_numpy(x.transpose(0, 3, 1, 2)), size=out_size, mode='nearest'
  )
  np.testing.assert_array_equal(
    upsample_nearest(jnp.asarray(x), out_size), ref.numpy().transpose(0, 2, 3, 1)
  )


def test_input_validation(small):
  with pytest.raises(ValueError, match=r'\[B, H, W, 3\]'):
    small(jnp.zeros((2, 3, 224, 224)))
  with pytest.raises(ValueError, match='>= 32'):
    small(jnp.zeros((1, 31, 64, 3)))


def test_bfloat16_compute_with_float32_params(small):
  model = hrnet_jax.create_model('hrnet_w18_small', dtype=jnp.bfloat16)
  nnx.update(model, nnx.state(small))
  model.eval()
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model)))
  x = jnp.asarray(inputs(4, 64, 64))
  out, ref = model(x), small(x)
  assert out.dtype == jnp.bfloat16
  rel = float(jnp.abs(out.astype(jnp.float32) - ref).max() / jnp.abs(ref).max())
  assert rel < 5e-2


def test_train_and_eval_batchnorm(small):
  model = hrnet_jax.create_model('hrnet_w18_small')
  stats = lambda: jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
  before = stats()
  x = jnp.asarray(inputs(4, 64, 64))
  model.train()
  train_out = model(x)
  after = stats()
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after)
  assert all(jax.tree.leaves(moved)), 'training mode must update every running statistic'
  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic.
  mean = np.asarray(model.bn1.mean[...])
  batch_mean = np.asarray(model.conv1(x)).mean((0, 1, 2))
  np.testing.assert_allclose(mean, 0.1 * batch_mean, rtol=1e-4, atol=1e-5)
  model.eval()
  eval_out = model(x)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool((a == b).all()), after, stats())))
  assert not np.allclose(train_out, eval_out)


def test_jit_matches_eager(small):
  x = jnp.asarray(inputs(2, 96, 96))
  graphdef, state = nnx.split(small)
  jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  np.testing.assert_allclose(jitted(state, x), small(x), rtol=1e-5, atol=1e-4)


def _random_bn_statistics(model, seed=0):
  """Running statistics and affine parameters away from the identity, so folding is tested."""
  rng = np.random.RandomState(seed)
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.BatchNorm):
      c = module.mean[...].shape[0]
      module.mean[...] = jnp.asarray(rng.randn(c) * 0.5, jnp.float32)
      module.var[...] = jnp.asarray(rng.rand(c) + 0.5, jnp.float32)
      module.scale[...] = jnp.asarray(rng.rand(c) + 0.5, jnp.float32)
      module.bias[...] = jnp.asarray(rng.randn(c) * 0.5, jnp.float32)


@pytest.mark.parametrize('features_only', [False, True])
def test_fold_batchnorm_keeps_the_outputs(features_only):
  model = hrnet_jax.create_model('hrnet_w18_small', features_only=features_only)
  _random_bn_statistics(model)
  model.eval()
  x = jnp.asarray(inputs(2, 64, 64))
  ref = model(x)
  n_bn = sum(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_graph(model))
  model.train()  # folding uses the running statistics whatever the mode
  assert hrnet_jax.fold_batchnorm(model) == n_bn > 0
  assert not any(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_graph(model))
  with jax.default_matmul_precision('highest'):
    out = jax.jit(lambda m, x: m(x))(model, x)
  for i, (a, b) in enumerate(zip(jax.tree.leaves(out), jax.tree.leaves(ref))):
    assert_close(a, np.asarray(b), f'folded output {i}')


def test_fold_batchnorm_refuses_a_batchnorm_without_its_conv():
  class Odd(nnx.Module):
    def __init__(self):
      self.bn = nnx.BatchNorm(4, rngs=nnx.Rngs(0))

  with pytest.raises(ValueError, match=r'Odd\.bn: no conv'):
    hrnet_jax.fold_batchnorm(Odd())
