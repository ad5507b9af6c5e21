"""Plumbing of the benchmark driver (``python -m benchmarks.run``), not its numbers: a tiny run
(hrnet_w18_small at 64x64, batch 2, one timed step) must pass the parity gate, time both
frameworks' inference and training in subprocesses, and write the CSVs and the Markdown block."""

import csv
import subprocess
import sys

import pytest

from benchmarks import report
from benchmarks.common import COLUMNS
from benchmarks.run import merge_rows


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('bench')
  out = tmp / 'results' / 'cpu_fp32.csv'
  markdown = tmp / 'benchmarks.md'
  markdown.write_text(
    '# Benchmarks\n\nProse kept.\n\n<!-- generated:begin -->\nSTALE TABLE\n'
    '<!-- generated:end -->\n\nTail kept.\n'
  )
  cmd = [
    sys.executable,
    '-m',
    'benchmarks.run',
    '--models',
    'hrnet_w18_small',
    '--batch-sizes',
    '2',
    '--img-size',
    '64',
    '--steps',
    '1',
    '--warmup',
    '0',
    '--repeats',
    '1',
    '--jax-modes',
    'xla',
    '--timm-modes',
    'eager',
    '--out',
    str(out),
    '--markdown',
    str(markdown),
    '--work-dir',
    str(tmp / 'work'),
    # Compile time dominates this tiny run; the numbers are not looked at.
    '--xla-flags=--xla_backend_optimization_level=0',
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return out, markdown, proc.stdout


def test_csv_schema_and_rows(tiny_run):
  out, _, _ = tiny_run
  with open(out, newline='') as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  assert reader.fieldnames == COLUMNS
  assert {(r['framework'], r['mode']) for r in rows} == {('jax', 'xla'), ('timm', 'eager')}
  for r in rows:  # inference and training of one configuration share a row, as in timm's CSV
    for task in ('infer', 'train'):
      assert float(r[f'{task}_samples_per_sec']) > 0, r
      assert int(r[f'{task}_batch_size']) == 2 and int(r[f'{task}_img_size']) == 64
      assert float(r[f'{task}_peak_mem_mb']) > 0 and float(r[f'{task}_compile_s']) > 0
    assert r['versions'] and r['nproc'] and r['cpu_model'] and r['device'] == 'cpu'
  layouts = {r['framework']: (r['layout'], r['compiled']) for r in rows}
  assert layouts == {'jax': ('NHWC', 'True'), 'timm': ('NCHW', 'False')}


def test_parity_gate_ran_first(tiny_run):
  out, _, stdout = tiny_run
  assert stdout.index('parity hrnet_w18_small') < stdout.index('jax/xla infer')
  with open(out.with_name('cpu_fp32_parity.csv'), newline='') as f:
    (gate,) = list(csv.DictReader(f))
  assert gate['passed'] == 'True'
  assert float(gate['max_abs_diff[xla]']) <= float(gate['tolerance'])


def test_markdown_block_replaced(tiny_run):
  _, markdown, _ = tiny_run
  text = markdown.read_text()
  assert text.startswith('# Benchmarks\n\nProse kept.') and text.endswith('Tail kept.\n')
  assert 'STALE TABLE' not in text and text.count(report.BEGIN) == 1
  assert '| hrnet_w18_small | 2 | jax | xla | NHWC |' in text
  assert '1.00x / 1.00x' in text  # timm eager against itself


def test_merge_rows_and_targets():
  """Ratios in the targets table are read from one run's rows."""
  from benchmarks.common import Spec

  specs = [
    Spec('m', 'infer', 32, 'jax', 'xla'),
    Spec('m', 'train', 32, 'jax', 'xla'),
    Spec('m', 'infer', 32, 'timm', 'eager'),
    Spec('m', 'train', 32, 'timm', 'eager'),
  ]
  speeds = [30.0, 6.0, 10.0, 5.0]
  rows = merge_rows(
    [
      (
        s,
        {
          'model': s.model,
          'framework': s.framework,
          'mode': s.mode,
          'dtype': 'fp32',
          f'{s.task}_samples_per_sec': v,
          f'{s.task}_batch_size': s.batch,
        },
      )
      for s, v in zip(specs, speeds)
    ]
  )
  assert len(rows) == 2
  lines = report.target_rows([{k: str(v) for k, v in r.items()} for r in rows], gpu=False)
  assert '| 3.00x | >= 1.5x | met |' in lines[0] and '| 1.20x | >= 1.2x | met |' in lines[1]


def test_export_rows_table():
  row = dict(
    model='hrnet_w18',
    framework='export',
    mode='onnx',
    export_s='41.5',
    artifact_mb='81.6',
    note='max abs diff vs JAX 1e-05',
    infer_batch_size='1',
  )
  rows = [
    row,
    {**row, 'infer_batch_size': '32'},
    {**row, 'framework': 'jax', 'mode': 'xla', 'export_s': ''},
  ]
  table = report.export_table(rows)
  assert table[2:] == ['| hrnet_w18 | onnx | 41.5 | 81.6 | max abs diff vs JAX 1e-05 |']
  assert report.export_table(rows[2:]) == []
