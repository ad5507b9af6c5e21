"""Image loading and timm-exact evaluation preprocessing, NumPy/PIL only (no torch).

``eval_transform`` reproduces ``timm.data.create_transform(**resolve_data_config(...))`` for
inference (``timm/data/transforms_factory.py: transforms_imagenet_eval``, crop_mode 'center'),
which is torchvision's ``Resize`` -> ``CenterCrop`` -> ``ToTensor`` -> ``Normalize`` on a PIL
image, but returns NHWC-ready ``[H, W, 3]`` float32 instead of CHW. For PaddleClas weights
(``preprocess='paddleclas'``) it reproduces PaddleClas's own eval operators instead
(``deploy/python/preprocess.py``: ``ResizeImage(resize_short)``, ``CropImage``,
``NormalizeImage(scale=1.0/255.0)``), which resize with OpenCV (imported only then).
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, Sequence, Union

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hrnet_jax.pretrained.cfgs import PretrainedCfg

__all__ = [
  'load_image',
  'to_rgb',
  'eval_transform',
  'normalize',
  'preprocess',
  'resolve_eval_params',
  'resolve_model_data_config',
  'create_transform',
]

_RESAMPLE = {
  'nearest': Image.Resampling.NEAREST,
  'bilinear': Image.Resampling.BILINEAR,
  'bicubic': Image.Resampling.BICUBIC,
  'box': Image.Resampling.BOX,
  'hamming': Image.Resampling.HAMMING,
  'lanczos': Image.Resampling.LANCZOS,
}

CfgLike = Union[PretrainedCfg, Mapping[str, Any]]
ImageLike = Union[str, os.PathLike, Image.Image]


def to_rgb(img: Image.Image) -> Image.Image:
  """Return ``img`` as mode 'RGB' (grayscale, palette, RGBA/LA, CMYK, 16-bit, float accepted).

  Alpha is dropped, not composited, exactly like timm's dataset loader (``img.convert('RGB')``).
  16-bit integer grayscale (modes 'I;16*', 'I') is rescaled to 8 bits first, because PIL's direct
  conversion would clip everything above 255 to white. Float grayscale (mode 'F', e.g. a float
  TIFF) with values in [0, 1] is scaled by 255 (PIL's conversion would make it black), values in
  [0, 255] are kept.

  Raises:
    ValueError: a float image with NaN/inf or values outside [0, 255], or a mode PIL cannot
      convert to RGB.
  """
  if img.mode == 'RGB':
    return img
  if img.mode.startswith('I;16') or img.mode == 'I':
    a = np.asarray(img, dtype=np.int64).clip(0, 65535)
    # Mode 'I' holding 8-bit data (max <= 255) is kept as is; otherwise treat as 16-bit.
    if img.mode != 'I' or a.max(initial=0) > 255:
      a = a >> 8
    img = Image.fromarray(a.astype(np.uint8), 'L')
  elif img.mode == 'F':
    a = np.asarray(img, dtype=np.float64)
    if not np.isfinite(a).all():
      raise ValueError('float image holds NaN or inf values')
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
      raise ValueError(f'float image with values in [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]')
    scale = 255.0 if hi <= 1.0 else 1.0
    img = Image.fromarray(np.round(a * scale).astype(np.uint8), 'L')
  try:
    return img.convert('RGB')
  except ValueError as e:  # e.g. 'LAB', 'HSV' have no conversion to RGB in PIL
    raise ValueError(f'image mode {img.mode!r} cannot be converted to RGB ({e})') from None


def load_image(path: str | os.PathLike) -> Image.Image:
  """Read an image file as an RGB PIL image, upright per its EXIF orientation tag.

  Args:
    path: any format PIL reads (JPEG, PNG, WebP, BMP, TIFF, ...).

  Returns:
    Fully loaded ``PIL.Image.Image`` of mode 'RGB' (file handle closed).

  Raises:
    ValueError: the file is missing, unreadable, truncated or not an image; the message
      names ``path``.
  """
  try:
    with Image.open(path) as im:
      im.load()  # decode now so truncated files fail here, not later
      # exif_transpose returns a new, file-independent image (a copy if no tag).
      img = ImageOps.exif_transpose(im)
    return to_rgb(img)
  except (
    OSError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
    SyntaxError,
    ValueError,
  ) as e:
    # SyntaxError: raised by a few PIL decoders on malformed headers.
    raise ValueError(f'cannot read image {os.fspath(path)!r}: {e}') from None


def _field(cfg: CfgLike, key: str, default: Any = None) -> Any:
  if isinstance(cfg, PretrainedCfg):
    return getattr(cfg, key, default)
  return cfg.get(key, default)


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    return int(size), int(size)
  size = tuple(int(s) for s in size)
  if len(size) == 3:  # (C, H, W) as in timm cfgs
    size = size[1:]
  if len(size) != 2:
    raise ValueError(f'input_size must be int, (H, W) or (C, H, W); got {size!r}')
  return size


def resolve_eval_params(
  cfg: CfgLike,
  *,
  input_size: int | Sequence[int] | None = None,
  crop_pct: float | None = None,
  use_test_size: bool = False,
) -> dict[str, Any]:
  """Resolve ``(H, W)``, crop_pct, interpolation, mean, std as timm's ``resolve_data_config``.

  Overrides win; then, with ``use_test_size``, the cfg's ``test_input_size``/``test_crop_pct``
  when set; then its ``input_size``/``crop_pct``. Mirrors ``timm/data/config.py:
  resolve_data_config`` (crop_pct 0.875 and bicubic are timm's fallbacks for missing keys).

  Raises:
    ValueError: bad size, non-positive crop_pct, unknown interpolation, or a cfg asking for a
      crop_mode other than 'center'.
  """
  if input_size is None:
    if use_test_size and _field(cfg, 'test_input_size') is not None:
      input_size = _field(cfg, 'test_input_size')
    else:
      input_size = _field(cfg, 'input_size', (3, 224, 224))
  if not crop_pct:
    if use_test_size and _field(cfg, 'test_crop_pct'):
      crop_pct = _field(cfg, 'test_crop_pct')
    else:
      crop_pct = _field(cfg, 'crop_pct') or 0.875
  if crop_pct <= 0:
    raise ValueError(f'crop_pct must be > 0, got {crop_pct}')
  interp = _field(cfg, 'interpolation') or 'bicubic'
  if interp not in _RESAMPLE:
    raise ValueError(f'unsupported interpolation {interp!r}; use one of {sorted(_RESAMPLE)}')
  mode = _field(cfg, 'crop_mode') or 'center'
  if mode != 'center':
    raise ValueError(f"only crop_mode 'center' is implemented, cfg asks for {mode!r}")
  mean = tuple(_field(cfg, 'mean') or (0.485, 0.456, 0.406))
  std = tuple(_field(cfg, 'std') or (0.229, 0.224, 0.225))
  if len(mean) != 3 or len(std) != 3:
    raise ValueError(f'mean/std must have 3 entries, got {mean!r} / {std!r}')
  preprocess = _field(cfg, 'preprocess') or 'timm'
  if preprocess not in ('timm', 'paddleclas'):
    raise ValueError(f"preprocess must be 'timm' or 'paddleclas', got {preprocess!r}")
  return dict(
    size=_hw(input_size),
    crop_pct=float(crop_pct),
    interpolation=interp,
    mean=mean,
    std=std,
    preprocess=preprocess,
  )


def _resize_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int]:
  """Output ``(w, h)`` of the eval resize for an input of ``(w, h)``."""
  sh, sw = scale
  if sh == sw:
    # torchvision F.resize(int): shorter side -> sh, longer side truncated (int(), not round).
    # See torchvision/transforms/functional.py: _compute_resized_output_size.
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = sh, int(sh * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)
  # Non-square target: timm ResizeKeepRatio(longest=0), Python round() (half to even).
  ratio = min(h / sh, w / sw)
  return round(w / ratio), round(h / ratio)


def _center_crop(img: Image.Image, ch: int, cw: int) -> Image.Image:
  """torchvision F.center_crop on PIL: zero-pad if too small, then round()-ed offsets."""
  w, h = img.size
  if cw > w or ch > h:
    left = (cw - w) // 2 if cw > w else 0
    top = (ch - h) // 2 if ch > h else 0
    right = (cw - w + 1) // 2 if cw > w else 0
    bottom = (ch - h + 1) // 2 if ch > h else 0
    padded = Image.new(img.mode, (w + left + right, h + top + bottom), 0)
    padded.paste(img, (left, top))
    img = padded
    w, h = img.size
    if (w, h) == (cw, ch):
      return img
  top = int(round((h - ch) / 2.0))
  left = int(round((w - cw) / 2.0))
  return img.crop((left, top, left + cw, top + ch))


def _paddleclas_resize_crop(
  x: np.ndarray, resize_short: int, th: int, tw: int, interpolation: str
) -> np.ndarray:
  """PaddleClas ``ResizeImage(resize_short)`` (cv2, both sides ``int(round(side * short /
  min(h, w)))``) then ``CropImage`` (offsets ``(dim - size) // 2``) on uint8 ``[H, W, 3]``."""
  try:
    import cv2
  except ImportError:
    raise ImportError(
      'PaddleClas preprocessing resizes with OpenCV: pip install opencv-python-headless'
    ) from None
  h, w = x.shape[:2]
  percent = float(resize_short) / min(w, h)
  new_w, new_h = int(round(w * percent)), int(round(h * percent))
  flags = {'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC, 'nearest': cv2.INTER_NEAREST}
  if interpolation not in flags:
    raise ValueError(f'PaddleClas preprocessing supports {sorted(flags)}, not {interpolation!r}')
  x = cv2.resize(np.ascontiguousarray(x), (new_w, new_h), interpolation=flags[interpolation])
  if new_h < th or new_w < tw:
    raise ValueError(f'resized image {new_h}x{new_w} is smaller than the crop {th}x{tw}')
  top, left = (new_h - th) // 2, (new_w - tw) // 2
  return x[top : top + th, left : left + tw]


def normalize(pixels, mean: Sequence[float], std: Sequence[float]):
  """RGB pixels ``[..., 3]`` in 0..255 (uint8 or float) -> float32 ``(x / 255 - mean) / std``.

  In torchvision's float32 op order (``ToTensor`` then ``Normalize``), on a NumPy array (returns
  NumPy) or a JAX array / tracer (returns JAX), so that training, export and prediction
  normalize alike.
  """
  xp = np if isinstance(pixels, np.ndarray) else jnp
  x = pixels.astype(xp.float32) / xp.float32(255.0)
  return (x - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)


def eval_transform(
  img: Image.Image | np.ndarray,
  cfg: CfgLike,
  *,
  input_size: int | Sequence[int] | None = None,
  crop_pct: float | None = None,
  use_test_size: bool = False,
) -> np.ndarray:
  """timm eval preprocessing of one image: resize, center crop, scale to [0, 1], normalize.

  Steps (``transforms_imagenet_eval``, crop_mode 'center'): the shorter side is resized with
  PIL to ``floor(size / crop_pct)`` (longer side ``int()``-truncated, aspect kept), the center
  ``size`` is cropped (offsets ``round((dim - size) / 2)``), pixels are divided by 255 and
  normalized ``(x - mean) / std`` in float32, matching torchvision's ``ToTensor``/``Normalize``.
  A cfg with ``preprocess='paddleclas'`` (PaddleClas tags) follows PaddleClas's operators instead:
  cv2 resize of the shorter side to ``floor(size / crop_pct)`` (both sides ``int(round())``-ed),
  crop offsets ``(dim - size) // 2``, ``x * float32(1/255) - mean``, then ``/ std``.

  Args:
    img: PIL image (any mode; converted with :func:`to_rgb`) or uint8 array ``[H, W, 3]``
      / ``[H, W]``.
    cfg: :class:`~hrnet_jax.pretrained.PretrainedCfg` or a dict with the same keys.
    input_size: override, int or ``(H, W)`` or ``(C, H, W)``.
    crop_pct: override of the cfg's crop fraction.
    use_test_size: use the cfg's ``test_input_size``/``test_crop_pct`` when present (timm
      ``use_test_size=True``).

  Returns:
    ``np.ndarray`` float32 ``[H, W, 3]``.

  Raises:
    ValueError: see :func:`resolve_eval_params`; or an array that is not uint8 HW/HWC.
  """
  p = resolve_eval_params(
    cfg, input_size=input_size, crop_pct=crop_pct, use_test_size=use_test_size
  )
  if isinstance(img, np.ndarray):
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
      raise ValueError(f'array images must be uint8 [H, W(, C)], got {img.dtype} {img.shape}')
    img = Image.fromarray(img)
  img = to_rgb(img)
  th, tw = p['size']
  if p['preprocess'] == 'paddleclas':
    x = _paddleclas_resize_crop(
      np.asarray(img, dtype=np.uint8), math.floor(th / p['crop_pct']), th, tw, p['interpolation']
    )
    # NormalizeImage's float32 op order: x * (1/255) - mean, then / std.
    x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    return (x - np.asarray(p['mean'], np.float32)) / np.asarray(p['std'], np.float32)
  scale = (math.floor(th / p['crop_pct']), math.floor(tw / p['crop_pct']))
  new_w, new_h = _resize_size(*img.size, scale)
  if (new_w, new_h) != img.size:  # torchvision skips the resize when sizes already match
    img = img.resize((new_w, new_h), _RESAMPLE[p['interpolation']])
  img = _center_crop(img, th, tw)
  return normalize(np.asarray(img, dtype=np.uint8), p['mean'], p['std'])


def preprocess(images: Iterable[ImageLike], cfg: CfgLike, **kwargs: Any) -> np.ndarray:
  """Batch of :func:`eval_transform` outputs: paths are read with :func:`load_image`.

  Args:
    images: paths and/or PIL images.
    cfg: as for :func:`eval_transform`; ``kwargs`` are passed through to it.

  Returns:
    float32 ``[B, H, W, 3]``.

  Raises:
    ValueError: an unreadable path (names the file), or an empty ``images``.
  """
  out = [
    eval_transform(im if isinstance(im, Image.Image) else load_image(im), cfg, **kwargs)
    for im in images
  ]
  if not out:
    raise ValueError('preprocess() got no images')
  return np.stack(out)


def resolve_model_data_config(model: Any, *, use_test_size: bool = False) -> dict[str, Any]:
  """The eval data config of ``model``'s weights, with timm's names and values: ``input_size``
  ``(C, H, W)``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode`` (mirrors
  ``timm.data.resolve_model_data_config``), plus ``preprocess`` for PaddleClas weights. Read
  from ``model.pretrained_cfg`` (timm's defaults for what it lacks; ``use_test_size``: its test
  size and crop). Raises ``ValueError`` as ``resolve_eval_params``."""
  cfg = getattr(model, 'pretrained_cfg', None) or {}
  p = resolve_eval_params(cfg, use_test_size=use_test_size)
  out = {
    'input_size': (getattr(model, 'in_chans', 3), *p['size']),
    'interpolation': p['interpolation'],
    'mean': p['mean'],
    'std': p['std'],
    'crop_pct': p['crop_pct'],
    'crop_mode': 'center',
  }
  if p['preprocess'] != 'timm':
    out['preprocess'] = p['preprocess']
  return out


def create_transform(
  input_size: int | Sequence[int] = 224,
  is_training: bool = False,
  *,
  interpolation: str = 'bilinear',
  mean: Sequence[float] = (0.485, 0.456, 0.406),
  std: Sequence[float] = (0.229, 0.224, 0.225),
  crop_pct: float | None = None,
  crop_mode: str | None = None,
  preprocess: str = 'timm',
):
  """timm's ``create_transform(**config, is_training=False)``: a callable PIL image (any mode)
  or uint8 ``[H, W(, 3)]`` array -> float32 ``[H, W, 3]`` (NHWC-ready; timm's is ``[3, H, W]``),
  ``eval_transform`` with these settings. Raises ``NotImplementedError`` for ``is_training``
  (the training augmentations are ``hrnet_jax.train``'s) and ``ValueError`` as
  ``resolve_eval_params``, at creation."""
  if is_training:
    raise NotImplementedError(
      'create_transform(is_training=True): training augmentations live in hrnet_jax.train'
    )
  cfg = dict(
    input_size=input_size,
    interpolation=interpolation,
    mean=tuple(mean),
    std=tuple(std),
    crop_pct=crop_pct,
    crop_mode=crop_mode,
    preprocess=preprocess,
  )
  resolve_eval_params(cfg, input_size=input_size)  # refuse a bad config now, not per image
  return lambda img: eval_transform(img, cfg, input_size=input_size)
