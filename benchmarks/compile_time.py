"""Compile time of the ``hrnet-train`` step on this machine, with and without ``scan``.

    python -m benchmarks.compile_time --models hrnet_w18 --scan off,on --batch 32 --steps 3

For each (model, scan, remat) the step is built as ``hrnet-train`` builds it
(``hrnet_jax.train.train_state.recipe_model``: ``fast_trace`` and ``config.remat``; ``hrnet_jax.train.step.
jit_train_step`` on a one-device mesh, SGD Nesterov with weight decay, float32 by default) and
timed in phases: ``trace_s`` (Python tracing to a jaxpr), ``lower_s`` (to StableHLO),
``compile_s`` (XLA, the backend of this process: XLA:CPU here), ``first_step_s`` (the first run
of the compiled step), then ``step_s``, the median of ``--steps`` further steps (``step_p90_s``
their 90th percentile; ``--lower-only`` stops before compiling). JAX's persistent compilation cache is not enabled here (only the CLIs
enable it), so every compile is a cold one. The 1-minute load average before and after each
configuration is recorded: on the shared 2-core machine, only rows with a low load compare.

``--restart`` measures what a user waits for instead: ``hrnet-train --config digits`` with
``--models`` (first one), ``--image-size`` and ``--batch`` started as a subprocess in a new
workdir, twice, with one new persistent compilation cache folder: ``task=train-start`` (empty
cache: tracing, XLA compilation, the first step) then ``task=train-restart`` (the cache the first
start wrote, as a restarted or repeated run finds it). ``first_step_s`` is the wall time from
spawning the process to step 1's ``perf/startup_s`` line in ``metrics.jsonl`` (the run is then
killed; its workdir and cache are temporary); ``compile_s`` holds that scalar itself (seconds from
the trainer's start, imports excluded).

Rows are appended to ``--out`` (CSV).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from benchmarks import common, tpu_aot
from hrnet_jax.cli.policy import run_cli
from hrnet_jax.errors import BadInputError, EnvironmentFailure

PROG = 'python -m benchmarks.compile_time'
COLUMNS = [
  'model',
  'task',
  'scan',
  'remat',
  'batch',
  'image_size',
  'dtype',
  'backend',
  'trace_s',
  'lower_s',
  'compile_s',
  'first_step_s',
  'step_s',
  'step_p90_s',
  'steps',
  'load_avg_before',
  'load_avg_after',
  'versions',
  'git_commit',
  'timestamp',
]
SCAN = {'off': False, 'on': True}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
  p.add_argument('--models', default='hrnet_w18', help='comma-separated variant names')
  p.add_argument('--scan', default='off,on', help='comma-separated: off, on')
  p.add_argument('--remat', default='none', help='comma-separated: none, block, module')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--image-size', type=int, default=224)
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--steps', type=int, default=3, help='timed steps after the first (0: none)')
  p.add_argument('--lower-only', action='store_true', help='stop after lowering (no compile)')
  p.add_argument(
    '--restart', action='store_true', help='time hrnet-train to step 1: empty, then warm cache'
  )
  p.add_argument('--timeout', type=float, default=1800, help='--restart: seconds per start')
  p.add_argument('--out', default='benchmarks/results/compile_time.csv')
  p.add_argument('--verbose', action='store_true', help='tracebacks for errors')
  return p


def _split(flag: str, text: str, valid: Sequence[str]) -> list[str]:
  values = [v.strip() for v in text.split(',') if v.strip()]
  if not values or set(values) - set(valid):
    raise BadInputError(f'{flag}={text!r}: valid: {", ".join(valid)}')
  return values


def _env() -> dict:
  import jax
  import jaxlib

  return {
    'versions': f'jax={jax.__version__};jaxlib={jaxlib.__version__}',
    'git_commit': common.git_commit(),
    'timestamp': datetime.datetime.now().isoformat(timespec='seconds'),
    'backend': jax.default_backend(),
  }


def measure(
  model: str,
  scan: bool,
  remat: str,
  batch: int,
  image_size: int,
  dtype: str,
  steps: int,
  lower_only: bool = False,
) -> dict:
  """One row of ``COLUMNS`` for the train step of ``model``."""
  import jax
  import numpy as np

  from hrnet_jax.train import mesh as mesh_lib
  from hrnet_jax.train import step as step_lib
  from hrnet_jax.train import train_state as ts
  from hrnet_jax.train.recipes import base

  load_before = os.getloadavg()[0]
  config = base.get_config()
  config.model, config.dtype, config.remat, config.pretrained = model, dtype, remat, ''
  config.scan = scan
  config.optimizer.schedule = 'cosine'
  net = ts.recipe_model(config, 1000)
  model_def, params, stats = ts.split_model(net)
  tx = ts.create_optimizer(config, steps_per_epoch=1000)
  mesh = mesh_lib.create_mesh(1, devices=jax.devices()[:1])
  host = ts.init_state(params, stats, tx)
  shardings = mesh_lib.state_shardings(mesh, host)
  bs, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  fn = step_lib.jit_train_step(
    shardings,
    bs,
    rep,
    model_def=model_def,
    tx=tx,
    lr_fn=ts.learning_rate_schedule(config, 1000),
    mean=tuple(config.input.mean),
    std=tuple(config.input.std),
    loss_fn=step_lib.cross_entropy_loss(config.label_smoothing),
  )
  rng = np.random.default_rng(0)
  batch_np = {
    'image': rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8),
    'label': rng.integers(0, 1000, (batch,), np.int32),
  }
  state = mesh_lib.put_replicated_or_sharded(host, shardings)
  data = mesh_lib.global_batch(batch_np, bs)

  t0 = time.perf_counter()
  traced = fn.trace(state, data)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  row = {
    'model': model,
    'task': 'train',
    'scan': 'on' if scan else 'off',
    'remat': remat,
    'batch': batch,
    'image_size': image_size,
    'dtype': dtype,
    'trace_s': t1 - t0,
    'lower_s': t2 - t1,
    'steps': 0,
    'load_avg_before': load_before,
    **_env(),
  }
  if lower_only:
    return {**row, 'load_avg_after': os.getloadavg()[0]}
  compiled = lowered.compile()
  t3 = time.perf_counter()
  state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  t4 = time.perf_counter()
  times = []
  for _ in range(steps):
    s = time.perf_counter()
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - s)
  row.update(
    compile_s=t3 - t2, first_step_s=t4 - t3, steps=steps, load_avg_after=os.getloadavg()[0]
  )
  if times:
    row['step_s'] = statistics.median(times)
    row['step_p90_s'] = float(np.percentile(times, 90))
  return row


def _startup_s(jsonl: str) -> float | None:
  """``perf/startup_s`` of the run writing ``jsonl``, once it is there."""
  try:
    with open(jsonl) as f:
      for line in f:
        if line.endswith('\n') and 'perf/startup_s' in line:
          return json.loads(line)['perf/startup_s']
  except FileNotFoundError:
    pass
  return None


def measure_restart(model: str, batch: int, image_size: int, timeout: float) -> list[dict]:
  """The ``train-start`` and ``train-restart`` rows (``--restart``)."""
  with tempfile.TemporaryDirectory(prefix='hrnet-restart-') as tmp:
    env = {**os.environ, 'HRNET_JAX_COMPILATION_CACHE': os.path.join(tmp, 'cache')}
    rows = []
    for task in ('train-start', 'train-restart'):
      workdir = os.path.join(tmp, task)
      cmd = [
        sys.executable, '-m', 'hrnet_jax.train.main', '--config', 'digits',
        f'--config.model={model}', f'--config.input.image_size={image_size}',
        f'--config.batch_size={batch}', f'--workdir={workdir}',
      ]  # fmt: skip
      load_before = os.getloadavg()[0]
      t0 = time.perf_counter()
      proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
      )
      try:
        while (startup := _startup_s(os.path.join(workdir, 'metrics.jsonl'))) is None:
          if proc.poll() is not None:
            raise EnvironmentFailure(f'hrnet-train exited ({proc.returncode}) before step 1: '
                               f'{proc.stderr.read().decode()[-2000:]}')  # fmt: skip
          if time.perf_counter() - t0 > timeout:
            raise EnvironmentFailure(f'hrnet-train did not reach step 1 in {timeout:.0f} s')
          time.sleep(0.05)
        wall = time.perf_counter() - t0
      finally:
        if proc.poll() is None:
          os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
      rows.append({
        'model': model, 'task': task, 'scan': 'off', 'remat': 'none', 'batch': batch,
        'image_size': image_size, 'dtype': 'float32', 'compile_s': startup,
        'first_step_s': wall, 'steps': 1, 'load_avg_before': load_before,
        'load_avg_after': os.getloadavg()[0], **_env(),
      })  # fmt: skip
    return rows


def run(ns: argparse.Namespace) -> int:
  import hrnet_jax
  from hrnet_jax.runtime import remat

  models = _split('--models', ns.models, hrnet_jax.list_models())
  scans = _split('--scan', ns.scan, tuple(SCAN))
  remats = _split('--remat', ns.remat, remat.LEVELS)
  if ns.batch < 1 or ns.image_size < 32 or ns.steps < 0:
    raise BadInputError('--batch >= 1, --image-size >= 32 and --steps >= 0 are required')
  if ns.restart:
    rows = measure_restart(models[0], ns.batch, ns.image_size, ns.timeout)
    tpu_aot.append_rows(ns.out, rows, COLUMNS)
    for row in rows:
      print(' '.join(f'{k}={_show(row.get(k))}' for k in COLUMNS[:16]), flush=True)
    return 0
  for model in models:
    for r in remats:
      for scan in scans:
        row = measure(
          model, SCAN[scan], r, ns.batch, ns.image_size, ns.dtype, ns.steps, ns.lower_only
        )
        tpu_aot.append_rows(ns.out, [row], COLUMNS)
        print(' '.join(f'{k}={_show(row.get(k))}' for k in COLUMNS[:16]), flush=True)
  return 0


def _show(v) -> str:
  return f'{v:.2f}' if isinstance(v, float) else str(v)


def main(argv: Sequence[str] | None = None) -> int:
  try:
    ns = build_parser().parse_args(argv)
  except SystemExit as e:
    return int(e.code or 0)
  return run_cli(PROG, lambda: run(ns), verbose=ns.verbose)


if __name__ == '__main__':
  sys.exit(main())
