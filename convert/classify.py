"""Classification checkpoints (official, timm, mmpretrain, PaddleClas) -> a Flax
``HighResolutionNet``.

Every source tensor is used exactly once (``num_batches_tracked`` ignored), every Flax leaf is
filled and every shape is checked before anything is written; on any problem one
``CheckpointMismatchError`` lists ALL missing / unexpected / mis-shaped keys under the source
file's names. The variant is read off the keys and shapes (``hrnet_jax.convert.arch``), the key
rules are ``hrnet_jax.convert.layouts``'.
"""

from __future__ import annotations

import numpy as np

from hrnet_jax import pretrained
from hrnet_jax.convert import layouts, mapping
from hrnet_jax.convert.arch import infer_arch, looks_like_hrnet
from hrnet_jax.convert.layouts import official
from hrnet_jax.convert.sources import ConversionError, Source
from hrnet_jax.factory import create_model
from hrnet_jax.models.configs import MODEL_CONFIGS, get_config
from hrnet_jax.pretrained import checkpoint, state

# Formats whose every variant has bias-free head convs: they keep the base name with
# head_conv_bias=False.
_NO_HEAD_BIAS_FORMATS = ('mmpretrain', 'paddle')


def _resolve_arch(tensors: dict[str, np.ndarray], fmt: str, arch: str | None) -> tuple[str, bool]:
  base, head_bias, _ = infer_arch(tensors)
  if arch is None:
    # Bias-free timm/official files are the PaddleClas ssld weights as timm converted them.
    if not head_bias and fmt not in _NO_HEAD_BIAS_FORMATS and f'{base}_ssld' in MODEL_CONFIGS:
      return f'{base}_ssld', False
    return base, head_bias
  try:
    cfg = get_config(arch)
  except ValueError as e:
    raise ConversionError(f'--arch: {e}') from None
  return arch, cfg.head_conv_bias and fmt not in _NO_HEAD_BIAS_FORMATS


def pretrained_cfg(arch: str, source: Source, tag: str | None, fmt: str) -> dict | None:
  """The preprocessing ``config.json`` records: ``tag``'s, else the hub id's, else PaddleClas's
  tag of the arch (a ``.pdparams``), else the MSRA ImageNet weights' (``<arch>.ms_in1k``)."""
  if tag is None and source.hub_id:
    tag = source.hub_id.split('/', 1)[1]
  if tag is None and fmt == 'paddle':
    # PaddleClas's plain tag of the arch, else its only (ssld) one; SE widths without published
    # weights have none.
    tags = pretrained.paddleclas_tags(arch)
    if not tags:
      return None
    tag = tags[0]
  if tag is None:
    # Local official/mmpretrain files are the MSRA ImageNet weights (the ms_in1k tags).
    base = arch.replace('_ssld', '')
    tag = f'{base}.ms_in1k' if f'{base}.ms_in1k' in pretrained.list_pretrained() else arch
  try:
    cfg = pretrained.get_pretrained_cfg(tag)
  except ValueError as e:
    raise ConversionError(f'--tag: {e}') from None
  if cfg.arch.replace('_ssld', '') != arch.replace('_ssld', ''):
    raise ConversionError(f'--tag: {tag} is a {cfg.arch} tag, the checkpoint is {arch}')
  return cfg.to_dict()


def _progress(items, total: int, enabled: bool, desc: str):
  if not enabled:
    return items
  from tqdm import tqdm

  return tqdm(items, total=total, desc=desc, unit='tensor', leave=False, disable=None)


def _expected_leaves(
  arch: str, num_classes: int, head_conv_bias: bool
) -> dict[str, tuple[str, tuple[int, ...], np.dtype]]:
  """Flax path -> (official key, Flax shape, dtype) of every leaf of ``arch``, read off an
  abstract build of the model: no weights are drawn or allocated."""
  leaves = state.abstract_arrays(
    lambda rngs: create_model(
      arch, num_classes=num_classes, head_conv_bias=head_conv_bias, rngs=rngs
    )
  )
  return {path: (official.torch_key(path), leaf.shape, leaf.dtype) for path, leaf in leaves.items()}


def convert_source(
  source: Source,
  *,
  arch: str | None = None,
  fmt: str = 'auto',
  allow_non_finite: bool = False,
  progress: bool = False,
) -> tuple[str, bool, int, str, dict[str, np.ndarray]]:
  """Maps the tensors of ``source`` (a classification layout ``fmt``; ``'auto'`` detects it)
  onto a Flax HRNet.

  Returns ``(arch, head_conv_bias, num_classes, format, arrays)`` where ``arrays`` maps dotted
  Flax paths to arrays in Flax layout. Empties ``source.tensors`` as it goes: each tensor is
  released once converted, so the checkpoint is not held twice. Raises
  ``CheckpointMismatchError`` listing every problem, ``ConversionError`` for a non-HRNet
  checkpoint and ``CheckpointIntegrityError`` naming every NaN/inf tensor unless
  ``allow_non_finite`` (``source`` is then left whole).
  """
  if fmt == 'auto':
    fmt = layouts.detect(source.tensors, path=source.path, hub_id=source.hub_id)
  source_keys = [k for k in source.tensors if not layouts.is_bn_counter(k)]
  original = {layouts.to_official_key(k, fmt): k for k in source_keys}
  tensors = {
    new: layouts.to_official_value(new, source.tensors[old], fmt) for new, old in original.items()
  }
  if not looks_like_hrnet(tensors):
    examples = ', '.join(source_keys[:5])
    raise ConversionError(
      f'{source.path}: not an HRNet checkpoint (no stage2 / transition1 '
      f'keys; {len(source_keys)} keys such as {examples})'
    )

  arch, head_conv_bias = _resolve_arch(tensors, fmt, arch)
  classifier = tensors.get('classifier.weight')
  num_classes = (
    int(classifier.shape[0]) if classifier is not None and classifier.ndim == 2 else 1000
  )
  expected = _expected_leaves(arch, num_classes, head_conv_bias)

  named = {original[k]: v for k, v in tensors.items()}  # under the source's names
  wanted = {
    p: (mapping.source_name(k, original, fmt), shape) for p, (k, shape, _) in expected.items()
  }
  mapping.check_mapping(source.path, arch, wanted, named)
  if not allow_non_finite:
    checkpoint.refuse_non_finite(
      named, str(source.path), ' (--allow-non-finite keeps them); nothing was written'
    )

  source.tensors.clear()
  del named  # ``tensors`` now holds the only references: each is freed once converted
  arrays = {}
  for path, (k, _, dtype) in _progress(expected.items(), len(expected), progress, 'converting'):
    arrays[path] = mapping.flax_array(path, tensors.pop(k), dtype)
  return arch, head_conv_bias, num_classes, fmt, arrays
