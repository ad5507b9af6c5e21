"""Input pipeline alone: hrnet-train's tf.data preprocessing vs a torchvision DataLoader.

    python -m benchmarks.input_pipeline                  # 384 images, 1 core and all cores
    python -m benchmarks.input_pipeline --images 8 --cores 1 --repeats 1 --out /tmp/ip.csv

What is timed, per image, on the same JPEG files with the same number of cores (the process and
its workers pinned to the first N CPUs with ``sched_setaffinity``):

- ``hrnet-tfdata``: ``hrnet_jax.train.data.tfdata`` as ``hrnet-train`` runs it: file read, then
  train = ``train_preprocess`` (RandomResizedCrop window decoded alone by
  ``decode_and_crop_jpeg``, antialiased resize to 224, horizontal flip), eval =
  ``eval_preprocess`` (decode, shorter side to 256, center crop 224); ``map`` with
  ``num_parallel_calls=AUTOTUNE``, batches of 32, tf.data's private thread pool and TensorFlow's
  op threads both set to N.
- ``torchvision``: ``DataLoader`` over the same files, PIL decode and torchvision's
  ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip`` / ``Resize(256)`` + ``CenterCrop(224)``
  (bilinear, antialiased as PIL), ``PILToTensor`` (uint8, as ours), batches of 32, N worker
  processes (none for N = 1: the loading runs in the main process).

Both produce uint8 ``[32, 224, 224, 3]`` (torchvision ``[32, 3, 224, 224]``) batches; an
untimed first epoch warms the page cache and the workers, then ``--repeats`` epochs are timed;
images/s = images of an epoch / median epoch time. An epoch reads the files ``--passes`` times
(default 4). The tf.data side reads all epochs from one iterator: tf.data's autotuner starts
each new iterator with little parallelism and ramps up, which ``hrnet-train``'s epochs (one
iterator over a whole split) amortise, and with a new iterator per 384 files the ramp dominated
the rows (eval 301 img/s at one core, against 588 in a long stream). The torchvision side keeps
its workers between epochs (``persistent_workers``). The files: ``--images`` JPEGs (quality 90, ImageNet's
typical 500x375 / 375x500, 4:3) cut at random from the color photos bundled with scikit-image
and scikit-learn (random crops of at least half the photo's side, resized with PIL), written
once into ``--folder``. Rows go to ``--out`` (``benchmarks/results/input_pipeline.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import types

import numpy as np

from benchmarks.common import RESULT_TAG, cpu_model, versions

RESULTS = pathlib.Path(__file__).parent / 'results'
LOADERS = ('hrnet-tfdata', 'torchvision')
PIPELINES = ('train', 'eval')
SIZE, CROP_PCT, BATCH = 224, 0.875, 32
INPUT = dict(
  image_size=SIZE, crop_pct=CROP_PCT, interpolation='bilinear', train_augment='random_resized_crop'
)
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry')
COLUMNS = [
  'pipeline',
  'loader',
  'cores',
  'images',
  'img_per_s',
  'img_per_s_per_core',
  'vs_torchvision',
  'epoch_s',
  'repeats',
  'foreign_cpu_pct',
  'cpu_model',
  'load_avg_1m',
  'versions',
  'timestamp',
]


def _photos() -> list[np.ndarray]:
  """The RGB photos bundled with scikit-image and scikit-learn (no download)."""
  from skimage import data
  from sklearn.datasets import load_sample_images

  photos = [getattr(data, name)() for name in SKIMAGE_PHOTOS]
  photos += list(load_sample_images().images)
  return [p for p in photos if p.ndim == 3 and p.shape[2] == 3]


def make_jpegs(folder: pathlib.Path, count: int, seed: int = 0) -> list[pathlib.Path]:
  """``count`` JPEGs in ``folder`` (kept when already there), see the module docstring."""
  from PIL import Image

  folder.mkdir(parents=True, exist_ok=True)
  paths = [folder / f'img_{i:05d}.jpg' for i in range(count)]
  if all(p.exists() for p in paths):
    return paths
  rng = np.random.default_rng(seed)
  photos = _photos()
  for i, path in enumerate(paths):
    photo = photos[i % len(photos)]
    h, w = photo.shape[:2]
    ch, cw = (int(rng.uniform(0.5, 1.0) * d) for d in (h, w))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    size = (500, 375) if rng.random() < 0.75 else (375, 500)  # (width, height)
    crop = Image.fromarray(photo[top : top + ch, left : left + cw])
    crop.resize(size, Image.BILINEAR).save(path.with_suffix('.tmp'), 'JPEG', quality=90)
    os.replace(path.with_suffix('.tmp'), path)
  return paths


def _tf_epochs(files: list[str], pipeline: str, cores: int, repeats: int) -> list[float]:
  import tensorflow as tf

  tf.config.threading.set_inter_op_parallelism_threads(cores)
  tf.config.threading.set_intra_op_parallelism_threads(cores)
  from hrnet_jax.train.data.tfdata import eval_preprocess, train_preprocess

  config = types.SimpleNamespace(**INPUT)
  seed = tf.constant(0, tf.int64)
  ds = tf.data.Dataset.from_tensor_slices(files).repeat().enumerate()
  if pipeline == 'train':
    fn = lambda i, f: train_preprocess(tf.io.read_file(f), 0, tf.stack([seed, i]), config)[0]
  else:
    fn = lambda i, f: eval_preprocess(tf.io.read_file(f), 0, config)[0]
  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.threading.private_threadpool_size = cores
  ds = ds.with_options(options)
  # One iterator for all epochs, as an hrnet-train epoch over a large split is one long stream.
  batches, it = -(-len(files) // BATCH), iter(ds)
  return _epochs(lambda: [next(it).shape for _ in range(batches)], repeats)


def _torch_epochs(files: list[str], pipeline: str, cores: int, repeats: int) -> list[float]:
  import torch
  from PIL import Image
  from torchvision import transforms as T

  torch.set_num_threads(1)
  if pipeline == 'train':
    tf = T.Compose([T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip(), T.PILToTensor()])
  else:
    tf = T.Compose([T.Resize(int(SIZE / CROP_PCT)), T.CenterCrop(SIZE), T.PILToTensor()])

  class Files(torch.utils.data.Dataset):
    def __len__(self):
      return len(files)

    def __getitem__(self, i):
      with Image.open(files[i]) as img:
        return tf(img.convert('RGB'))

  workers = 0 if cores == 1 else cores
  loader = torch.utils.data.DataLoader(
    Files(), batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0
  )
  return _epochs(lambda: [b.shape for b in loader], repeats)


def _epochs(epoch, repeats: int) -> list[float]:
  epoch()  # warm: page cache, workers, tf.data autotuning
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    epoch()
    times.append(time.perf_counter() - t)
  return times


def worker(job: dict) -> list[dict]:
  """One loader at one core count, every pipeline of ``job``: its rows (no ratio yet)."""
  cpus = sorted(os.sched_getaffinity(0))[: job['cores']]
  os.sched_setaffinity(0, cpus)
  files = job['files'] * job['passes']
  run = _tf_epochs if job['loader'] == 'hrnet-tfdata' else _torch_epochs
  rows = []
  for pipeline in job['pipelines']:
    epoch_s = statistics.median(run(files, pipeline, job['cores'], job['repeats']))
    rows.append(
      dict(
        pipeline=pipeline,
        loader=job['loader'],
        cores=job['cores'],
        images=len(files),
        img_per_s=round(len(files) / epoch_s, 1),
        img_per_s_per_core=round(len(files) / epoch_s / job['cores'], 1),
        epoch_s=round(epoch_s, 3),
        repeats=job['repeats'],
      )
    )
  return rows


def _run_job(job: dict, timeout: float) -> list[dict]:
  from benchmarks.run import run_worker

  env = dict(os.environ, CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2')
  rows, error, foreign = run_worker(
    'benchmarks.input_pipeline', ['--worker', json.dumps(job)], env, timeout
  )
  if rows is None:
    raise SystemExit(f'{job["loader"]} on {job["cores"]} cores failed: {error}')
  for row in rows:
    row['foreign_cpu_pct'] = foreign
  return rows


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m benchmarks.input_pipeline', description=__doc__)
  p.add_argument('--images', type=int, default=384, help='JPEGs to build and time (384)')
  p.add_argument(
    '--folder', type=pathlib.Path, default=None, help='where the JPEGs are (default: a temp dir)'
  )
  p.add_argument(
    '--cores', default='1,all', help='comma-separated core counts, "all" = every CPU (1,all)'
  )
  p.add_argument('--repeats', type=int, default=3, help='timed epochs per row (3)')
  p.add_argument('--passes', type=int, default=4, help='reads of the files per epoch (4)')
  p.add_argument('--pipelines', default='train,eval', help='train,eval')
  p.add_argument('--out', type=pathlib.Path, default=RESULTS / 'input_pipeline.csv')
  p.add_argument('--timeout', type=float, default=1800.0, help='s per worker (1800)')
  return p


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == '--worker':
    print(RESULT_TAG + json.dumps(worker(json.loads(argv[1]))), flush=True)
    return 0
  args = build_parser().parse_args(argv)
  ncpu = len(os.sched_getaffinity(0))
  cores = list(dict.fromkeys(ncpu if c == 'all' else int(c) for c in args.cores.split(',')))
  if (
    args.images < 1 or args.repeats < 1 or args.passes < 1 or any(not 1 <= c <= ncpu for c in cores)
  ):
    raise SystemExit(f'--images, --repeats, --passes >= 1 and --cores within 1..{ncpu}')
  pipelines = args.pipelines.split(',')
  if not set(pipelines) <= set(PIPELINES):
    raise SystemExit(f'--pipelines: {PIPELINES}, got {args.pipelines!r}')

  with tempfile.TemporaryDirectory(prefix='hrnet-jpegs-') as tmp:
    folder = args.folder or pathlib.Path(tmp)
    files = [str(p) for p in make_jpegs(folder, args.images)]
    rows = []
    for n in cores:
      for loader in LOADERS:
        job = dict(
          loader=loader,
          cores=n,
          files=files,
          pipelines=pipelines,
          repeats=args.repeats,
          passes=args.passes,
        )
        for row in _run_job(job, args.timeout):
          rows.append(row)
          print(
            f'{row["pipeline"]:5s} {loader:12s} {n} core(s): {row["img_per_s"]:8.1f} img/s, '
            f'{row["img_per_s_per_core"]:7.1f} per core '
            f'(other processes used {row["foreign_cpu_pct"]}% of the CPUs)',
            flush=True,
          )
  stamp = dict(
    cpu_model=cpu_model(),
    load_avg_1m=round(os.getloadavg()[0], 2),
    versions=versions('tensorflow', 'tensorflow-cpu', 'torch', 'torchvision', 'pillow'),
    timestamp=time.strftime('%Y-%m-%dT%H:%M:%S'),
  )
  for row in rows:
    ref = next(
      r
      for r in rows
      if (r['pipeline'], r['cores'], r['loader']) == (row['pipeline'], row['cores'], LOADERS[1])
    )
    row['vs_torchvision'] = round(row['img_per_s'] / ref['img_per_s'], 2)
    row.update(stamp)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  tmp_out = args.out.with_suffix('.csv.tmp')
  with open(tmp_out, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp_out, args.out)
  print(f'wrote {args.out}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
