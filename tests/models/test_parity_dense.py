"""Parity of the dense models with mmseg, mmpose and mmdet, through their own checkpoint files.

Each oracle model is built from the config that ships in its wheel (BatchNorm instead of SyncBN:
one CPU process), gets random weights, BatchNorm statistics and biases (``oracles.randomize_``),
and is saved by mmengine's ``save_checkpoint`` as ``{'meta', 'state_dict'}``. That file is
converted by the CLI's code path with format and variant auto-detected, loaded, and compared in
float32 with the bound 1e-5 x max(|ref|, 10):

- mmseg ``fcn_hr18`` logits at 100x140 (bilinear fuse with the resize to odd branch sizes);
- mmpose ``td-hm_hrnet-w32`` heatmaps at 256x192 (branch 0 only in the last module);
- mmpose ``td-hm_hrnetv2-w18`` WFLW face: the HRNetV2 features and the heatmaps;
- mmdet ``HRFPN`` (``faster-rcnn_hrnetv2p-w18``, backbone + neck): the five pyramid maps.
"""

import json

import jax.numpy as jnp
import mm_models
import numpy as np
import torch
from oracles import assert_close, inputs, randomize_, torch_forward

import hrnet_jax
from hrnet_jax.convert.cli import main as convert_main
from hrnet_jax.pretrained import checkpoint


class _BackboneNeck(torch.nn.Module):
  """mmdet's backbone + neck under its own names (``backbone.``, ``neck.``)."""

  def __init__(self, backbone, neck):
    super().__init__()
    self.backbone, self.neck = backbone, neck

  def forward(self, x):
    return self.neck(self.backbone(x))


def _same_arrays(a, b):
  _, xs = checkpoint.read_pretrained(a)
  _, ys = checkpoint.read_pretrained(b)
  assert xs.keys() == ys.keys()
  for k in xs:
    np.testing.assert_array_equal(xs[k], ys[k], err_msg=k)


def _compare(out, ref, case, output, parity_log):
  diff = assert_close(out, ref, f'{case} {output}')
  parity_log(case, output, diff, float(np.abs(ref).max()))


def test_mmseg_fcn_hr18(tmp_path, parity_log):
  cfg = mm_models.plain_bn(mm_models.config('mmseg', '_base_/models/fcn_hr18.py').model)
  torch.manual_seed(0)
  reference = randomize_(mm_models.build('mmseg', cfg), seed=1)
  config = mm_models.save_and_convert(reference, tmp_path, 'fcn_hr18', 'mmseg')
  assert (config['arch'], config['source']['format']) == ('hrnetv2_w18_seg', 'mmseg')
  assert config['num_classes'] == 19 and config['model_kwargs'] == {'head_conv_bias': False}
  x = inputs(2, 100, 140, seed=2)  # branches 25x35, 13x18, 7x9, 4x5: every fuse resizes
  ref = torch_forward(reference, x, mode='tensor')
  model = hrnet_jax.load_pretrained(tmp_path / 'flax')
  assert ref.shape == (2, 25, 35, 19)
  _compare(model(jnp.asarray(x)), ref, 'mmseg fcn_hr18 100x140', 'logits', parity_log)

  # The same weights in HRNet-Semantic-Segmentation's layout, as its FullModel saves them
  # ('model.' + seg_hrnet keys, last_layer = conv(bias) BN ReLU conv, 'loss.' buffers).
  sd = reference.state_dict()
  official = {
    f'model.{k[len("backbone.") :]}': v for k, v in sd.items() if k.startswith('backbone.')
  }
  for src, dst in (
    ('decode_head.convs.0.conv', 'last_layer.0'),
    ('decode_head.convs.0.bn', 'last_layer.1'),
    ('decode_head.conv_seg', 'last_layer.3'),
  ):
    official.update({f'model.{dst}{k[len(src) :]}': v for k, v in sd.items() if k.startswith(src)})
  official['model.last_layer.0.bias'] = torch.zeros(270)
  official['loss.criterion.weight'] = torch.rand(19)
  torch.save(official, tmp_path / 'seg_hrnet.pth')
  assert convert_main([str(tmp_path / 'seg_hrnet.pth'), str(tmp_path / 'official'), '--quiet']) == 0
  config = json.loads((tmp_path / 'official' / 'config.json').read_text())
  assert (config['arch'], config['source']['format']) == ('hrnetv2_w18_seg', 'hrnet_seg')
  assert config['model_kwargs'] == {'head_conv_bias': True}
  assert config['source']['dropped'] == ['loss.criterion.weight']
  _, arrays = checkpoint.read_pretrained(tmp_path / 'official')
  np.testing.assert_array_equal(arrays.pop('head.convs.0.conv.bias'), np.zeros(270))
  _, mm_arrays = checkpoint.read_pretrained(tmp_path / 'flax')
  assert arrays.keys() == mm_arrays.keys()
  for k in arrays:
    np.testing.assert_array_equal(arrays[k], mm_arrays[k], err_msg=k)


def test_mmpose_hrnet_w32(tmp_path, parity_log):
  cfg = mm_models.config(
    'mmpose', 'body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py'
  ).model
  torch.manual_seed(0)
  reference = randomize_(mm_models.TensorMode(mm_models.build('mmpose', cfg)), seed=3).model
  assert not any('stage4.2.fuse_layers.1' in k for k in reference.state_dict())
  config = mm_models.save_and_convert(reference, tmp_path, 'td-hm_hrnet-w32', 'mmpose')
  assert (config['arch'], config['source']['format']) == ('hrnet_w32_pose', 'mmpose')
  assert config['num_keypoints'] == 17
  x = inputs(1, 256, 192, seed=4)
  ref = torch_forward(reference, x, data_samples=None, mode='tensor')
  assert ref.shape == (1, 64, 48, 17)
  model = hrnet_jax.load_pretrained(tmp_path / 'flax')
  _compare(model(jnp.asarray(x)), ref, 'mmpose hrnet-w32 256x192', 'heatmaps', parity_log)

  # deep-high-resolution-net's pose_hrnet layout: unprefixed backbone keys and 'final_layer'.
  official = {k.split('.', 1)[1]: v for k, v in reference.state_dict().items()}
  torch.save(official, tmp_path / 'pose_hrnet_w32_256x192.pth')
  assert (
    convert_main(
      [str(tmp_path / 'pose_hrnet_w32_256x192.pth'), str(tmp_path / 'official'), '--quiet']
    )
    == 0
  )
  config = json.loads((tmp_path / 'official' / 'config.json').read_text())
  assert (config['arch'], config['source']['format']) == ('hrnet_w32_pose', 'hrnet_pose')
  _same_arrays(tmp_path / 'official', tmp_path / 'flax')


def test_mmpose_hrnetv2_face(tmp_path, parity_log):
  cfg = mm_models.config(
    'mmpose', 'face_2d_keypoint/topdown_heatmap/wflw/td-hm_hrnetv2-w18_8xb64-60e_wflw-256x256.py'
  ).model
  torch.manual_seed(0)
  reference = randomize_(mm_models.TensorMode(mm_models.build('mmpose', cfg)), seed=5).model
  config = mm_models.save_and_convert(reference, tmp_path, 'td-hm_hrnetv2-w18', 'mmpose')
  assert (config['arch'], config['num_keypoints']) == ('hrnetv2_w18_face', 98)
  assert config['model_kwargs'] == {'head_conv_bias': True}
  x = inputs(1, 128, 128, seed=6)
  model = hrnet_jax.load_pretrained(tmp_path / 'flax')
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    feats = reference.neck(reference.backbone(xt))[0].numpy().transpose(0, 2, 3, 1)
  assert feats.shape == (1, 32, 32, 270)
  _compare(
    model.forward_features(jnp.asarray(x))[0],
    feats,
    'mmpose hrnetv2-w18 face 128x128',
    'HRNetV2 features',
    parity_log,
  )
  ref = torch_forward(reference, x, data_samples=None, mode='tensor')
  _compare(model(jnp.asarray(x)), ref, 'mmpose hrnetv2-w18 face 128x128', 'heatmaps', parity_log)


def test_mmdet_hrfpn(tmp_path, parity_log):
  cfg = mm_models.config('mmdet', 'hrnet/faster-rcnn_hrnetv2p-w18-1x_coco.py').model
  torch.manual_seed(0)
  reference = randomize_(
    _BackboneNeck(mm_models.build('mmdet', cfg.backbone), mm_models.build('mmdet', cfg.neck)),
    seed=7,
  )
  config = mm_models.save_and_convert(reference, tmp_path, 'faster-rcnn_hrnetv2p-w18', 'mmdet')
  assert (config['arch'], config['source']['format']) == ('hrnetv2p_w18', 'mmdet')
  x = inputs(1, 128, 160, seed=8)
  refs = torch_forward(reference, x)
  outs = hrnet_jax.load_pretrained(tmp_path / 'flax')(jnp.asarray(x))
  assert [r.shape[1:3] for r in refs] == [(32, 40), (16, 20), (8, 10), (4, 5), (2, 2)]
  assert len(outs) == len(refs) == 5
  for i, (out, ref) in enumerate(zip(outs, refs)):
    _compare(out, ref, 'mmdet HRFPN w18 128x160', f'level {i} (stride {4 * 2**i})', parity_log)
