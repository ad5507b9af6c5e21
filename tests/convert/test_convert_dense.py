"""``convert_official_weights --backbone-only``: a dense model started from a classification
checkpoint, with exactly the unused keys dropped and listed, and every other problem refused."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
from oracles import inputs, timm_model

import hrnet_jax
from hrnet_jax.convert import sources
from hrnet_jax.convert.cli import main as convert_main
from hrnet_jax.convert.layouts import official as keys
from hrnet_jax.pretrained import checkpoint

HEAD = ('incre_modules.', 'downsamp_modules.', 'final_layer.', 'classifier.')


@pytest.fixture(scope='module')
def small(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('small')
  sd = timm_model('hrnet_w18_small_v2', seed=11).state_dict()
  torch.save(sd, tmp / 'hrnet_w18_small_v2.pth')
  return tmp / 'hrnet_w18_small_v2.pth', {
    k: v.numpy() for k, v in sd.items() if not k.endswith('num_batches_tracked')
  }


def test_segmentation_from_classifier(small, tmp_path, capsys):
  path, sd = small
  assert (
    convert_main(
      [
        str(path),
        str(tmp_path / 'seg'),
        '--backbone-only',
        '--arch',
        'hrnetv2_w18_small_seg',
        '--num-outputs',
        '5',
      ]
    )
    == 0
  )
  printed = capsys.readouterr().out
  config = json.loads((tmp_path / 'seg' / 'config.json').read_text())
  head_keys = sorted(k for k in sd if k.startswith(HEAD))
  assert config['source']['dropped'] == head_keys and len(head_keys) > 100
  assert f'dropped ({len(head_keys)}):' in printed and 'classifier.weight' in printed
  assert config['source']['initialized'] == [
    'head.convs.0.bn.bias',
    'head.convs.0.bn.mean',
    'head.convs.0.bn.scale',
    'head.convs.0.bn.var',
    'head.convs.0.conv.kernel',
    'head.final_layer.bias',
    'head.final_layer.kernel',
  ]
  assert (config['arch'], config['num_classes'], config['source']['format']) == (
    'hrnetv2_w18_small_seg',
    5,
    'official',
  )
  _, arrays = checkpoint.read_pretrained(tmp_path / 'seg')
  backbone = {k[len('backbone.') :]: v for k, v in arrays.items() if k.startswith('backbone.')}
  assert {keys.torch_key(p) for p in backbone} == sd.keys() - set(head_keys)
  for p, v in backbone.items():
    np.testing.assert_array_equal(v, keys.torch_to_flax(p, sd[keys.torch_key(p)]), err_msg=p)
  model = hrnet_jax.load_pretrained(tmp_path / 'seg')
  out = np.asarray(model(jnp.asarray(inputs(1, 64, 96))))
  assert out.shape == (1, 16, 24, 5) and np.isfinite(out).all()


@pytest.mark.parametrize('via', ['safetensors', 'hub id'])
def test_backbone_only_from_timm_files_is_timm_format(small, tmp_path, monkeypatch, via):
  # The classification path's rule: official keys from a .safetensors file or a hub id are timm's.
  path, sd = small
  if via == 'safetensors':
    from safetensors.torch import save_file

    src = tmp_path / 'model.safetensors'
    save_file({k: torch.from_numpy(v) for k, v in sd.items()}, src)
  else:
    monkeypatch.setattr(sources, 'download_from_hub', lambda hub_id: path)
    src = 'timm/hrnet_w18_small_v2.ms_in1k'
  assert (
    convert_main(
      [
        str(src),
        str(tmp_path / 'seg'),
        '--quiet',
        '--backbone-only',
        '--arch',
        'hrnetv2_w18_small_seg',
      ]
    )
    == 0
  )
  config = json.loads((tmp_path / 'seg' / 'config.json').read_text())
  assert config['source']['format'] == 'timm' and config['source']['backbone_only'] is True
  assert config['source']['hub_id'] == (None if via == 'safetensors' else src)


def test_pose_from_classifier_drops_unused_fuse_rows(tmp_path):
  # Only key names matter here: timm's init, no randomized statistics (no forward pass).
  sd = timm.create_model('hrnet_w32', pretrained=False).state_dict()
  torch.save(sd, tmp_path / 'hrnet_w32.pth')
  assert (
    convert_main(
      [
        str(tmp_path / 'hrnet_w32.pth'),
        str(tmp_path / 'pose'),
        '--quiet',
        '--backbone-only',
        '--arch',
        'hrnet_w32_pose',
      ]
    )
    == 0
  )
  config = json.loads((tmp_path / 'pose' / 'config.json').read_text())
  expected = sorted(
    k
    for k in sd
    if not k.endswith('num_batches_tracked')
    and (
      k.startswith(HEAD)
      or k.startswith(
        ('stage4.2.fuse_layers.1', 'stage4.2.fuse_layers.2', 'stage4.2.fuse_layers.3')
      )
    )
  )
  assert config['source']['dropped'] == expected
  assert any(k.startswith('stage4.2.fuse_layers.3.') for k in expected)
  assert config['source']['initialized'] == ['head.final_layer.bias', 'head.final_layer.kernel']
  assert config['num_keypoints'] == 17


def test_backbone_only_refusals(small, tmp_path, capsys):
  path, _ = small
  sd = torch.load(path, weights_only=True)
  sd['extra_branch.weight'] = torch.zeros(3)
  torch.save(sd, tmp_path / 'extra.pth')
  assert (
    convert_main(
      [
        str(tmp_path / 'extra.pth'),
        str(tmp_path / 'a'),
        '--backbone-only',
        '--arch',
        'hrnetv2_w18_small_seg',
      ]
    )
    == 2
  )
  assert 'extra_branch.weight' in capsys.readouterr().err and not (tmp_path / 'a').exists()
  # Another variant's backbone, and no dense --arch at all.
  assert (
    convert_main([str(path), str(tmp_path / 'b'), '--backbone-only', '--arch', 'hrnetv2_w18_seg'])
    == 2
  )
  assert 'hrnet_w18 backbone' in capsys.readouterr().err
  assert convert_main([str(path), str(tmp_path / 'c'), '--backbone-only']) == 2
  assert '--backbone-only needs --arch' in capsys.readouterr().err
  # A classification file is not a dense checkpoint without --backbone-only.
  assert convert_main([str(path), str(tmp_path / 'd'), '--arch', 'hrnetv2_w18_small_seg']) == 2
  assert '--backbone-only' in capsys.readouterr().err
  assert not any((tmp_path / n).exists() for n in 'bcd')
