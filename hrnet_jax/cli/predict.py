"""``hrnet-predict``: a checkpoint's predictions for image files: the top-k classes of a
classifier, the class mask of a segmentation model, the keypoints of a pose model.

    hrnet-predict --checkpoint converted/hrnet_w18 cat.jpg dog.png --top-k 5 [--json]
    hrnet-predict --checkpoint RUN cat.jpg            # hrnet-train's workdir: RUN/best
    hrnet-predict --checkpoint converted/fcn_hr18 --output-dir masks street.png

The task is the checkpoint's (``config.json``: a classifier, or a dense model's ``task``);
``--checkpoint`` / ``--step`` are resolved by ``hrnet_jax.cli.checkpoints``. Class names are the
checkpoint's ``pretrained_cfg['class_names']`` (hrnet-train records its dataset's), else the
ImageNet names for 1000 classes, else the class indices.

Preprocessing is the checkpoint's pretrained cfg (timm eval transform, see
``hrnet_jax.data.transforms.eval_transform``); probabilities are the softmax of the logits.
Exit status (``hrnet_jax.errors``): 0 all images predicted; 1 some images could not be read or
gave non-finite logits (each reported on stderr, the others still predicted), or an environment
failure; 2 usage error (bad arguments; missing, corrupt or checksum-failing checkpoint).
``--json`` output is strict JSON (no NaN / Infinity).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

import hrnet_jax
from hrnet_jax import atomic, errors, runtime
from hrnet_jax.cli import checkpoints, policy
from hrnet_jax.data import decode
from hrnet_jax.data.imagenet import imagenet_class_names
from hrnet_jax.data.transforms import eval_transform, load_image, normalize
from hrnet_jax.export import OnnxRuntimeModel
from hrnet_jax.inference import segment
from hrnet_jax.pretrained import get_pretrained_cfg
from hrnet_jax.runtime import compile_cache

__all__ = ['main', 'build_parser']

PROG = 'hrnet-predict'
TASKS = ('classify', 'segment', 'pose')
RUNTIMES = ('jax', 'onnxruntime')


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog=PROG,
    description='Predict with a hrnet-jax checkpoint on image files: classify (top-k '
    'classes, with the class names the checkpoint records), segment (a class mask per image) '
    "or estimate pose (keypoints per image), as the checkpoint's task says.",
  )
  checkpoints.add_arguments(p)
  p.add_argument('images', nargs='+', metavar='IMAGE', help='image files (JPEG, PNG, ...)')
  p.add_argument(
    '--top-k', type=policy.positive_int, default=5, help='classes per image (default 5)'
  )
  p.add_argument('--json', action='store_true', help='print one JSON document instead of tables')
  p.add_argument(
    '--batch-size',
    type=policy.positive_int,
    default=32,
    help='images per forward pass (default 32)',
  )
  p.add_argument(
    '--runtime',
    choices=RUNTIMES,
    default='jax',
    help='classify with the JAX model (default) or with its ONNX export in onnxruntime '
    '(exported and verified once per checkpoint and input size, then cached; the export extra)',
  )
  p.add_argument(
    '--test-size',
    action='store_true',
    help="use the tag's test_input_size/test_crop_pct when it has them (timm use_test_size)",
  )
  p.add_argument(
    '--task',
    choices=TASKS,
    help="default: the checkpoint's task. classify (top-k), segment (PNG mask + .npy per "
    'image) or pose (keypoints JSON + overlay PNG per image); see hrnet_jax.data.decode',
  )
  p.add_argument('--output-dir', metavar='DIR', help='where --task segment/pose write files')
  p.add_argument(
    '--slide',
    type=policy.positive_int,
    nargs=4,
    metavar=('CROP_H', 'CROP_W', 'STRIDE_H', 'STRIDE_W'),
    help="--task segment: sliding-window inference (mmseg's mode='slide') instead of whole image",
  )
  p.add_argument(
    '--overwrite',
    action='store_true',
    help='with --output-dir: replace output files that already exist there',
  )
  p.add_argument(
    '--verbose', action='store_true', help="tracebacks on errors, and the libraries' log lines"
  )
  return p


def _error(msg: str) -> None:
  print(f'{PROG}: error: {msg}', file=sys.stderr)


def _preprocessing_cfg(model: Any) -> dict[str, Any]:
  """The model's pretrained cfg dict; else its arch's default tag; else timm's bare defaults."""

  cfg = getattr(model, 'pretrained_cfg', None)
  if cfg:
    return dict(cfg)
  try:
    return get_pretrained_cfg(getattr(model, 'arch', '')).to_dict()
  except ValueError:
    return {}


def class_names(cfg: dict[str, Any], num_classes: int, checkpoint: str) -> list[str] | None:
  """The names of the ``num_classes`` classes: ``cfg['class_names']`` (the checkpoint's
  ``pretrained_cfg``), else ImageNet's for 1000 classes, else None. ``BadInputError`` naming the
  checkpoint's ``config.json`` when the recorded names are not one per class."""
  names = cfg.get('class_names')
  if names:
    if len(names) != num_classes:
      raise errors.BadInputError(
        f'{os.path.join(checkpoint, "config.json")}: pretrained_cfg.class_names has '
        f'{len(names)} names for a model of {num_classes} classes'
      )
    return list(names)
  return imagenet_class_names() if num_classes == 1000 else None


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits.astype(np.float64)
  z -= z.max(axis=-1, keepdims=True)  # stable for large logits
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _run_batches(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
  """Logits ``[N, num_classes]`` of ``x [N, H, W, 3]``, jitted once for a fixed batch shape."""

  graphdef, state = nnx.split(model)
  apply = jax.jit(
    lambda s, xb: nnx.merge(graphdef, s)(xb), compiler_options=runtime.compiler_options('infer')
  )
  forward = functools.partial(apply, state)
  bs = min(batch_size, len(x))
  out = []
  for start in range(0, len(x), bs):
    xb = x[start : start + bs]
    n = len(xb)
    if n < bs:  # pad the last batch so jit does not compile a second shape
      xb = np.concatenate([xb, np.zeros((bs - n,) + xb.shape[1:], xb.dtype)])
    out.append(np.asarray(forward(xb), dtype=np.float32)[:n])
  return np.concatenate(out)


def _format_table(path: str, top: list[dict[str, Any]]) -> str:
  width = max(len(t['label']) for t in top)
  lines = [path]
  for rank, t in enumerate(top, 1):
    lines.append(
      f'  {rank:>2}. {t["label"]:<{width}}  {100 * t["prob"]:7.3f}%  (class {t["index"]})'
    )
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Run the CLI; returns the exit status instead of exiting (0 ok, 1 some images failed,
  2 usage/checkpoint error)."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # argparse exits 2 on bad usage, 0 on --help
    return int(e.code or 0)

  policy.quiet_libraries(args.verbose)
  return policy.run_cli(PROG, lambda: _predict(args), verbose=args.verbose)


def _task(model: Any, folder: str, asked: str | None) -> str:
  """``asked`` (``--task``), checked against the checkpoint's task, or that task."""
  task = getattr(model, 'task', None) or 'classify'
  if asked is None and task not in TASKS:
    raise errors.BadInputError(
      f'--checkpoint {folder}: a {task} model ({model.arch}); hrnet-predict runs classifiers, '
      'segmentation and pose models'
    )
  if asked is not None and asked != task:
    raise errors.BadInputError(
      f'--task {asked}: {folder} holds a '
      f'{"classification" if task == "classify" else task} model ({model.arch}); '
      f'omit --task to run its own task'
    )
  return task


def _predict(args: argparse.Namespace) -> int:
  args.checkpoint = checkpoints.resolve_args(args, PROG)

  # Heavy imports after argument checks, so usage errors and --help stay fast.
  compile_cache.enable()  # HRNET_JAX_COMPILATION_CACHE

  model = hrnet_jax.load_pretrained(args.checkpoint)
  cfg = _preprocessing_cfg(model)
  args.task = _task(model, args.checkpoint, args.task)
  if args.slide and args.task != 'segment':
    raise errors.BadInputError('--slide is for --task segment')
  if args.runtime != 'jax' and args.task != 'classify':
    raise errors.BadInputError(f'--runtime {args.runtime} is for classification checkpoints')
  if args.task != 'classify':
    return _main_dense(args, model, cfg)

  results: list[dict[str, Any]] = [{'image': p} for p in args.images]
  ok: list[int] = []
  arrays: list[np.ndarray] = []
  for i, path in enumerate(args.images):
    try:
      arrays.append(eval_transform(load_image(path), cfg, use_test_size=args.test_size))
      ok.append(i)
    except ValueError as e:
      results[i]['error'] = str(e)
      _error(str(e))

  if ok:
    x = np.stack(arrays)
    if args.runtime == 'onnxruntime':
      onnx_model = OnnxRuntimeModel.for_checkpoint(args.checkpoint, input_size=x.shape[1:3])
      bs = args.batch_size
      logits = np.concatenate([onnx_model(x[i : i + bs])[0] for i in range(0, len(x), bs)])
    else:
      logits = _run_batches(model, x, args.batch_size)
    finite = np.isfinite(logits).all(axis=-1)
    probs = _softmax(np.where(finite[:, None], logits, 0.0))
    num_classes = probs.shape[-1]
    names = class_names(cfg, num_classes, args.checkpoint)
    k = min(args.top_k, num_classes)
    for i, p, good in zip(ok, probs, finite):
      if not good:  # never print a NaN probability
        results[i]['error'] = (
          f'{args.images[i]}: the model gave non-finite logits (NaN/inf) for this image'
        )
        _error(results[i]['error'])
        continue
      idx = np.argsort(-p, kind='stable')[:k]
      results[i]['top_k'] = [
        {'index': int(j), 'label': names[j] if names else str(int(j)), 'prob': float(p[j])}
        for j in idx
      ]

  if args.json:
    doc = {
      'checkpoint': args.checkpoint,
      'arch': getattr(model, 'arch', None),
      'pretrained_tag': cfg.get('tag'),
      'results': results,
    }
    print(json.dumps(doc, indent=2, allow_nan=False))
  else:
    tables = [_format_table(r['image'], r['top_k']) for r in results if 'top_k' in r]
    if tables:
      print('\n\n'.join(tables))
  return 0 if all('top_k' in r for r in results) else 1


# The files ``--task`` writes per image, by record key: ``<stem><suffix>`` in ``--output-dir``.
DENSE_OUTPUTS = {
  'segment': {'mask_png': '_mask.png', 'mask_npy': '_mask.npy'},
  'pose': {'keypoints_json': '_keypoints.json', 'overlay_png': '_pose.png'},
}


def dense_outputs(task: str, image_path: str, out_dir: str) -> dict[str, pathlib.Path]:
  """The files ``task`` writes for ``image_path``, by record key."""
  stem = pathlib.Path(image_path).stem
  return {k: pathlib.Path(out_dir) / f'{stem}{s}' for k, s in DENSE_OUTPUTS[task].items()}


def check_dense_outputs(task: str, images: Sequence[str], out_dir: str, overwrite: bool) -> None:
  """Refuses, before anything is written, two images that would write the same file
  (``BadInputError``) and, unless ``overwrite``, a file that already exists
  (``FileExistsError``); both name the files at fault (exit 2)."""
  writers: dict[pathlib.Path, str] = {}
  for image in images:
    for path in dense_outputs(task, image, out_dir).values():
      if path in writers:
        raise errors.BadInputError(
          f'{writers[path]} and {image} would both write {path}; rename one or predict them '
          'into separate --output-dir folders'
        )
      writers[path] = image
      if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f'{path}: exists (use --overwrite to replace it)')


def _predict_dense_file(
  model, task: str, image_path: str, img, cfg: dict[str, Any], out_dir: str, slide=None
) -> dict[str, Any]:
  """Runs ``task`` on one image and writes its files into ``out_dir`` (each atomically);
  returns the JSON record.

  - ``segment``: the image is resized (aspect kept, bilinear) to fit the checkpoint's
    ``input_size`` (as mmseg's ``Resize(keep_ratio)``); ``<stem>_mask.png`` (palette PNG: the
    Cityscapes palette for 19 classes, else a fixed one) and ``<stem>_mask.npy`` (``[H, W]``
    int32 class map) at the image's size.
  - ``pose``: the whole image is the person box of a top-down model, resized to
    ``input_size``; ``<stem>_keypoints.json`` holds ``[[x, y, score], ...]`` and
    ``<stem>_pose.png`` the image with the keypoints.
  """

  paths = dense_outputs(task, image_path, out_dir)
  if task == 'segment':
    w, h = img.size
    size = decode.fit_size(w, h, tuple(cfg['input_size'][1:]))
    x = normalize(
      np.asarray(img.resize(size, Image.BILINEAR), np.uint8)[None], cfg['mean'], cfg['std']
    )
    apply = lambda v: model(v).astype(jnp.float32)
    crop, stride = (tuple(slide[:2]), tuple(slide[2:])) if slide else (None, None)
    logits = segment.view_logits(
      apply,
      jnp.asarray(x),
      num_classes=model.num_outputs,
      mode='slide' if slide else 'whole',
      crop_hw=crop,
      stride_hw=stride,
    )
    mask = np.asarray(segment.predict_labels(segment.resize_logits(logits, (h, w)))[0])
    colours = decode.palette(model.num_outputs)
    png, npy = paths['mask_png'], paths['mask_npy']

    def write_png(tmp):
      im = Image.fromarray(mask.astype(np.uint8), 'P')
      im.putpalette(colours.ravel().tolist())
      im.save(tmp, format='PNG')

    atomic.write_file(png, write_png)
    atomic.write_file(npy, lambda tmp: np.save(open(tmp, 'wb'), mask))
    classes, counts = np.unique(mask, return_counts=True)
    return {
      'image': image_path,
      'mask_png': str(png),
      'mask_npy': str(npy),
      'classes': {int(c): int(n) for c, n in zip(classes, counts)},
    }
  in_h, in_w = cfg['input_size'][1:]
  x = normalize(
    np.asarray(img.resize((in_w, in_h), Image.BILINEAR), np.uint8)[None], cfg['mean'], cfg['std']
  )
  keypoints = decode.keypoints_from_heatmaps(np.asarray(model(jnp.asarray(x))[0]), img.size)
  coco = len(keypoints) == len(decode.COCO_KEYPOINTS)
  record = {
    'image': image_path,
    'keypoints': [[float(v) for v in kp] for kp in keypoints],
    'names': list(decode.COCO_KEYPOINTS) if coco else None,
  }
  js, png = paths['keypoints_json'], paths['overlay_png']
  atomic.write_file(
    js, lambda tmp: pathlib.Path(tmp).write_text(json.dumps(record, indent=2) + '\n')
  )
  atomic.write_file(png, lambda tmp: decode.overlay(img, keypoints).save(tmp, format='PNG'))
  return {**record, 'keypoints_json': str(js), 'overlay_png': str(png)}


def _main_dense(args: argparse.Namespace, model: Any, cfg: dict[str, Any]) -> int:
  """``--task segment|pose``: files per image into ``--output-dir``."""

  if not args.output_dir:
    raise errors.BadInputError(
      f'{args.checkpoint} holds a {args.task} model ({model.arch}): it writes files per image; '
      'give --output-dir DIR'
    )
  check_dense_outputs(args.task, args.images, args.output_dir, args.overwrite)
  os.makedirs(args.output_dir, exist_ok=True)
  results, failed = [], 0
  for path in args.images:
    try:
      img = load_image(path)
    except ValueError as e:
      _error(str(e))
      results.append({'image': path, 'error': str(e)})
      failed += 1
      continue
    results.append(
      _predict_dense_file(model, args.task, path, img, cfg, args.output_dir, args.slide)
    )
  if args.json:
    print(
      json.dumps(
        {'checkpoint': args.checkpoint, 'arch': model.arch, 'task': args.task, 'results': results},
        indent=2,
        allow_nan=False,
      )
    )
  else:
    for r in results:
      if 'error' not in r:
        print(
          f'{r["image"]}: '
          + ', '.join(str(v) for k, v in r.items() if k.endswith(('_png', '_npy', '_json')))
        )
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
