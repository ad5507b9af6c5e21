"""Pose scenes: a small COCO-format keypoint set built from images that ship in packages, with
joints that are true by construction.

Each image is a crop of one of scikit-image's colour photos (``digit_scenes``' backgrounds),
onto which 1-3 stick figures are drawn (one per horizontal slot of the image) with COCO's 17 keypoints: a head (disc, with nose, eyes
and ears as dots) on a torso, arms and legs of two segments each, the person's left limbs in
one colour and the right in another (so that left and right are told apart, as on a person),
random size, position, lean and limb angles. Keypoint rule: the joint positions are the
drawing's own (pixel centres, COCO's convention); a keypoint outside the image is unlabelled
(``v = 0``, at (0, 0)); one covered by a later figure or by an occluding patch (drawn on some
figures) is labelled but not visible (``v = 1``); else ``v = 2``. The box is the extent of the
figure's drawing clipped to the image, ``area`` the pixels it covers, ``num_keypoints`` the
labelled ones.

Layout (``hrnet_jax.train.data.pose``'s COCO layout): ``ROOT/annotations/
person_keypoints_<split>.json``, ``ROOT/<split>/<name>.jpg`` for splits ``train`` and ``val``,
and ``ROOT/pose_scenes.json``, how the set was made.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from hrnet_jax.errors import BadInputError
from hrnet_jax.train.data import digit_scenes, generated

# COCO's person category (person_keypoints_*.json).
KEYPOINTS = (
  'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
  'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
  'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
)  # fmt: skip
SKELETON = (
  (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
  (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
CATEGORY = {
  'id': 1,
  'name': 'person',
  'supercategory': 'person',
  'keypoints': list(KEYPOINTS),
  'skeleton': [list(s) for s in SKELETON],
}
PERSONS_PER_IMAGE = (1, 3)  # inclusive
HEIGHT_RANGE = (0.45, 0.8)  # a figure's height, of the image height
OCCLUDER_PROB = 0.25
LEFT, RIGHT, TORSO, HEAD = (235, 60, 40), (40, 90, 235), (40, 200, 80), (240, 200, 150)
MANIFEST = 'pose_scenes.json'
GENERATOR = 'hrnet_jax.train.data.pose_scenes'
SPLITS = ('train', 'val')
ENTRIES = ('annotations', *SPLITS, MANIFEST)  # what ROOT holds


def _polar(length: float, degrees: float) -> np.ndarray:
  """A segment of ``length`` px at ``degrees`` from straight down, counter-clockwise (y down)."""
  r = np.deg2rad(degrees)
  return length * np.array([np.sin(r), np.cos(r)])


def figure(rng: np.random.Generator, hip: np.ndarray, height: float) -> np.ndarray:
  """The 17 COCO keypoints ``[17, 2]`` (x, y px) of a figure ``height`` px tall standing on
  ``hip`` (the hips' midpoint), facing the camera (its left on the image's right), with a random
  lean, arm and leg angles."""
  lean = rng.uniform(-15, 15)
  up = -_polar(1.0, lean)  # unit vector hips -> neck
  side = np.array([-up[1], up[0]])  # unit vector to the figure's left (image right)
  neck = hip + 0.3 * height * up
  nose = neck + 0.13 * height * up
  kp = np.zeros((17, 2))
  kp[0] = nose
  for i, s in ((1, 1), (2, -1)):
    kp[i] = nose + 0.03 * height * up + s * 0.035 * height * side
  for i, s in ((3, 1), (4, -1)):
    kp[i] = nose + 0.01 * height * up + s * 0.07 * height * side
  for s, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
    kp[sh] = neck + s * 0.12 * height * side
    upper = lean + s * rng.uniform(10, 150)
    kp[el] = kp[sh] + _polar(0.17 * height, upper)
    kp[wr] = kp[el] + _polar(0.15 * height, upper + s * rng.uniform(-20, 120))
  for s, (hp, kn, an) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
    kp[hp] = hip + s * 0.09 * height * side
    thigh = lean + s * rng.uniform(-10, 45)
    kp[kn] = kp[hp] + _polar(0.24 * height, thigh)
    kp[an] = kp[kn] + _polar(0.23 * height, thigh + s * rng.uniform(-60, 10))
  return kp


def draw_figure(draw: ImageDraw.ImageDraw, kp: np.ndarray, height: float, fill=None) -> None:
  """Draws the figure of keypoints ``kp`` on ``draw`` (in its colours, or all in ``fill``: a
  mask)."""
  width = max(2, round(height / 18))
  colour = lambda c: c if fill is None else fill
  limbs = (
    (TORSO, ((5, 6), (11, 12), (5, 11), (6, 12))),
    (LEFT, ((5, 7), (7, 9), (11, 13), (13, 15))),
    (RIGHT, ((6, 8), (8, 10), (12, 14), (14, 16))),
  )
  for c, pairs in limbs:
    for a, b in pairs:
      draw.line([tuple(kp[a]), tuple(kp[b])], fill=colour(c), width=width)
  r = 0.085 * height
  x, y = kp[0]
  draw.ellipse([x - r, y - r * 1.1, x + r, y + r * 0.9], fill=colour(HEAD))
  for i, c in ((0, (120, 40, 40)), (1, LEFT), (2, RIGHT), (3, LEFT), (4, RIGHT)):
    d = max(1.0, height / 45)
    x, y = kp[i]
    draw.ellipse([x - d, y - d, x + d, y + d], fill=colour(c))


def _scene(rng, photos, size):
  """One image (uint8 ``[H, W, 3]``) and its persons: a list of ``(keypoints [17, 3], box
  [x, y, w, h], area)``."""
  h, w = size
  image = Image.fromarray(digit_scenes._background(rng, photos, size))
  draw = ImageDraw.Draw(image)
  masks = []
  people = []
  count = rng.integers(PERSONS_PER_IMAGE[0], PERSONS_PER_IMAGE[1] + 1)
  # One horizontal slot per figure (in random order): they overlap, but not wholly.
  for slot in rng.permutation(count):
    height = rng.uniform(*HEIGHT_RANGE) * h
    x = (slot + rng.uniform(0.2, 0.8)) / count
    hip = np.array([x * w, rng.uniform(0.35, 0.75) * h])
    kp = figure(rng, hip, height)
    mask = Image.new('L', (w, h))
    draw_figure(ImageDraw.Draw(mask), kp, height, fill=255)
    draw_figure(draw, kp, height)
    if rng.random() < OCCLUDER_PROB:  # a patch of another photo over part of the figure
      ow, oh = (rng.uniform(0.15, 0.3, 2) * height).round().astype(int)
      cx, cy = kp[rng.integers(5, 17)]
      box = (int(cx - ow / 2), int(cy - oh / 2))
      patch = digit_scenes._background(rng, photos, (oh, ow))
      image.paste(Image.fromarray(patch), box)
      cover = Image.new('L', (w, h))
      ImageDraw.Draw(cover).rectangle([box[0], box[1], box[0] + ow - 1, box[1] + oh - 1], 255)
      masks = [np.maximum(m, np.asarray(cover)) for m in masks]
      own_cover = np.asarray(cover)
    else:
      own_cover = np.zeros((h, w), np.uint8)
    later = np.asarray(mask)
    masks = [np.where(later > 0, 255, m).astype(np.uint8) for m in masks]
    masks.append(own_cover.copy())
    people.append((kp, np.asarray(mask) > 0))
  persons = []
  for (kp, drawn), covered in zip(people, masks):
    px = np.round(kp).astype(int)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    v = np.where(inside, 2, 0)
    hidden = inside & (covered[np.clip(px[:, 1], 0, h - 1), np.clip(px[:, 0], 0, w - 1)] > 0)
    v[hidden] = 1
    if not inside.any() or not drawn.any():
      continue
    ys, xs = np.nonzero(drawn)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    keypoints = np.concatenate([np.where(inside[:, None], kp, 0), v[:, None]], 1)
    persons.append((keypoints, [x0, y0, x1 - x0, y1 - y0], int(drawn.sum())))
  return np.asarray(image), persons


def write_pose_scenes(
  root: str | os.PathLike,
  *,
  num_train: int = 200,
  num_val: int = 50,
  size: tuple[int, int] = (128, 128),
  seed: int = 0,
) -> dict:
  """Writes a pose scenes dataset (see the module docstring) to ``root`` and returns its
  manifest (also ``ROOT/pose_scenes.json``): ``{'generator', 'seed', 'size': [H, W],
  'splits': {'train' | 'val': {'images', 'persons'}}}`` (counts).

  The output is a pure function of the arguments; ``root`` is written whole or not at all (a
  temporary folder beside it, renamed), and an existing ``root`` is replaced only if it is
  empty or a pose scenes set. Raises ``BadInputError`` for counts < 1, a size under 32 px or a
  ``root`` holding other files.
  """
  height, width = (int(s) for s in size)
  if num_train < 1 or num_val < 1:
    raise BadInputError(f'num_train={num_train}, num_val={num_val}: each must be >= 1')
  if min(height, width) < 32:
    raise BadInputError(f'size={tuple(size)}: height and width must be >= 32 px')
  photos = digit_scenes._photos()
  rng = np.random.default_rng(seed)
  manifest = {'generator': GENERATOR, 'seed': seed, 'size': [height, width], 'splits': {}}
  ann_id = 0
  with generated.writing(
    root, manifest=MANIFEST, generator=GENERATOR, entries=ENTRIES, what='a pose scenes dataset'
  ) as tmp:
    (tmp / 'annotations').mkdir(parents=True)
    for split, count in (('train', num_train), ('val', num_val)):
      (tmp / split).mkdir()
      images, annotations = [], []
      for i in range(count):
        name = f'{split}_{i:05d}.jpg'
        image, persons = _scene(rng, photos, (height, width))
        Image.fromarray(image).save(tmp / split / name, quality=95, subsampling=0)
        images.append({'id': i + 1, 'file_name': name, 'width': width, 'height': height})
        for keypoints, box, area in persons:
          ann_id += 1
          annotations.append(
            {
              'id': ann_id,
              'image_id': i + 1,
              'category_id': 1,
              'iscrowd': 0,
              'bbox': [float(v) for v in box],
              'area': float(area),
              'keypoints': [round(float(v), 2) for v in keypoints.reshape(-1)],
              'num_keypoints': int((keypoints[:, 2] > 0).sum()),
            }
          )
      data = {'images': images, 'annotations': annotations, 'categories': [CATEGORY]}
      (tmp / 'annotations' / f'person_keypoints_{split}.json').write_text(json.dumps(data))
      manifest['splits'][split] = {'images': count, 'persons': len(annotations)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + '\n')
  return manifest
