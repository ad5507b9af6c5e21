"""Image classification: softmax cross-entropy with label smoothing, exact top-1 / top-5."""

from __future__ import annotations

from hrnet_jax.train import evaluate
from hrnet_jax.train import mesh as mesh_lib
from hrnet_jax.train import step as step_lib
from hrnet_jax.train import train_state as ts


class Classification:
  name = 'classify'
  best_metric = 'top1'

  def loss_fn(self, config):
    return step_lib.cross_entropy_loss(config.label_smoothing)

  def evaluator(self, config, model_def, info, mesh, params_shardings, stats_shardings):
    batch_sharding, replicated = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
    eval_fn = step_lib.jit_eval_step(
      params_shardings,
      stats_shardings,
      batch_sharding,
      replicated,
      model_def=model_def,
      mean=tuple(config.input.mean),
      std=tuple(config.input.std),
    )

    def run(params, batch_stats, data, *, progress: bool = False) -> dict:
      return evaluate.evaluate(
        eval_fn,
        params,
        batch_stats,
        data.eval_batches(),
        batch_sharding,
        num_batches=data.num_eval_batches,
        progress=progress,
      )

    return run

  def scalars(self, results):
    return {'top1': results['top1'], 'top5': results['top5']}

  def describe(self, results):
    return (
      f'eval top-1 {results["top1"]:.2%} top-5 {results["top5"]:.2%} ({results["count"]} images)'
    )

  def describe_best(self, value):
    return f'best top-1 {value:.2%}'

  def pretrained_cfg(self, config, base_cfg, info):
    return ts.export_pretrained_cfg(config, base_cfg, info.num_classes)


TASK = Classification()
