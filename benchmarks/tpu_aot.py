"""Ahead-of-time compiles of the sharded train / eval steps for a TPU (or H100) you do not have.

    python -m benchmarks.tpu_aot --topology v5e:2x2 --models hrnet_w18_small --batch-per-chip 64,128
    python -m benchmarks.tpu_aot --topology v5e:1x1 --models hrnet_w18 --search 64:512 --remat none,block
    python -m benchmarks.tpu_aot --topology h100 --models hrnet_w18_small --tasks eval
    python -m benchmarks.tpu_aot --topology v5e:2x2 --models hrnet_w18 --scan off,on
    python -m benchmarks.tpu_aot --topology v5e:1x1 --models hrnetv2_w18_seg --image-size 512x1024 \
      --tasks train --search 1:32 --search-step 1
    python -m benchmarks.tpu_aot --topology v5e:1x1 --models hrnet_w32_pose --image-size 256x192 \
      --tasks train --batch-per-chip 64

The steps are ``hrnet_jax.train.step.jit_train_step`` / ``jit_eval_step`` over ``hrnet_jax.train.mesh``'s
``('data', 'fsdp')`` mesh, exactly as ``hrnet-train`` builds them from the ``imagenet_cosine``
recipe (SGD Nesterov, label smoothing) or, for a segmentation model, the train step of the
``seg_cityscapes_hrnetv2_w18`` recipe (pixel cross-entropy on ``--image-size HxW`` crops with
uint8 label maps; train only: evaluation runs per image) or, for a pose model, that of the
``pose_coco_hrnet_w32_256x192`` recipe (Adam, heatmap MSE on 17 stride-4 heatmaps; train
only); ``--dtype`` sets the compute dtype; ``--scan`` sets
``HRNetConfig.scan``, ``hrnet_jax.models.hrnet.set_scan``), lowered for
compile-only devices: ``jax.experimental.topologies.get_topology_desc(NAME, 'tpu')`` (needs
``libtpu``, the ``tpu-aot`` extra) or a CUDA H100 target (needs ``jax-cuda12-plugin`` +
``jax-cuda12-pjrt``; see docs/benchmarks.md). Each row records lower and compile seconds,
``memory_analysis()`` per chip against the chip's HBM, ``cost_analysis()`` FLOPs and bytes per
chip, and a **roofline estimate** (not a measurement) of the step time:
``max(flops / peak bf16 FLOP/s, bytes / HBM bandwidth)``.

Rows are appended to ``--out`` (CSV); ``--markdown`` re-renders the table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import functools
import os
import sys
import time
from typing import Iterable, Sequence

from hrnet_jax.cli.policy import run_cli
from hrnet_jax.errors import BadInputError, EnvironmentFailure

PROG = 'python -m benchmarks.tpu_aot'
GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip peak numbers of one accelerator generation (vendor data sheets, cited)."""

  name: str
  hbm_gib: float
  bf16_tflops: float  # dense
  hbm_gbps: float  # GB/s = 1e9 bytes/s
  source: str
  platform: str = 'tpu'


CHIPS = {
  'v5e': Chip('TPU v5e', 16, 197, 819, 'https://cloud.google.com/tpu/docs/v5e'),
  'v5p': Chip('TPU v5p', 95, 459, 2765, 'https://cloud.google.com/tpu/docs/v5p'),
  'v6e': Chip('TPU v6e', 32, 918, 1640, 'https://cloud.google.com/tpu/docs/v6e'),
  'h100': Chip(
    'NVIDIA H100 SXM',
    80,
    989,
    3350,
    'https://www.nvidia.com/en-us/data-center/h100/ (datasheet, SXM)',
    'cuda',
  ),
}
MEGACORE = {'v4', 'v3', 'v2'}  # two TensorCores per chip exposed as separate or fused devices

COLUMNS = [
  'model',
  'task',
  'topology',
  'chip',
  'chips',
  'mesh',
  'batch_per_chip',
  'global_batch',
  'image_size',
  'dtype',
  'remat',
  'scan',
  'status',
  'fits',
  'lower_s',
  'compile_s',
  'argument_gib',
  'output_gib',
  'alias_gib',
  'temp_gib',
  'total_gib',
  'hbm_gib',
  'flops_per_chip',
  'bytes_per_chip',
  'gflop_per_image',
  'est_step_ms',
  'est_img_s_per_chip',
  'est_bound',
  'flops_source',
  'error',
  'load_avg_1m',
  'versions',
  'git_commit',
  'timestamp',
]


def parse_ints(flag: str, text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise BadInputError(f'{flag}={text!r}: expected comma-separated integers') from None
  if not values or min(values) < 1:
    raise BadInputError(f'{flag}={text!r}: expected positive integers')
  return values


def parse_image_size(text: str) -> tuple[int, int]:
  """``'224'`` -> (224, 224); ``'512x1024'`` -> (512, 1024) (H, W); ``BadInputError`` naming
  ``--image-size`` otherwise or when a side is < 32."""
  try:
    hw = tuple(int(v) for v in text.lower().split('x'))
  except ValueError:
    hw = ()
  if len(hw) == 1:
    hw = hw * 2
  if len(hw) != 2 or min(hw) < 32:
    raise BadInputError(f'--image-size={text}: expected N or HxW, each side >= 32')
  return hw


def _size_text(hw: tuple[int, int]) -> str:
  """``'224'`` for a square input (the rows before HxW sizes), else ``'512x1024'``."""
  return str(hw[0]) if hw[0] == hw[1] else f'{hw[0]}x{hw[1]}'


def parse_search(text: str) -> tuple[int, int]:
  try:
    lo, hi = (int(v) for v in text.split(':'))
  except ValueError:
    raise BadInputError(f'--search={text!r}: expected LO:HI, e.g. 64:512') from None
  if not 1 <= lo <= hi:
    raise BadInputError(f'--search={text!r}: expected 1 <= LO <= HI')
  return lo, hi


def parse_topology(name: str) -> tuple[str, Chip]:
  """``'v5e:2x2'`` -> ``('v5e', CHIPS['v5e'])``; ``'h100'`` for the CUDA target."""
  gen = name.split(':')[0].lower()
  if gen in MEGACORE:
    raise BadInputError(
      f'--topology={name!r}: {gen} is a megacore generation (two TensorCores '
      'per chip, which jax.make_mesh cannot lay out as one device per chip); '
      'use v5e, v5p or v6e'
    )
  if gen not in CHIPS:
    raise BadInputError(
      f'--topology={name!r}: unknown generation {gen!r}; valid: '
      f'{", ".join(k + ":AxB" if k != "h100" else k for k in CHIPS)}'
    )
  if gen != 'h100' and ':' not in name:
    raise BadInputError(f'--topology={name!r}: give the slice shape, e.g. {gen}:2x2')
  return gen, CHIPS[gen]


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
  p.add_argument(
    '--topology',
    required=True,
    help="TPU slice, e.g. v5e:1x1, v5e:2x2, v5e:4x4, v5p:2x2x1, v6e:2x2; or 'h100'",
  )
  p.add_argument('--models', default='hrnet_w18_small', help='comma-separated variant names')
  p.add_argument('--batch-per-chip', default='128', help='comma-separated batch sizes per chip')
  p.add_argument(
    '--search',
    default=None,
    metavar='LO:HI',
    help='instead: binary-search the largest batch per chip in [LO, HI] (multiples '
    'of --search-step) whose train step fits the chip HBM',
  )
  p.add_argument('--search-step', type=int, default=8)
  p.add_argument('--tasks', default='train,eval', help='train and/or eval')
  p.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  p.add_argument('--image-size', default='224', help='N (square) or HxW')
  p.add_argument('--fsdp', type=int, default=1, help="size of the mesh's fsdp axis")
  p.add_argument('--remat', default='none', help='comma-separated: none, block, module')
  p.add_argument('--scan', default='off', help='comma-separated: off, on (HRNetConfig.scan)')
  p.add_argument('--out', default='benchmarks/results/tpu_aot.csv')
  p.add_argument(
    '--markdown',
    default='docs/benchmarks.md',
    help="page whose tpu_aot section is re-rendered from --out ('' to skip)",
  )
  p.add_argument('--verbose', action='store_true', help='tracebacks for errors')
  return p


@dataclasses.dataclass
class Args:
  topology: str
  gen: str
  chip: Chip
  models: list[str]
  batches: list[int]
  search: tuple[int, int] | None
  search_step: int
  tasks: list[str]
  dtype: str
  image_size: tuple[int, int]  # (H, W)
  fsdp: int
  remats: list[str]
  out: str
  markdown: str
  scans: list[str] = dataclasses.field(default_factory=lambda: ['off'])


def dense_models(task: str) -> list[str]:
  """The dense archs of ``task`` (``'segment'`` or ``'pose'``)."""
  import hrnet_jax
  from hrnet_jax.models.dense import get_dense_config

  return [m for m in hrnet_jax.list_dense_models() if get_dense_config(m).task == task]


def segmentation_models() -> list[str]:
  return dense_models('segment')


def check_args(ns: argparse.Namespace) -> Args:
  """Validates everything that needs no device; ``BadInputError`` naming the flag."""
  import hrnet_jax
  from hrnet_jax.runtime import remat

  gen, chip = parse_topology(ns.topology)
  models = [m.strip() for m in ns.models.split(',') if m.strip()]
  valid = hrnet_jax.list_models() + segmentation_models() + dense_models('pose')
  unknown = [m for m in models if m not in valid]
  if not models or unknown:
    raise BadInputError(
      f'--models: unknown {", ".join(unknown) or "(none given)"}; valid: {", ".join(valid)}'
    )
  tasks = [t.strip() for t in ns.tasks.split(',') if t.strip()]
  if not tasks or set(tasks) - {'train', 'eval'}:
    raise BadInputError(f'--tasks={ns.tasks!r}: valid: train, eval')
  if 'eval' in tasks and set(models) & set(segmentation_models() + dense_models('pose')):
    raise BadInputError(
      '--tasks eval: segmentation and pose models evaluate on the host side; use --tasks train'
    )
  remats = [r.strip() for r in ns.remat.split(',') if r.strip()]
  if not remats or set(remats) - set(remat.LEVELS):
    raise BadInputError(f'--remat={ns.remat!r}: valid: {", ".join(remat.LEVELS)}')
  scans = [v.strip() for v in ns.scan.split(',') if v.strip()]
  if not scans or set(scans) - {'off', 'on'}:
    raise BadInputError(f'--scan={ns.scan!r}: valid: off, on')
  image_size = parse_image_size(ns.image_size)
  if ns.fsdp < 1:
    raise BadInputError(f'--fsdp={ns.fsdp}: must be >= 1')
  if ns.search_step < 1:
    raise BadInputError(f'--search-step={ns.search_step}: must be >= 1')
  return Args(
    ns.topology,
    gen,
    chip,
    models,
    parse_ints('--batch-per-chip', ns.batch_per_chip),
    parse_search(ns.search) if ns.search else None,
    ns.search_step,
    tasks,
    ns.dtype,
    image_size,
    ns.fsdp,
    remats,
    ns.out,
    ns.markdown,
    scans,
  )


# An H100 SXM as XLA's GPU compiler sees it: the GpuTargetConfig text proto of XLA's
# xla/tools/hlo_opt/gpu_specs/h100_sxm.txtpb (device values as its CUDA driver reports them),
# plus the cuDNN / CUDA runtime versions, for get_topology_desc(platform='cuda', target_config=).
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 84929347584
  shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 8 }
runtime_version { major: 12 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""


def host_bounds(topology: str) -> dict:
  """libtpu assumes hosts of 2x2x1 chips; a smaller slice (``v5e:1x1``, Colab's v5e-1) needs
  its own ``chips_per_host_bounds``."""
  try:
    dims = [int(d) for d in topology.split(':')[1].split('x')]
  except ValueError:
    raise BadInputError(f'--topology={topology!r}: expected GEN:AxB or GEN:AxBxC') from None
  dims = (dims + [1, 1, 1])[:3]
  bounds = [min(d, b) for d, b in zip(dims, (2, 2, 1))]
  return {} if bounds == [2, 2, 1] else {'chips_per_host_bounds': bounds}


def devices(args: Args) -> list:
  """Compile-only devices of the target; ``EnvironmentFailure`` if its plugin is missing."""
  from jax.experimental import topologies

  try:
    if args.gen == 'h100':
      os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
      topo = topologies.get_topology_desc(
        platform='cuda', topology_name='h100', target_config=H100_TARGET_CONFIG, topology='1x1x1'
      )
    else:
      # A second process with libtpu loaded (e.g. a notebook next to this tool) is allowed.
      os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
      topo = topologies.get_topology_desc(args.topology, 'tpu', **host_bounds(args.topology))
  except Exception as e:  # noqa: BLE001 - plugins raise RuntimeError/XlaRuntimeError/ValueError
    extra = (
      'pip install "hrnet-jax[tpu-aot]" (libtpu)'
      if args.gen != 'h100'
      else 'pip install jax-cuda12-plugin==<jax version> jax-cuda12-pjrt==<jax version>'
    )
    raise EnvironmentFailure(
      f'--topology={args.topology}: no compile-only devices ({e}); needs {extra}'
    ) from e
  return list(topo.devices)


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  if m is None:
    return {}
  arg, out = m.argument_size_in_bytes, m.output_size_in_bytes
  alias, temp = m.alias_size_in_bytes, m.temp_size_in_bytes
  total = arg + out - alias + temp + m.generated_code_size_in_bytes
  return {
    'argument_gib': arg / GIB,
    'output_gib': out / GIB,
    'alias_gib': alias / GIB,
    'temp_gib': temp / GIB,
    'total_gib': total / GIB,
  }


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost:
    return {}
  return {'flops_per_chip': cost.get('flops'), 'bytes_per_chip': cost.get('bytes accessed')}


def roofline(chip: Chip, flops: float | None, nbytes: float | None, batch: int) -> dict:
  """Estimated step time (ms) and img/s per chip: the slower of compute at the peak bf16 rate
  and HBM traffic at the peak bandwidth. A lower bound on the real step time, not a
  measurement."""
  if not flops or not nbytes:
    return {}
  t_flops = flops / (chip.bf16_tflops * 1e12)
  t_bytes = nbytes / (chip.hbm_gbps * 1e9)
  t = max(t_flops, t_bytes)
  return {
    'est_step_ms': 1e3 * t,
    'est_img_s_per_chip': batch / t,
    'est_bound': 'compute' if t_flops >= t_bytes else 'memory',
  }


def _is_oom(e: Exception) -> bool:
  text = str(e)
  return any(s in text for s in ('RESOURCE_EXHAUSTED', 'Ran out of memory', 'out of memory'))


class Compiler:
  """Builds the state and steps of one (model, dtype, size, remat) once per batch size."""

  def __init__(self, args: Args, devs: list):
    from hrnet_jax.train import mesh as mesh_lib

    self.args, self.devs = args, devs
    if len(devs) % args.fsdp:
      raise BadInputError(
        f'--fsdp={args.fsdp} must divide the {len(devs)} chips of {args.topology}'
      )
    self.mesh = mesh_lib.create_mesh(args.fsdp, devices=devs)
    self._models = {}

  @functools.cached_property
  def _cpu_compiler(self) -> 'Compiler':
    """The same steps on one CPU device (built once: a batch search lowers every probe)."""
    import jax

    return Compiler(dataclasses.replace(self.args, fsdp=1), jax.devices('cpu')[:1])

  def _model(self, model: str, remat: str, batch: int, scan: str = 'off'):
    """Config, model def, abstract state and its shardings (cached per model, remat and
    scan)."""
    import jax
    import numpy as np

    from hrnet_jax.train import mesh as mesh_lib
    from hrnet_jax.train import train_state as ts
    from hrnet_jax.train.recipes import (
      imagenet_cosine,
      pose_coco_hrnet_w32_256x192,
      seg_cityscapes_hrnetv2_w18,
    )

    key = (model, remat, scan)
    if key not in self._models:
      segment, pose = model in segmentation_models(), model in dense_models('pose')
      recipe = (
        seg_cityscapes_hrnetv2_w18
        if segment
        else pose_coco_hrnet_w32_256x192
        if pose
        else imagenet_cosine
      )
      config = recipe.get_config()
      config.model, config.dtype, config.remat = model, self.args.dtype, remat
      config.input.image_size = self.args.image_size[0]
      config.pretrained, config.scan = '', scan == 'on'
      outputs = 19 if segment else 17 if pose else 1000
      model_def, params, stats = ts.split_model(ts.recipe_model(config, outputs))
      tx = ts.create_optimizer(config, steps_per_epoch=1000)
      host = ts.init_state(params, stats, tx)
      shardings = mesh_lib.state_shardings(self.mesh, host)
      abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        host,
        shardings,
      )
      self._models[key] = (config, model_def, tx, abstract, shardings)
    return self._models[key]

  def lower(self, model: str, task: str, remat: str, batch_per_chip: int, scan: str = 'off'):
    """The train or eval step of ``model`` on this mesh, lowered for abstract inputs."""
    import jax
    import jax.numpy as jnp

    from hrnet_jax.train import mesh as mesh_lib
    from hrnet_jax.train import step as step_lib
    from hrnet_jax.train import tasks
    from hrnet_jax.train import train_state as ts

    args = self.args
    config, model_def, tx, abstract, shardings = self._model(model, remat, batch_per_chip, scan)
    n = len(self.devs)
    b = batch_per_chip * n
    bs, rep = mesh_lib.batch_sharding(self.mesh), mesh_lib.replicated(self.mesh)
    sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=bs)
    h, w = args.image_size
    task_of = tasks.get_task(config)
    batch = {'image': sds((b, h, w, 3), jnp.uint8)}
    if task_of.name == 'segment':
      batch['label'] = sds((b, h, w), jnp.uint8)
    elif task_of.name == 'pose':  # heatmaps at stride 4, COCO's 17 keypoints
      batch['heatmap'] = sds((b, -(-h // 4), -(-w // 4), 17), jnp.float32)
      batch['target_weight'] = sds((b, 17), jnp.float32)
    else:
      batch['label'] = sds((b,), jnp.int32)
    norm = dict(mean=tuple(config.input.mean), std=tuple(config.input.std))
    if task == 'train':
      fn = step_lib.jit_train_step(
        shardings,
        bs,
        rep,
        model_def=model_def,
        tx=tx,
        lr_fn=ts.learning_rate_schedule(config, 1000),
        loss_fn=task_of.loss_fn(config),
        **norm,
      )
      call = (abstract, batch)
    else:
      batch['mask'] = sds((b,), jnp.bool_)
      fn = step_lib.jit_eval_step(
        shardings.params, shardings.batch_stats, bs, rep, model_def=model_def, **norm
      )
      call = (abstract.params, abstract.batch_stats, batch)
    return fn.lower(*call)

  def compile(
    self, model: str, task: str, remat: str, batch_per_chip: int, scan: str = 'off'
  ) -> dict:
    """One row (see ``COLUMNS``): status 'ok', 'oom' (the compiler could not fit the chip) or
    'error' (message in ``error``)."""
    import jax

    args, n = self.args, len(self.devs)
    b = batch_per_chip * n
    row = {
      'model': model,
      'task': task,
      'topology': args.topology,
      'chip': args.chip.name,
      'chips': n,
      'mesh': f'{n // args.fsdp}x{args.fsdp}',
      'batch_per_chip': batch_per_chip,
      'global_batch': b,
      'image_size': _size_text(args.image_size),
      'dtype': args.dtype,
      'remat': remat if task == 'train' else 'none',
      'scan': scan,
      'hbm_gib': args.chip.hbm_gib,
    }
    t0 = time.perf_counter()
    lowered = self.lower(model, task, remat, batch_per_chip, scan)
    t1 = time.perf_counter()
    row['lower_s'] = t1 - t0
    try:
      # XLA:CPU options of hrnet_jax.runtime are not the target's: compile with the defaults.
      compiled = (
        lowered.compile(compiler_options={})
        if jax.default_backend() == 'cpu'
        else lowered.compile()
      )
    except Exception as e:  # noqa: BLE001 - XlaRuntimeError is the compiler's only error type
      row.update(
        status='oom' if _is_oom(e) else 'error',
        fits=False,
        compile_s=time.perf_counter() - t1,
        error=str(e).splitlines()[0][:300],
      )
      return row
    row['compile_s'] = time.perf_counter() - t1
    row.update(_memory(compiled))
    cost = _cost(compiled)
    if cost:
      row.update(cost, flops_source='target')
    else:
      # XLA:GPU has no cost analysis, compiled or lowered: the FLOPs of the same step lowered
      # for one CPU device (unoptimized HLO). Its bytes, counted before fusion, are not the
      # target's traffic, so such rows get no roofline estimate.
      lowered = self._cpu_compiler.lower(model, task, remat, batch_per_chip, scan)
      flops = _cost(lowered).get('flops_per_chip')
      row.update(flops_per_chip=flops, flops_source='cpu lowering')
    if row.get('flops_per_chip'):
      row['gflop_per_image'] = row['flops_per_chip'] / batch_per_chip / 1e9
    row.update(
      roofline(args.chip, row.get('flops_per_chip'), row.get('bytes_per_chip'), batch_per_chip)
    )
    row['fits'] = row.get('total_gib', 0) <= args.chip.hbm_gib
    row['status'] = 'ok'
    return row


def search_batch(fits, lo: int, hi: int, step: int) -> tuple[int | None, list[int]]:
  """Largest ``b`` in ``{lo, lo + step, ...} <= hi`` with ``fits(b)`` (assumed monotone:
  fits(b) implies fits(b') for b' < b), by bisection. Returns ``(b or None, probed sizes)``."""
  grid = list(range(lo, hi + 1, step))
  probed = []
  good, lo_i, hi_i = None, 0, len(grid) - 1
  while lo_i <= hi_i:
    mid = (lo_i + hi_i) // 2
    probed.append(grid[mid])
    if fits(grid[mid]):
      good, lo_i = grid[mid], mid + 1
    else:
      hi_i = mid - 1
  return good, probed


def _fmt(v) -> str:
  if isinstance(v, float):
    return f'{v:.4g}'
  return '' if v is None else str(v)


def append_rows(path: str, rows: Iterable[dict], columns: Sequence[str] = COLUMNS) -> None:
  """Appends ``rows`` (their ``columns``) to the CSV at ``path`` (header written once); the file
  is replaced atomically, so an interrupted run never leaves half a row."""
  old = []
  if os.path.exists(path):
    with open(path, newline='') as f:
      old = list(csv.DictReader(f))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', newline='') as f:
    w = csv.DictWriter(f, columns, extrasaction='ignore')
    w.writeheader()
    for r in [*old, *rows]:
      w.writerow({k: _fmt(r.get(k)) for k in columns})
  os.replace(tmp, path)


BEGIN, END = '<!-- generated:tpu_aot:begin -->', '<!-- generated:tpu_aot:end -->'


def markdown_table(rows: Sequence[dict]) -> list[str]:
  """The latest row of each configuration as a table (estimates marked *est.*)."""
  latest = {}
  for r in rows:
    key = tuple(
      r.get(k)
      for k in (
        'model',
        'task',
        'topology',
        'mesh',
        'batch_per_chip',
        'image_size',
        'dtype',
        'remat',
      )
    )
    latest[key + (r.get('scan') or 'off',)] = r  # rows from before the scan column: off
  lines = [
    '| model | task | target | mesh | batch/chip | size | dtype | remat (+ scan) | status | per-chip memory '
    'GiB (temp) / HBM | fits | lower s | compile s (load) | GFLOP/img | est. step ms | est. '
    'img/s/chip |',
    '|' + '---|' * 16,
  ]
  order = lambda r: (
    r['model'],
    r['topology'],
    r['task'],
    r['remat'],
    r.get('scan') or '',
    int(r['batch_per_chip']),
  )
  for r in sorted(latest.values(), key=order):
    f = lambda k, d=1: f'{float(r[k]):.{d}f}' if r.get(k) not in (None, '') else '–'
    cpu_flops = ' (CPU HLO)' if r.get('flops_source') == 'cpu lowering' else ''
    mem = f'{f("total_gib", 2)} ({f("temp_gib", 2)}) / {r["hbm_gib"]}'
    scan = ' + scan' if r.get('scan') == 'on' else ''
    lines.append(
      f'| {r["model"]} | {r["task"]} | {r["topology"]} | {r["mesh"]} | {r["batch_per_chip"]} '
      f'| {r["image_size"]} | {r["dtype"]} | {r["remat"]}{scan} | {r["status"]} | {mem} | {r["fits"]} | '
      f'{f("lower_s")} | {f("compile_s")} ({f("load_avg_1m")}) | {f("gflop_per_image", 2)}{cpu_flops} | '
      f'{f("est_step_ms", 2)} | {f("est_img_s_per_chip", 0)} |'
    )
  return lines


def update_markdown(markdown: str, csv_path: str) -> None:
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))
  with open(markdown) as f:
    text = f.read()
  if BEGIN not in text or END not in text:
    raise BadInputError(f'{markdown}: no {BEGIN} ... {END} section to fill')
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  body = '\n'.join([BEGIN, *markdown_table(rows), END])
  tmp = f'{markdown}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(head + body + tail)
  os.replace(tmp, markdown)


def _env_columns() -> dict:
  import jax
  import jaxlib

  from benchmarks.common import git_commit

  try:
    import importlib.metadata as md

    tpu = md.version('libtpu')
  except Exception:  # noqa: BLE001 - not installed
    tpu = ''
  return {
    'load_avg_1m': os.getloadavg()[0],
    'git_commit': git_commit(),
    'versions': f'jax={jax.__version__};jaxlib={jaxlib.__version__};libtpu={tpu}',
    'timestamp': datetime.datetime.now().isoformat(timespec='seconds'),
  }


def run(args: Args) -> int:
  devs = devices(args)
  compiler = Compiler(args, devs)
  rows = []

  def record(row):
    row.update(_env_columns())
    rows.append(row)
    append_rows(args.out, [row])
    print(
      ' '.join(
        f'{k}={_fmt(row.get(k))}'
        for k in (
          'model',
          'task',
          'remat',
          'scan',
          'batch_per_chip',
          'status',
          'total_gib',
          'fits',
          'lower_s',
          'compile_s',
          'gflop_per_image',
          'est_img_s_per_chip',
          'error',
        )
        if row.get(k) not in (None, '')
      ),
      flush=True,
    )
    return row

  for model in args.models:
    for remat in args.remats:
      for task in args.tasks:
        if task == 'eval' and remat != args.remats[0]:
          continue  # remat changes nothing in the forward-only eval step
        for scan in args.scans:
          if args.search:
            fits = lambda b: record(compiler.compile(model, task, remat, b, scan))['fits']
            best, probed = search_batch(fits, *args.search, args.search_step)
            print(
              f'{model} {task} remat={remat} scan={scan}: largest batch/chip that fits '
              f'{args.chip.name} in [{args.search[0]}, {args.search[1]}]: {best} '
              f'(probed {probed})',
              flush=True,
            )
          else:
            for b in args.batches:
              record(compiler.compile(model, task, remat, b, scan))
  if args.markdown:
    update_markdown(args.markdown, args.out)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  ns_or_code = None
  parser = build_parser()
  try:
    ns_or_code = parser.parse_args(argv)
  except SystemExit as e:  # argparse: 2 on bad usage, 0 on --help
    return int(e.code or 0)
  return run_cli(PROG, lambda: run(check_args(ns_or_code)), verbose=ns_or_code.verbose)


if __name__ == '__main__':
  sys.exit(main())
