"""The dense train steps, hrnet-jax beside OpenMMLab's (PyTorch), same machine, model, input and
batch, measured side by side in one run: segmentation beside mmseg, top-down pose beside mmpose.

    python -m benchmarks.dense_train_step                     # segment: batch 2, 512x1024
    python -m benchmarks.dense_train_step --task pose         # pose: batch 8, 256x192
    python -m benchmarks.dense_train_step --task pose --batch 2 --input 64 64 --steps 2 \\
        --warmup 1 --repeats 1 --out /tmp/dense.csv

Both sides train the same model from the same random batch (uint8 images ``[B, H, W, 3]`` and
the task's targets), one optimizer update per step, from the same optimizer hyper-parameters
(``TASKS``):

- ``--task segment``: ``hrnetv2_w18_small_seg`` = mmseg ``fcn_hr18s`` (FCN head, 19 classes),
  label maps ``[B, H, W]`` (ids 0-18, a fifth of the pixels 255 = ignore). ``jax``: the
  ``segment`` recipe (pixel cross-entropy, SGD lr 0.01 / momentum 0.9 / weight decay 5e-4, poly
  schedule); ``mmseg``: ``EncoderDecoder.train_step`` of mmseg 1.2.2's
  ``configs/hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py`` (``SegDataPreProcessor``,
  ``CrossEntropyLoss``) with ``torch.optim.SGD`` (the same hyper-parameters). Default batch 2 at
  512x1024: mmseg's, 2 per GPU.
- ``--task pose``: ``hrnet_w32_pose`` = mmpose ``td-hm_hrnet-w32`` (17 COCO keypoints), heatmaps
  ``[B, H/4, W/4, 17]`` (float32 in [0, 1)) and keypoint weights ``[B, 17]`` (0 or 1, a fifth
  0). ``jax``: the ``pose_coco_hrnet_w32_256x192`` recipe (``KeypointMSELoss``, Adam lr 5e-4
  with its warm-up and multi-step schedule) in float32 (the recipe's bf16 is for accelerators;
  the torch side is float32); ``mmpose``: ``TopdownPoseEstimator.train_step`` of mmpose 1.3.2's
  ``configs/body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py``
  (``PoseDataPreprocessor``, ``KeypointMSELoss(use_target_weight=True)`` and the head's training
  accuracy, as that config computes it) with ``torch.optim.Adam(lr=5e-4)``. Default batch 8 at
  256x192, not mmpose's 64 per GPU: that is sized for a GPU, and on a 2-core CPU the 33 steps
  of a default run (first call, 2 warm-up, 3 x 10 timed) at 64 take 8x as long as at 8, per
  side; ``--batch 64`` measures it. H and W must be multiples of 32 (mmpose's HRNet upsamples its
  branches by fixed factors).

``jax`` is ``hrnet_jax.train.step.train_step`` (normalisation on the device, the task's loss),
jitted with the trainer's XLA:CPU options, the state donated; the oracle runs mmengine's
``OptimWrapper`` around the torch optimizer, BatchNorm instead of SyncBN (one process), NCHW
eager, all cores. Learning-rate schedules are not part of the oracle's step (mmengine steps
them in a hook, outside ``train_step``); in ours the step's lr is one scalar of the schedule.

Each side runs in its own subprocess, one after the other, timed by
``benchmarks.common.time_steps`` (first call = compile, warm-up, repeats x steps; median of the
repeats' mean step time). Writes one CSV row per framework (``COLUMNS``; ``ratio`` = our
images/s over the oracle's, on both rows) into ``--out`` (default ``benchmarks/results/
dense_train_step.csv``, written atomically): the rows of the ``--task`` measured replace that
task's earlier rows, the other task's rows are kept. Prints a Markdown row (``markdown_row``).
mmseg and mmpose on mmcv-lite import through the test-side shim ``tests/helpers/mm_shim.py`` (no
compiled mmcv ops). ``BadInputError`` (exit 2) for bad flags (an ``--input`` side under 32, the
stride of HRNet's lowest-resolution branch, included) or an ``--out`` file that is not this
benchmark's CSV; ``EnvironmentFailure`` (exit 1) when a worker fails.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import importlib
import json
import os
import pathlib
import subprocess
import sys
from typing import Callable

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
from hrnet_jax.cli.policy import run_cli
from hrnet_jax.errors import BadInputError, EnvironmentFailure

PROG = 'python -m benchmarks.dense_train_step'
ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'benchmarks' / 'results'
COLUMNS = [
  'task',
  'model',
  'framework',
  'mode',
  'dtype',
  'device',
  'device_name',
  'batch',
  'input_h',
  'input_w',
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
IGNORE_FRACTION = 0.2  # label pixels set to 255 (segment) / keypoints of weight 0 (pose)
SEG_LR, SEG_MOMENTUM, SEG_WEIGHT_DECAY = 0.01, 0.9, 5e-4
POSE_LR = 5e-4


def segment_arrays(batch: int, size: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
  """``image`` uint8 ``[B, H, W, 3]``, ``label`` uint8 ``[B, H, W]`` (ids < 19, 255 =
  ignore)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
  labels = rng.integers(0, TASKS['segment'].outputs, (batch, *size), dtype=np.uint8)
  labels[rng.random((batch, *size)) < IGNORE_FRACTION] = 255
  return {'image': images, 'label': labels}


def pose_arrays(batch: int, size: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
  """``image`` uint8 ``[B, H, W, 3]``, ``heatmap`` float32 ``[B, H/4, W/4, K]`` in [0, 1),
  ``target_weight`` float32 ``[B, K]`` (0 or 1); K = 17."""
  rng = np.random.default_rng(seed)
  k = TASKS['pose'].outputs
  images = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
  heatmaps = rng.random((batch, size[0] // 4, size[1] // 4, k), dtype=np.float32)
  weights = (rng.random((batch, k)) >= IGNORE_FRACTION).astype(np.float32)
  return {'image': images, 'heatmap': heatmaps, 'target_weight': weights}


def segment_config(config, spec: argparse.Namespace) -> None:
  """The ``segment`` recipe at ``spec.batch``, lr 0.01 (mmseg's), a 1000-step poly schedule."""
  config.batch_size = config.optimizer.base_batch_size = spec.batch
  config.optimizer.base_lr = SEG_LR
  config.num_steps = 1000


def pose_config(config, spec: argparse.Namespace) -> None:
  """The pose recipe at ``spec.batch`` (lr 5e-4 unscaled, as mmpose's), float32 compute."""
  config.batch_size = config.optimizer.base_batch_size = spec.batch
  config.dtype = 'float32'


def mmseg_oracle(spec: argparse.Namespace, arrays: dict[str, np.ndarray]):
  """mmseg ``fcn_hr18s`` (``EncoderDecoder``), its SGD ``OptimWrapper`` and ``data``."""
  import mm_models
  import torch
  from mmengine.optim import OptimWrapper

  cfg = mm_models.plain_bn(mm_models.config('mmseg', TASKS['segment'].oracle_config).model)
  cfg.decode_head.num_classes = TASKS['segment'].outputs
  cfg.data_preprocessor.size = tuple(spec.input)
  model = mm_models.build('mmseg', cfg)
  optim_wrapper = OptimWrapper(
    torch.optim.SGD(
      model.parameters(), lr=SEG_LR, momentum=SEG_MOMENTUM, weight_decay=SEG_WEIGHT_DECAY
    )
  )
  data = {
    'inputs': [torch.from_numpy(im.transpose(2, 0, 1).copy()) for im in arrays['image']],
    'data_samples': mm_models.seg_data_samples(arrays['label']),
  }
  return model, optim_wrapper, data


def mmpose_oracle(spec: argparse.Namespace, arrays: dict[str, np.ndarray]):
  """mmpose ``td-hm_hrnet-w32`` (``TopdownPoseEstimator``), its Adam ``OptimWrapper`` and
  ``data``: ``PoseDataSample``s with what ``HeatmapHead.loss`` reads, ``gt_fields.heatmaps``
  ``[K, H/4, W/4]`` and ``gt_instance_labels.keypoint_weights`` ``[1, K]``."""
  import mm_models
  import torch
  from mmengine.optim import OptimWrapper
  from mmengine.structures import InstanceData, PixelData
  from mmpose.structures import PoseDataSample

  cfg = mm_models.plain_bn(mm_models.config('mmpose', TASKS['pose'].oracle_config).model)
  model = mm_models.build('mmpose', cfg)
  optim_wrapper = OptimWrapper(torch.optim.Adam(model.parameters(), lr=POSE_LR))
  h, w = spec.input
  samples = []
  for heatmap, weight in zip(arrays['heatmap'], arrays['target_weight']):
    sample = PoseDataSample()
    sample.gt_fields = PixelData(heatmaps=torch.from_numpy(heatmap.transpose(2, 0, 1).copy()))
    sample.gt_instance_labels = InstanceData(keypoint_weights=torch.from_numpy(weight[None]))
    sample.set_metainfo(dict(img_shape=(h, w), input_size=(w, h)))
    samples.append(sample)
  data = {
    'inputs': [torch.from_numpy(im.transpose(2, 0, 1).copy()) for im in arrays['image']],
    'data_samples': samples,
  }
  return model, optim_wrapper, data


@dataclasses.dataclass(frozen=True)
class DenseTask:
  """One task's comparison. ``model``: our arch; ``outputs``: its classes / keypoints;
  ``recipe``: the ``hrnet_jax.train.recipes`` module of our step, set up by ``configure(config,
  spec)``; ``oracle``: the oracle's framework (and scope), ``oracle_dist`` its distribution,
  ``oracle_model`` its model's name, ``oracle_config`` its config under the package's
  ``.mim/configs``, ``oracle_build(spec, arrays) -> (model, optim_wrapper, data)``; ``arrays(batch,
  (H, W), seed)``: the batch, NumPy; ``input`` / ``batch``: the defaults; ``multiple``: H and W
  must be multiples of it."""

  model: str
  outputs: int
  recipe: str
  configure: Callable
  oracle: str
  oracle_dist: str
  oracle_model: str
  oracle_config: str
  oracle_build: Callable
  arrays: Callable
  input: tuple[int, int]
  batch: int
  multiple: int


TASKS = {
  'segment': DenseTask(
    model='hrnetv2_w18_small_seg',
    outputs=19,
    recipe='segment',
    configure=segment_config,
    oracle='mmseg',
    oracle_dist='mmsegmentation',
    oracle_model='fcn_hr18s',
    oracle_config='hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py',
    oracle_build=mmseg_oracle,
    arrays=segment_arrays,
    input=(512, 1024),
    batch=2,
    multiple=1,
  ),
  'pose': DenseTask(
    model='hrnet_w32_pose',
    outputs=17,
    recipe='pose_coco_hrnet_w32_256x192',
    configure=pose_config,
    oracle='mmpose',
    oracle_dist='mmpose',
    oracle_model='td-hm_hrnet-w32',
    oracle_config=(
      'body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py'
    ),
    oracle_build=mmpose_oracle,
    arrays=pose_arrays,
    input=(256, 192),
    batch=8,
    multiple=32,
  ),
}


def jax_step(task: DenseTask, spec: argparse.Namespace):
  """Our train step on the batch: ``(step, sync, extra columns)``."""
  import jax

  from hrnet_jax import runtime
  from hrnet_jax.train import step as step_lib
  from hrnet_jax.train import tasks
  from hrnet_jax.train import train_state as ts

  config = importlib.import_module(f'hrnet_jax.train.recipes.{task.recipe}').get_config()
  task.configure(config, spec)
  model_def, params, stats = ts.split_model(ts.recipe_model(config, task.outputs))
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
  batch = jax.device_put(task.arrays(spec.batch, spec.input, spec.seed))
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


def oracle_step(task: DenseTask, spec: argparse.Namespace):
  """The oracle's train step on the batch: ``(step, sync, extra columns)``."""
  sys.path.insert(0, str(ROOT / 'tests' / 'helpers'))  # mm_shim, mm_models: the test side's
  import torch

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(spec.seed)
  model, optim_wrapper, data = task.oracle_build(
    spec, task.arrays(spec.batch, spec.input, spec.seed)
  )
  model.train()

  def step():
    return model.train_step(data, optim_wrapper)

  return (
    step,
    lambda _: None,
    dict(
      mode='eager',
      device_name=cpu_model(),
      num_threads=torch.get_num_threads(),
      versions=versions('torch', task.oracle_dist, 'mmengine', 'mmcv-lite'),
    ),
  )


def worker(task_name: str, framework: str, spec: argparse.Namespace) -> dict:
  """Times one framework's step of ``TASKS[task_name]`` (``spec``: ``batch``, ``input`` (H, W),
  ``seed`` and what ``common.time_steps`` reads): its CSV row, without ``ratio``."""
  task = TASKS[task_name]
  step, sync, extra = (jax_step if framework == 'jax' else oracle_step)(task, spec)
  timing = time_steps(step, sync, spec)
  row = base_row(
    argparse.Namespace(model=task.model, framework=framework, mode='', dtype='fp32', device='cpu')
  )
  row.update(extra)
  row.update(
    task=task_name,
    batch=spec.batch,
    input_h=spec.input[0],
    input_w=spec.input[1],
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
    prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--task', choices=tuple(TASKS), default='segment')
  p.add_argument('--batch', type=int, help='images per step (default: segment 2, pose 8)')
  p.add_argument(
    '--input',
    '--crop',
    type=int,
    nargs=2,
    metavar=('H', 'W'),
    help='input size (default: segment 512 1024, pose 256 192)',
  )
  p.add_argument('--steps', type=int, default=10, help='timed steps per repeat')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after the first call')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--budget', type=float, default=0.0, help='> 0: cap each side near this many s')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', type=pathlib.Path, default=RESULTS / 'dense_train_step.csv')
  p.add_argument('--verbose', action='store_true', help='tracebacks for errors')
  p.add_argument('--worker', choices=('jax', 'mmseg', 'mmpose'), help=argparse.SUPPRESS)
  return p


def markdown_row(rows: dict[str, dict]) -> str:
  """``| task | model (oracle model) | batch x H x W | ours img/s | oracle img/s | ratio |``,
  ``rows``: the task's ``jax`` and oracle rows by framework."""
  j = rows['jax']
  task = TASKS[j['task']]
  o = rows[task.oracle]
  return (
    f'| {j["task"]} | {task.model} ({task.oracle} {task.oracle_model}) '
    f'| {j["batch"]}x{j["input_h"]}x{j["input_w"]} '
    f'| {j["images_per_sec"]:.2f} | {o["images_per_sec"]:.2f} | {j["ratio"]:.2f} |'
  )


def kept_rows(path: pathlib.Path, task_name: str) -> list[dict]:
  """The rows of the CSV at ``path`` (if any) that are not ``task_name``'s; ``BadInputError``
  if it is not this benchmark's CSV (its header is not ``COLUMNS``)."""
  if not path.exists():
    return []
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    if reader.fieldnames != COLUMNS:
      raise BadInputError(
        f'--out={path}: not a dense_train_step CSV (its header is not {",".join(COLUMNS)}); '
        'pass another --out or remove the file'
      )
    return [row for row in reader if row['task'] != task_name]


def table(kept: list[dict], rows: dict[str, dict], oracle: str) -> list[dict]:
  """``kept`` then the task's ``rows`` (by framework: ``jax`` and ``oracle``), each of these
  with ``ratio`` = ``jax`` images/s over ``oracle``'s (3 decimals)."""
  ratio = round(rows['jax']['images_per_sec'] / rows[oracle]['images_per_sec'], 3)
  for row in rows.values():
    row['ratio'] = ratio
  return [*kept, *rows.values()]


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
  """``rows`` (their ``COLUMNS``) as the CSV at ``path``, replaced atomically."""

  def write(tmp: str) -> None:
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
      writer.writeheader()
      writer.writerows(rows)

  atomic.write_file(path, write, what='the results CSV')


def run(args: argparse.Namespace, argv: list[str]) -> int:
  task = TASKS[args.task]
  spec = argparse.Namespace(
    batch=task.batch if args.batch is None else args.batch,
    input=task.input if args.input is None else tuple(args.input),
    steps=args.steps,
    warmup=args.warmup,
    repeats=args.repeats,
    budget_s=args.budget,
    seed=args.seed,
  )
  if spec.batch < 1 or spec.steps < 1 or spec.repeats < 1 or spec.warmup < 0:
    raise BadInputError('--batch, --steps and --repeats must be >= 1 and --warmup >= 0')
  if min(spec.input) < 32 or any(side % task.multiple for side in spec.input):
    raise BadInputError(
      f'--input {spec.input[0]} {spec.input[1]}: --task {args.task} needs H and W >= 32'
      + (f' and multiples of {task.multiple}' if task.multiple > 1 else '')
    )
  if args.worker:
    if args.worker not in ('jax', task.oracle):
      raise BadInputError(f'--worker={args.worker}: --task {args.task} has jax and {task.oracle}')
    print(RESULT_TAG + json.dumps(worker(args.task, args.worker, spec)), flush=True)
    return 0
  kept = kept_rows(args.out, args.task)
  rows = {}
  for framework in ('jax', task.oracle):
    cmd = [sys.executable, '-m', 'benchmarks.dense_train_step', '--worker', framework, *argv]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row = parse_result(proc.stdout)
    if proc.returncode != 0 or row is None:
      print(proc.stderr[-3000:], file=sys.stderr)
      raise EnvironmentFailure(
        f'the {args.task} {framework} worker failed (exit {proc.returncode}; its stderr above)'
      )
    rows[framework] = row
    print(f'{framework}: {row["images_per_sec"]} img/s ({row["step_ms"]} ms/step)', flush=True)
  write_csv(args.out, table(kept, rows, task.oracle))
  print(markdown_row(rows))
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    args = build_parser().parse_args(argv)
  except SystemExit as e:
    return int(e.code or 0)
  return run_cli(PROG, lambda: run(args, argv), verbose=args.verbose)


if __name__ == '__main__':
  sys.exit(main())
