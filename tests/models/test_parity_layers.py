"""Layer-by-layer parity with timm's HRNet: the stem, one HighResolutionModule, the head.

tests/models/test_parity_timm.py compares whole models; when it fails, these tests say which
layer is wrong (as jax-ml/bonsai goes embeddings -> isolated blocks -> full model). Each one
feeds both sides the same input and compares every output in float32, on hrnet_w18_small at
64x64 (batch 2):

* the stem: conv1, bn1, ReLU, conv2, bn2, ReLU, i.e. the input of ``layer1`` (and the stride-2
  map after bn1's ReLU, feature 0 of the backbone);
* ``stage3[0]`` (3 branches of BasicBlocks and every fuse layer: identity, 1x1 conv + upsampling,
  chains of stride-2 3x3 convs) on random branch inputs, each of the 3 outputs;
* the classification head (incre_modules, downsamp_modules, final_layer, global average pool,
  classifier) on random stage-4 branch inputs: the final_layer map, the pooled 2048-d vector and
  the logits.

The timm model has random weights and randomized BatchNorm statistics, affine parameters and
biases (``oracles.timm_model``); ours loads them the way a user would: the state_dict saved as
the official repo ships it, converted by the CLI code path, then ``hrnet_jax.load_pretrained``.
Our submodules are called directly by their attribute names, in eval mode (running statistics).
"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from oracles import assert_close, inputs, timm_model

import hrnet_jax
from hrnet_jax.convert.cli import main as convert_main

NAME = 'hrnet_w18_small'
BATCH, HEIGHT, WIDTH = 2, 64, 64
CASE = f'timm {NAME} {HEIGHT}x{WIDTH} layers'


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  """(timm reference in eval mode, our model loaded from its converted weights, in eval mode)."""
  tmp = tmp_path_factory.mktemp(f'{NAME}_layers')
  reference = timm_model(NAME)
  torch.save(reference.state_dict(), tmp / f'{NAME}.pth')
  assert convert_main([str(tmp / f'{NAME}.pth'), str(tmp / 'flax'), '--quiet']) == 0
  ours = hrnet_jax.load_pretrained(tmp / 'flax')
  ours.eval()  # load_pretrained already does; the BatchNorms must use running statistics
  yield reference, ours
  shutil.rmtree(tmp)


def _to_torch(x_nhwc: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())


def _to_nhwc(t: torch.Tensor) -> np.ndarray:
  return t.numpy().transpose(0, 2, 3, 1) if t.ndim == 4 else t.numpy()


def _sequential(layers, x):
  for layer in layers:
    x = layer(x)
  return x


def _branch_inputs(channels, seed: int) -> list[np.ndarray]:
  """Random NHWC maps for branches at strides 4, 8, 16, ... of a HEIGHT x WIDTH image."""
  rng = np.random.RandomState(seed)
  return [
    rng.randn(BATCH, HEIGHT // 2 ** (b + 2), WIDTH // 2 ** (b + 2), c).astype(np.float32)
    for b, c in enumerate(channels)
  ]


def _compare(out, ref: np.ndarray, output: str, parity_log) -> float:
  diff = assert_close(out, ref, f'{NAME} {output}')
  parity_log(CASE, output, diff, float(np.abs(ref).max()))
  return diff


def test_stem(models, parity_log):
  reference, ours = models
  x = inputs(BATCH, HEIGHT, WIDTH)
  with torch.no_grad():
    t0 = reference.act1(reference.bn1(reference.conv1(_to_torch(x))))
    t1 = reference.act2(reference.bn2(reference.conv2(t0)))
  x = jnp.asarray(x)
  f0 = jax.nn.relu(ours.bn1(ours.conv1(x)))
  f1 = jax.nn.relu(ours.bn2(ours.conv2(f0)))
  _compare(f0, _to_nhwc(t0), 'stem stride 2', parity_log)
  _compare(f1, _to_nhwc(t1), 'stem (layer1 input)', parity_log)
  # The cut point is the one the forward pass uses: model.stem feeds layer1.
  np.testing.assert_array_equal(np.asarray(ours.stem(x)[1]), np.asarray(f1))


def test_stage3_module(models, parity_log):
  reference, ours = models
  module = ours.stage3[0]
  assert len(module.branches) == len(module.fuse_layers) == 3
  xs = _branch_inputs(module.out_chs, seed=2)  # a first module's input widths = its output's
  with torch.no_grad():
    refs = reference.stage3[0]([_to_torch(x) for x in xs])  # a fresh list: timm writes into it
  outs = module([jnp.asarray(x) for x in xs])
  assert len(outs) == len(refs) == 3
  for i, (out, ref) in enumerate(zip(outs, refs)):
    _compare(out, _to_nhwc(ref), f'stage3[0] branch {i}', parity_log)


def test_head(models, parity_log):
  reference, ours = models
  assert len(ours.incre_modules) == 4 and len(ours.downsamp_modules) == 3
  xs = _branch_inputs(ours.branch_chs, seed=3)
  with torch.no_grad():  # timm's forward_features after self.stages(x), then forward_head
    y = reference.incre_modules[0](_to_torch(xs[0]))
    for i, down in enumerate(reference.downsamp_modules):
      y = reference.incre_modules[i + 1](_to_torch(xs[i + 1])) + down(y)
    t_final = reference.final_layer(y)
    t_pooled = reference.forward_head(t_final, pre_logits=True)
    t_logits = reference.classifier(t_pooled)
  y = _sequential(ours.incre_modules[0], jnp.asarray(xs[0]))
  for i, down in enumerate(ours.downsamp_modules):
    y = _sequential(ours.incre_modules[i + 1], jnp.asarray(xs[i + 1])) + down(y)
  final = ours.final_layer(y)
  pooled = ours.forward_head(final, pre_logits=True)
  logits = ours.classifier(pooled)
  _compare(final, _to_nhwc(t_final), 'head final_layer', parity_log)
  _compare(pooled, _to_nhwc(t_pooled), 'head pooled', parity_log)
  _compare(logits, _to_nhwc(t_logits), 'head logits', parity_log)
