"""Plumbing of the benchmark driver (``python -m benchmarks.run``), not its numbers: a tiny run
(hrnet_w18_small at 64x64, batch 2, one timed step) must pass the parity gate, time both
frameworks' inference and training in subprocesses, and write the CSVs and the Markdown block."""

import csv
import subprocess
import sys

import pytest

from benchmarks import input_pipeline, peak, report
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
    # Share of peak: the same XLA FLOP count for both frameworks, each row against the CPU's peak.
    assert float(r['peak_gflops']) > 0 and 'fp32 lanes' in r['peak_basis']
    for task in ('infer', 'train'):
      gflop = float(r[f'{task}_gflop'])  # rounded to 0.01: a relative error of 0.005 / gflop
      gflops = gflop / (float(r[f'{task}_step_time']) / 1e3)
      assert abs(float(r[f'{task}_gflops']) - gflops) <= 0.051 + gflops * (5.1e-3 / gflop + 1e-3), r
      peak = float(r['peak_gflops'])
      share = 100 * float(r[f'{task}_gflops']) / peak
      # Both columns are rounded (0.1 GFLOP/s, 0.1 %): the share of a rounded figure may differ
      # from the rounded share by both roundings.
      assert abs(float(r[f'{task}_peak_pct']) - share) <= 0.051 + 5.1 / peak + 1e-3 * share, r
  train, infer = (float(rows[0][f'{t}_gflop']) for t in ('train', 'infer'))
  assert infer > 0 and 2 * infer < train < 4 * infer  # backward ~2x the forward
  assert len({r['infer_gflop'] for r in rows}) == 1
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


def test_export_targets_take_our_fastest_path():
  """Best of jax and our exports against timm compile; our ONNX against timm's own export."""
  speeds = {
    ('jax', 'xla'): 9.0,
    ('jax', 'xla+foldbn'): 11.0,
    ('export', 'onnx'): 16.0,
    ('export', 'timm-onnx'): 20.0,  # timm's artifact: never 'ours'
    ('timm', 'compile'): 15.0,
  }
  rows = [
    dict(
      model='m',
      framework=f,
      mode=m,
      dtype='fp32',
      infer_batch_size='32',
      infer_samples_per_sec=str(v),
    )
    for (f, m), v in speeds.items()
  ]
  lines = report.export_target_rows(rows)
  assert len(lines) == 2
  assert 'export onnx 16.0 img/s vs timm compile 15.0 | 1.07x | >= 1.0x | met |' in lines[0]
  assert 'export onnx 16.0 img/s vs export timm-onnx 20.0 | 0.80x | >= 1.0x | missed |' in lines[1]


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


CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: {family}
cpu MHz\t\t: 2500.000
flags\t\t: fpu sse sse2 {flags}
"""


@pytest.mark.parametrize(
  'vendor, family, flags, lanes',
  [
    ('AuthenticAMD', 26, 'avx2 fma avx512f', 16),  # Zen 5: full-width AVX-512
    ('AuthenticAMD', 25, 'avx2 fma avx512f', 8),  # Zen 4: AVX-512 on 256-bit units
    ('GenuineIntel', 6, 'avx2 fma', 8),
    ('GenuineIntel', 6, '', 4),
  ],
)
def test_cpu_peak_from_cpuinfo(vendor, family, flags, lanes):
  text = CPUINFO.format(vendor=vendor, family=family, flags=flags)
  gflops, basis = peak.cpu_peak(text, cores=4)
  assert gflops == pytest.approx(4 * peak.FMA_UNITS * lanes * 2 * 2.5)
  assert basis.startswith(f'4 cores x {peak.FMA_UNITS} FMA units (assumed) x {lanes} fp32 lanes')
  with pytest.raises(ValueError, match='cpu MHz'):
    peak.cpu_peak('processor\t: 0\n', cores=1)


def test_peak_columns_and_table():
  rows = [
    dict(
      model='m',
      framework='jax',
      mode='xla',
      device='cpu',
      dtype='fp32',
      infer_batch_size='32',
      infer_img_size='224',
      infer_samples_per_sec='10',
      infer_step_time='2000',
    ),
    dict(
      model='m',
      framework='timm',
      mode='eager',
      device='gpu',
      dtype='bf16',
      device_name='NVIDIA H200',
      infer_batch_size='32',
      infer_img_size='224',
      infer_samples_per_sec='1000',
      infer_step_time='20',
    ),
  ]
  flops = {('m', 'infer', 32, 224, 'fp32'): 100e9, ('m', 'infer', 32, 224, 'bf16'): 100e9}
  peak.add_columns(rows, flops, (200.0, 'stated basis'))
  assert (rows[0]['infer_gflops'], rows[0]['infer_peak_pct']) == (50.0, 25.0)
  assert rows[1]['infer_gflops'] == 5000.0 and rows[1]['peak_gflops'] == 989400.0
  assert rows[1]['infer_peak_pct'] == 0.5 and 'H200' in rows[1]['peak_basis']
  table = report.speed_table([{k: str(v) for k, v in r.items()} for r in rows])
  assert '| 50.0 / – | 25.0 / – |' in table[2]
  assert report._peak_lines(rows)[0].startswith('Peak: 200.0 GFLOP/s = stated basis.')


def test_input_pipeline_runs_on_a_handful_of_images(tmp_path):
  """Both loaders, both pipelines, 1 core, 4 images read twice per epoch: a row each with a
  positive rate over the epoch's 8 images, and the ratio to torchvision taken within the
  pipeline."""
  out = tmp_path / 'ip.csv'
  argv = ['--images', '4', '--passes', '2', '--cores', '1', '--repeats', '1', '--out', str(out)]
  assert input_pipeline.main([*argv, '--folder', str(tmp_path / 'jpegs')]) == 0
  with open(out, newline='') as f:
    rows = list(csv.DictReader(f))
  assert {(r['pipeline'], r['loader']) for r in rows} == {
    (p, loader) for p in input_pipeline.PIPELINES for loader in input_pipeline.LOADERS
  }
  for r in rows:
    assert float(r['img_per_s']) > 0 and r['cores'] == '1' and r['images'] == '8'
    ref = next(x for x in rows if (x['pipeline'], x['loader']) == (r['pipeline'], 'torchvision'))
    assert float(r['vs_torchvision']) == pytest.approx(
      float(r['img_per_s']) / float(ref['img_per_s']), abs=0.01
    )
  from PIL import Image

  with Image.open(tmp_path / 'jpegs' / 'img_00000.jpg') as img:
    assert img.format == 'JPEG' and sorted(img.size) == [375, 500]
