"""Where the time goes: per-op-category time of one configuration, hrnet-jax or timm.

    python -m benchmarks.profile '<Spec JSON>'     # e.g. {"model": "hrnet_w18", "task": "train",
                                                   #       "batch": 32, "framework": "jax"}

JAX: a ``jax.profiler`` trace of ``spec.steps`` steps; every XLA:CPU/GPU op event is mapped to
its HLO instruction in the compiled module and put in a category (convolution, reduction,
layout copy/transpose, elementwise, ...). timm: ``torch.profiler`` self time of each aten op,
categorised alike. Prints the table (ms per step, share of op time) as one JSON line, since
the categories of both frameworks are meant to be read side by side.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import tempfile
import time

from benchmarks.common import Spec, synthetic_batch, worker_main

CATEGORIES = (
  'convolution',
  'reduction (BN statistics, pooling)',
  'layout (transpose, copy)',
  'elementwise (BN apply, ReLU, add, upsample)',
  'optimizer',
  'other',
)


def _hlo_categories(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> category, from a compiled module's text."""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    head = re.match(r'^(?:ENTRY )?%(\S+) .*\{$', line)
    if head:
      current = computations.setdefault(head.group(1), [])
    elif current is not None:
      current.append(line)
  categories = {}
  for lines in computations.values():
    for line in lines:
      m = re.match(r'\s*(?:ROOT )?%(\S+) = .*? ([\w-]+)\(', line)
      if not m:
        continue
      name, opcode = m.groups()
      called = re.search(r'calls=%([\w.-]+)', line)
      body = ' '.join(computations.get(called.group(1), [])) if called else ''
      text = f'{opcode} {body}'
      if 'convolution(' in text or opcode == 'convolution':
        cat = 'convolution'
      elif ' dot(' in text or opcode == 'dot':
        cat = 'other'
      elif re.search(r'reduce(-window)?\(', text) or opcode.startswith('reduce'):
        cat = 'reduction (BN statistics, pooling)'
      elif opcode in ('copy', 'transpose') or re.search(r'transpose|copy', name):
        cat = 'layout (transpose, copy)'
      elif opcode == 'fusion':
        cat = 'elementwise (BN apply, ReLU, add, upsample)'
      else:
        cat = 'other'
      categories[name] = cat
  return categories


def _jax_profile(spec: Spec) -> tuple[dict, float]:
  import jax
  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  from benchmarks import jax_worker

  step, lower, _, _ = jax_worker.build_step(spec)
  for _ in range(1 + spec.warmup):
    jax.block_until_ready(step())
  categories = _hlo_categories(lower().compile().as_text())
  trace_dir = tempfile.mkdtemp(prefix='hrnet-trace-')
  t0 = time.perf_counter()
  jax.profiler.start_trace(trace_dir)
  for _ in range(spec.steps):
    jax.block_until_ready(step())
  jax.profiler.stop_trace()
  wall_ms = 1e3 * (time.perf_counter() - t0) / spec.steps
  space = xplane_pb2.XSpace()
  with open(sorted(glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True))[-1], 'rb') as f:
    space.ParseFromString(f.read())
  shutil.rmtree(trace_dir, ignore_errors=True)
  totals = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        name = names.get(event.metadata_id, '')
        if name in categories:  # op events only (not executor / thread-pool wrappers)
          totals[categories[name]] += event.duration_ps / 1e9
  return totals, wall_ms


def _torch_category(op: str) -> str:
  if 'conv' in op:
    return 'convolution'
  if 'batch_norm' in op:
    return 'reduction (BN statistics, pooling)'
  if 'pool' in op or 'mean' in op or 'sum' in op:
    return 'reduction (BN statistics, pooling)'
  if op.startswith('aten::_foreach') or 'sgd' in op:
    return 'optimizer'
  if any(k in op for k in ('copy', 'contiguous', 'clone', 'to_dense', 'reorder')):
    return 'layout (transpose, copy)'
  if any(k in op for k in ('add', 'relu', 'threshold', 'upsample', 'mul', 'fill', 'zero')):
    return 'elementwise (BN apply, ReLU, add, upsample)'
  return 'other'


def _torch_profile(spec: Spec) -> tuple[dict, float]:
  import torch
  from torch.profiler import ProfilerActivity, profile

  from benchmarks import torch_worker

  step, sync, _ = torch_worker.build_step(spec)
  for _ in range(1 + spec.warmup):
    sync(step())
  activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if spec.device == 'gpu' else [])
  t0 = time.perf_counter()
  with profile(activities=activities) as prof:
    for _ in range(spec.steps):
      sync(step())
  wall_ms = 1e3 * (time.perf_counter() - t0) / spec.steps
  totals = collections.Counter()
  for avg in prof.key_averages():
    self_us = avg.self_device_time_total if spec.device == 'gpu' else avg.self_cpu_time_total
    totals[_torch_category(avg.key)] += self_us / 1e3
  return totals, wall_ms


def run(spec: Spec) -> dict:
  totals, wall_ms = (_jax_profile if spec.framework == 'jax' else _torch_profile)(spec)
  op_ms = sum(totals.values())
  rows = {
    c: dict(
      ms_per_step=round(totals.get(c, 0.0) / spec.steps, 2),
      share=round(totals.get(c, 0.0) / op_ms, 3) if op_ms else 0.0,
    )
    for c in CATEGORIES
  }
  return dict(
    model=spec.model,
    framework=spec.framework,
    mode=spec.mode,
    task=spec.task,
    batch=spec.batch,
    wall_ms_per_step=round(wall_ms, 1),
    op_ms_per_step=round(op_ms / spec.steps, 1),
    categories=rows,
    load_avg_1m=round(os.getloadavg()[0], 2),
  )


if __name__ == '__main__':
  worker_main(run)
