"""Rows against the hardware: the FLOPs of each step and the share of the machine's peak.

FLOPs: XLA's cost analysis (``jax.stages.Lowered.cost_analysis()['flops']``, a multiply-add
counted as 2) of the JAX step a row times (``jax_worker.build_step``, mode 'xla': the eval
forward, or the training step with its backward and SGD update) at the row's model, batch,
image size and dtype. Every framework's row of one configuration gets the same count, the work
the network asks for, so that GFLOP/s compare across frameworks (a folded-BN or fused graph does
the same convolutions minus a few elementwise ops).

Peak, stated in each row (``peak_gflops``, ``peak_basis``):

- CPU, fp32: cores x FMA units per core x fp32 lanes per FMA x 2 FLOP x clock. Cores: the CPUs
  this process may use; lanes: the widest vector ISA in ``/proc/cpuinfo`` ``flags`` (avx512f:
  16, avx2 + fma: 8, else 4), halved on AMD family 0x19 (Zen 4 runs 512-bit ops on 256-bit
  units); clock: ``cpu MHz`` (a guest reports the host's nominal clock; boost is not counted).
  FMA units per core cannot be read from the machine: 2 for every x86 core these benchmarks
  have run on (AMD Zen 2-5, Intel server cores since Haswell), stated in ``peak_basis``.
- GPU: the data-sheet dense bf16 tensor peak of the device (``GPU_BF16_TFLOPS``, no sparsity).

``python -m benchmarks.peak CSV...`` fills these columns into existing result files (FLOPs
computed here, peak of this machine for CPU rows); ``benchmarks.run`` fills them for every run.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import sys

from benchmarks.common import COLUMNS, RESULT_TAG, Spec

FMA_UNITS = 2
# Data-sheet dense bf16 tensor-core TFLOP/s (no sparsity), by a name in device_kind / device_name.
GPU_BF16_TFLOPS = {
  'H200': 989.4,
  'H100': 989.4,  # SXM; the PCIe card is 756
  'A100': 312.0,
  'L4': 121.0,
  'RTX 4090': 165.2,
  'RTX 5090': 209.5,
}
TASKS = ('infer', 'train')


def cpu_peak(cpuinfo: str | None = None, cores: int | None = None) -> tuple[float, str]:
  """``(GFLOP/s, basis)``: the fp32 FMA peak of this machine (see the module docstring), from
  the text of ``/proc/cpuinfo`` (read when None). Raises ``ValueError`` if it has no ``flags``
  or ``cpu MHz`` line."""
  if cpuinfo is None:
    with open('/proc/cpuinfo') as f:
      cpuinfo = f.read()
  fields: dict[str, str] = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  if 'flags' not in fields or 'cpu MHz' not in fields:
    raise ValueError('/proc/cpuinfo: no "flags" or "cpu MHz" line to compute the peak from')
  flags = set(fields['flags'].split())
  lanes = 16 if 'avx512f' in flags else 8 if {'avx2', 'fma'} <= flags else 4
  isa = 'avx512f' if lanes == 16 else 'avx2+fma' if lanes == 8 else 'sse'
  if lanes == 16 and fields.get('vendor_id') == 'AuthenticAMD' and fields.get('cpu family') == '25':
    lanes, isa = 8, 'avx512f on 256-bit units (AMD family 0x19)'
  ghz = float(fields['cpu MHz']) / 1e3
  cores = cores or len(os.sched_getaffinity(0))
  peak = cores * FMA_UNITS * lanes * 2 * ghz
  basis = (
    f'{cores} cores x {FMA_UNITS} FMA units (assumed) x {lanes} fp32 lanes ({isa}) x 2 FLOP x '
    f'{ghz:.2f} GHz (cpu MHz)'
  )
  return peak, basis


def gpu_peak(device_name: str) -> tuple[float, str] | None:
  """``(GFLOP/s, basis)`` of a GPU named ``device_name`` (data sheet), None if unknown."""
  for name, tflops in GPU_BF16_TFLOPS.items():
    if name in device_name:
      return tflops * 1e3, f'{name} data-sheet dense bf16 {tflops:g} TFLOP/s'
  return None


def flop_key(row: dict, task: str) -> tuple | None:
  """What a row's step FLOPs depend on: (model, task, batch, image size, dtype)."""
  batch, img = row.get(f'{task}_batch_size'), row.get(f'{task}_img_size')
  if not batch or not img or not row.get(f'{task}_samples_per_sec'):
    return None
  return (row['model'], task, int(batch), int(img), row.get('dtype') or 'fp32')


def step_flops(keys: list[tuple]) -> dict[tuple, float]:
  """XLA's FLOP count of each key's JAX step (random weights: the count depends on shapes)."""
  from benchmarks.jax_worker import build_step

  out = {}
  for model, task, batch, img, dtype in keys:
    spec = Spec(model=model, task=task, batch=batch, img_size=img, dtype=dtype, mode='xla')
    _, lower, _, _ = build_step(spec)
    out[(model, task, batch, img, dtype)] = float(lower().cost_analysis()['flops'])
  return out


def add_columns(rows: list[dict], flops: dict[tuple, float], cpu: tuple[float, str]) -> None:
  """Fills ``{task}_gflop`` (per step), ``{task}_gflops`` (achieved) and ``{task}_peak_pct``,
  and ``peak_gflops`` / ``peak_basis``, in place: CPU rows against ``cpu``, GPU rows against
  their device's data sheet (left empty for an unknown GPU)."""
  for row in rows:
    if row.get('device') == 'gpu':
      peak = gpu_peak(row.get('device_name', ''))
    else:
      peak = cpu
    if peak is not None:
      row['peak_gflops'], row['peak_basis'] = round(peak[0], 1), peak[1]
    for task in TASKS:
      key = flop_key(row, task)
      if key is None or key not in flops or not row.get(f'{task}_step_time'):
        continue
      gflop = flops[key] / 1e9
      achieved = gflop / (float(row[f'{task}_step_time']) / 1e3)
      row[f'{task}_gflop'] = round(gflop, 2)
      row[f'{task}_gflops'] = round(achieved, 1)
      if peak is not None:
        row[f'{task}_peak_pct'] = round(100 * achieved / peak[0], 1)


def needed_keys(rows: list[dict]) -> list[tuple]:
  return list(dict.fromkeys(k for r in rows for t in TASKS if (k := flop_key(r, t))))


def fill_csv(path: pathlib.Path, flops: dict[tuple, float], cpu: tuple[float, str]) -> None:
  """Rewrites the result CSV at ``path`` with the columns of ``add_columns`` filled in."""
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  add_columns(rows, flops, cpu)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
      writer.writerow({k: row.get(k, '') for k in COLUMNS})


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == '--flops':  # worker mode: python -m benchmarks.peak --flops '<keys>'
    keys = [tuple(k) for k in json.loads(argv[1])]
    flops = step_flops(keys)
    print(RESULT_TAG + json.dumps([[list(k), v] for k, v in flops.items()]), flush=True)
    return 0
  paths = [pathlib.Path(p) for p in argv]
  rows = []
  for p in paths:
    with open(p, newline='') as f:
      rows += list(csv.DictReader(f))
  flops = step_flops(needed_keys(rows))
  cpu = cpu_peak()
  for p in paths:
    fill_csv(p, flops, cpu)
    print(f'filled {p}', flush=True)
  print(f'CPU peak {cpu[0]:.1f} GFLOP/s: {cpu[1]}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
