"""``hrnet-eval``: score a trained or converted model on a whole dataset split, sharded over all
devices: exact top-1 / top-5 of a classifier, mIoU / aAcc / mAcc / per-class IoU of a
segmentation model (mmseg's ``IoUMetric``, each image predicted at its own size).

    hrnet-eval --checkpoint /tmp/hrnet_digits --dataset digits
    hrnet-eval --checkpoint converted/hrnet_w18 --dataset imagenet2012 --data-dir ~/tfds
    hrnet-eval --checkpoint RUN/best --dataset folder:/data/flowers --split val
    hrnet-eval --checkpoint RUN --dataset folder:photos --split 'train[90%:]'
    hrnet-eval --checkpoint SEG_RUN --dataset seg_folder:/data/scenes --split val
    hrnet-eval --checkpoint converted/fcn_hr18 --dataset cityscapes:/data/cityscapes \\
      --tta flip,0.5,0.75,1.0,1.25,1.5,1.75 --save-predictions /tmp/preds

Segmentation: ``--dataset`` is ``seg_folder:ROOT`` (``ROOT/images|annotations/<split>``),
``cityscapes:ROOT`` or ``ade20k:ROOT``; ``--mode slide`` with ``--crop-size H,W`` and
``--stride H,W`` is mmseg's sliding-window inference; ``--tta`` lists ``flip`` and/or scale ratios
(mean of the softmax of every view, as mmseg's test-time augmentation); ``--test-scale
LONG,SHORT`` is the test ``Resize(keep_ratio)`` bound (default: the dataset's, Cityscapes
2048,1024, ADE20K 2048,512, else the checkpoint's); ``--save-predictions DIR`` writes one label
PNG per image (its name, the dataset's label ids) into a new or empty DIR. Results are in percent.

``--checkpoint`` is either a training workdir (``hrnet-train --workdir``; its best training
checkpoint by eval top-1, else the latest, or ``--step``) or a release folder (``config.json`` +
``state/``: ``convert_official_weights`` output, ``save_pretrained``, ``WORKDIR/best``,
``WORKDIR/model``). A dataset with another number of classes than the checkpoint, or other class
names (the checkpoint's ``class_names``), is scored label i against class i, with a warning;
with 5 classes or fewer the top-5 is 100% by construction, and the result line says so.
Preprocessing (size, crop, interpolation, mean/std) is the run's config or the folder's
``pretrained_cfg``; ``--image-size`` / ``--crop-pct`` override it. ``--dataset`` is ``digits``,
``folder:PATH`` (``PATH/<split>/<class>/<image>``; ``--split`` may be sliced in percent as in
TFDS, ``'train[90%:]'``) or a TFDS name. (No ``--config``: the recipe is the run's own, saved in
its workdir.) Long flags take dashes or underscores (``--batch-size``, ``--data-dir``).

Exit status (``hrnet_jax.errors``): 0 done (and ``--help``); 1 runtime failure; 2 bad input (bad
flag, missing or damaged checkpoint, a checksum mismatch, a ``--step`` the workdir does not have,
an unknown dataset). Errors are one ``hrnet-eval: error:`` line (``--verbose`` adds the traceback).
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import ml_collections
from absl import app, flags
from PIL import Image

import hrnet_jax
from hrnet_jax import atomic, errors
from hrnet_jax.cli import policy
from hrnet_jax.data import transforms
from hrnet_jax.runtime import compile_cache
from hrnet_jax.train import checkpointing, cli, tasks, trainer
from hrnet_jax.train import data as input_pipeline
from hrnet_jax.train import mesh as mesh_lib
from hrnet_jax.train import train_state as ts
from hrnet_jax.train import workdir as workdir_lib
from hrnet_jax.train.recipes import base
from hrnet_jax.train.recipes import segment as segment_recipe
from hrnet_jax.train.tasks import pose as pose_task

PROG = 'hrnet-eval'
FLAGS = flags.FLAGS
flags.DEFINE_string(
  'checkpoint', None, 'Training workdir or release folder (config.json + state/).'
)
flags.DEFINE_string(
  'dataset',
  None,
  "'digits', 'folder:PATH' or a TFDS name; segmentation: 'seg_folder:ROOT', 'cityscapes:ROOT', "
  "'ade20k:ROOT' or 'tfds:NAME'.",
)
flags.DEFINE_string('split', 'validation', 'Split to evaluate (TFDS syntax, or a subfolder).')
flags.DEFINE_string('data_dir', '', 'TFDS data_dir.')
flags.DEFINE_integer('batch_size', 128, 'Global eval batch size (a multiple of the devices).')
flags.DEFINE_integer('step', None, 'Checkpoint step of a training workdir (default: best).')
flags.DEFINE_integer('image_size', None, 'Override the eval crop size.')
flags.DEFINE_float('crop_pct', None, 'Override the center-crop fraction.')
flags.DEFINE_bool('json', False, 'Print the result as one JSON line.')
flags.DEFINE_enum('mode', None, ['whole', 'slide'], "Segmentation inference (default: the run's).")
flags.DEFINE_list('crop_size', None, 'Sliding-window crop H,W (segmentation, --mode slide).')
flags.DEFINE_list('stride', None, 'Sliding-window stride H,W (segmentation, --mode slide).')
flags.DEFINE_list('tta', None, "Segmentation test-time augmentation: 'flip' and/or scale ratios.")
flags.DEFINE_list('test_scale', None, 'Segmentation test Resize bound LONG,SHORT (0 = none).')
flags.DEFINE_string(
  'save_predictions',
  None,
  'Segmentation: write one label PNG per image into this new folder; pose: write the COCO '
  'results JSON to this new file.',
)
flags.DEFINE_string(
  'bbox_file',
  '',
  'Pose: person detections (a COCO results JSON) instead of the ground-truth boxes.',
)
flags.mark_flags_as_required(['checkpoint', 'dataset'])


SEG_DATASETS = {'seg_folder': None, 'cityscapes': (2048, 1024), 'ade20k': (2048, 512)}
POSE_DATASET = 'coco_keypoints'  # ROOT/annotations/person_keypoints_<split>.json + ROOT/<split>/


def _dataset_config(
  config, dataset: str, split: str, data_dir: str, batch_size: int, bbox_file: str = ''
) -> None:
  """Sets ``config.dataset`` and the eval batch (see ``evaluate_checkpoint``)."""
  name, sep, root = dataset.partition(':')
  if (config.get('task', 'classify') == 'pose') != (name == POSE_DATASET and bool(sep)):
    raise errors.BadInputError(
      f'--dataset={dataset}: '
      + (
        f'a pose checkpoint is scored on {POSE_DATASET}:ROOT'
        if config.get('task', 'classify') == 'pose'
        else f'{POSE_DATASET}:ROOT is for pose checkpoints'
      )
    )
  if name == POSE_DATASET:
    pose_task.set_eval_dataset(config, root, split, bbox_file)
    config.eval_batch_size = config.batch_size = batch_size
    return
  if bbox_file:
    raise errors.BadInputError(f'--bbox_file is for {POSE_DATASET}:ROOT (pose checkpoints)')
  config.dataset.name, config.dataset.folder = cli.split_dataset(dataset)
  segment = config.get('task', 'classify') == 'segment'
  seg_dataset = config.dataset.name in SEG_DATASETS or config.dataset.name.startswith('tfds:')
  if segment != seg_dataset:
    kind = 'a segmentation' if segment else 'a classification'
    raise errors.BadInputError(
      f'--dataset={dataset}: the checkpoint is {kind} model; datasets: '
      + (
        ', '.join(f'{k}:ROOT' for k in SEG_DATASETS) + ', tfds:NAME'
        if segment
        else 'digits, folder:PATH, TFDS'
      )
    )
  config.dataset.eval_split = split
  config.dataset.data_dir = data_dir
  config.eval_batch_size = config.batch_size = batch_size
  if dataset == 'digits':
    config.input.train_augment = 'resize'


def _pair_flag(values, name: str) -> tuple[int, int]:
  try:
    pair = tuple(int(v) for v in values)
  except ValueError:
    pair = ()
  if len(pair) != 2 or min(pair) < 0:
    raise errors.BadInputError(f'--{name}={",".join(values)}: expected two integers, e.g. 512,1024')
  return pair


def _eval_overrides(config, *, image_size, crop_pct, mode, crop_size, stride, tta, test_scale):
  """Applies the preprocessing / inference flags to ``config`` (each only for its task)."""
  segment = config.get('task', 'classify') == 'segment'
  given = lambda *names: [n for n, v in names if v is not None]
  wrong = (
    given(('image_size', image_size), ('crop_pct', crop_pct))
    if segment
    else given(
      ('mode', mode),
      ('crop_size', crop_size),
      ('stride', stride),
      ('tta', tta),
      ('test_scale', test_scale),
    )
  )
  if wrong:
    raise errors.BadInputError(
      f'--{wrong[0]} is for {"classification" if segment else "segmentation"} checkpoints'
    )
  if not segment:
    if image_size:
      config.input.image_size = image_size
    if crop_pct:
      config.input.crop_pct = crop_pct
    return
  if test_scale is not None:
    config.input.test_scale = () if test_scale == ['0'] else _pair_flag(test_scale, 'test_scale')
  elif SEG_DATASETS.get(config.dataset.name):
    config.input.test_scale = SEG_DATASETS[config.dataset.name]
  if mode:
    config.eval.mode = mode
  if crop_size:
    config.eval.crop_size = _pair_flag(crop_size, 'crop_size')
  if stride:
    config.eval.stride = _pair_flag(stride, 'stride')
  if tta is not None:
    scales = [v for v in tta if v != 'flip']
    try:
      config.eval.scales = tuple(float(v) for v in scales)
    except ValueError:
      raise errors.BadInputError(
        f'--tta={",".join(tta)}: expected flip and/or scale ratios, e.g. flip,0.5,1.0,1.5'
      ) from None
    config.eval.flip = 'flip' in tta


def restore_workdir(workdir: str, mesh, step: int | None = None):
  """Training checkpoint ``step`` of the run in ``workdir`` (default: the best by its eval
  metric, else the latest) on ``mesh``: ``(model_def, params, batch_stats, config, meta)``,
  ``config`` the run's resolved recipe, ``meta`` ``{'step', 'class_names', 'pretrained_cfg'}``
  from ``train_config.json`` (``pretrained_cfg``: what the run's release folders record; None
  for a run of an older hrnet-train). ``model_def.merge(params, batch_stats, train=False)`` is
  the model.

  Raises ``BadInputError`` naming the workdir for no checkpoint, a ``step`` it does not have or
  a damaged one; ``FileNotFoundError`` / ``BadInputError`` for a missing or damaged
  ``train_config.json``."""
  saved = workdir_lib.read_json(
    os.path.join(workdir, trainer.CONFIG_FILE),
    "the run's config",
    required=('config', 'num_classes'),
  )
  config = ml_collections.ConfigDict(saved['config'])
  config.pretrained = ''  # the architecture is all we need; the weights come from the checkpoint
  model_def, params, stats = ts.split_model(ts.recipe_model(config, saved['num_classes']))
  host_state = ts.init_state(params, stats, ts.create_optimizer(config, steps_per_epoch=1))
  shardings = mesh_lib.state_shardings(mesh, host_state)
  ckpts = checkpointing.Checkpoints(
    workdir, read_only=True, best_metric=tasks.get_task(config).best_metric
  )
  try:
    steps = ckpts.steps()
    if step is None:
      step = (ckpts.best() or (max(steps, default=None), None))[0]
      if step is None:
        raise errors.BadInputError(f'{ckpts.directory}: no checkpoint')
    elif step not in steps:
      raise errors.BadInputError(
        f'--step={step}: {ckpts.directory} has no checkpoint {step}; it has steps '
        f'{", ".join(map(str, steps)) or "none"}'
      )
    state, step = ckpts.restore(checkpointing.abstract_like(host_state, shardings), step=step)
  finally:
    ckpts.close()
  logging.info('evaluating checkpoint %d of %s', step, workdir)
  meta = {
    'step': step,
    'class_names': saved.get('class_names'),
    'pretrained_cfg': saved.get('pretrained_cfg'),
  }
  return model_def, state.params, state.batch_stats, config, meta


def _from_folder(folder: str):
  """-> (model_def, params, batch_stats, config, {'class_names'}) of a release folder."""
  model = hrnet_jax.load_pretrained(folder)
  cfg = model.pretrained_cfg or {}
  if getattr(model, 'task', None) == 'segment':
    config = segment_recipe.get_config()
    config.input.mean, config.input.std = tuple(cfg['mean']), tuple(cfg['std'])
    test = cfg.get('test_scale') or cfg['input_size'][:0:-1]  # (H, W) -> (long, short)
    config.input.test_scale = tuple(test)
    config.dataset.ignore_index = cfg.get('ignore_index', 255)
    config.dataset.reduce_zero_label = cfg.get('reduce_zero_label', False)
  elif getattr(model, 'task', None) == 'pose':
    config = pose_task.release_config(cfg)
  elif getattr(model, 'task', None) is not None:
    raise errors.BadInputError(
      f'--checkpoint={folder}: a {model.task} model; hrnet-eval scores classifiers, '
      'segmentation and pose models'
    )
  else:
    config = base.get_config()
    p = transforms.resolve_eval_params(cfg)
    config.input.image_size = p['size'][0]
    config.input.crop_pct = p['crop_pct']
    config.input.interpolation = p['interpolation']
    config.input.mean, config.input.std = p['mean'], p['std']
  config.model = model.arch
  model_def, params, stats = ts.split_model(model)
  return model_def, params, stats, config, {'class_names': cfg.get('class_names')}


def _prediction_writer(folder: str, reduce_zero_label: bool):
  """``on_prediction(name, pred)`` writing ``folder/<name>.png`` (uint8 label ids; reduced
  labels back to the dataset's ids, 0 = the ignored "other") atomically; the folder must be new
  or empty (nothing of the user's is replaced)."""
  if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
    raise errors.BadInputError(f'--save_predictions={folder}: exists and is not an empty folder')

  def write(name: str, pred) -> None:
    path = os.path.join(folder, name + '.png')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ids = (pred + 1) if reduce_zero_label else pred
    atomic.write_file(path, lambda tmp: Image.fromarray(ids.astype('uint8')).save(tmp, 'PNG'))

  return write


def class_mismatch(
  data_count: int, data_names, model_count: int, model_names, shown: int = 3
) -> str | None:
  """What differs between a dataset's classes (``data_count``, names or None) and a checkpoint's
  (``model_count``, its ``class_names`` or None), or None when nothing known differs: the
  counts, else the first ``shown`` labels whose names differ."""
  if data_count != model_count:
    return f'{data_count} classes, but the checkpoint predicts {model_count}'
  if not data_names or not model_names:
    return None
  differ = [(i, d, m) for i, (d, m) in enumerate(zip(data_names, model_names)) if d != m]
  if not differ:
    return None
  named = ', '.join(f'label {i} is {d!r}, class {i} {m!r}' for i, d, m in differ[:shown])
  more = f' and {len(differ) - shown} more' if len(differ) > shown else ''
  return f'other class names than the checkpoint ({named}{more})'


def evaluate_checkpoint(
  checkpoint: str,
  *,
  dataset: str,
  split: str = 'validation',
  data_dir: str = '',
  batch_size: int = 128,
  step: int | None = None,
  image_size: int | None = None,
  crop_pct: float | None = None,
  mode: str | None = None,
  crop_size=None,
  stride=None,
  tta=None,
  test_scale=None,
  save_predictions: str | None = None,
  bbox_file: str = '',
) -> dict:
  """Scores ``checkpoint`` (a training workdir or a release folder) on ``split`` of ``dataset``
  (``'digits'``, ``'folder:PATH'``, a TFDS name; ``'seg_folder:ROOT'``, ``'cityscapes:ROOT'``,
  ``'ade20k:ROOT'``, ``'tfds:NAME'``; ``'coco_keypoints:ROOT'``); the arguments are the CLI
  flags'. Returns the task's results: ``{'top1', 'top5'}`` (fractions), ``{'mIoU', 'aAcc',
  'mAcc', 'mDice', 'IoU': {class: value}, ...}`` (percent) or ``{'AP', 'AP50', 'AP75', 'APm',
  'APl', 'AR', ...}`` (COCO keypoint AP, fractions; ``save_predictions`` the COCO results JSON
  file), and ``'count'`` (images), ``'num_classes'`` (the model's outputs), ``'step'`` (the
  training checkpoint's step; None for a release folder).

  Raises ``FileNotFoundError`` / ``ValueError`` / ``hrnet_jax.errors.BadInputError`` naming a bad
  checkpoint, dataset, flag or batch size.
  """
  mesh = mesh_lib.create_mesh()
  if not os.path.isdir(checkpoint):
    raise FileNotFoundError(f'--checkpoint={checkpoint}: no such folder')
  if os.path.exists(os.path.join(checkpoint, 'config.json')):
    model_def, params, stats, config, meta = _from_folder(checkpoint)
    shardings = mesh_lib.state_shardings(mesh, (params, stats))
    params, stats = mesh_lib.put_replicated_or_sharded((params, stats), shardings)
  else:
    if not os.path.exists(os.path.join(checkpoint, trainer.CONFIG_FILE)):
      raise FileNotFoundError(
        f'--checkpoint={checkpoint}: neither a training workdir '
        f'({trainer.CONFIG_FILE}) nor a checkpoint folder (config.json)'
      )
    model_def, params, stats, config, meta = restore_workdir(checkpoint, mesh, step)
  _dataset_config(config, dataset, split, data_dir, batch_size, bbox_file)
  _eval_overrides(
    config,
    image_size=image_size,
    crop_pct=crop_pct,
    mode=mode,
    crop_size=crop_size,
    stride=stride,
    tta=tta,
    test_scale=test_scale,
  )
  task = tasks.get_task(config)
  if save_predictions is not None and task.name == 'classify':
    raise errors.BadInputError('--save_predictions is for segmentation and pose checkpoints')
  if config.eval_batch_size % mesh.size:
    raise ValueError(
      f'--batch_size={config.eval_batch_size} must be a multiple of the {mesh.size} devices'
    )
  data = input_pipeline.create_input(
    config, process_index=jax.process_index(), process_count=jax.process_count(), train=False
  )
  mismatch = class_mismatch(
    data.info.num_classes, data.info.class_names, model_def.num_classes, meta['class_names']
  )
  if mismatch:
    mismatch = f'--dataset={dataset}: {mismatch} ({checkpoint})'
    if task.name != 'classify' and data.info.num_classes != model_def.num_classes:
      raise errors.BadInputError(mismatch)  # per-class areas / keypoints of another length
    # A model still scores label i as its class i (e.g. an ImageNet head on a subset).
    logging.warning('%s: label i is scored as class i of the checkpoint', mismatch)
  evaluator = task.evaluator(
    config,
    model_def,
    data.info,
    mesh,
    jax.tree.map(lambda x: x.sharding, params),
    jax.tree.map(lambda x: x.sharding, stats),
  )
  extra = {}
  if save_predictions is not None and task.name == 'pose':
    if os.path.exists(save_predictions):  # never replace a file of the user's
      raise errors.BadInputError(f'--save_predictions={save_predictions}: exists')
    extra['results_file'] = save_predictions
  elif save_predictions is not None:
    extra['on_prediction'] = _prediction_writer(save_predictions, config.dataset.reduce_zero_label)
  results = evaluator(params, stats, data, progress=True, **extra)
  return {**results, 'num_classes': model_def.num_classes, 'step': meta.get('step')}


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.configure_logging(PROG, FLAGS.verbose)
  compile_cache.enable()  # HRNET_JAX_COMPILATION_CACHE
  return policy.run_cli(PROG, _evaluate_and_print, verbose=FLAGS.verbose)


def _evaluate_and_print() -> int:
  results = evaluate_checkpoint(
    FLAGS.checkpoint,
    dataset=FLAGS.dataset,
    split=FLAGS.split,
    data_dir=FLAGS.data_dir,
    batch_size=FLAGS.batch_size,
    step=FLAGS.step,
    image_size=FLAGS.image_size,
    crop_pct=FLAGS.crop_pct,
    mode=FLAGS.mode,
    crop_size=FLAGS.crop_size,
    stride=FLAGS.stride,
    tta=FLAGS.tta,
    test_scale=FLAGS.test_scale,
    save_predictions=FLAGS.save_predictions,
    bbox_file=FLAGS.bbox_file,
  )
  step = '' if results['step'] is None else f', step {results["step"]}'
  where = f'{results["count"]} images of {FLAGS.dataset}:{FLAGS.split} ({FLAGS.checkpoint}{step})'
  if FLAGS.json:
    # Classes absent from the labels have no IoU: null, as JSON has no NaN.
    clean = lambda v: (
      {k: clean(x) for k, x in v.items()}
      if isinstance(v, dict)
      else (None if isinstance(v, float) and math.isnan(v) else v)
    )
    record = {
      **clean(results),
      'checkpoint': FLAGS.checkpoint,
      'dataset': FLAGS.dataset,
      'split': FLAGS.split,
    }
    print(json.dumps(record))
  elif 'AP' in results:
    print(
      f'hrnet-eval: AP {results["AP"]:.4f}  AP50 {results["AP50"]:.4f}  AP75 '
      f'{results["AP75"]:.4f}  AR {results["AR"]:.4f}  on {where}'
    )
  elif 'mIoU' in results:
    print(
      f'hrnet-eval: mIoU {results["mIoU"]:.2f}  aAcc {results["aAcc"]:.2f}  mAcc '
      f'{results["mAcc"]:.2f}  on {where}'
    )
  else:
    n = results['num_classes']
    trivial = f' (every class is in the top 5 of {n})' if n <= 5 else ''
    print(
      f'hrnet-eval: top-1 {results["top1"]:.2%}  top-5 {results["top5"]:.2%}{trivial}  on {where}'
    )
  return 0


def main():
  """Console entry point."""
  cli.run(
    _main,
    __doc__,
    [
      'checkpoint',
      'dataset',
      'split',
      'data_dir',
      'batch_size',
      'step',
      'image_size',
      'crop_pct',
      'json',
      'mode',
      'crop_size',
      'stride',
      'tta',
      'test_scale',
      'save_predictions',
      'bbox_file',
    ],
    PROG,
  )


if __name__ == '__main__':
  main()
