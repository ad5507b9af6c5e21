"""Parity with timm (whose HRNet keeps the official state_dict keys) for every variant.

Each timm model gets random weights and BatchNorm statistics, is saved as the official repo
ships its weights (``torch.save(model.state_dict())``), converted through the CLI code path
(format and variant auto-detected), loaded, and compared (ours in float32): logits and every
``features_only`` map for both ``feature_location`` modes, at 224x224 and 256x192 (the wide
variants at 224x224 only, for CI time). The maps are compared with timm run in float64: on the
deep maps, the float32 rounding of both sides (each ~6-8e-6 of max(|ref|, 10)) would add up past
the 1e-5 bound.
"""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
from oracles import assert_close, inputs, timm_model, torch_forward

import hrnet_jax
from hrnet_jax.convert.cli import main as convert_main

# Every variant timm has (the PaddleClas-only ones are checked in tests/models/test_parity_paddle.py).
VARIANTS = [n for n in hrnet_jax.list_models() if n in timm.list_models('hrnet*')]
# The wide variants are checked at one size to keep CI within its budget.
LIGHT = ('hrnet_w18_small', 'hrnet_w18_small_v2', 'hrnet_w18', 'hrnet_w18_ssld')
SIZES = ((224, 224), (256, 192))


@pytest.fixture(scope='module', params=VARIANTS)
def converted(request, tmp_path_factory):
  name = request.param
  tmp = tmp_path_factory.mktemp(name)
  reference = timm_model(name)
  torch.save(reference.state_dict(), tmp / f'{name}.pth')
  assert convert_main([str(tmp / f'{name}.pth'), str(tmp / 'flax'), '--quiet']) == 0
  yield name, reference, tmp / 'flax'
  shutil.rmtree(tmp)  # up to 1 GiB per variant: one variant's files on disk at a time


def test_detected_arch(converted):
  name, _, ckpt = converted
  config = json.loads((ckpt / 'config.json').read_text())
  assert config['arch'] == name
  assert config['source']['format'] == 'official'


def test_logits(converted, parity_log):
  name, reference, ckpt = converted
  model = hrnet_jax.load_pretrained(ckpt)
  for size in SIZES if name in LIGHT else SIZES[:1]:
    x = inputs(2, *size)
    ref = torch_forward(reference, x)
    out = model(jnp.asarray(x))
    diff = assert_close(out, ref, f'{name} logits {size}')
    parity_log(f'timm {name} {size[0]}x{size[1]}', 'logits', diff, float(np.abs(ref).max()))
    assert (np.argmax(out, -1) == np.argmax(ref, -1)).all()


@pytest.mark.parametrize('location', ['incre', ''], ids=['incre', 'raw'])
def test_features(converted, location, parity_log):
  name, reference, ckpt = converted
  # Built on the meta device (no init) and given the reference's tensors: no key may be missing.
  timm_features = timm.create_model(
    name, features_only=True, feature_location=location, device='meta'
  )
  missing, _ = timm_features.load_state_dict(reference.state_dict(), strict=False, assign=True)
  assert not missing
  timm_features.eval()
  ours = hrnet_jax.create_model(
    name, pretrained=ckpt, features_only=True, feature_location=location
  )
  ours.eval()
  assert [f['num_chs'] for f in ours.feature_info] == timm_features.feature_info.channels()
  assert [f['reduction'] for f in ours.feature_info] == timm_features.feature_info.reduction()
  for size in SIZES if name in LIGHT else SIZES[:1]:
    x = inputs(2, *size, seed=1)
    refs = torch_forward(timm_features, x, float64=True)  # the exact reference: module docstring
    outs = ours(jnp.asarray(x))
    assert len(outs) == len(refs) == 5
    for i, (out, ref) in enumerate(zip(outs, refs)):
      diff = assert_close(out, ref, f'{name} feature {i} ({location or "raw"}) {size}')
      parity_log(
        f'timm {name} {size[0]}x{size[1]}',
        f'feature {i} {location or "raw"}',
        diff,
        float(np.abs(ref).max()),
      )
