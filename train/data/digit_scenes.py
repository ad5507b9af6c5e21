"""Digit scenes: a small semantic segmentation dataset built from images that ship in packages,
with labels that are true by construction.

Each image is a crop of one of scikit-image's colour sample photos (``skimage.data``), 1/4 to
1/2 of the image's side and upscaled to ``size`` (so the background is smooth beside the
digits), onto which 1-2 of scikit-learn's 8x8 handwritten digits
(``sklearn.datasets.load_digits``) are painted at random positions, 16-48 px tall and wide (at
most the image's size), in black or white, whichever stands out from the background under it.
The digits of one image do not overlap, so each pixel belongs to at most one digit.

Label rule (per pixel): a digit's coverage ``alpha`` is its 8x8 intensity / 16, upscaled
bilinearly to the digit's size; the painted colour is ``(1 - alpha) * background + alpha *
colour``. Its stroke is where ``alpha >= 0.5`` (more ink than background); its region is the
stroke grown by ``side / 8`` px (a square neighbourhood, within the digit's box). The label is
the digit's class on its region, ignore (255) on the next ``side / 16`` px around it (neither
clearly the digit nor background) and background elsewhere: a label ``k`` says "within
``side / 8`` px of a stroke of a digit ``k - 1``", so that the regions are wider than the
model's stride-4 logits, not sub-logit strokes. 11 classes: ``background`` (0) and the digits
``'0'..'9'`` (class = digit + 1).

Train images paint digits ``0..TRAIN_DIGITS-1`` of scikit-learn's set, validation images the
rest, so validation measures digits the model has not seen. The layout is ``seg_folder``'s
(``hrnet_jax.train.data.segmentation``): ``ROOT/images/<split>/<name>.jpg``,
``ROOT/annotations/<split>/<name>.png`` (palette PNG of class ids), ``ROOT/classes.json``, and
``ROOT/digit_scenes.json``, which records how the set was made and every digit painted.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import skimage.data
from PIL import Image, ImageFilter
from sklearn.datasets import load_digits

from hrnet_jax.errors import BadInputError
from hrnet_jax.train.data import generated

CLASSES = ('background',) + tuple(str(d) for d in range(10))
IGNORE_INDEX = 255
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'hubble_deep_field')
DIGIT_SIZE = (16, 48)  # inclusive, px
DIGITS_PER_IMAGE = (1, 2)  # inclusive
STROKE_ALPHA = 0.5  # coverage from which a pixel is stroke (more ink than background)
REGION_MARGIN = 0.125  # the digit's region: within this fraction of its side of a stroke pixel
EDGE_MARGIN = 0.0625  # ignored: the next this fraction of its side around the region
TRAIN_DIGITS = 1400  # scikit-learn digits [0, 1400) paint train images, the other 397 val
PLACEMENT_TRIES = 20
CROP_SCALE = (0.25, 0.5)  # the photo crop's side / the image's: upscaled, so the photo is smooth
MANIFEST = 'digit_scenes.json'
GENERATOR = 'hrnet_jax.train.data.digit_scenes'
ENTRIES = ('images', 'annotations', 'classes.json', MANIFEST)  # what ROOT holds


def _photos() -> list[np.ndarray]:
  return [getattr(skimage.data, name)() for name in PHOTOS]


def _background(
  rng: np.random.Generator, photos: list[np.ndarray], size, scale: tuple[float, float] | None = None
) -> np.ndarray:
  """A random crop of a random photo, with the aspect ratio of ``size``, resized to it: the
  crop's side is ``scale`` (a range) times the image's, or by default from 1 to the largest
  that fits."""
  height, width = size
  photo = photos[rng.integers(len(photos))]
  ph, pw = photo.shape[:2]
  zoom = rng.uniform(*(scale or (1.0, max(1.0, min(ph / height, pw / width)))))
  ch, cw = min(ph, round(height * zoom)), min(pw, round(width * zoom))
  top, left = rng.integers(ph - ch + 1), rng.integers(pw - cw + 1)
  crop = Image.fromarray(photo[top : top + ch, left : left + cw])
  return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR)).copy()


def _alpha(digit: np.ndarray, side: int) -> np.ndarray:
  """Coverage in [0, 1], float32 ``[side, side]``, of an 8x8 digit (values 0-16)."""
  image = Image.fromarray((digit / 16.0).astype(np.float32))  # mode 'F'
  return np.clip(np.asarray(image.resize((side, side), Image.Resampling.BILINEAR)), 0.0, 1.0)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
  """``mask`` grown by ``radius`` px (a square of side ``2 * radius + 1``)."""
  if radius < 1:
    return mask
  image = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * radius + 1))
  return np.asarray(image) > 0


def _region(stroke: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
  """-> (the digit's region, the ignored edge around it), bool ``[side, side]``: the stroke
  pixels grown by ``REGION_MARGIN * side`` px, then by ``EDGE_MARGIN * side`` more."""
  region = _dilate(stroke, round(REGION_MARGIN * side))
  return region, _dilate(region, round(EDGE_MARGIN * side)) & ~region


def _colour(under: np.ndarray) -> np.ndarray:
  """Black or white ink, whichever is farther (RGB) from the mean background under the digit:
  the digit's shape stands out in luminance, not only in hue."""
  mean = under.reshape(-1, 3).mean(0)
  return np.full(3, 255.0 if np.linalg.norm(255.0 - mean) > np.linalg.norm(mean) else 0.0)


def _scene(rng, photos, digits, targets, size):
  """-> (uint8 image [H, W, 3], uint8 label [H, W], the digits painted)."""
  height, width = size
  image = _background(rng, photos, size, CROP_SCALE).astype(np.float64)
  label = np.zeros(size, np.uint8)
  boxes, painted = [], []
  for _ in range(rng.integers(DIGITS_PER_IMAGE[0], DIGITS_PER_IMAGE[1] + 1)):
    side = int(rng.integers(DIGIT_SIZE[0], min(DIGIT_SIZE[1], height, width) + 1))
    for _ in range(PLACEMENT_TRIES):
      top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
      if all(
        top + side <= t or t + s <= top or left + side <= l or l + s <= left for t, l, s in boxes
      ):
        break
    else:
      continue  # no free place for this digit
    boxes.append((top, left, side))
    index = int(rng.integers(len(digits)))
    alpha = _alpha(digits[index], side)
    window = image[top : top + side, left : left + side]
    colour = _colour(window)
    window[:] = (1 - alpha[..., None]) * window + alpha[..., None] * colour
    cls = int(targets[index]) + 1
    region, edge = _region(alpha >= STROKE_ALPHA, side)
    lab = label[top : top + side, left : left + side]
    lab[edge] = IGNORE_INDEX
    lab[region] = cls
    painted.append(
      {
        'digit': int(targets[index]),
        'class_id': cls,
        'top': top,
        'left': left,
        'size': side,
        'colour': [int(c) for c in colour],
      }
    )
  return np.clip(np.round(image), 0, 255).astype(np.uint8), label, painted


def _palette() -> list[int]:
  rng = np.random.default_rng(0)
  colours = np.concatenate([[[0, 0, 0]], rng.integers(64, 256, (254, 3)), [[255, 255, 255]]])
  return colours.astype(np.uint8).reshape(-1).tolist()


def write_digit_scenes(
  root: str | os.PathLike,
  *,
  num_train: int = 200,
  num_val: int = 50,
  size: tuple[int, int] = (128, 128),
  seed: int = 0,
) -> dict:
  """Writes a digit scenes dataset (see the module docstring) to ``root`` and returns its
  manifest (also written to ``ROOT/digit_scenes.json``): ``{'generator', 'seed', 'size': [H,
  W], 'classes', 'ignore_index', 'splits': {'train' | 'val': {name: [{'digit', 'class_id',
  'top', 'left', 'size', 'colour'}, ...]}}}`` (positions and sizes in px of the digits
  painted on each image).

  The output is a pure function of the arguments. ``root`` is written whole or not at all (a
  temporary folder beside it, then renamed); an existing ``root`` is replaced only if it is
  empty or a digit scenes set. Raises ``BadInputError`` for counts < 1, a size below the
  smallest digit (16 px) or a ``root`` holding other files.
  """
  height, width = (int(s) for s in size)
  if num_train < 1 or num_val < 1:
    raise BadInputError(f'num_train={num_train}, num_val={num_val}: each must be >= 1')
  if min(height, width) < DIGIT_SIZE[0]:
    raise BadInputError(f'size={tuple(size)}: height and width must be >= {DIGIT_SIZE[0]} px')
  digits = load_digits()
  photos = _photos()
  rng = np.random.default_rng(seed)
  palette = _palette()
  manifest = {
    'generator': GENERATOR,
    'seed': seed,
    'size': [height, width],
    'classes': list(CLASSES),
    'ignore_index': IGNORE_INDEX,
    'splits': {},
  }
  with generated.writing(
    root, manifest=MANIFEST, generator=GENERATOR, entries=ENTRIES, what='a digit scenes dataset'
  ) as tmp:
    for split, count, part in (
      ('train', num_train, slice(0, TRAIN_DIGITS)),
      ('val', num_val, slice(TRAIN_DIGITS, None)),
    ):
      (tmp / 'images' / split).mkdir(parents=True)
      (tmp / 'annotations' / split).mkdir(parents=True)
      manifest['splits'][split] = {}
      for i in range(count):
        name = f'{split}_{i:05d}'
        image, label, painted = _scene(
          rng, photos, digits.images[part], digits.target[part], (height, width)
        )
        Image.fromarray(image).save(
          tmp / 'images' / split / f'{name}.jpg', quality=95, subsampling=0
        )
        png = Image.frombytes('P', (width, height), label.tobytes())
        png.putpalette(palette)
        png.save(tmp / 'annotations' / split / f'{name}.png')
        manifest['splits'][split][name] = painted
    (tmp / 'classes.json').write_text(json.dumps(list(CLASSES)) + '\n')
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + '\n')
  return manifest
