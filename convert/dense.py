"""Dense HRNet checkpoints (mmseg, mmpose, mmdet, HRNet-Semantic-Segmentation,
deep-high-resolution-net) -> a Flax ``DenseHRNet``, and ``--backbone-only``: a dense model whose
backbone comes from any checkpoint (classification or dense) and whose neck / head start at their
initialisation.

Same policy as ``hrnet_jax.convert.classify``: every tensor is used exactly once or is reported;
missing, unexpected and mis-shaped keys are all listed in one ``CheckpointMismatchError`` under
the source file's names. Parts this library does not build are dropped by name and returned for
``config.json`` (``source.dropped``): the classification head (``--backbone-only``), the detector
heads of an mmdet file (``rpn_head.``, ``roi_head.``), the loss buffers of an
HRNet-Semantic-Segmentation ``FullModel`` (``loss.``). The key rules are
``hrnet_jax.convert.layouts.dense``'.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from flax import nnx

from hrnet_jax.convert import layouts, mapping
from hrnet_jax.convert.arch import infer_arch
from hrnet_jax.convert.layouts import dense as dense_keys
from hrnet_jax.convert.layouts import official
from hrnet_jax.convert.sources import ConversionError, Source
from hrnet_jax.factory import create_model
from hrnet_jax.models import dense
from hrnet_jax.pretrained import state

_DETECTOR_HEADS = ('rpn_head.', 'roi_head.', 'bbox_head.')


@dataclasses.dataclass
class DenseConversion:
  """A mapped dense checkpoint: ``arrays`` by dotted Flax path; ``head_conv_bias`` None for a
  model without head convs, ``num_outputs`` None for the arch's default; ``dropped`` source keys
  not used (by name), ``initialized`` Flax paths left at their initialisation
  (``--backbone-only``)."""

  arch: str
  arrays: dict[str, np.ndarray]
  head_conv_bias: bool | None
  num_outputs: int | None
  dropped: list[str]
  initialized: list[str]


def _backbone(tensors: dict, fmt: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """The backbone tensors of a ``fmt`` state_dict under official classification keys (every
  tensor of a classification layout), and official key -> source key."""
  if fmt in dense_keys.DENSE_FORMATS:
    prefix, heads = dense_keys.BACKBONE_PREFIX[fmt], dense_keys.HEAD_PREFIXES[fmt]
    names = [
      k for k in tensors if k.startswith(prefix) and not (prefix == '' and k.startswith(heads))
    ]
  else:
    names = list(tensors)
  original = {layouts.to_official_key(k, fmt): k for k in names}
  return ({k: layouts.to_official_value(k, tensors[v], fmt) for k, v in original.items()}, original)


def _base_arch(backbone: dict[str, np.ndarray], what) -> tuple[str, bool]:
  base, head_bias, exact = infer_arch(backbone)
  if not exact:
    raise ConversionError(f'{what}: the backbone matches no HRNet variant (closest: {base})')
  return base, head_bias


def _pick_arch(fmt: str, base: str, tensors: dict, arch: str | None, path) -> str:
  task = dense_keys.FORMAT_TASK[fmt]
  if arch is not None:
    cfg = dense.get_dense_config(arch)
    if cfg.task != task:
      raise ConversionError(
        f'--arch: {arch} is a {cfg.task} model, {path} is a {fmt} ({task}) checkpoint'
      )
    return arch
  hidden = any(
    re.match(r'^(head\.conv_layers|last_layer|decode_head\.convs)\.\d+\.', k) for k in tensors
  )
  candidates = [
    n
    for n, c in dense.DENSE_CONFIGS.items()
    if c.backbone == base
    and c.task == task
    and (fmt != 'mmpose' or (c.head_convs > 0) == bool(hidden))
  ]
  if len(candidates) != 1:
    raise ConversionError(
      f'{path}: no single dense model with a {base} backbone for the {fmt} '
      f'layout ({", ".join(candidates) or "none"}); pass --arch'
    )
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


def convert_dense(
  source: Source, *, arch: str | None, fmt: str, backbone_only: bool, num_outputs: int | None = None
) -> DenseConversion:
  """Maps ``source`` (layout ``fmt``, as ``layouts.detect`` names it) onto a ``DenseHRNet``.
  Raises ``ConversionError`` / ``CheckpointMismatchError`` naming the file and keys at fault."""
  tensors = {k: v for k, v in source.tensors.items() if not layouts.is_bn_counter(k)}
  tensors, loss_keys = dense_keys.unwrap_fullmodel(tensors)
  if backbone_only:
    return _backbone_only(source, tensors, fmt, arch, num_outputs, loss_keys)
  if fmt not in dense_keys.DENSE_FORMATS:
    raise ConversionError(
      f'{source.path}: a {fmt} checkpoint has no dense head; to start '
      f'{arch or "a dense model"} from its backbone pass --backbone-only'
    )
  base, _ = _base_arch(_backbone(tensors, fmt)[0], source.path)
  arch = _pick_arch(fmt, base, tensors, arch, source.path)
  if dense.get_dense_config(arch).backbone != base:
    raise ConversionError(
      f'--arch: {arch} has a {dense.get_dense_config(arch).backbone} '
      f'backbone, {source.path} holds {base}'
    )
  found_outputs, head_conv_bias = _outputs_and_bias(tensors, fmt, arch)
  if num_outputs is not None and found_outputs is not None and num_outputs != found_outputs:
    raise ConversionError(f'--num-outputs {num_outputs}: {source.path} has {found_outputs}')
  leaves = state.abstract_arrays(lambda rngs: _build(arch, found_outputs, head_conv_bias, rngs))
  try:
    expected = {p: (dense_keys.source_key(p, fmt), leaf.shape) for p, leaf in leaves.items()}
  except KeyError as e:
    raise ConversionError(f'{source.path}: {e.args[0]} ({arch})') from None
  dropped = sorted(k for k in tensors if fmt == 'mmdet' and k.startswith(_DETECTOR_HEADS))
  mapping.check_mapping(source.path, arch, expected, tensors, allow_unexpected=dropped)
  arrays = {p: mapping.flax_array(p, tensors[k], leaves[p].dtype) for p, (k, _) in expected.items()}
  return DenseConversion(arch, arrays, head_conv_bias, found_outputs, dropped + loss_keys, [])


def _backbone_only(
  source: Source,
  tensors: dict,
  fmt: str,
  arch: str | None,
  num_outputs: int | None,
  loss_keys: list[str],
) -> DenseConversion:
  if arch is None or arch not in dense.DENSE_CONFIGS:
    raise ConversionError(
      '--backbone-only needs --arch naming a dense model: ' + ', '.join(dense.DENSE_CONFIGS)
    )
  cfg = dense.get_dense_config(arch)
  backbone, original = _backbone(tensors, fmt)
  base, head_bias = _base_arch(backbone, source.path)
  if base != cfg.backbone:
    raise ConversionError(
      f'--arch: {arch} has a {cfg.backbone} backbone, {source.path} holds {base}'
    )
  # Every key of the classification architecture the source is, with its head: what the dense
  # model does not use of these is dropped by name; anything else is an error.
  leaves = state.abstract_arrays(
    lambda rngs: create_model(base, head_conv_bias=head_bias, rngs=rngs)
  )
  classification = {mapping.source_name(official.torch_key(p), original, fmt) for p in leaves}
  model = _build(arch, num_outputs, None, nnx.Rngs(0))
  arrays = state.model_arrays(model)
  expected = {
    p[len('backbone.') :]: (official.torch_key(p[len('backbone.') :]), v.shape)
    for p, v in arrays.items()
    if p.startswith('backbone.')
  }
  wanted = {p: (mapping.source_name(k, original, fmt), shape) for p, (k, shape) in expected.items()}
  mapping.check_mapping(
    source.path,
    arch,
    wanted,
    {original[k]: v for k, v in backbone.items()},
    allow_unexpected=classification,
  )
  for p, (k, _) in expected.items():
    arrays['backbone.' + p] = mapping.flax_array(p, backbone[k], arrays['backbone.' + p].dtype)
  used = {original[k] for k, _ in expected.values()}
  dropped = sorted(k for k in tensors if k not in used)
  initialized = sorted(p for p in arrays if not p.startswith('backbone.'))
  head_conv_bias = model.head_conv_bias if model.head is not None else None
  return DenseConversion(
    arch, arrays, head_conv_bias, model.num_outputs or None, dropped + loss_keys, initialized
  )
