"""The README's statements that are code, checked against what the code does (issue 23, item
12): the ``list_models()`` count, the dense ``forward_features`` shapes, the Linen call with
``create_model``'s keywords, and ``feature_info``'s timm accessors against timm's own
``FeatureInfo`` (the oracle). The ONNX consumer snippet runs in tests/export/test_export.py,
against an artifact exported there. Shapes come from ``jax.eval_shape`` (nothing is compiled).
"""

import os
import re

import jax
import jax.numpy as jnp
import pytest
import timm

import hrnet_jax
from hrnet_jax import linen

README = open(os.path.join(os.path.dirname(__file__), '..', '..', 'README.md')).read()


def _comment(code: str) -> str:
  """The README's comment after the code line ``code``."""
  match = re.search(re.escape(code) + r'\s*#\s*(.*)', README)
  assert match, f'README has no line {code!r}'
  return match.group(1)


def test_list_models_count():
  count = int(re.match(r'the (\d+) classification names', _comment('hrnet_jax.list_models()'))[1])
  assert count == len(hrnet_jax.list_models())


def test_dense_forward_features_shapes():
  comment = _comment('feats = seg.forward_features(x)')
  assert 'a list of one map, [[B, H/4, W/4, 270]]' in comment, comment
  # The small variant has HRNetV2's 270 channels too (18 + 36 + 72 + 144), at a cheaper init.
  seg = hrnet_jax.create_model('hrnetv2_w18_small_seg', num_classes=19)
  seg.eval()
  feats = jax.eval_shape(seg.forward_features, jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32))
  assert isinstance(feats, list) and [f.shape for f in feats] == [(2, 16, 24, 270)]


def test_linen_call_takes_create_model_keywords():
  call = re.search(r"`(HRNet\('hrnet_w18', num_classes=0\))`", README)[1]
  module = eval(call.replace('hrnet_w18', 'hrnet_w18_small'), {'HRNet': linen.HRNet})
  assert module == linen.HRNet('hrnet_w18_small', {'num_classes': 0})  # the dict form
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), x)
  assert jax.eval_shape(module.apply, variables, x).shape == (2, 2048)
  with pytest.raises(TypeError, match='num_classes given both'):
    linen.HRNet('hrnet_w18_small', {'num_classes': 0}, num_classes=0)


@pytest.mark.parametrize('location', ['incre', ''])
def test_feature_info_accessors_match_timm(location):
  comment = _comment('backbone.feature_info.channels()')
  channels, reductions = (eval(m) for m in re.findall(r'\[[\d, ]+\]', comment))
  kwargs = dict(features_only=True, feature_location=location, out_indices=(1, 2, 3, 4))
  # incre maps have 128-1024 channels at every width: the README's hrnet_w18 figures hold here.
  ours = hrnet_jax.create_model('hrnet_w18_small', **kwargs).feature_info
  theirs = timm.create_model('hrnet_w18_small', pretrained=False, **kwargs).feature_info
  assert ours.channels() == theirs.channels()
  assert ours.reduction() == theirs.reduction()
  assert ours.module_name() == [f'stage{i}' for i in range(1, 5)]
  assert ours.channels(1) == theirs.channels(2) and ours.reduction([0, 3]) == [4, 32]
  if location == 'incre':
    assert ours.channels() == channels and ours.reduction() == reductions
  assert ours[0] == {'num_chs': ours.channels(0), 'reduction': 4, 'module': 'stage1', 'index': 1}
