"""The ``Task`` protocol: what the trainer and ``hrnet-eval`` ask of a task."""

from __future__ import annotations

from typing import Any, Callable, Protocol

from hrnet_jax.train.data.base import DatasetInfo
from hrnet_jax.train.step import LossFn
from hrnet_jax.train.train_state import ModelDef

# (params, batch_stats, data: the task's Input, progress: bool) -> results (a dict of floats,
# with 'count': the examples evaluated).
Evaluator = Callable[..., dict]


class Task(Protocol):
  name: str
  # The eval result that ranks checkpoints (higher is better): the kept best and WORKDIR/best.
  best_metric: str

  def loss_fn(self, config) -> LossFn:
    """The training loss of ``config`` for ``step.train_step``."""

  def evaluator(
    self, config, model_def: ModelDef, info: DatasetInfo, mesh, params_shardings, stats_shardings
  ) -> Evaluator:
    """The evaluation of a split with ``config``'s eval settings, on ``mesh``."""

  def scalars(self, results: dict) -> dict[str, float]:
    """The scalar results logged (TensorBoard ``eval/<name>``) and stored with a checkpoint."""

  def describe(self, results: dict) -> str:
    """One line of the results, e.g. ``eval top-1 96.94% top-5 100.00% (360 images)``."""

  def describe_best(self, value: float) -> str:
    """The best checkpoint's ``best_metric``, e.g. ``best top-1 96.94%``."""

  def pretrained_cfg(self, config, base_cfg: dict | None, info: DatasetInfo) -> dict[str, Any]:
    """The ``pretrained_cfg`` recorded with the trained weights (preprocessing, labels)."""
