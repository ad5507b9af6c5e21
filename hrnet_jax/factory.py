"""``create_model`` / ``load_pretrained`` / ``save_pretrained``: the public entry points, in timm's
terms (``timm.create_model(name, num_classes=..., features_only=..., out_indices=...)``)."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import jax.numpy as jnp
from flax import nnx

from hrnet_jax import checkpoint
from hrnet_jax.configs import MODEL_CONFIGS, get_config
from hrnet_jax.model import HighResolutionNet, HighResolutionNetFeatures

log = logging.getLogger(__name__)

HEAD_PREFIXES = ('downsamp_modules', 'final_layer', 'classifier')


def list_models() -> list[str]:
  """Names accepted by ``create_model`` (timm's HRNet names)."""
  return list(MODEL_CONFIGS)


def _default_pretrained_cfg(arch: str) -> dict | None:
  from hrnet_jax import pretrained
  try:
    return pretrained.get_pretrained_cfg(arch).to_dict()
  except ValueError:
    return None


def create_model(name: str, *, pretrained: str | os.PathLike | None = None,
                 num_classes: int | None = None, features_only: bool = False,
                 feature_location: str = 'incre', out_indices: Sequence[int] = (0, 1, 2, 3, 4),
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs | None = None, head_conv_bias: bool | None = None,
                 in_chans: int = 3, num_keypoints: int | None = None) -> HighResolutionNet:
  """Builds an HRNet by timm name (``list_models()``), optionally with converted weights.

  Args:
    name: e.g. ``'hrnet_w18'``, ``'hrnet_w18_small_v2'``, ``'hrnet_w48_ssld'``.
    pretrained: a folder written by ``convert_official_weights`` / ``save_pretrained``. Loading
      is strict; parts of the checkpoint the model does not build (the head of a
      ``features_only`` model) are skipped, and a different ``num_classes`` keeps a freshly
      initialised classifier (fine-tuning), as timm.
    num_classes: classifier outputs (default: the checkpoint's, else 1000); 0 makes ``model(x)``
      return the pooled 2048-d embedding.
    features_only: return a ``HighResolutionNetFeatures`` backbone whose ``model(x)`` is the list
      of maps at ``out_indices`` (strides 2, 4, 8, 16, 32) for ``feature_location`` ``'incre'``
      (64/128/256/512/1024 channels) or ``''`` (64, C, 2C, 4C, 8C).
    dtype: computation dtype (``jnp.bfloat16`` for mixed precision); ``param_dtype``: parameters.
    rngs: random init (default ``nnx.Rngs(0)``).
    head_conv_bias: override whether head convs carry a bias (default: the arch's, or the
      checkpoint's).

  Dense models (``hrnet_jax.dense.list_dense_models()``: ``hrnetv2_w18_seg``,
  ``hrnet_w32_pose``, ``hrnetv2p_w18``, ...) are built by ``hrnet_jax.dense.create_dense_model``
  with ``num_classes`` (segmentation) or ``num_keypoints`` (pose).

  Returns the model in training mode (call ``model.eval()`` for inference), with attributes
  ``arch`` and ``pretrained_cfg`` (preprocessing of the weights' tag, a dict, or None).

  Raises ``ValueError`` for an unknown name or an arch different from the checkpoint's,
  ``FileNotFoundError`` for a folder that is not a checkpoint, and
  ``checkpoint.CheckpointMismatchError`` when the weights do not fit.
  """
  from hrnet_jax import dense
  if name in dense.DENSE_CONFIGS:
    if features_only:
      raise ValueError(f'{name} is a dense model: its features are model.forward_features(x)')
    return dense.create_dense_model(
        name, pretrained=pretrained, num_classes=num_classes, num_keypoints=num_keypoints,
        head_conv_bias=head_conv_bias, in_chans=in_chans, dtype=dtype, param_dtype=param_dtype,
        rngs=rngs)
  if num_keypoints is not None:
    raise ValueError(f'{name} is a classifier: num_keypoints is for pose models')
  cfg = get_config(name)
  config = arrays = None
  if pretrained is not None:
    config, arrays = checkpoint.read_pretrained(pretrained)
    if config['arch'] != name:
      raise ValueError(f'{pretrained}: checkpoint is {config["arch"]!r}, not {name!r}')
    ckpt_bias = config.get('model_kwargs', {}).get('head_conv_bias')
    if head_conv_bias is None and ckpt_bias is not None:
      head_conv_bias = ckpt_bias
  if head_conv_bias is not None:
    cfg = dataclasses.replace(cfg, head_conv_bias=bool(head_conv_bias))
  ckpt_classes = config.get('num_classes', 1000) if config else 1000
  if num_classes is None:
    num_classes = ckpt_classes
  rngs = rngs if rngs is not None else nnx.Rngs(0)

  if features_only:
    model = HighResolutionNetFeatures(cfg, feature_location=feature_location,
                                      out_indices=out_indices, in_chans=in_chans, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
  else:
    model = HighResolutionNet(cfg, num_classes=num_classes, in_chans=in_chans, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
  model.arch = name
  model.head_conv_bias = cfg.head_conv_bias
  model.pretrained_cfg = _default_pretrained_cfg(name)

  if arrays is not None:
    # Parts of the checkpoint this model does not use, as timm's non-strict cases: the head of
    # a backbone, or the classifier when fine-tuning to another number of classes (kept at init).
    unused = ()
    if features_only:
      unused = HEAD_PREFIXES + (('incre_modules',) if feature_location == '' else ())
    elif num_classes != ckpt_classes:
      unused = ('classifier',)
      log.info('%s: new classifier with %d classes (checkpoint has %d)', pretrained,
               num_classes, ckpt_classes)
    arrays = {k: v for k, v in arrays.items() if not k.startswith(unused)}
    checkpoint.assign_arrays(model, arrays, what=str(pretrained), allow_missing=unused)
    model.pretrained_cfg = config.get('pretrained_cfg') or model.pretrained_cfg
  return model


def load_pretrained(ckpt_dir: str | os.PathLike, **kwargs) -> HighResolutionNet:
  """The model of a checkpoint folder, its arch read from ``config.json``, in eval mode.

  ``kwargs`` go to ``create_model`` (e.g. ``features_only=True``, ``dtype=jnp.bfloat16``).
  """
  arch = checkpoint.read_config(ckpt_dir)['arch']
  model = create_model(arch, pretrained=ckpt_dir, **kwargs)
  model.eval()
  return model


def save_pretrained(model: HighResolutionNet, out_dir: str | os.PathLike, *,
                    pretrained_cfg: dict | None = None, source: dict | None = None,
                    overwrite: bool = False):
  """Writes ``model`` as a checkpoint folder that ``create_model(..., pretrained=out_dir)`` and
  ``load_pretrained`` read. Atomic; ``FileExistsError`` if ``out_dir`` is not empty unless
  ``overwrite``. Returns the folder path."""
  if isinstance(model, HighResolutionNetFeatures):
    raise ValueError('save the full classification model, not a features_only backbone')
  if getattr(model, 'arch', None) is None:
    raise ValueError('the model has no arch name: build it with hrnet_jax.create_model')
  from hrnet_jax import dense
  if isinstance(model, dense.DenseHRNet):
    return checkpoint.write_pretrained(
        checkpoint.model_arrays(model),
        dense.dense_checkpoint_config(model, pretrained_cfg=pretrained_cfg, source=source),
        out_dir, overwrite=overwrite)
  config = {
      'arch': model.arch,
      'model_kwargs': {'head_conv_bias': model.head_conv_bias},
      'num_classes': model.num_classes,
      'pretrained_cfg': pretrained_cfg if pretrained_cfg is not None else model.pretrained_cfg,
      'source': source or {},
  }
  return checkpoint.write_pretrained(checkpoint.model_arrays(model), config, out_dir,
                                     overwrite=overwrite)
