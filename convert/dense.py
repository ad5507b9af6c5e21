"""Dense HRNet checkpoints (mmseg, mmpose, mmdet, HRNet-Semantic-Segmentation,
deep-high-resolution-net) -> hrnet-jax checkpoint folders, and ``--backbone-only``: a dense model
whose backbone comes from any checkpoint (classification or dense) and whose neck / head start
at their initialisation.

Same policy as ``hrnet_jax.convert.api``: every tensor is used exactly once or is reported; missing,
unexpected and mis-shaped keys are all listed in one ``MismatchError``; nothing is written then.
Parts this library does not build are dropped by name and listed in ``config.json``
(``source.dropped``): the classification head (``--backbone-only``), the detector heads of an
mmdet file (``rpn_head.``, ``roi_head.``), the loss buffers of an HRNet-Semantic-Segmentation
``FullModel`` (``loss.``). The key rules live in ``hrnet_jax.convert.layouts.dense``.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
from flax import nnx

from hrnet_jax.pretrained import checkpoint, default_pretrained_cfg, state

from hrnet_jax.models import dense

from hrnet_jax.convert.layouts import dense as dense_keys, official as keys
from hrnet_jax.factory import create_model

from hrnet_jax.convert import layouts as formats
from hrnet_jax.convert.arch import infer_arch
from hrnet_jax.convert.api import ConversionResult, MismatchError
from hrnet_jax.convert.sources import ConversionError, Source

# An HRNet-Semantic-Segmentation training FullModel: weights under 'model.', loss under 'loss.'.
_FULLMODEL_PREFIX = 'model.'
_FULLMODEL_LOSS = 'loss.'
_DETECTOR_HEADS = ('rpn_head.', 'roi_head.', 'bbox_head.')


def is_dense(source: Source, fmt: str, arch: str | None) -> bool:
  """Whether ``convert_checkpoint`` should hand ``source`` to this module."""
  if fmt in dense_keys.DENSE_FORMATS or (arch is not None and arch in dense.DENSE_CONFIGS):
    return True
  return fmt == 'auto' and _detect(_unwrap_fullmodel(source.tensors)[0]) is not None


def _unwrap_fullmodel(tensors: dict) -> tuple[dict, list[str]]:
  """Strips ``model.`` from an HRNet-Semantic-Segmentation FullModel; returns the loss keys."""
  if not any(k.startswith(_FULLMODEL_PREFIX + 'last_layer.') for k in tensors):
    return tensors, []
  loss = sorted(k for k in tensors if k.startswith(_FULLMODEL_LOSS))
  out = {k[len(_FULLMODEL_PREFIX):] if k.startswith(_FULLMODEL_PREFIX) else k: v
         for k, v in tensors.items() if not k.startswith(_FULLMODEL_LOSS)}
  return out, loss


def _detect(tensors) -> str | None:
  return dense_keys.detect_dense_format(k for k in tensors if not formats.is_bn_counter(k))


def _backbone_tensors(tensors: dict, fmt: str) -> dict[str, np.ndarray]:
  """Backbone tensors of a dense file under official classification keys."""
  prefix = dense_keys.BACKBONE_PREFIX[fmt]
  heads = dense_keys.HEAD_PREFIXES[fmt]
  return {k[len(prefix):]: v for k, v in tensors.items()
          if k.startswith(prefix) and not (prefix == '' and k.startswith(heads))}


def _base_arch(backbone: dict[str, np.ndarray], what) -> str:
  base, _, exact = infer_arch(backbone)
  if not exact:
    raise ConversionError(f'{what}: the backbone matches no HRNet variant (closest: {base})')
  return base


def _pick_arch(fmt: str, base: str, tensors: dict, arch: str | None, path) -> str:
  task = dense_keys.FORMAT_TASK[fmt]
  if arch is not None:
    cfg = dense.get_dense_config(arch)
    if cfg.task != task:
      raise ConversionError(f'--arch: {arch} is a {cfg.task} model, {path} is a {fmt} ({task}) '
                            'checkpoint')
    return arch
  hidden = any(re.match(r'^(head\.conv_layers|last_layer|decode_head\.convs)\.\d+\.', k)
               for k in tensors)
  candidates = [n for n, c in dense.DENSE_CONFIGS.items()
                if c.backbone == base and c.task == task
                and (fmt != 'mmpose' or (c.head_convs > 0) == bool(hidden))]
  if len(candidates) != 1:
    raise ConversionError(f'{path}: no single dense model with a {base} backbone for the {fmt} '
                          f'layout ({", ".join(candidates) or "none"}); pass --arch')
  return candidates[0]


def _outputs_and_bias(tensors: dict, fmt: str, arch: str) -> tuple[int | None, bool | None]:
  cfg = dense.get_dense_config(arch)
  if cfg.task == 'detect':
    return None, None
  final = tensors.get(dense_keys.source_key('head.final_layer.kernel', fmt))
  num_outputs = int(final.shape[0]) if final is not None and final.ndim == 4 else None
  bias = None
  if cfg.head_convs:
    bias = dense_keys.source_key('head.convs.0.conv.bias', fmt) in tensors
  return num_outputs, bias


def _build(arch: str, num_outputs: int | None, head_conv_bias: bool | None, rngs: nnx.Rngs):
  task = dense.get_dense_config(arch).task
  kwargs = {dense.OUTPUT_NAME[task]: num_outputs} if task in dense.OUTPUT_NAME else {}
  return create_model(arch, head_conv_bias=head_conv_bias, rngs=rngs, **kwargs)


def _check(path, arch, expected: dict, tensors: dict, dropped_ok: set[str]):
  """``expected``: Flax path -> (source key, Flax shape). Raises ``MismatchError``."""
  wanted = {k for k, _ in expected.values()}
  missing = sorted(wanted - tensors.keys())
  unexpected = sorted(tensors.keys() - wanted - dropped_ok)
  mismatched = sorted(
      f'{k}: checkpoint {tuple(tensors[k].shape)} vs {arch} {keys.torch_shape(p, shape)}'
      for p, (k, shape) in expected.items()
      if k in tensors and tuple(tensors[k].shape) != keys.torch_shape(p, shape))
  if missing or unexpected or mismatched:
    raise MismatchError(path, arch, missing, unexpected, mismatched)


@dataclasses.dataclass
class DenseConversion:
  """A mapped dense checkpoint: ``arrays`` by dotted Flax path, ``config`` the model entries of
  ``config.json``; ``dropped`` source keys not used (by name), ``initialized`` Flax paths left at
  their initialisation (``--backbone-only``)."""

  arch: str
  fmt: str
  config: dict
  arrays: dict[str, np.ndarray]
  dropped: list[str]
  initialized: list[str]


def convert_dense(source: Source, *, arch: str | None, fmt: str, backbone_only: bool,
                  num_outputs: int | None = None) -> DenseConversion:
  """Maps ``source`` onto a ``DenseHRNet``. Raises ``ConversionError`` / ``MismatchError``
  naming the file and keys at fault."""
  tensors = {k: v for k, v in source.tensors.items() if not formats.is_bn_counter(k)}
  tensors, loss_keys = _unwrap_fullmodel(tensors)
  if fmt == 'auto':
    fmt = _detect(tensors) or formats.detect_format(tensors)
    if fmt == 'official' and source.path.suffix == '.safetensors':
      fmt = 'timm'
  if backbone_only:
    return _backbone_only(source, tensors, fmt, arch, num_outputs, loss_keys)
  if fmt not in dense_keys.DENSE_FORMATS:
    raise ConversionError(f'{source.path}: a {fmt} checkpoint has no dense head; to start '
                          f'{arch or "a dense model"} from its backbone pass --backbone-only')
  base = _base_arch(_backbone_tensors(tensors, fmt), source.path)
  arch = _pick_arch(fmt, base, tensors, arch, source.path)
  if dense.get_dense_config(arch).backbone != base:
    raise ConversionError(f'--arch: {arch} has a {dense.get_dense_config(arch).backbone} '
                          f'backbone, {source.path} holds {base}')
  found_outputs, head_conv_bias = _outputs_and_bias(tensors, fmt, arch)
  if num_outputs is not None and found_outputs is not None and num_outputs != found_outputs:
    raise ConversionError(f'--num-outputs {num_outputs}: {source.path} has {found_outputs}')
  leaves = state.abstract_arrays(
      lambda rngs: _build(arch, found_outputs, head_conv_bias, rngs))
  try:
    expected = {p: (dense_keys.source_key(p, fmt), leaf.shape) for p, leaf in leaves.items()}
  except KeyError as e:
    raise ConversionError(f'{source.path}: {e.args[0]} ({arch})') from None
  dropped = sorted(k for k in tensors if fmt == 'mmdet' and k.startswith(_DETECTOR_HEADS))
  _check(source.path, arch, expected, tensors, set(dropped))
  arrays = {p: np.asarray(keys.torch_to_flax(p, tensors[k]), dtype=leaves[p].dtype, order='C')
            for p, (k, _) in expected.items()}
  model_kwargs = {} if head_conv_bias is None else {'head_conv_bias': head_conv_bias}
  return DenseConversion(arch, fmt, _config(arch, found_outputs, model_kwargs), arrays,
                         dropped + loss_keys, [])


def _backbone_only(source: Source, tensors: dict, fmt: str, arch: str | None,
                   num_outputs: int | None, loss_keys: list[str]):
  if arch is None or arch not in dense.DENSE_CONFIGS:
    raise ConversionError('--backbone-only needs --arch naming a dense model: '
                          + ', '.join(dense.DENSE_CONFIGS))
  cfg = dense.get_dense_config(arch)
  if fmt in dense_keys.DENSE_FORMATS:
    backbone = _backbone_tensors(tensors, fmt)
    prefix = dense_keys.BACKBONE_PREFIX[fmt]
    head_keys = {k for k in tensors if k.startswith(dense_keys.HEAD_PREFIXES[fmt])}
  else:  # classification layouts, renamed to the official keys
    original = {formats.to_official_key(k, fmt): k for k in tensors}
    backbone = {k: tensors[v] for k, v in original.items()}
    prefix = ''
    head_keys = set()
  base = _base_arch(backbone, source.path)
  if base != cfg.backbone:
    raise ConversionError(f'--arch: {arch} has a {cfg.backbone} backbone, {source.path} holds '
                          f'{base}')
  # Every key of the classification architecture the source is, with its head: what the dense
  # model does not use of these is dropped by name; anything else is an error.
  bias = any(formats.to_official_key(k, fmt) == 'downsamp_modules.0.0.bias' for k in tensors)
  classification = {keys.torch_key(p) for p in state.abstract_arrays(
      lambda rngs: create_model(base, head_conv_bias=bias, rngs=rngs))}
  model = _build(arch, num_outputs, None, nnx.Rngs(0))
  arrays = state.model_arrays(model)
  expected = {p[len('backbone.'):]: (keys.torch_key(p[len('backbone.'):]), v.shape)
              for p, v in arrays.items() if p.startswith('backbone.')}
  wanted = {k for k, _ in expected.values()}
  unused = sorted(backbone.keys() - wanted)
  unknown = [k for k in unused if k not in classification and prefix + k not in head_keys]
  missing = sorted(wanted - backbone.keys())
  mismatched = sorted(
      f'{prefix}{k}: checkpoint {tuple(backbone[k].shape)} vs {arch} {keys.torch_shape(p, s)}'
      for p, (k, s) in expected.items()
      if k in backbone and tuple(backbone[k].shape) != keys.torch_shape(p, s))
  if missing or unknown or mismatched:
    raise MismatchError(source.path, arch, [prefix + k for k in missing],
                        [prefix + k for k in unknown], mismatched)
  for p, (k, _) in expected.items():
    arrays['backbone.' + p] = np.asarray(keys.torch_to_flax(p, backbone[k]),
                                         dtype=arrays['backbone.' + p].dtype, order='C')
  if fmt in dense_keys.DENSE_FORMATS:
    dropped = sorted(k for k in tensors if not k.startswith(prefix) or
                     (prefix == '' and k in head_keys) or k[len(prefix):] in unused)
  else:
    dropped = sorted(original[k] for k in unused)
  initialized = sorted(p for p in arrays if not p.startswith('backbone.'))
  model_kwargs = {'head_conv_bias': model.head_conv_bias} if model.head is not None else {}
  return DenseConversion(arch, fmt, _config(arch, model.num_outputs or None, model_kwargs),
                         arrays, dropped + loss_keys, initialized)


def _config(arch, num_outputs, model_kwargs) -> dict:
  task = dense.get_dense_config(arch).task
  config = {'arch': arch, 'task': task, 'model_kwargs': model_kwargs,
            'pretrained_cfg': default_pretrained_cfg(arch)}
  if task in dense.OUTPUT_NAME:
    config[dense.OUTPUT_NAME[task]] = (num_outputs if num_outputs is not None
                                      else dense.get_dense_config(arch).num_outputs)
  return config


def convert_dense_checkpoint(source: Source, out_dir: str | os.PathLike, *, arch: str | None,
                             fmt: str, backbone_only: bool, num_outputs: int | None,
                             overwrite: bool, allow_non_finite: bool = False
                             ) -> ConversionResult:
  """``convert_dense`` and the atomic write of the folder (``config.json`` ``source`` records the
  file, its sha256, the layout, ``backbone_only``, ``dropped`` and ``initialized``)."""
  result = convert_dense(source, arch=arch, fmt=fmt, backbone_only=backbone_only,
                         num_outputs=num_outputs)
  config = dict(result.config)
  config['source'] = {
      'file': source.path.name, 'sha256': source.sha256(), 'format': result.fmt,
      'container': source.container, 'hub_id': source.hub_id,
      'training_checkpoint': source.training_checkpoint, 'backbone_only': backbone_only,
      'dropped': result.dropped, 'initialized': result.initialized,
  }
  out = checkpoint.write_pretrained(result.arrays, config, out_dir, overwrite=overwrite,
                                   protect=[source.path], allow_non_finite=allow_non_finite)
  return ConversionResult(out, result.arch, result.fmt, len(result.arrays), config)
