"""The segmentation train step, hrnet-jax beside mmseg (PyTorch), same machine, model, crop and
batch, measured side by side in one run.

    python -m benchmarks.seg_train_step                       # batch 2, crop 512x1024 (mmseg's)
    python -m benchmarks.seg_train_step --batch 2 --crop 128 128 --steps 3 --warmup 1 \\
        --repeats 1 --out /tmp/seg.csv

Both sides train ``hrnetv2_w18_small_seg`` = mmseg ``fcn_hr18s`` (FCN head, 19 classes, plain
BatchNorm: one process) from the same random uint8 batch ``[B, H, W, 3]`` and label maps (ids
0-18, a fifth of the pixels 255 = ignore), one optimizer update per step:

- ``jax``: ``hrnet_jax.train.step.train_step`` of the ``segment`` recipe (normalisation on the
  device, the task's pixel cross-entropy, SGD lr 0.01 / momentum 0.9 / weight decay 5e-4 with
  the poly schedule), jitted with the trainer's XLA:CPU options, the state donated;
- ``mmseg``: ``EncoderDecoder.train_step(data, optim_wrapper)`` of mmseg 1.2.2's own
  ``configs/hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py`` model (``SegDataPreProcessor``
  normalisation, ``CrossEntropyLoss``, backward) with mmengine's ``OptimWrapper`` around
  ``torch.optim.SGD`` (the same hyper-parameters), NCHW eager, all cores.

Each side runs in its own subprocess, one after the other, timed by
``benchmarks.common.time_steps`` (first call = compile, warm-up, repeats x steps; median of the
repeats' mean step time). Writes one CSV row per framework (``COLUMNS``; ``ratio`` = our
images/s over mmseg's, on both rows) to ``--out`` (default ``benchmarks/results/
seg_train_step.csv``, written atomically) and prints a Markdown row. mmseg on mmcv-lite
imports through the test-side shim ``tests/helpers/mm_shim.py`` (no compiled mmcv ops).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from benchmarks.common import (
  RESULT_TAG,
  base_row,
  cpu_model,
  parse_result,
  peak_rss_mb,
  time_steps,
  versions,
)
from hrnet_jax import atomic

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'benchmarks' / 'results'
MODEL, MMSEG_CONFIG = 'hrnetv2_w18_small_seg', 'hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py'
NUM_CLASSES, IGNORE_FRACTION = 19, 0.2
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
FRAMEWORKS = ('jax', 'mmseg')
COLUMNS = [
  'model',
  'framework',
  'mode',
  'dtype',
  'device',
  'device_name',
  'batch',
  'crop_h',
  'crop_w',
  'images_per_sec',
  'step_ms',
  'step_ms_p90',
  'compile_s',
  'peak_rss_mb',
  'steps',
  'warmup',
  'repeats',
  'ratio',
  'num_threads',
  'nproc',
  'cpu_model',
  'load_avg_1m',
  'versions',
  'git_commit',
  'timestamp',
]


def batch_arrays(batch: int, crop: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images ``[B, H, W, 3]`` and uint8 labels ``[B, H, W]`` (ids < 19, 255 = ignore)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, *crop, 3), dtype=np.uint8)
  labels = rng.integers(0, NUM_CLASSES, (batch, *crop), dtype=np.uint8)
  labels[rng.random((batch, *crop)) < IGNORE_FRACTION] = 255
  return images, labels


def jax_step(spec: argparse.Namespace):
  """Our train step on the batch: ``(step, sync, extra columns)``."""
  import jax

  from hrnet_jax import runtime
  from hrnet_jax.train import step as step_lib
  from hrnet_jax.train import tasks
  from hrnet_jax.train import train_state as ts
  from hrnet_jax.train.recipes import segment

  config = segment.get_config()
  config.batch_size = config.optimizer.base_batch_size = spec.batch
  config.optimizer.base_lr = LR
  config.num_steps = 1000
  model_def, params, stats = ts.split_model(ts.recipe_model(config, NUM_CLASSES))
  tx = ts.create_optimizer(config, steps_per_epoch=1)
  train = jax.jit(
    functools.partial(
      step_lib.train_step,
      model_def=model_def,
      tx=tx,
      lr_fn=ts.learning_rate_schedule(config, 1),
      mean=tuple(config.input.mean),
      std=tuple(config.input.std),
      loss_fn=tasks.get_task(config).loss_fn(config),
    ),
    donate_argnums=0,
    compiler_options=runtime.compiler_options('train'),
  )
  images, labels = batch_arrays(spec.batch, spec.crop, spec.seed)
  batch = {'image': jax.device_put(images), 'label': jax.device_put(labels)}
  holder = [jax.device_put(ts.init_state(params, stats, tx))]

  def step():
    holder[0], metrics = train(holder[0], batch)
    return metrics['loss']

  device = jax.devices()[0]
  return (
    step,
    lambda loss: loss.block_until_ready(),
    dict(
      mode='xla',
      device_name=getattr(device, 'device_kind', device.platform),
      num_threads=os.cpu_count(),
      versions=versions('jax', 'jaxlib', 'flax', 'optax'),
    ),
  )


def mmseg_step(spec: argparse.Namespace):
  """mmseg's train step on the batch: ``(step, sync, extra columns)``."""
  sys.path.insert(0, str(ROOT / 'tests' / 'helpers'))  # mm_shim, mm_models: the test side's
  import mm_models
  import torch
  from mmengine.optim import OptimWrapper

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(spec.seed)
  cfg = mm_models.plain_bn(mm_models.config('mmseg', MMSEG_CONFIG).model)
  cfg.decode_head.num_classes = NUM_CLASSES
  cfg.data_preprocessor.size = tuple(spec.crop)
  model = mm_models.build('mmseg', cfg)
  model.train()
  optim_wrapper = OptimWrapper(
    torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  )
  images, labels = batch_arrays(spec.batch, spec.crop, spec.seed)
  data = {
    'inputs': [torch.from_numpy(im.transpose(2, 0, 1).copy()) for im in images],
    'data_samples': mm_models.seg_data_samples(labels),
  }

  def step():
    return model.train_step(data, optim_wrapper)

  return (
    step,
    lambda _: None,
    dict(
      mode='eager',
      device_name=cpu_model(),
      num_threads=torch.get_num_threads(),
      versions=versions('torch', 'mmsegmentation', 'mmengine', 'mmcv-lite'),
    ),
  )


def worker(framework: str, spec: argparse.Namespace) -> dict:
  """Times one framework's step (``spec``: ``batch``, ``crop`` (H, W), ``seed`` and what
  ``common.time_steps`` reads): its CSV row, without ``ratio``."""
  step, sync, extra = (jax_step if framework == 'jax' else mmseg_step)(spec)
  timing = time_steps(step, sync, spec)
  row = base_row(
    argparse.Namespace(model=MODEL, framework=framework, mode='', dtype='fp32', device='cpu')
  )
  row.update(extra)
  row.update(
    batch=spec.batch,
    crop_h=spec.crop[0],
    crop_w=spec.crop[1],
    images_per_sec=round(1e3 * spec.batch / timing['step_time'], 3),
    step_ms=round(timing['step_time'], 3),
    step_ms_p90=round(timing['step_time_p90'], 3),
    compile_s=round(timing['compile_s'], 3),
    peak_rss_mb=round(peak_rss_mb(), 1),
    steps=timing['steps'],
    warmup=timing['warmup'],
    repeats=timing['repeats'],
  )
  return row


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog='python -m benchmarks.seg_train_step',
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument('--batch', type=int, default=2, help='images per step (mmseg: 2 per GPU)')
  p.add_argument('--crop', type=int, nargs=2, default=(512, 1024), metavar=('H', 'W'))
  p.add_argument('--steps', type=int, default=10, help='timed steps per repeat')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after the first call')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--budget', type=float, default=0.0, help='> 0: cap each side near this many s')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', type=pathlib.Path, default=RESULTS / 'seg_train_step.csv')
  p.add_argument('--worker', choices=FRAMEWORKS, help=argparse.SUPPRESS)
  return p


def markdown_row(rows: dict[str, dict]) -> str:
  """``| model | batch x H x W | ours img/s | mmseg img/s | ratio |``."""
  j, m = rows['jax'], rows['mmseg']
  return (
    f'| {MODEL} (mmseg fcn_hr18s) | {j["batch"]}x{j["crop_h"]}x{j["crop_w"]} '
    f'| {j["images_per_sec"]:.2f} | {m["images_per_sec"]:.2f} | {j["ratio"]:.2f} |'
  )


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  spec = argparse.Namespace(
    batch=args.batch,
    crop=tuple(args.crop),
    steps=args.steps,
    warmup=args.warmup,
    repeats=args.repeats,
    budget_s=args.budget,
    seed=args.seed,
  )
  if args.worker:
    print(RESULT_TAG + json.dumps(worker(args.worker, spec)), flush=True)
    return 0
  rows = {}
  for framework in FRAMEWORKS:
    cmd = [sys.executable, '-m', 'benchmarks.seg_train_step', '--worker', framework]
    cmd += sys.argv[1:] if argv is None else list(argv)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row = parse_result(proc.stdout)
    if proc.returncode != 0 or row is None:
      print(proc.stderr[-3000:], file=sys.stderr)
      print(
        f'seg_train_step: error: the {framework} worker failed ({proc.returncode})', file=sys.stderr
      )
      return 1
    rows[framework] = row
    print(f'{framework}: {row["images_per_sec"]} img/s ({row["step_ms"]} ms/step)', flush=True)
  ratio = round(rows['jax']['images_per_sec'] / rows['mmseg']['images_per_sec'], 3)
  for row in rows.values():
    row['ratio'] = ratio

  def write(tmp: str) -> None:
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
      writer.writeheader()
      writer.writerows(rows.values())

  atomic.write_file(args.out, write, what='the results CSV')
  print(markdown_row(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
