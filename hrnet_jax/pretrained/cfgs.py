"""Pretrained-weight configurations for every timm HRNet classification tag.

Mirrors ``timm/models/hrnet.py`` (``_cfg`` and ``default_cfgs``) as plain data, plus the published
ImageNet-1k accuracies from timm's ``results/results-imagenet.csv``. Nothing here imports timm or
touches the network: a tag's cfg is what its checkpoint needs for preprocessing (see
``hrnet_jax.data.transforms.eval_transform``) and what it is expected to score.

Tags are ``'<arch>.<pretrained tag>'``, e.g. ``'hrnet_w18.ms_aug_in1k'``. A bare arch resolves to
timm's default tag for it: the first tag listed for that arch in timm's ``default_cfgs``.

PaddleClas's own weights (``.pdparams``, converted with ``--format paddle``) are the
``*.paddleclas_in1k`` / ``*.paddleclas_ssld_in1k`` tags, also found by their PaddleClas names
(``'HRNet_W18_C'``, ``'SE_HRNet_W64_C_ssld'``). Their preprocessing is PaddleClas's
(``preprocess='paddleclas'``: cv2 bilinear resize of the short side to 256, center crop 224; see
``hrnet_jax.data.transforms.eval_transform``) and their accuracies are PaddleClas's published ones
(``docs/zh_CN/models/ImageNet1k/HRNet.md``, given there to 3 digits).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from hrnet_jax.models.dense import DENSE_CONFIGS

__all__ = [
  'PretrainedCfg',
  'list_pretrained',
  'get_pretrained_cfg',
  'default_tag',
  'default_pretrained_cfg',
  'IMAGENET_DEFAULT_MEAN',
  'IMAGENET_DEFAULT_STD',
]

# timm.data.constants
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

_TUPLE_FIELDS = ('input_size', 'mean', 'std', 'test_input_size')
# PIL's resampling filters, by the names ``hrnet_jax.data.transforms`` resolves.
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos')
PREPROCESSORS = ('timm', 'paddleclas')


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
  """Preprocessing and provenance of one pretrained HRNet checkpoint (timm ``pretrained_cfg``).

  Attributes:
    tag: full timm name, e.g. ``'hrnet_w18.ms_aug_in1k'``.
    arch: timm architecture name, e.g. ``'hrnet_w18'``.
    hf_hub_id: Hugging Face Hub repo holding the timm weights, e.g. ``'timm/hrnet_w18.ms_aug_in1k'``.
    num_classes: classifier width (1000 for every HRNet tag).
    input_size: ``(C, H, W)`` train/eval resolution, channel-first as in timm.
    crop_pct: eval center-crop fraction; the shorter side is resized to ``floor(H / crop_pct)``.
    interpolation: PIL resampling name, ``'bilinear'`` or ``'bicubic'``.
    mean, std: per-channel RGB normalization applied to ``[0, 1]`` pixels.
    test_input_size: ``(C, H, W)`` for timm's ``use_test_size`` evaluation, or None.
    test_crop_pct: crop fraction used with ``test_input_size``, or None.
    top1, top5: published timm ImageNet-1k val accuracy (%) at ``input_size``.
    test_top1, test_top5: published accuracy (%) at ``test_input_size``, or None.
    license: weight license string as in timm.
    preprocess: whose eval pipeline the weights expect: ``'timm'`` (PIL) or ``'paddleclas'``
      (cv2 resize, floor-offset crop; ``hrnet_jax.data.transforms.eval_transform``).
    paddleclas_name: PaddleClas's name of the weights (``'HRNet_W18_C_ssld'``), or None.
  """

  tag: str
  arch: str
  hf_hub_id: str | None
  num_classes: int = 1000
  input_size: tuple[int, int, int] = (3, 224, 224)
  crop_pct: float = 0.875
  interpolation: str = 'bilinear'
  mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
  std: tuple[float, float, float] = IMAGENET_DEFAULT_STD
  test_input_size: tuple[int, int, int] | None = None
  test_crop_pct: float | None = None
  top1: float | None = None
  top5: float | None = None
  test_top1: float | None = None
  test_top5: float | None = None
  license: str = 'mit'
  preprocess: str = 'timm'
  paddleclas_name: str | None = None

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict: tuples become lists, every field present (None kept)."""
    out = dataclasses.asdict(self)
    for key in _TUPLE_FIELDS:
      if out[key] is not None:
        out[key] = list(out[key])
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> 'PretrainedCfg':
    """Inverse of :meth:`to_dict`.

    Keys that are not fields (e.g. timm's ``pool_size``, ``first_conv``) are ignored, so a
    full timm ``pretrained_cfg`` dict is accepted. ``arch`` defaults to the part of ``tag``
    before the first dot and ``hf_hub_id`` to ``'timm/' + tag``.

    Raises:
      ValueError: ``tag`` missing, or ``input_size``/``mean``/``std`` of the wrong length.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in d.items() if k in names}
    if not kw.get('tag'):
      raise ValueError(f"pretrained cfg dict has no 'tag': {dict(d)!r}")
    kw.setdefault('arch', kw['tag'].split('.', 1)[0])
    kw.setdefault('hf_hub_id', 'timm/' + kw['tag'])
    for key in _TUPLE_FIELDS:
      if kw.get(key) is not None:
        kw[key] = tuple(kw[key])
        if len(kw[key]) != 3:
          raise ValueError(f'{key} must have 3 entries, got {kw[key]!r}')
    return cls(**kw)


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entry_problem(key: str, value: Any) -> str | None:
  """What is wrong with one ``pretrained_cfg`` entry the preprocessing reads, or None."""
  if key in ('input_size', 'test_input_size'):
    ok = (
      isinstance(value, (list, tuple))
      and len(value) == 3
      and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    return None if ok else f'must be [C, H, W], 3 integers > 0, got {value!r}'
  if key in ('mean', 'std'):
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(map(_number, value))
    if ok and key == 'std' and min(value) <= 0:
      ok = False
    return (
      None if ok else f'must be 3 finite numbers{" > 0" if key == "std" else ""}, got {value!r}'
    )
  if key in ('crop_pct', 'test_crop_pct'):
    return None if _number(value) and value > 0 else f'must be a number > 0, got {value!r}'
  allowed = {
    'interpolation': INTERPOLATIONS,
    'preprocess': PREPROCESSORS,
    'crop_mode': ('center',),
  }.get(key)
  if allowed is not None:
    return None if value in allowed else f'must be one of {", ".join(allowed)}, got {value!r}'
  if key == 'class_names':
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else f'must be a list of strings, got {type(value).__name__}'
  if key == 'tag' and not isinstance(value, str):
    return f'must be a string, got {value!r}'
  return None


def pretrained_cfg_problem(cfg: Any) -> tuple[str, str] | None:
  """``(key, problem)`` for the first entry of a ``pretrained_cfg`` (as a release folder's
  ``config.json`` holds it: a dict or None) that preprocessing cannot use (``key`` ``''``: the
  cfg itself is not a dict), else None. Entries set to None mean the defaults; unknown keys
  (timm's ``pool_size``, ...) are ignored. The checks are those of
  ``hrnet_jax.data.transforms.resolve_eval_params`` and the exporter, made before a model is
  built."""
  if cfg is None:
    return None
  if not isinstance(cfg, Mapping):
    return '', f'must be an object or null, got {type(cfg).__name__} {cfg!r}'
  for key, value in cfg.items():
    problem = None if value is None else _entry_problem(key, value)
    if problem:
      return key, problem
  return None


def _cfg(tag: str, top1: float, top5: float, **kw: Any) -> PretrainedCfg:
  # Same defaults as timm hrnet.py `_cfg`; only the per-tag overrides are spelled out below.
  return PretrainedCfg(
    tag=tag, arch=tag.split('.', 1)[0], hf_hub_id='timm/' + tag, top1=top1, top5=top5, **kw
  )


def _paddleclas(name: str, top1: float, top5: float) -> PretrainedCfg:
  """``HRNet_W18_C_ssld`` -> ``hrnet_w18.paddleclas_ssld_in1k`` with PaddleClas's eval pipeline."""
  arch = name.lower().replace('_c', '').replace('_ssld', '')
  tag = f'{arch}.paddleclas_{"ssld_" if name.endswith("_ssld") else ""}in1k'
  return PretrainedCfg(
    tag=tag,
    arch=arch,
    hf_hub_id=None,
    crop_pct=224 / 256,
    interpolation='bilinear',
    top1=top1,
    top5=top5,
    license='apache-2.0',
    preprocess='paddleclas',
    paddleclas_name=name,
  )


_SSLD = dict(crop_pct=0.95, test_crop_pct=1.0, test_input_size=(3, 288, 288))

# Order matters: it is timm's default_cfgs order, and the first tag of an arch is its default.
# Accuracies: timm results/results-imagenet.csv (img_size 224 rows; test_* = 288 rows).
_REGISTRY: dict[str, PretrainedCfg] = {
  c.tag: c
  for c in (
    _cfg(
      'hrnet_w18_small.gluon_in1k', 73.934, 91.178, interpolation='bicubic', license='apache-2.0'
    ),
    _cfg('hrnet_w18_small.ms_in1k', 72.340, 90.688),
    _cfg(
      'hrnet_w18_small_v2.gluon_in1k', 78.202, 93.906, interpolation='bicubic', license='apache-2.0'
    ),
    _cfg('hrnet_w18_small_v2.ms_in1k', 75.094, 92.414),
    _cfg('hrnet_w18.ms_aug_in1k', 78.110, 94.062, crop_pct=0.95),
    _cfg('hrnet_w18.ms_in1k', 76.770, 93.448),
    _cfg('hrnet_w30.ms_in1k', 78.202, 94.220),
    _cfg('hrnet_w32.ms_in1k', 78.452, 94.184),
    _cfg('hrnet_w40.ms_in1k', 78.928, 94.480),
    _cfg('hrnet_w44.ms_in1k', 78.890, 94.376),
    _cfg('hrnet_w48.ms_in1k', 79.328, 94.516),
    _cfg('hrnet_w64.ms_in1k', 79.458, 94.646),
    _cfg('hrnet_w18_ssld.paddle_in1k', 81.114, 95.638, test_top1=82.052, test_top5=96.250, **_SSLD),
    _cfg('hrnet_w48_ssld.paddle_in1k', 83.656, 96.848, test_top1=84.484, test_top5=97.224, **_SSLD),
    # PaddleClas (not in timm): its HRNet eval yaml's ResizeImage(resize_short=256) +
    # CropImage(224), i.e. crop_pct 224 / 256.
    *(
      _paddleclas(name, top1, top5)
      for name, top1, top5 in (
        ('HRNet_W18_C', 76.9, 93.4),
        ('HRNet_W18_C_ssld', 81.6, 95.8),
        ('HRNet_W30_C', 78.0, 94.0),
        ('HRNet_W32_C', 78.3, 94.2),
        ('HRNet_W40_C', 78.8, 94.5),
        ('HRNet_W44_C', 79.0, 94.5),
        ('HRNet_W48_C', 79.0, 94.4),
        ('HRNet_W48_C_ssld', 83.6, 96.8),
        ('HRNet_W64_C', 79.3, 94.6),
        ('SE_HRNet_W64_C_ssld', 84.7, 97.3),
      )
    ),
  )
}
_PADDLECLAS_NAMES = {c.paddleclas_name: c.tag for c in _REGISTRY.values() if c.paddleclas_name}

_DEFAULT_TAGS: dict[str, str] = {}
for _tag, _c in _REGISTRY.items():
  _DEFAULT_TAGS.setdefault(_c.arch, _tag)
del _tag, _c


def list_pretrained(arch: str | None = None) -> list[str]:
  """Full tag names, in timm's ``default_cfgs`` order.

  Args:
    arch: restrict to one architecture (e.g. ``'hrnet_w18'``); None lists all.

  Raises:
    ValueError: ``arch`` is not an HRNet architecture with pretrained weights.
  """
  if arch is None:
    return list(_REGISTRY)
  if arch not in _DEFAULT_TAGS:
    raise ValueError(f'unknown HRNet arch {arch!r}; valid: {", ".join(_DEFAULT_TAGS)}')
  return [t for t, c in _REGISTRY.items() if c.arch == arch]


def paddleclas_tags(arch: str) -> list[str]:
  """The PaddleClas tags of ``arch`` (plain first, then ssld); empty when it has none."""
  return sorted(
    (t for t, c in _REGISTRY.items() if c.arch == arch and c.paddleclas_name),
    key=lambda t: 'ssld' in t,
  )


def default_tag(arch: str) -> str:
  """timm's default tag for ``arch`` (first listed), e.g. ``'hrnet_w18'`` -> ``'hrnet_w18.ms_aug_in1k'``.

  Raises:
    ValueError: unknown arch.
  """
  try:
    return _DEFAULT_TAGS[arch]
  except KeyError:
    raise ValueError(f'unknown HRNet arch {arch!r}; valid: {", ".join(_DEFAULT_TAGS)}') from None


def default_pretrained_cfg(name: str) -> dict[str, Any] | None:
  """The ``pretrained_cfg`` dict a model built by ``create_model(name)`` starts with.

  Classifiers: the default tag's (``get_pretrained_cfg(name).to_dict()``; None for variants
  without published weights). Dense models: the upstream preprocessing, ImageNet mean/std on
  [0, 1] RGB (mmseg / mmpose / mmdet ``data_preprocessor``: mean 123.675/116.28/103.53, std
  58.395/57.12/57.375 on 0-255) and the training crop ``input_size`` ``(3, H, W)``.
  """
  if name in DENSE_CONFIGS:
    return {
      'tag': name,
      'arch': name,
      'input_size': [3, *DENSE_CONFIGS[name].input_size],
      'mean': list(IMAGENET_DEFAULT_MEAN),
      'std': list(IMAGENET_DEFAULT_STD),
      'interpolation': 'bilinear',
      'crop_pct': 1.0,
    }
  try:
    return get_pretrained_cfg(name).to_dict()
  except ValueError:
    return None


def get_pretrained_cfg(name: str) -> PretrainedCfg:
  """Look up a pretrained cfg by full tag, bare arch, or Hub id.

  Args:
    name: ``'hrnet_w18.ms_in1k'``, ``'hrnet_w18'`` (-> timm's default tag),
      ``'timm/hrnet_w18.ms_in1k'`` or a PaddleClas name (``'HRNet_W48_C_ssld'``).

  Returns:
    The (immutable, shared) :class:`PretrainedCfg`.

  Raises:
    ValueError: the name matches nothing; the message lists every valid tag and arch.
  """
  key = name[len('timm/') :] if name.startswith('timm/') else name
  key = _PADDLECLAS_NAMES.get(key, key)
  if key in _REGISTRY:
    return _REGISTRY[key]
  if key in _DEFAULT_TAGS:
    return _REGISTRY[_DEFAULT_TAGS[key]]
  raise ValueError(
    f'unknown HRNet pretrained name {name!r}; valid tags: {", ".join(_REGISTRY)}; '
    f'valid archs (default tag): {", ".join(_DEFAULT_TAGS)}'
  )
