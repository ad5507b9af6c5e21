"""``hrnet_jax.convert.layouts``: the one layout detection and each layout's key table both ways,
on every key of real models (no conversion, no weights drawn)."""

import numpy as np
import pytest

import hrnet_jax
from hrnet_jax.convert import layouts
from hrnet_jax.convert.layouts import dense, mmpretrain, official
from hrnet_jax.pretrained import state

NAME = 'hrnet_w18_small'


@pytest.fixture(scope='module')
def leaves():
  return state.abstract_arrays(lambda rngs: hrnet_jax.create_model(NAME, rngs=rngs))


def test_one_kernel_permutation_both_ways(leaves):
  rng = np.random.default_rng(0)
  for path, leaf in leaves.items():
    torch_value = rng.standard_normal(official.torch_shape(path, leaf.shape)).astype(np.float32)
    flax_value = official.torch_to_flax(path, torch_value)
    assert flax_value.shape == leaf.shape, path
    np.testing.assert_array_equal(official.flax_to_torch(path, flax_value), torch_value)
  conv = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # OIHW
  np.testing.assert_array_equal(
    official.torch_to_flax('a.conv.kernel', conv), conv.transpose(2, 3, 1, 0)
  )
  linear = np.arange(6).reshape(2, 3)
  np.testing.assert_array_equal(official.torch_to_flax('classifier.kernel', linear), linear.T)
  assert official.torch_to_flax('a.bn.scale', linear) is linear


def test_mmpretrain_table_both_ways(leaves):
  names = {official.torch_key(p) for p in leaves}
  mm = {mmpretrain.from_official_key(k): k for k in names}
  assert len(mm) == len(names)
  assert {k for k in mm if not k.startswith('backbone.')} == {
    k
    for k in mm
    if k.startswith(
      ('neck.0.increase_layers.', 'neck.0.downsample_layers.', 'neck.0.final_layer.', 'head.fc.')
    )
  }
  assert mmpretrain.from_official_key('downsamp_modules.2.1.running_var') == (
    'neck.0.downsample_layers.2.bn.running_var'
  )
  assert mmpretrain.from_official_key('final_layer.0.weight') == 'neck.0.final_layer.conv.weight'
  for mm_key, key in mm.items():
    assert mmpretrain.to_official_key(mm_key) == key
    assert layouts.to_official_key(mm_key, 'mmpretrain') == key
  assert mmpretrain.to_official_key('data_preprocessor.mean') == 'data_preprocessor.mean'


def test_detect_every_layout(leaves):
  keys = [official.torch_key(p) for p in leaves]

  def detect(names, path='w.pth', hub_id=None):
    return layouts.detect(names, path=path, hub_id=hub_id)

  assert detect(keys) == 'official'
  assert detect(keys, path='model.safetensors') == 'timm'
  assert detect(keys, path='pytorch_model.bin', hub_id='timm/hrnet_w18_small.ms_in1k') == 'timm'
  assert detect([mmpretrain.from_official_key(k) for k in keys]) == 'mmpretrain'
  assert detect(['conv_layer1_1.conv.weight', 'conv_layer1_1.bn._mean']) == 'paddle'
  backbone = [
    k
    for k in keys
    if not k.startswith(('incre_modules.', 'downsamp_modules.', 'final_layer.', 'classifier.'))
  ]
  for fmt in dense.DENSE_FORMATS:
    head = {
      'mmseg': ['decode_head.conv_seg.weight'],
      'mmpose': ['head.final_layer.weight'],
      'mmdet': ['neck.reduction_conv.conv.weight'],
      'hrnet_seg': ['last_layer.3.weight'],
      'hrnet_pose': ['final_layer.weight'],
    }[fmt]
    names = [dense.BACKBONE_PREFIX[fmt] + k for k in backbone] + head
    # A dense layout is never reported as timm: the rule is for official classification keys.
    assert detect(names, path='model.safetensors') == fmt
    assert layouts.to_official_key(names[0], fmt) == backbone[0]
    assert layouts.from_official_key(backbone[0], fmt) == names[0]
  full = [f'model.{k}' for k in backbone + ['last_layer.3.weight']] + ['loss.criterion.weight']
  assert detect(full) == 'hrnet_seg'  # an HRNet-Semantic-Segmentation FullModel
  assert detect(keys + ['bn1.num_batches_tracked']) == 'official'
