"""Time and peak memory of ``convert_official_weights`` on a timm state_dict.

``python -m benchmarks.converter MODEL WORK_DIR`` saves a random-weight timm ``MODEL`` state_dict
(the official checkpoint format), then runs the converter CLI in a fresh child process
(``python -m benchmarks.converter --child SRC OUT``, which calls ``hrnet_jax.convert.cli.main`` exactly as
the console script does) and reports: wall time of the whole child (interpreter start, imports,
conversion, writing), the conversion alone, and the child's peak RSS (``ru_maxrss``, what
``/usr/bin/time -v`` prints as "Maximum resident set size"), next to the checkpoint size.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from benchmarks.common import RESULT_TAG, parse_result, peak_rss_mb


def _child(src: str, out: str) -> int:
  t0 = time.perf_counter()
  from hrnet_jax.convert.cli import main

  imported = time.perf_counter()
  rss_after_import = peak_rss_mb()
  rc = main([src, out, '--quiet', '--overwrite'])
  done = time.perf_counter()
  print(
    RESULT_TAG
    + json.dumps(
      dict(
        rc=rc,
        import_s=round(imported - t0, 3),
        convert_s=round(done - imported, 3),
        rss_after_import_mb=round(rss_after_import, 1),
        peak_rss_mb=round(peak_rss_mb(), 1),
      )
    ),
    flush=True,
  )
  return rc


def measure(model: str, work_dir: str | pathlib.Path) -> dict:
  """Writes ``WORK_DIR/MODEL.pth`` (if absent), converts it, returns the measurements (s, MiB)."""
  work = pathlib.Path(work_dir)
  work.mkdir(parents=True, exist_ok=True)
  src = work / f'{model}.pth'
  if not src.exists():
    import timm
    import torch

    torch.save(timm.create_model(model, pretrained=False).state_dict(), src)
  out = work / f'{model}_jax'
  shutil.rmtree(out, ignore_errors=True)
  t0 = time.perf_counter()
  proc = subprocess.run(
    [sys.executable, '-m', 'benchmarks.converter', '--child', str(src), str(out)],
    capture_output=True,
    text=True,
  )
  wall = time.perf_counter() - t0
  child = parse_result(proc.stdout)
  if proc.returncode != 0 or child is None:
    raise RuntimeError(f'converter failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
  size_mb = src.stat().st_size / 2**20
  return dict(
    model=model,
    checkpoint_mb=round(size_mb, 1),
    wall_s=round(wall, 3),
    import_s=child['import_s'],
    convert_s=child['convert_s'],
    rss_after_import_mb=child['rss_after_import_mb'],
    peak_rss_mb=child['peak_rss_mb'],
    peak_rss_over_checkpoint=round(child['peak_rss_mb'] / size_mb, 2),
    nproc=os.cpu_count(),
    load_avg_1m=round(os.getloadavg()[0], 2),
    timestamp=time.strftime('%Y-%m-%dT%H:%M:%S'),
  )


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) == 3 and argv[0] == '--child':
    return _child(argv[1], argv[2])
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  print(RESULT_TAG + json.dumps(measure(argv[0], argv[1])), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
