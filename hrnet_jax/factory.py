"""``create_model`` / ``load_pretrained`` / ``save_pretrained``: the public entry points, in timm's
terms (``timm.create_model(name, num_classes=..., features_only=..., out_indices=...)``).

One registry (``REGISTRY``: name -> family and arch config) serves classifiers and dense models,
one load path (read the release folder, check its arch, drop the keys of a head built fresh,
assign strictly) serves both, and ``release_config`` is the one builder of a release folder's
``config.json`` entries, for ``save_pretrained`` and the converter alike (as timm's
``_builder.py`` keeps one build-and-load path).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from hrnet_jax.models.configs import MODEL_CONFIGS, HRNetConfig
from hrnet_jax.models.dense import DENSE_CONFIGS, OUTPUT_NAME, DenseConfig, DenseHRNet
from hrnet_jax.models.hrnet import HighResolutionNet, HighResolutionNetFeatures
from hrnet_jax.pretrained import checkpoint, state
from hrnet_jax.pretrained.cfgs import default_pretrained_cfg

log = logging.getLogger(__name__)

CLASSIFY, DENSE = 'classify', 'dense'
# Every model ``create_model`` builds: name -> (family, arch config).
REGISTRY: dict[str, tuple[str, HRNetConfig | DenseConfig]] = {
  **{name: (CLASSIFY, cfg) for name, cfg in MODEL_CONFIGS.items()},
  **{name: (DENSE, cfg) for name, cfg in DENSE_CONFIGS.items()},
}
# Classifier parts a ``features_only`` backbone does not build.
HEAD_PREFIXES = ('downsamp_modules', 'final_layer', 'classifier')
# The stem convolution of a classifier / a dense model (its backbone's), adapted to ``in_chans``.
STEM_KERNELS = ('conv1.kernel', 'backbone.conv1.kernel')


def list_models() -> list[str]:
  """Classifier names accepted by ``create_model`` (timm's HRNet names); the dense ones are
  ``list_dense_models()``."""
  return [name for name, (family, _) in REGISTRY.items() if family == CLASSIFY]


def list_dense_models() -> list[str]:
  """Names of the dense models ``create_model`` accepts besides the classifiers."""
  return [name for name, (family, _) in REGISTRY.items() if family == DENSE]


def _lookup(name: str) -> tuple[str, HRNetConfig | DenseConfig]:
  try:
    return REGISTRY[name]
  except KeyError:
    raise ValueError(
      f'unknown HRNet architecture {name!r}; valid names: {", ".join(REGISTRY)}'
    ) from None


def _output_key(family: str, cfg) -> str | None:
  """The ``config.json`` / ``create_model`` entry holding the number of outputs."""
  return 'num_classes' if family == CLASSIFY else OUTPUT_NAME.get(cfg.task)


def create_model(
  name: str,
  *,
  pretrained: str | os.PathLike | None = None,
  num_classes: int | None = None,
  features_only: bool = False,
  feature_location: str = 'incre',
  out_indices: Sequence[int] = (0, 1, 2, 3, 4),
  dtype: Any = jnp.float32,
  param_dtype: Any = jnp.float32,
  rngs: nnx.Rngs | None = None,
  head_conv_bias: bool | None = None,
  in_chans: int = 3,
  num_keypoints: int | None = None,
) -> HighResolutionNet | DenseHRNet:
  """Builds an HRNet by name (``list_models()``, ``list_dense_models()``), optionally with
  converted weights.

  Args:
    name: e.g. ``'hrnet_w18'``, ``'hrnet_w48_ssld'``, ``'hrnetv2_w18_seg'``, ``'hrnet_w32_pose'``.
    pretrained: a release folder written by ``convert_official_weights`` / ``save_pretrained``;
      for a dense model also its backbone's classifier (``hrnet_w18`` for ``hrnetv2_w18_seg``),
      which initialises the backbone only (neck and head fresh).
      Loading is strict; parts of the checkpoint the model does not build (the head of a
      ``features_only`` model) are skipped, and a different number of outputs keeps a freshly
      initialised classifier / ``head.final_layer`` (fine-tuning), as timm.
    num_classes: classifier outputs (default: the checkpoint's, else 1000; 0 makes ``model(x)``
      return the pooled 2048-d embedding), or a segmentation model's classes.
    num_keypoints: a pose model's heatmaps (default: the checkpoint's, else the arch's).
    features_only: return a ``HighResolutionNetFeatures`` backbone whose ``model(x)`` is the list
      of maps at ``out_indices`` (strides 2, 4, 8, 16, 32) for ``feature_location`` ``'incre'``
      (64/128/256/512/1024 channels) or ``''`` (64, C, 2C, 4C, 8C). Classifiers only.
    dtype: computation dtype (``jnp.bfloat16`` for mixed precision); ``param_dtype``: parameters.
    rngs: random init (default ``nnx.Rngs(0)``).
    head_conv_bias: override whether head convs carry a bias (default: the checkpoint's, else
      the arch's).
    in_chans: input channels; the checkpoint's 3-channel stem kernel is adapted to it as timm's
      ``adapt_input_conv`` does (``adapt_input_conv`` here).

  Returns the model in training mode (call ``model.eval()`` for inference), with attributes
  ``arch`` and ``pretrained_cfg`` (preprocessing of the weights' tag, a dict, or None).

  Raises ``ValueError`` for an unknown name, an option the model family does not take or an arch
  different from the checkpoint's, ``FileNotFoundError`` for a folder that is not a release
  folder, and ``state.CheckpointMismatchError`` when the weights do not fit.
  """
  family, cfg = _lookup(name)
  config = arrays = None
  backbone_only = False  # a dense model from its backbone's classification weights
  if pretrained is not None:
    config, arrays = checkpoint.read_pretrained(pretrained)
    backbone_only = family == DENSE and config['arch'] == cfg.backbone
    if config['arch'] != name and not backbone_only:
      also = f' or its backbone {cfg.backbone!r}' if family == DENSE else ''
      raise ValueError(f'{pretrained}: checkpoint is {config["arch"]!r}, not {name!r}{also}')
    if head_conv_bias is None and not backbone_only:
      head_conv_bias = config.get('model_kwargs', {}).get('head_conv_bias')
  rngs = rngs if rngs is not None else nnx.Rngs(0)
  precision = dict(in_chans=in_chans, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
  output_key = _output_key(family, cfg)
  default_outputs = 1000 if family == CLASSIFY else cfg.num_outputs
  ckpt_outputs = (
    default_outputs if backbone_only else (config or {}).get(output_key, default_outputs)
  )

  if family == DENSE:
    if features_only:
      raise ValueError(f'{name} is a dense model: its features are model.forward_features(x)')
    wanted = {'num_classes': num_classes, 'num_keypoints': num_keypoints}
    given = [k for k, v in wanted.items() if v is not None and k != output_key]
    if given or (output_key is None and any(wanted.values())):
      raise ValueError(
        f'{name} is a {cfg.task} model: it takes {output_key or "no number of outputs"}'
      )
    num_outputs = ckpt_outputs if wanted.get(output_key) is None else wanted[output_key]
    model = DenseHRNet(cfg, num_outputs=num_outputs, head_conv_bias=head_conv_bias, **precision)
    fresh, unused = ('head.final_layer',), ()
  else:
    if num_keypoints is not None:
      raise ValueError(f'{name} is a classifier: num_keypoints is for pose models')
    if head_conv_bias is not None:
      cfg = dataclasses.replace(cfg, head_conv_bias=bool(head_conv_bias))
    num_outputs = ckpt_outputs if num_classes is None else num_classes
    if features_only:
      model = HighResolutionNetFeatures(
        cfg, feature_location=feature_location, out_indices=out_indices, **precision
      )
      unused = HEAD_PREFIXES + (('incre_modules',) if feature_location == '' else ())
    else:
      model = HighResolutionNet(cfg, num_classes=num_outputs, **precision)
      unused = ()
    model.head_conv_bias = cfg.head_conv_bias
    fresh = ('classifier',)
  model.arch = name
  model.pretrained_cfg = default_pretrained_cfg(name)
  if arrays is not None and in_chans != 3:
    arrays = {
      k: adapt_input_conv(in_chans, v) if k in STEM_KERNELS else v for k, v in arrays.items()
    }
  if backbone_only:
    _assign_backbone(model, arrays, str(pretrained))
  elif arrays is not None:
    if not unused and num_outputs != ckpt_outputs:
      unused = fresh
      log.info(
        '%s: new head with %d outputs (checkpoint has %d)', pretrained, num_outputs, ckpt_outputs
      )
    arrays = {k: v for k, v in arrays.items() if not k.startswith(unused)}
    state.assign_arrays(model, arrays, what=str(pretrained), allow_missing=unused)
    model.pretrained_cfg = config.get('pretrained_cfg') or model.pretrained_cfg
  return model


def adapt_input_conv(in_chans: int, kernel: np.ndarray) -> np.ndarray:
  """A pretrained stem kernel ``[kh, kw, C, O]`` (Flax HWIO) for ``in_chans`` input channels,
  mirroring timm's ``adapt_input_conv`` (``timm/models/_manipulate.py``): 1 channel sums the
  ``C`` input channels; more channels repeat them and scale by ``C / in_chans``, so a constant
  image gives the same first activations. A kernel already with ``in_chans`` channels is
  returned as it is; ``ValueError`` for ``in_chans < 1``."""
  if in_chans < 1:
    raise ValueError(f'in_chans must be >= 1, got {in_chans}')
  kernel = np.asarray(kernel)
  base = kernel.shape[2]
  if in_chans == base:
    return kernel
  k = kernel.astype(np.float32)
  if in_chans == 1:
    k = k.sum(axis=2, keepdims=True)
  else:
    k = np.tile(k, (1, 1, math.ceil(in_chans / base), 1))[:, :, :in_chans] * (base / in_chans)
  return k.astype(kernel.dtype)


def _assign_backbone(model: DenseHRNet, arrays: dict, what: str) -> None:
  """A classifier's weights into ``model.backbone`` (ImageNet initialisation, as mmseg / mmpose
  ``init_cfg=dict(type='Pretrained')``): its stem and stages must all be there; the classifier
  head and the branches the dense backbone does not build (HRNetV1's last fuse layers) are left
  out; neck and head stay freshly initialised."""
  wanted = set(state.model_variables(model.backbone))
  kept = {k: v for k, v in arrays.items() if k in wanted}
  log.info('%s: backbone weights (%d of %d arrays; head fresh)', what, len(kept), len(arrays))
  state.assign_arrays(model.backbone, kept, what=what)


def load_pretrained(ckpt_dir: str | os.PathLike, **kwargs) -> HighResolutionNet | DenseHRNet:
  """The model of a release folder, its arch read from ``config.json``, in eval mode.

  ``kwargs`` go to ``create_model`` (e.g. ``features_only=True``, ``dtype=jnp.bfloat16``).
  """
  arch = checkpoint.read_config(ckpt_dir)['arch']
  model = create_model(arch, pretrained=ckpt_dir, **kwargs)
  model.eval()
  return model


def release_config(
  arch: str,
  *,
  head_conv_bias: bool | None,
  num_outputs: int | None = None,
  pretrained_cfg: dict | None,
  source: dict | None = None,
) -> dict[str, Any]:
  """The ``config.json`` entries of a release folder of ``arch`` (``checkpoint.write_pretrained``
  adds the format version and checksum).

  ``num_outputs``: classes / keypoints (default: the arch's); ``head_conv_bias`` None records
  none (dense models without head convs); ``source``: the converter's record of the file it read.
  """
  family, cfg = _lookup(arch)
  config = {
    'arch': arch,
    'model_kwargs': {} if head_conv_bias is None else {'head_conv_bias': bool(head_conv_bias)},
    'pretrained_cfg': pretrained_cfg,
    'source': source or {},
  }
  if family == DENSE:
    config['task'] = cfg.task
  output_key = _output_key(family, cfg)
  if output_key is not None:
    default = 1000 if family == CLASSIFY else cfg.num_outputs
    config[output_key] = default if num_outputs is None else int(num_outputs)
  return config


def save_pretrained(
  model: HighResolutionNet | DenseHRNet,
  out_dir: str | os.PathLike,
  *,
  pretrained_cfg: dict | None = None,
  source: dict | None = None,
  overwrite: bool = False,
):
  """Writes ``model`` as a release folder that ``create_model(..., pretrained=out_dir)`` and
  ``load_pretrained`` read. Atomic; ``FileExistsError`` if ``out_dir`` is not empty unless
  ``overwrite``. Returns the folder path."""
  arrays, config = model_release(model, pretrained_cfg=pretrained_cfg, source=source)
  return checkpoint.write_pretrained(arrays, config, out_dir, overwrite=overwrite)


def model_release(
  model: HighResolutionNet | DenseHRNet,
  *,
  pretrained_cfg: dict | None = None,
  source: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """``(arrays by dotted path, config.json entries)`` of ``model``, what ``save_pretrained`` and
  ``save_for_hub`` write. ``ValueError`` for a ``features_only`` backbone or a model without
  ``arch`` (not built by ``create_model``)."""
  if isinstance(model, HighResolutionNetFeatures):
    raise ValueError('save the full classification model, not a features_only backbone')
  if getattr(model, 'arch', None) is None:
    raise ValueError('the model has no arch name: build it with hrnet_jax.create_model')
  num_outputs = model.num_outputs if isinstance(model, DenseHRNet) else model.num_classes
  config = release_config(
    model.arch,
    head_conv_bias=model.head_conv_bias,
    num_outputs=num_outputs,
    pretrained_cfg=pretrained_cfg if pretrained_cfg is not None else model.pretrained_cfg,
    source=source,
  )
  return state.model_arrays(model), config
