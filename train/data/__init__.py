"""The input of a training recipe: ``create_input``, the one place that knows every source.

Sources: ``arrays`` (in-memory arrays: the embedded digits), ``tfdata`` (tf.data over TFDS
datasets and image folders), ``segmentation`` (images with label PNGs, for
``config.task='segment'``). ``base`` holds what they share: the batch format (see there), the
``Input`` protocol and ``DatasetInfo``.
"""

from __future__ import annotations

from hrnet_jax.train.data import arrays, pose, segmentation, tfdata
from hrnet_jax.train.data.base import Input


def create_input(config, *, process_index: int, process_count: int, train: bool = True) -> Input:
  """The input of ``config.dataset`` (see ``train/recipes/base.py``) for one process;
  ``train=False`` reads only the eval split (``steps_per_epoch`` is then 0 for TFDS / folders).

  Raises ``ValueError`` for an unknown dataset, augmentation or a batch size that the number of
  processes does not divide; ``FileNotFoundError`` for a missing folder.
  """
  if config.get('task', 'classify') == 'pose':
    return pose.PoseInput(
      config, process_index=process_index, process_count=process_count, train=train
    )
  if config.get('task', 'classify') == 'segment':
    return segmentation.SegmentationInput(
      config, process_index=process_index, process_count=process_count, train=train
    )
  kw = dict(
    batch_size=config.batch_size,
    eval_batch_size=config.eval_batch_size,
    seed=config.seed,
    process_index=process_index,
    process_count=process_count,
  )
  name = config.dataset.name
  if name == 'digits':
    if config.input.train_augment != 'resize':
      raise ValueError("the digits dataset supports only config.input.train_augment='resize'")
    train_arrays, eval_arrays, info = arrays.load_digits(config.input.image_size)
    return arrays.ArrayInput(train_arrays, eval_arrays, info=info, **kw)
  source = (
    tfdata.FolderSource(config.dataset)
    if name == 'folder'
    else tfdata.TFDSSource(config.dataset, process_count=process_count)
  )
  return tfdata.TFInput(
    source,
    config.input,
    train_split=config.dataset.train_split if train else '',
    eval_split=config.dataset.eval_split,
    **kw,
  )
