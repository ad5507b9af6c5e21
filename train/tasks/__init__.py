"""What a run learns: each task plugs its loss, evaluation and exported metadata into the one
trainer (``hrnet_jax.train.trainer``) and into ``hrnet-eval``; its input is
``hrnet_jax.train.data.create_input``'s, chosen by the same ``config.task``.

``classify``: image labels (softmax cross-entropy; exact top-1 / top-5). ``segment``: per-pixel
labels (mmseg's pixel cross-entropy; mIoU, aAcc, mAcc as mmseg's ``IoUMetric``). ``pose``:
top-down keypoint heatmaps (mmpose's ``KeypointMSELoss``; COCO keypoint AP as its ``CocoMetric``).
"""

from __future__ import annotations

from hrnet_jax.train.tasks import classification, pose, segmentation
from hrnet_jax.train.tasks.base import Task

TASKS: dict[str, Task] = {
  'classify': classification.TASK,
  'segment': segmentation.TASK,
  'pose': pose.TASK,
}


def get_task(config) -> Task:
  """The task of ``config.task`` (``'classify'`` for configs that predate the field);
  ``ValueError`` naming the valid ones."""
  name = config.get('task', 'classify')
  try:
    return TASKS[name]
  except KeyError:
    raise ValueError(f'config.task={name!r}; valid: {", ".join(TASKS)}') from None
