"""Benchmark driver: hrnet-jax vs timm, same machine, variant, batch, dtype and input.

    python -m benchmarks.run --preset cpu            # the CPU rows of docs/benchmarks.md
    python -m benchmarks.run --preset gpu            # the GPU rows (needs a CUDA GPU)
    python -m benchmarks.run --models hrnet_w18_small --batch-sizes 2 --img-size 64 \\
        --steps 3 --warmup 1 --repeats 1 --out /tmp/smoke.csv --no-markdown

For each model it first runs the parity gate (``benchmarks.parity``: converted weights give
timm's logits; the run stops if not), then times every configuration in its own subprocess
(``benchmarks.jax_worker`` / ``benchmarks.torch_worker``, both on the gate's weights), one at a
time, and writes one CSV row per (model, framework, mode, batch): timm's ``infer_*`` /
``train_*`` columns plus ours (``common.COLUMNS``). ``--converter`` also times
``convert_official_weights``. The Markdown tables in ``docs/benchmarks.md`` are regenerated from
every CSV in ``benchmarks/results`` (``benchmarks.report``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks import peak, report
from benchmarks.common import COLUMNS, Spec, parse_result
from benchmarks.export_worker import MODES as EXPORT_MODES
from benchmarks.jax_worker import MODES, numerics_mode

RESULTS = pathlib.Path(__file__).parent / 'results'
WORKERS = {
  'jax': 'benchmarks.jax_worker',
  'timm': 'benchmarks.torch_worker',
  'export': 'benchmarks.export_worker',
}

PRESETS = {
  # This CPU matrix: fp32, w18_small and w18, latency (batch 1) and throughput (32).
  'cpu': dict(
    device='cpu',
    dtype='fp32',
    frameworks=['jax', 'timm', 'export'],
    models=['hrnet_w18_small', 'hrnet_w18'],
    batch_sizes=[1, 32],
    train_batch_sizes=[32],
    # +dp (one XLA device per core) measured no faster: not in the matrix.
    jax_modes=['xla', 'xla+stockflags', 'xla+foldbn'],
    timm_modes=['eager', 'channels_last', 'compile'],
    # torch.compile of the training step takes ~4.5 min per row on 2 cores.
    timm_train_modes=['eager', 'channels_last'],
    export_modes=list(EXPORT_MODES),
    budget=30.0,
    out=RESULTS / 'cpu_fp32.csv',
    converter='hrnet_w64',
  ),
  # GPU matrix: bf16 compute with float32 parameters (timm AMP), batch 256 and 1024.
  'gpu': dict(
    device='gpu',
    dtype='bf16',
    models=['hrnet_w18_small', 'hrnet_w18', 'hrnet_w48'],
    batch_sizes=[256, 1024],
    train_batch_sizes=[256, 1024],
    jax_modes=['xla', 'xla+foldbn', 'xla+dot1x1'],
    timm_modes=['eager', 'channels_last', 'compile'],
    out=RESULTS / 'gpu_bf16.csv',
    converter=None,
  ),
}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog='python -m benchmarks.run',
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    '--preset',
    choices=sorted(PRESETS),
    help='the matrix of docs/benchmarks.md; explicit options below override it',
  )
  p.add_argument('--device', choices=('cpu', 'gpu'))
  p.add_argument('--dtype', choices=('fp32', 'bf16'))
  p.add_argument('--models', nargs='+')
  p.add_argument('--batch-sizes', nargs='+', type=int, help='inference batch sizes')
  p.add_argument(
    '--train-batch-sizes',
    nargs='+',
    type=int,
    help='training batch sizes (default: the inference ones above 1)',
  )
  p.add_argument('--tasks', nargs='+', choices=('infer', 'train'), default=['infer', 'train'])
  p.add_argument(
    '--frameworks',
    nargs='+',
    choices=tuple(WORKERS),
    help="default: jax and timm (preset cpu: also 'export')",
  )
  p.add_argument(
    '--jax-modes',
    nargs='+',
    choices=MODES,
    help="experiments on top of the library ('xla', jitted with the compiler "
    "options of hrnet_jax.runtime): +stockflags, XLA's defaults instead; +foldbn, "
    'BatchNorm folded into the convs (inference only); +dot1x1, 1x1 convs as matrix '
    'products; +dp, the batch sharded over one XLA device per CPU core',
  )
  p.add_argument('--timm-modes', nargs='+', choices=('eager', 'channels_last', 'compile'))
  p.add_argument(
    '--export-modes',
    nargs='+',
    choices=EXPORT_MODES,
    help="framework 'export' (inference only): hrnet-export artifacts in their "
    "runtimes (stablehlo, onnx = onnxruntime, tflite) and timm's torch.onnx.export "
    '(timm-onnx) in onnxruntime',
  )
  p.add_argument(
    '--timm-train-modes',
    nargs='+',
    choices=('eager', 'channels_last', 'compile'),
    help='timm modes for training rows (default: --timm-modes)',
  )
  p.add_argument('--img-size', type=int, default=224)
  p.add_argument('--steps', type=int, default=40, help='timed steps per repeat')
  p.add_argument('--warmup', type=int, default=10, help='untimed steps after the first call')
  p.add_argument('--repeats', type=int, default=3, help='repeats; the median is reported')
  p.add_argument(
    '--slow-repeats',
    type=int,
    default=None,
    help='repeats for timm training rows (the slowest ones), if fewer are needed',
  )
  p.add_argument(
    '--budget',
    type=float,
    default=None,
    metavar='S',
    help='cap the timed part of a slow row near S seconds by cutting its steps '
    '(>= 3 per repeat) and warm-up; the row records what ran (default: none)',
  )
  p.add_argument(
    '--remat',
    action='store_true',
    help='JAX training: save only conv outputs for the backward pass',
  )
  p.add_argument('--xla-flags', default='', help='extra XLA_FLAGS for the JAX workers')
  p.add_argument('--out', type=pathlib.Path, help='CSV to write (replaced)')
  p.add_argument(
    '--markdown',
    type=pathlib.Path,
    default=pathlib.Path(__file__).parents[1] / 'docs' / 'benchmarks.md',
    help='Markdown file whose generated tables are refreshed from results/*.csv',
  )
  p.add_argument('--no-markdown', action='store_true')
  p.add_argument(
    '--converter',
    help='also time convert_official_weights on this variant '
    "(preset cpu: hrnet_w64; 'none' to skip)",
  )
  p.add_argument(
    '--work-dir',
    type=pathlib.Path,
    help='where the gate writes the shared weights (default: a temporary folder)',
  )
  p.add_argument(
    '--wait-quiet',
    type=float,
    default=0.0,
    metavar='LOAD',
    help='before measuring, wait until the 1-minute load average is below LOAD',
  )
  p.add_argument(
    '--idle-pct',
    type=float,
    default=0.0,
    metavar='PCT',
    help='before each row, wait until other processes use less than PCT %% of the '
    'CPUs (sampled over 5 s); after --wait-max s it measures anyway (row flagged)',
  )
  p.add_argument(
    '--wait-max',
    type=float,
    default=2400.0,
    help='longest wait for --wait-quiet, and for --idle-pct per row, s',
  )
  p.add_argument(
    '--redo-busy',
    action='store_true',
    help='keep the rows of an existing --out CSV that were measured quietly '
    f'(other processes < {report.BUSY_PCT:.0f} %% of the CPUs) and re-measure '
    'only the others',
  )
  p.add_argument('--timeout', type=float, default=3600.0, help='per-worker limit, s')
  return p


def resolve(args) -> argparse.Namespace:
  """Fills unset options from the preset (or from built-in defaults)."""
  preset = PRESETS.get(args.preset, {})
  defaults = dict(
    frameworks=['jax', 'timm'],
    device='cpu',
    dtype='fp32',
    models=['hrnet_w18_small'],
    batch_sizes=[1, 32],
    jax_modes=['xla'],
    timm_modes=['eager'],
    out=None,
    converter=None,
    train_batch_sizes=None,
    budget=None,
    timm_train_modes=None,
    export_modes=list(EXPORT_MODES),
  )
  for key, value in {**defaults, **preset}.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  if args.converter == 'none':
    args.converter = None
  if args.timm_train_modes is None:
    args.timm_train_modes = args.timm_modes
  if args.train_batch_sizes is None:
    args.train_batch_sizes = [b for b in args.batch_sizes if b > 1]
  if args.out is None:
    args.out = RESULTS / f'{args.device}_{args.dtype}.csv'
  return args


def plan(args) -> list[Spec]:
  """Every configuration to time, JAX before timm, in the order rows appear in the table."""
  specs = []
  common = dict(
    dtype=args.dtype,
    device=args.device,
    img_size=args.img_size,
    steps=args.steps,
    warmup=args.warmup,
    repeats=args.repeats,
    budget_s=args.budget or 0.0,
  )
  for model in args.models:
    for batch in sorted(set(args.batch_sizes) | set(args.train_batch_sizes)):
      for framework, modes in (
        ('jax', args.jax_modes),
        ('timm', args.timm_modes),
        ('export', args.export_modes),
      ):
        if framework not in args.frameworks:
          continue
        for mode in modes:
          for task in args.tasks:
            if task == 'infer' and batch not in args.batch_sizes:
              continue
            if '+dp' in mode and (args.device != 'cpu' or batch % os.cpu_count()):
              continue  # one XLA device per core: the batch must split evenly
            if task == 'train' and (
              batch not in args.train_batch_sizes
              or 'foldbn' in mode
              or framework == 'export'
              or framework == 'timm'
              and mode not in args.timm_train_modes
            ):
              continue
            spec = Spec(
              model=model,
              task=task,
              batch=batch,
              framework=framework,
              mode=mode,
              remat=args.remat and framework == 'jax',
              **common,
            )
            if framework == 'timm' and task == 'train' and args.slow_repeats:
              spec.repeats = args.slow_repeats
            specs.append(spec)
  return specs


def _cpu_busy_s() -> float:
  """CPU seconds spent by every process on the machine so far (/proc/stat, all cores)."""
  with open('/proc/stat') as f:
    fields = [int(v) for v in f.readline().split()[1:]]
  idle = fields[3] + fields[4]  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def _child_cpu_s() -> float:
  import resource

  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def run_worker(
  module: str, args: list[str], env: dict, timeout: float
) -> tuple[dict | None, str, float]:
  """Runs ``python -m module args`` and returns (result row, error text, foreign CPU %).

  Foreign CPU % is the share of the machine's cores that other processes used while the worker
  ran: a measure of how disturbed the timing was.
  """
  busy0, child0, t0 = _cpu_busy_s(), _child_cpu_s(), time.perf_counter()
  try:
    proc = subprocess.run(
      [sys.executable, '-m', module, *args],
      capture_output=True,
      text=True,
      env=env,
      timeout=timeout,
    )
  except subprocess.TimeoutExpired:
    return None, f'timeout after {timeout:.0f} s', float('nan')
  wall = time.perf_counter() - t0
  foreign = (_cpu_busy_s() - busy0) - (_child_cpu_s() - child0)
  foreign_pct = round(100 * max(foreign, 0.0) / (wall * os.cpu_count()), 1)
  row = parse_result(proc.stdout)
  if row is None:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']
    return None, f'{module} failed (rc {proc.returncode}): {tail[0][:300]}', foreign_pct
  return row, '', foreign_pct


def worker_env(spec: Spec, xla_flags: str) -> dict:
  env = dict(os.environ)
  if spec.device == 'cpu':  # (exported artifacts run on CPU only)
    env['JAX_PLATFORMS'] = 'cpu'
    env['CUDA_VISIBLE_DEVICES'] = ''
  if spec.framework == 'jax' and spec.device == 'cpu' and '+dp' in spec.mode:
    xla_flags = f'{xla_flags} --xla_force_host_platform_device_count={os.cpu_count()}'
  if spec.framework == 'jax' and xla_flags:
    env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} {xla_flags}'.strip()
  return env


def wait_until_quiet(load: float, max_wait: float) -> float:
  """Polls the 1-minute load average every 60 s; returns the load when measurement starts."""
  deadline = time.time() + max_wait
  while os.getloadavg()[0] >= load and time.time() < deadline:
    print(f'load {os.getloadavg()[0]:.2f} >= {load}; waiting', flush=True)
    time.sleep(60)
  return os.getloadavg()[0]


def wait_until_idle(pct: float, max_wait: float) -> float:
  """Waits until other processes use less than ``pct`` % of all CPUs over a 5 s sample (this
  driver is idle meanwhile); returns the last sample."""
  deadline = time.time() + max_wait
  while True:
    busy0, t0 = _cpu_busy_s(), time.perf_counter()
    time.sleep(5)
    busy = 100 * (_cpu_busy_s() - busy0) / ((time.perf_counter() - t0) * os.cpu_count())
    if busy < pct or time.time() > deadline:
      return busy
    print(f'other processes use {busy:.0f}% of the CPUs; waiting', flush=True)
    time.sleep(25)


def _task_part(row: dict, task: str) -> dict:
  """``row`` without the other task's columns."""
  other = 'train_' if task == 'infer' else 'infer_'
  return {k: v for k, v in row.items() if not k.startswith(other)}


def quiet_rows(path: pathlib.Path) -> dict[tuple, dict]:
  """Rows of an earlier CSV by (model, framework, mode, dtype, batch, task), for the tasks that
  were measured with other processes below ``report.BUSY_PCT`` % of the CPUs."""
  if not path.exists():
    return {}
  kept = {}
  for row in report.read_csv(path):
    for task in ('infer', 'train'):
      foreign = report._f(row.get(f'{task}_foreign_cpu_pct'))
      if (
        row.get(f'{task}_samples_per_sec') and foreign is not None and (foreign <= report.BUSY_PCT)
      ):
        key = (
          row['model'],
          row['framework'],
          row['mode'],
          row['dtype'],
          int(row[f'{task}_batch_size']),
          task,
        )
        kept[key] = _task_part(row, task)
  return kept


def merge_rows(results: list[tuple[Spec, dict]]) -> list[dict]:
  """One row per (model, framework, mode, dtype, batch) with both tasks' columns, as timm."""
  rows: dict[tuple, dict] = {}
  for spec, result in results:
    key = (spec.model, spec.framework, spec.mode, spec.dtype, spec.batch)
    row = rows.setdefault(key, {})
    notes = [n for n in (row.get('note', ''), result.get('note', '')) if n]
    for k, v in result.items():
      if k not in row or row[k] in ('', None):
        row[k] = v
    row['note'] = '; '.join(dict.fromkeys(notes))
  return list(rows.values())


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
      writer.writerow({k: row.get(k, '') for k in COLUMNS})


def write_records(records: list[dict], path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)


def add_peak_columns(rows: list[dict], timeout: float) -> None:
  """``benchmarks.peak``'s FLOPs / GFLOP/s / share-of-peak columns, the FLOPs counted in one
  JAX subprocess; rows stay without them (and a line says why) if that fails."""
  keys = peak.needed_keys(rows)
  if not keys:
    return
  env = dict(os.environ, JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
  result, error, _ = run_worker('benchmarks.peak', ['--flops', json.dumps(keys)], env, timeout)
  if result is None:
    print(f'FLOP count failed, no share-of-peak columns: {error}', flush=True)
    return
  flops = {tuple(k): v for k, v in result}
  cpu = peak.cpu_peak() if any(r.get('device') != 'gpu' for r in rows) else (0.0, '')
  peak.add_columns(rows, flops, cpu)


def run_gate(args, work_dir: pathlib.Path) -> list[dict]:
  """The parity gate per model; raises ``SystemExit`` on a failure (nothing is timed)."""
  gates = []
  env = dict(os.environ, JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
  for model in args.models:
    result, error, _ = run_worker(
      'benchmarks.parity', [model, str(work_dir), str(args.img_size)], env, args.timeout
    )
    if result is None or not result['passed']:
      raise SystemExit(f'parity gate failed for {model}: {error or json.dumps(result)}')
    diffs = ', '.join(
      f'{m} {result[f"max_abs_diff[{m}]"]:.3g}' for m in dict.fromkeys(map(numerics_mode, MODES))
    )
    print(f'parity {model}: max|diff| {diffs} (tolerance {result["tolerance"]:.3g})', flush=True)
    result['dropped'] = [m for m in args.jax_modes if not result[f'passed[{numerics_mode(m)}]']]
    if result['dropped']:
      print(f'  out of tolerance, not timed: {", ".join(result["dropped"])}', flush=True)
    gates.append(result)
  return gates


def main(argv=None) -> int:
  args = resolve(build_parser().parse_args(argv))
  if args.device == 'gpu' and not args.no_markdown and args.dtype == 'fp32':
    print('note: GPU fp32 rows are not part of the issue matrix', flush=True)
  tmp = None
  if args.work_dir is None:
    tmp = tempfile.TemporaryDirectory(prefix='hrnet-bench-')
    args.work_dir = pathlib.Path(tmp.name)
  stem = args.out.with_suffix('')

  gates = run_gate(args, args.work_dir)
  write_records(
    [{k: v for k, v in g.items() if not k.endswith('_weights') and k != 'dropped'} for g in gates],
    stem.with_name(stem.name + '_parity.csv'),
  )
  weights = {g['model']: g for g in gates}

  if args.wait_quiet:
    print(f'load at start: {wait_until_quiet(args.wait_quiet, args.wait_max):.2f}', flush=True)
  results = []
  kept = quiet_rows(args.out) if args.redo_busy else {}
  for spec in plan(args):
    gate = weights[spec.model]
    if spec.mode in gate['dropped']:
      continue
    key = (spec.model, spec.framework, spec.mode, spec.dtype, spec.batch, spec.task)
    if key in kept:
      results.append((spec, kept[key]))
      continue
    if args.idle_pct:
      wait_until_idle(args.idle_pct, args.wait_max)
    hrnet_weights = (
      spec.framework == 'jax' or spec.framework == 'export' and (spec.mode != 'timm-onnx')
    )
    spec.weights = gate['jax_weights'] if hrnet_weights else gate['timm_weights']
    module = WORKERS[spec.framework]
    label = f'{spec.model} {spec.framework}/{spec.mode} {spec.task} b{spec.batch}'
    print(f'{label} ...', end=' ', flush=True)
    row, error, foreign = run_worker(
      module, [spec.to_json()], worker_env(spec, args.xla_flags), args.timeout
    )
    if row is None:
      print(f'FAILED: {error}', flush=True)
      row = dict(
        model=spec.model,
        framework=spec.framework,
        mode=spec.mode,
        dtype=spec.dtype,
        device=spec.device,
        note=f'{spec.task} failed: {error}',
        **{f'{spec.task}_batch_size': spec.batch, f'{spec.task}_img_size': spec.img_size},
      )
    else:
      p = spec.task
      print(
        f'{row[f"{p}_samples_per_sec"]:.2f} samples/s, {row[f"{p}_step_time"]:.1f} ms/step '
        f'(other processes used {foreign}% of the CPUs)',
        flush=True,
      )
    row[f'{spec.task}_foreign_cpu_pct'] = foreign
    results.append((spec, row))
  rows = merge_rows(results)
  add_peak_columns(rows, args.timeout)
  write_csv(rows, args.out)
  print(f'wrote {args.out}', flush=True)

  if args.converter:
    env = dict(os.environ, JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
    result, error, _ = run_worker(
      'benchmarks.converter', [args.converter, str(args.work_dir / 'converter')], env, args.timeout
    )
    if result is None:
      print(f'converter: FAILED {error}', flush=True)
    else:
      print(
        f'converter {args.converter}: {result["wall_s"]:.1f} s, peak RSS '
        f'{result["peak_rss_mb"]:.0f} MiB ({result["peak_rss_over_checkpoint"]}x the '
        f'{result["checkpoint_mb"]:.0f} MiB checkpoint)',
        flush=True,
      )
      write_records([result], stem.with_name(stem.name + '_converter.csv'))

  if not args.no_markdown:
    report.update_markdown(args.markdown, args.out.parent)
    print(f'updated {args.markdown}', flush=True)
  if tmp is not None:
    tmp.cleanup()
  return 0


if __name__ == '__main__':
  sys.exit(main())
