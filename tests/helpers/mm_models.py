"""OpenMMLab oracle models for the parity tests: built from the configs that ship in their
wheels (BatchNorm instead of SyncBN: one CPU process), saved by mmengine's ``save_checkpoint``
as ``{'meta', 'state_dict'}`` and converted by the CLI's code path."""

from __future__ import annotations

import importlib
import json
import pathlib

import mm_shim
import numpy as np
import torch
from oracles import randomize_

from hrnet_jax.convert.cli import main as convert_main

mm_shim.install()


def config(package: str, relative: str):
  """The mmengine ``Config`` of ``relative`` under ``package``'s ``.mim/configs``."""
  from mmengine.config import Config

  root = pathlib.Path(importlib.import_module(package).__file__).parent / '.mim' / 'configs'
  return Config.fromfile(str(root / relative))


def build(scope: str, cfg):
  """``scope``'s (``'mmseg'``, ``'mmpose'``, ``'mmdet'``) model of ``cfg``."""
  from mmengine.registry import DefaultScope

  importlib.import_module(f'{scope}.models')  # registers the model classes
  registry = importlib.import_module(f'{scope}.registry').MODELS
  with DefaultScope.overwrite_default_scope(scope):
    return registry.build(cfg)


def plain_bn(cfg):
  """SyncBN -> BN everywhere in a model config (one CPU process, no process group)."""
  if isinstance(cfg, dict):
    for key, value in cfg.items():
      if key == 'norm_cfg' and isinstance(value, dict):
        cfg[key] = dict(type='BN', requires_grad=True)
      else:
        plain_bn(value)
  return cfg


class TensorMode(torch.nn.Module):
  """``model(x, None, mode='tensor')`` as a plain forward (for ``randomize_``)."""

  def __init__(self, model):
    super().__init__()
    self.model = model

  def forward(self, x):
    return self.model(x, None, mode='tensor')


def seg_data_samples(labels):
  """mmseg ``SegDataSample``s holding the label maps ``labels`` (uint8 / int ``[B, H, W]``)."""
  from mmengine.structures import PixelData
  from mmseg.structures import SegDataSample

  samples = []
  for label in labels:
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(np.asarray(label)[None].astype(np.int64)))
    sample.set_metainfo(dict(img_shape=label.shape, ori_shape=label.shape))
    samples.append(sample)
  return samples


def save_and_convert(model: torch.nn.Module, tmp: pathlib.Path, name: str, scope: str) -> dict:
  """Saves ``model`` as mmengine does, converts it into ``tmp/flax``; its ``config.json``."""
  from mmengine.runner.checkpoint import get_state_dict, save_checkpoint

  path = tmp / f'{name}.pth'
  save_checkpoint({'meta': {'scope': scope}, 'state_dict': get_state_dict(model)}, str(path))
  assert convert_main([str(path), str(tmp / 'flax'), '--quiet']) == 0
  return json.loads((tmp / 'flax' / 'config.json').read_text())


def mmseg_fcn_hr18s(tmp: pathlib.Path, num_classes: int, seed: int):
  """mmseg ``fcn_hr18s`` (Cityscapes config) with ``num_classes``, random weights, BatchNorm
  statistics and biases -> ``(EncoderDecoder, its converted release folder)``."""
  cfg = plain_bn(config('mmseg', 'hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py').model)
  cfg.decode_head.num_classes = num_classes
  torch.manual_seed(0)
  reference = randomize_(TensorMode(build('mmseg', cfg)), seed=seed).model
  converted = save_and_convert(reference, tmp, 'fcn_hr18s', 'mmseg')
  assert (converted['arch'], converted['num_classes']) == ('hrnetv2_w18_small_seg', num_classes)
  return reference, tmp / 'flax'
