"""CSV results -> the generated Markdown tables of ``docs/benchmarks.md``.

``python -m benchmarks.report [RESULTS_DIR] [MARKDOWN]`` rewrites only the text between
``<!-- generated:begin -->`` and ``<!-- generated:end -->``; the rest of the file is prose.
Speed CSVs are ``<device>_<dtype>[_<part>].csv`` (device ``cpu`` or ``gpu``), with
``..._parity.csv`` and ``..._converter.csv`` beside them; the other CSVs of ``results/``
(``tpu_aot.csv``, ``compile_time.csv``) have their own tables.
"""

from __future__ import annotations

import csv
import pathlib
import sys

BEGIN, END = '<!-- generated:begin -->', '<!-- generated:end -->'
# A row is flagged when other processes used more than this share of the CPUs meanwhile.
BUSY_PCT = 10.0

TARGETS_CPU = (('infer', 'eager', 1.5), ('train', 'eager', 1.2))
TARGETS_GPU = (('infer', 'compile', 1.2), ('train', 'channels_last', 1.3))
H100_W18 = (('infer', 15000.0), ('train', 3000.0))
# CPU inference, the exported-artifact matrix: (ours, timm's, goal) per model at batch 1 and 32.
# 'best' is our fastest CPU path (any jax mode or our own export) against timm torch.compile.
TARGETS_CPU_EXPORT = (('best', ('timm', 'compile'), 1.0), ('onnx', ('export', 'timm-onnx'), 1.0))


def read_csv(path: pathlib.Path) -> list[dict]:
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _f(value) -> float | None:
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def _fmt(value, digits: int = 1) -> str:
  v = _f(value)
  return '' if v is None else f'{v:,.{digits}f}'


def _pair(a, b, digits: int = 1) -> str:
  a, b = _fmt(a, digits), _fmt(b, digits)
  return f'{a or "–"} / {b or "–"}' if a or b else ''


def _busy(row: dict) -> bool:
  return any((_f(row.get(f'{t}_foreign_cpu_pct')) or 0.0) > BUSY_PCT for t in ('infer', 'train'))


def _batch(row: dict) -> int:
  return int(row.get('infer_batch_size') or row.get('train_batch_size') or 0)


def _find(rows, model, batch, framework, mode):
  for r in rows:
    if (r['model'], _batch(r), r['framework'], r['mode']) == (model, batch, framework, mode):
      return r
  return None


def _speed(row, task) -> float | None:
  return _f(row.get(f'{task}_samples_per_sec')) if row else None


def speed_table(rows: list[dict]) -> list[str]:
  out = [
    '| model | batch | framework | mode | layout | infer img/s | infer ms/step (p90) | '
    'train img/s | train ms/step (p90) | first call s (infer / train) | '
    'peak mem MiB (infer / train) | timed steps x repeats (infer / train) '
    '| vs timm eager (infer / train) | GFLOP/s (infer / train) | % of peak (infer / train) '
    '| note |',
    '|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ]
  for r in rows:
    base = _find(rows, r['model'], _batch(r), 'timm', 'eager')
    ratios = []
    for task in ('infer', 'train'):
      mine, ref = _speed(r, task), _speed(base, task)
      ratios.append(f'{mine / ref:.2f}x' if mine and ref else '–')
    notes = [r.get('note', '')] if r.get('note') and 'failed' in r.get('note', '') else []
    if _busy(r):
      notes.append(
        'measured under load (other processes: '
        f'{_pair(r.get("infer_foreign_cpu_pct"), r.get("train_foreign_cpu_pct"), 0)}'
        ' % CPU)'
      )
    ms = lambda t: (
      f'{_fmt(r.get(f"{t}_step_time"))} ({_fmt(r.get(f"{t}_step_time_p90"))})'
      if r.get(f'{t}_step_time')
      else ''
    )
    out.append(
      f'| {r["model"]} | {_batch(r)} | {r["framework"]} | {r["mode"]} | {r.get("layout", "")} '
      f'| {_fmt(r.get("infer_samples_per_sec"))} | {ms("infer")} '
      f'| {_fmt(r.get("train_samples_per_sec"))} | {ms("train")} '
      f'| {_pair(r.get("infer_compile_s"), r.get("train_compile_s"))} '
      f'| {_pair(r.get("infer_peak_mem_mb"), r.get("train_peak_mem_mb"), 0)} '
      f'| {" / ".join(_protocol(r, t) for t in ("infer", "train"))} '
      f'| {" / ".join(ratios)} '
      f'| {_pair(r.get("infer_gflops"), r.get("train_gflops"))} '
      f'| {_pair(r.get("infer_peak_pct"), r.get("train_peak_pct"))} | {"; ".join(notes)} |'
    )
  return out


def _peak_lines(rows: list[dict]) -> list[str]:
  """The peak the rows' '% of peak' refers to (benchmarks/peak.py), once per distinct peak."""
  peaks = dict.fromkeys((r['peak_gflops'], r['peak_basis']) for r in rows if r.get('peak_gflops'))
  return [
    f"Peak: {_fmt(gflops)} GFLOP/s = {basis}. GFLOP/s = XLA's FLOP count of the JAX step "
    '(multiply-add = 2) / step time, the same count for every framework of a configuration.'
    for gflops, basis in peaks
  ] + ([''] if peaks else [])


def export_table(rows: list[dict]) -> list[str]:
  """Export time and artifact size per (model, format): rows of framework 'export'."""
  seen, out = set(), []
  for r in rows:
    key = (r['model'], r['mode'])
    if r['framework'] != 'export' or not r.get('export_s') or key in seen:
      continue
    seen.add(key)
    out.append(
      f'| {r["model"]} | {r["mode"]} | {_fmt(r["export_s"])} | '
      f'{_fmt(r.get("artifact_mb"))} | {r.get("note", "")} |'
    )
  if out:
    out = [
      '| model | format | export s | artifact MiB | verification |',
      '|---|---|---:|---:|---|',
    ] + out
  return out


def _protocol(row: dict, task: str) -> str:
  if not row.get(f'{task}_steps'):
    return '–'
  return f'{row[f"{task}_steps"]}x{row[f"{task}_repeats"]}'


def _is_jax(row) -> bool:
  return row['framework'] == 'jax'


def _is_ours(row) -> bool:
  """A JAX mode or one of our exports (timm-onnx is timm's artifact)."""
  return _is_jax(row) or row['framework'] == 'export' and row['mode'] != 'timm-onnx'


def _best(rows, model, batch, task, ours=_is_jax):
  """``(row, img/s)`` of the fastest row ``ours`` accepts at this model and batch."""
  cands = [
    (r, _speed(r, task))
    for r in rows
    if r['model'] == model and _batch(r) == batch and ours(r) and _speed(r, task)
  ]
  return max(cands, key=lambda c: c[1]) if cands else (None, None)


def target_rows(rows: list[dict], gpu: bool) -> list[str]:
  out = []
  targets = TARGETS_GPU if gpu else TARGETS_CPU
  batches = sorted({_batch(r) for r in rows if r.get('train_step_time')}) if gpu else [32]
  for model in dict.fromkeys(r['model'] for r in rows):
    for batch in batches:
      for task, ref_mode, goal in targets:
        row, mine = _best(rows, model, batch, task)
        ref = _speed(_find(rows, model, batch, 'timm', ref_mode), task)
        if not mine or not ref:
          continue
        ratio = mine / ref
        out.append(
          f'| {"GPU" if gpu else "CPU"} {rows[0]["dtype"]} b{batch} {task} {model} '
          f'| jax {row["mode"]} {mine:,.1f} img/s vs timm {ref_mode} {ref:,.1f} '
          f'| {ratio:.2f}x | >= {goal}x | {"met" if ratio >= goal else "missed"} |'
        )
  if gpu:
    for task, goal in H100_W18:
      best = [
        (_speed(r, task), r)
        for r in rows
        if r['model'] == 'hrnet_w18'
        and r['framework'] == 'jax'
        and 'H100' in r.get('device_name', '')
        and _speed(r, task)
      ]
      if best:
        v, r = max(best, key=lambda b: b[0])
        out.append(
          f'| H100 W18 {task} (absolute) | jax {r["mode"]} b{_batch(r)} {v:,.0f} img/s '
          f'| – | >= {goal:,.0f} img/s | {"met" if v >= goal else "missed"} |'
        )
  return out


def export_target_rows(rows: list[dict]) -> list[str]:
  """Target rows of a CPU matrix with exported artifacts (``TARGETS_CPU_EXPORT``)."""
  out = []
  for model in dict.fromkeys(r['model'] for r in rows):
    for batch in sorted({_batch(r) for r in rows if r['model'] == model}):
      for ours, (ref_framework, ref_mode), goal in TARGETS_CPU_EXPORT:
        if ours == 'best':
          row, mine = _best(rows, model, batch, 'infer', _is_ours)
        else:
          row = _find(rows, model, batch, 'export', ours)
          mine = _speed(row, 'infer')
        theirs = _speed(_find(rows, model, batch, ref_framework, ref_mode), 'infer')
        if not mine or not theirs:
          continue
        ratio = mine / theirs
        out.append(
          f'| CPU {rows[0]["dtype"]} b{batch} infer {model} '
          f'| {row["framework"]} {row["mode"]} {mine:,.1f} img/s vs '
          f'{ref_framework} {ref_mode} {theirs:,.1f} '
          f'| {ratio:.2f}x | >= {goal}x | {"met" if ratio >= goal else "missed"} |'
        )
  return out


def converter_rows(records: list[dict]) -> list[str]:
  out = []
  for c in records:
    wall, ratio = float(c['wall_s']), float(c['peak_rss_over_checkpoint'])
    out.append(
      f'| converter {c["model"]} time | {wall:.1f} s (imports {float(c["import_s"]):.1f}'
      f' s, conversion {float(c["convert_s"]):.1f} s) | – | <= 10 s | '
      f'{"met" if wall <= 10 else "missed"} |'
    )
    out.append(
      f'| converter {c["model"]} peak RSS | {float(c["peak_rss_mb"]):,.0f} MiB for a '
      f'{float(c["checkpoint_mb"]):,.0f} MiB checkpoint (after imports: '
      f'{float(c["rss_after_import_mb"]):,.0f} MiB) | {ratio:.2f}x | <= 3x | '
      f'{"met" if ratio <= 3 else "missed"} |'
    )
  return out


def parity_table(records: list[dict]) -> list[str]:
  modes = [k[len('max_abs_diff[') : -1] for k in records[0] if k.startswith('max_abs_diff[')]
  out = [
    '| model | input | max abs logit | tolerance | '
    + ' | '.join(f'max abs diff, {m}' for m in modes)
    + ' | top-1 agrees | gate |',
    '|---|---|---:|---:|' + '---:|' * len(modes) + '---|---|',
  ]
  for g in records:
    diffs = ' | '.join(
      f'{float(g[f"max_abs_diff[{m}]"]):.3g}' + ('' if g[f'passed[{m}]'] == 'True' else ' (over)')
      for m in modes
    )
    out.append(
      f'| {g["model"]} | {g["batch"]}x{g["img_size"]}x{g["img_size"]} '
      f'| {float(g["max_abs_logit"]):.3g} | {float(g["tolerance"]):.3g} | {diffs} '
      f'| {g["top1_agree"]} | {"pass" if g["passed"] == "True" else "FAIL"} |'
    )
  return out


def input_pipeline_table(rows: list[dict]) -> list[str]:
  """``input_pipeline.csv`` (``benchmarks.input_pipeline``): images/s per core, by pipeline."""
  r0 = rows[0]
  out = [
    f'### Input pipeline (`input_pipeline.csv`)',
    '',
    f'{r0["images"]} JPEGs (~500x375, quality 90) on {r0["cpu_model"]}, '
    f'{r0["timestamp"][:10]}; `{r0["versions"]}`.',
    '',
    '| pipeline | loader | cores | img/s | img/s per core | vs torchvision | note |',
    '|---|---|---:|---:|---:|---:|---|',
  ]
  for r in rows:
    busy = (_f(r.get('foreign_cpu_pct')) or 0.0) > BUSY_PCT
    note = f'measured under load (other processes: {_fmt(r["foreign_cpu_pct"], 0)} % CPU)'
    out.append(
      f'| {r["pipeline"]} | {r["loader"]} | {r["cores"]} | {_fmt(r["img_per_s"])} '
      f'| {_fmt(r["img_per_s_per_core"])} | {_fmt(r["vs_torchvision"], 2)}x '
      f'| {note if busy else ""} |'
    )
  return out + ['']


def render(results_dir: pathlib.Path) -> str:
  lines = []
  speed = sorted(
    p
    for p in results_dir.glob('*.csv')
    if p.stem.startswith(('cpu_', 'gpu_')) and not p.stem.endswith(('_parity', '_converter'))
  )
  targets = []
  for path in speed:
    rows = read_csv(path)
    if not rows:
      continue
    gpu = rows[0]['device'] == 'gpu'
    r0 = rows[0]
    lines += [
      f'### {"GPU" if gpu else "CPU"} {r0["dtype"]} (`{path.name}`)',
      '',
      f'Device: {r0["device_name"]}; {r0["nproc"]} CPU cores ({r0["cpu_model"]}); input '
      f'{r0.get("infer_img_size") or r0.get("train_img_size")} px; commit '
      f'{r0["git_commit"]}, {r0["timestamp"][:10]}. Step times are the median over '
      'repeats of the mean step time (p90 over all timed steps).',
      '',
      *_peak_lines(rows),
      'Versions: '
      + '; '.join(dict.fromkeys(f'`{r["versions"]}`' for r in rows if r.get('versions'))),
      '',
    ]
    lines += speed_table(rows) + ['']
    exports = export_table(rows)
    if exports:
      lines += (
        ["Exported artifacts (framework `export`; timm-onnx: timm's own `torch.onnx.export`):", '']
        + exports
        + ['']
      )
    if path.stem.count('_') == 1:  # the preset's matrix
      targets += target_rows(rows, gpu)
    elif path.stem.endswith('_export') and not gpu:
      targets += export_target_rows(rows)
    conv = path.with_name(path.stem + '_converter.csv')
    if conv.exists():
      targets += converter_rows(read_csv(conv))
    parity = path.with_name(path.stem + '_parity.csv')
    if parity.exists():
      lines += (
        [
          f'Parity gate (run before the timings above, float32, full matmul precision; '
          f'tolerance 1e-5 x max(max abs logit, 10)):',
          '',
        ]
        + parity_table(read_csv(parity))
        + ['']
      )
  pipeline = results_dir / 'input_pipeline.csv'
  if pipeline.exists() and read_csv(pipeline):
    lines += input_pipeline_table(read_csv(pipeline))
  if not any(read_csv(p) and read_csv(p)[0]['device'] == 'gpu' for p in speed):
    lines += [
      '### GPU bf16',
      '',
      'Not measured yet: no GPU was available to the session that produced these '
      'tables. Run `python -m benchmarks.run --preset gpu` on a CUDA machine to add '
      '`benchmarks/results/gpu_bf16.csv` and these rows.',
      '',
    ]
  head = [
    '### Targets (ratios within one run)',
    '',
    '| target | measured | ratio | goal | status |',
    '|---|---|---:|---|---|',
  ]
  return '\n'.join(head + targets + [''] + lines).rstrip() + '\n'


def update_markdown(markdown: pathlib.Path, results_dir: pathlib.Path) -> None:
  """Replaces the generated block of ``markdown`` (appends one if the markers are missing)."""
  text = markdown.read_text() if markdown.exists() else '# Benchmarks\n'
  block = f'{BEGIN}\n{render(results_dir)}{END}'
  if BEGIN in text and END in text:
    before, rest = text.split(BEGIN, 1)
    text = before + block + rest.split(END, 1)[1]
  else:
    text = text.rstrip() + '\n\n' + block + '\n'
  markdown.parent.mkdir(parents=True, exist_ok=True)
  markdown.write_text(text)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  root = pathlib.Path(__file__).parent
  results = pathlib.Path(argv[0]) if argv else root / 'results'
  markdown = pathlib.Path(argv[1]) if len(argv) > 1 else root.parent / 'docs' / 'benchmarks.md'
  update_markdown(markdown, results)
  return 0


if __name__ == '__main__':
  sys.exit(main())
