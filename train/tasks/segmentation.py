"""Semantic segmentation: mmseg's pixel cross-entropy; mIoU, aAcc, mAcc, mDice as mmseg's
``IoUMetric``, each image predicted at its own size (whole image or sliding window, optional
flip / multi-scale test)."""

from __future__ import annotations

from hrnet_jax.train import evaluate, losses
from hrnet_jax.train import step as step_lib


def _pair(value) -> tuple[int, int] | None:
  return tuple(int(v) for v in value) if value else None


class Segmentation:
  name = 'segment'
  best_metric = 'mIoU'

  def loss_fn(self, config):
    """``losses.pixel_cross_entropy`` with ``config.loss`` (``train/recipes/segment.py``)."""
    ignore_index = config.dataset.ignore_index
    loss = config.get('loss') or {}
    min_kept = int(loss.get('ohem_min_kept', 0))
    ohem = {'thresh': loss.get('ohem_thresh'), 'min_kept': min_kept} if min_kept > 0 else None

    def loss_fn(logits, batch):
      labels = batch['label'].astype('int32')
      value = losses.pixel_cross_entropy(
        logits,
        labels,
        ignore_index=ignore_index,
        avg_non_ignore=bool(loss.get('avg_non_ignore', False)),
        ohem=ohem,
      )
      return value, {}

    return loss_fn

  def evaluator(self, config, model_def, info, mesh, params_shardings, stats_shardings):
    del mesh, params_shardings, stats_shardings  # one local device per image (evaluate.py)
    e = config.eval
    if e.mode not in ('whole', 'slide'):
      raise ValueError(f"config.eval.mode={e.mode!r}; valid: 'whole', 'slide'")
    segment_fn = step_lib.jit_segment_image(
      model_def=model_def,
      mean=tuple(config.input.mean),
      std=tuple(config.input.std),
      num_classes=info.num_classes,
      ignore_index=config.dataset.ignore_index,
      mode=e.mode,
      crop_hw=_pair(e.crop_size) if e.mode == 'slide' else None,
      stride_hw=_pair(e.stride) if e.mode == 'slide' else None,
      scales=tuple(float(s) for s in e.scales) or (1.0,),
      flip=bool(e.flip),
    )

    def run(params, batch_stats, data, *, progress: bool = False, on_prediction=None) -> dict:
      return evaluate.evaluate_segmentation(
        segment_fn,
        params,
        batch_stats,
        data,
        num_classes=info.num_classes,
        class_names=info.class_names,
        progress=progress,
        on_prediction=on_prediction,
      )

    return run

  def scalars(self, results):
    return {k: results[k] for k in ('mIoU', 'aAcc', 'mAcc')}

  def describe(self, results):
    return (
      f'eval mIoU {results["mIoU"]:.2f} aAcc {results["aAcc"]:.2f} mAcc '
      f'{results["mAcc"]:.2f} ({results["count"]} images)'
    )

  def describe_best(self, value):
    return f'best mIoU {value:.2f}'

  def pretrained_cfg(self, config, base_cfg, info):
    crop_h, crop_w = config.input.crop_size
    test = tuple(config.input.test_scale) or None
    return {
      **(base_cfg or {}),
      'num_classes': info.num_classes,
      'label_names': list(info.class_names) if info.class_names else None,
      # hrnet-predict fits each image into input_size (H, W): mmseg's (long, short) test scale.
      'input_size': [3, test[1], test[0]] if test else [3, crop_h, crop_w],
      'test_scale': list(test) if test else None,
      'mean': list(config.input.mean),
      'std': list(config.input.std),
      'interpolation': 'bilinear',
      'crop_pct': 1.0,
      'ignore_index': config.dataset.ignore_index,
      'reduce_zero_label': bool(config.dataset.reduce_zero_label),
    }


TASK = Segmentation()
