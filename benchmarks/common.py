"""Shared pieces of the benchmark workers and driver: the step timer, the CSV schema, system
information and the worker <-> driver protocol (one JSON line on stdout)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

RESULT_TAG = 'BENCH_RESULT '

# timm's benchmark.py columns first (infer_* / train_*), then ours. Step times in ms, memory in
# MiB, *_compile_s (first call: trace, compile, run) in s, *_foreign_cpu_pct: share of all cores
# other processes used during the measurement; export_s / artifact_mb: exported-artifact rows
# (framework 'export'), time to export (s) and artifact size (MiB); *_gflop: XLA's FLOP count of
# the step (GFLOP), *_gflops: achieved GFLOP/s, *_peak_pct: its share of peak_gflops, the
# machine's peak computed as peak_basis says (benchmarks/peak.py).
COLUMNS = [
  'model',
  'framework',
  'mode',
  'layout',
  'compiled',
  'dtype',
  'device',
  'device_name',
  'infer_samples_per_sec',
  'infer_step_time',
  'infer_step_time_p90',
  'infer_batch_size',
  'infer_img_size',
  'infer_compile_s',
  'infer_peak_mem_mb',
  'infer_foreign_cpu_pct',
  'infer_steps',
  'infer_warmup',
  'infer_repeats',
  'train_samples_per_sec',
  'train_step_time',
  'train_step_time_p90',
  'train_batch_size',
  'train_img_size',
  'train_compile_s',
  'train_peak_mem_mb',
  'train_foreign_cpu_pct',
  'train_steps',
  'train_warmup',
  'train_repeats',
  'param_count',
  'export_s',
  'artifact_mb',
  'infer_gflop',
  'infer_gflops',
  'infer_peak_pct',
  'train_gflop',
  'train_gflops',
  'train_peak_pct',
  'peak_gflops',
  'peak_basis',
  'peak_mem_kind',
  'num_threads',
  'nproc',
  'cpu_model',
  'load_avg_1m',
  'versions',
  'git_commit',
  'timestamp',
  'note',
]


@dataclasses.dataclass
class Spec:
  """One measured configuration, passed to a worker as JSON.

  ``task``: 'infer' (eval-mode forward) or 'train' (forward, backward, SGD-Nesterov update and
  BatchNorm statistics). ``mode``: for timm 'eager' (NCHW), 'channels_last' or 'compile'
  (channels_last + ``torch.compile``); for JAX one of ``jax_worker.MODES``. ``dtype``: 'fp32' or
  'bf16' (compute dtype; parameters stay float32). ``weights``: a converted checkpoint folder (JAX)
  or ``state_dict`` file (timm); random init if empty. ``warmup``: untimed steps after the first
  (compiling) call. ``budget_s`` > 0 caps the timed part of a slow configuration near that many
  seconds: steps per repeat are then cut (never below ``MIN_STEPS``) and warm-up to a quarter of the
  budget, both from the measured time of the first warm-up step.
  """

  model: str
  task: str
  batch: int
  framework: str = 'jax'
  mode: str = 'xla'
  dtype: str = 'fp32'
  device: str = 'cpu'
  img_size: int = 224
  steps: int = 40
  warmup: int = 10
  repeats: int = 3
  weights: str = ''
  remat: bool = False
  budget_s: float = 0.0
  seed: int = 0

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> 'Spec':
    return cls(**json.loads(text))


def synthetic_batch(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
  """The same seeded input for both frameworks: NHWC float32 images and int32 labels."""
  rng = np.random.default_rng(spec.seed)
  x = rng.standard_normal((spec.batch, spec.img_size, spec.img_size, 3), np.float32)
  y = rng.integers(0, 1000, spec.batch).astype(np.int32)
  return x, y


MIN_STEPS = 3


def time_steps(step: Callable[[], Any], sync: Callable[[Any], Any], spec: Spec) -> dict:
  """Runs ``step`` once (compilation), ``spec.warmup`` times untimed, then ``spec.repeats`` x
  ``spec.steps`` timed calls, each synchronised (``sync``) before the clock stops, as timm's
  benchmark does (steps and warm-up cut to ``spec.budget_s`` if set, see ``Spec``).

  Returns ``compile_s`` (first call, s), ``step_time`` (median over repeats of the mean step
  time, ms), ``step_time_p90`` (90th percentile of all timed steps, ms), ``repeat_ms`` and the
  ``steps`` / ``warmup`` / ``repeats`` actually run.
  """

  def timed() -> float:
    t = time.perf_counter()
    sync(step())
    return time.perf_counter() - t

  compile_s = timed()
  steps, warmup = spec.steps, spec.warmup
  if spec.warmup:
    estimate = timed()
    if spec.budget_s:
      steps = max(MIN_STEPS, min(steps, int(spec.budget_s / (spec.repeats * estimate))))
      warmup = max(1, min(warmup, round(0.25 * spec.budget_s / estimate)))
    for _ in range(warmup - 1):
      timed()
  means, all_steps = [], []
  for _ in range(spec.repeats):
    times = [timed() for _ in range(steps)]
    means.append(1e3 * sum(times) / len(times))
    all_steps.extend(1e3 * t for t in times)
  return dict(
    compile_s=compile_s,
    step_time=statistics.median(means),
    step_time_p90=float(np.percentile(all_steps, 90)),
    repeat_ms=means,
    steps=steps,
    warmup=warmup,
    repeats=spec.repeats,
  )


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far, MiB.

  Linux ``VmHWM`` (KiB): it starts afresh at ``exec``, whereas ``ru_maxrss`` keeps the
  high-water mark of the parent the process was forked from.
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def git_commit() -> str:
  try:
    return subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


def versions(*names: str) -> str:
  """``name=version;...`` of the given installed distributions (plus python)."""
  from importlib import metadata

  parts = [f'python={platform.python_version()}']
  for name in names:
    try:
      parts.append(f'{name}={metadata.version(name)}')
    except metadata.PackageNotFoundError:
      pass
  return ';'.join(parts)


def base_row(spec: Spec) -> dict:
  """The columns every worker fills the same way."""
  return dict(
    model=spec.model,
    framework=spec.framework,
    mode=spec.mode,
    dtype=spec.dtype,
    device=spec.device,
    nproc=os.cpu_count(),
    cpu_model=cpu_model(),
    load_avg_1m=round(os.getloadavg()[0], 2),
    git_commit=git_commit(),
    timestamp=time.strftime('%Y-%m-%dT%H:%M:%S'),
  )


def task_columns(spec: Spec, timing: dict, peak_mem_mb: float) -> dict:
  """The ``infer_*`` or ``train_*`` columns of one timed task."""
  p = spec.task
  return {
    f'{p}_samples_per_sec': round(1e3 * spec.batch / timing['step_time'], 3),
    f'{p}_step_time': round(timing['step_time'], 3),
    f'{p}_step_time_p90': round(timing['step_time_p90'], 3),
    f'{p}_batch_size': spec.batch,
    f'{p}_img_size': spec.img_size,
    f'{p}_compile_s': round(timing['compile_s'], 3),
    f'{p}_peak_mem_mb': round(peak_mem_mb, 1),
    f'{p}_steps': timing['steps'],
    f'{p}_warmup': timing['warmup'],
    f'{p}_repeats': timing['repeats'],
  }


def worker_main(run: Callable[[Spec], dict]) -> None:
  """Entry point of a worker: ``python -m benchmarks.X_worker '<Spec JSON>'``; prints the row."""
  spec = Spec.from_json(sys.argv[1])
  row = run(spec)
  print(RESULT_TAG + json.dumps(row), flush=True)


def parse_result(stdout: str) -> dict | None:
  for line in reversed(stdout.splitlines()):
    if line.startswith(RESULT_TAG):
      return json.loads(line[len(RESULT_TAG) :])
  return None
