"""The jitted steps over global (sharded) batches: the train step of every task (its loss is a
parameter), the classification eval step and the segmentation per-image inference.

They take batches as built by ``hrnet_jax.train.data`` (uint8 images, normalized here on the
device). Computation runs in the model's dtype (bf16 or f32); logits are cast to float32 before
the loss, so the loss, gradients, BN statistics and optimizer state stay float32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from hrnet_jax import runtime
from hrnet_jax.data.transforms import normalize
from hrnet_jax.inference import segment
from hrnet_jax.metrics import segmentation as seg_metrics
from hrnet_jax.train.train_state import ModelDef, TrainState

# A task's loss: (float32 model output, global batch) -> (scalar loss, dict of scalar metrics).
LossFn = Callable[[jax.Array, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


def _topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """bool ``[B]``: label among the ``k`` largest logits (``k`` capped at the class count)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1)


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
  """The classification loss: mean softmax cross-entropy of ``logits [B, C]`` against
  ``batch['label']`` (int32 ``[B]``) smoothed by ``label_smoothing`` (as PyTorch's
  ``CrossEntropyLoss(label_smoothing=...)``); metrics: ``top1`` (batch accuracy)."""

  def loss_fn(logits: jax.Array, batch: dict[str, jax.Array]):
    labels = batch['label']
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, {'top1': _topk_correct(logits, labels, 1).mean(dtype=jnp.float32)}

  return loss_fn


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  model_def: ModelDef,
  tx: optax.GradientTransformation,
  lr_fn: Callable,
  mean,
  std,
  loss_fn: LossFn,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on the global batch. ``loss_fn(outputs, batch) -> (loss, metrics)``
  is the task's loss (``outputs``: the model's float32 output on the normalized
  ``batch['image']``). Returns the new state and float32 scalar metrics: ``loss``, the task's
  metrics, ``lr`` (used for this update) and ``grad_norm`` (global L2 norm, before weight
  decay)."""
  images = normalize(batch['image'], mean, std)

  def total_loss(params):
    model = model_def.merge(params, state.batch_stats, train=True)
    loss, metrics = loss_fn(model(images).astype(jnp.float32), batch)
    return loss, (metrics, nnx.as_pure(nnx.state(model, nnx.BatchStat)))

  (loss, (task_metrics, batch_stats)), grads = jax.value_and_grad(total_loss, has_aux=True)(
    state.params
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    'loss': loss,
    **task_metrics,
    'lr': jnp.asarray(lr_fn(state.step), jnp.float32),
    'grad_norm': optax.tree.norm(grads).astype(jnp.float32),
  }
  new_state = TrainState(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


def eval_step(
  params, batch_stats, batch: dict[str, jax.Array], *, model_def: ModelDef, mean, std
) -> dict[str, jax.Array]:
  """int32 counts over the real (``mask``) rows of the global batch: ``correct1``, ``correct5``
  and ``count``. BatchNorm uses its running averages."""
  model = model_def.merge(params, batch_stats, train=False)
  logits = model(normalize(batch['image'], mean, std)).astype(jnp.float32)
  mask = batch['mask']
  count = lambda c: jnp.sum(c & mask, dtype=jnp.int32)
  return {
    'correct1': count(_topk_correct(logits, batch['label'], 1)),
    'correct5': count(_topk_correct(logits, batch['label'], 5)),
    'count': jnp.sum(mask, dtype=jnp.int32),
  }


def jit_train_step(
  state_shardings: Any, batch_sharding: NamedSharding, replicated: NamedSharding, **kwargs
) -> Callable:
  """``train_step`` jitted for the mesh: the state keeps ``state_shardings`` and is donated (its
  buffers are reused for the new state), the batch is split on the data axes, metrics are
  replicated; XLA:CPU gets ``hrnet_jax.runtime``'s options. ``kwargs`` are ``train_step``'s
  keyword arguments."""
  return jax.jit(
    functools.partial(train_step, **kwargs),
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
    compiler_options=runtime.compiler_options('train'),
  )


def jit_eval_step(
  params_shardings: Any,
  stats_shardings: Any,
  batch_sharding: NamedSharding,
  replicated: NamedSharding,
  **kwargs,
) -> Callable:
  """``eval_step`` jitted for the mesh; ``kwargs`` are its keyword arguments."""
  return jax.jit(
    functools.partial(eval_step, **kwargs),
    in_shardings=(params_shardings, stats_shardings, batch_sharding),
    out_shardings=replicated,
    compiler_options=runtime.compiler_options('infer'),
  )


def segment_image(
  params,
  batch_stats,
  image: jax.Array,
  label: jax.Array,
  *,
  model_def: ModelDef,
  mean,
  std,
  num_classes: int,
  ignore_index: int,
  mode: str,
  crop_hw: tuple[int, int] | None,
  stride_hw: tuple[int, int] | None,
  scales: tuple[float, ...],
  flip: bool,
) -> tuple[dict[str, jax.Array], jax.Array]:
  """One evaluation image: ``image`` uint8 ``[H, W, 3]`` (after the test resize), ``label``
  uint8 ``[h, w]`` at the original size. The prediction is the argmax of the test-time
  augmented probabilities resized to ``[h, w]`` (``hrnet_jax.inference.segment.tta_probs``: mmseg
  ``EncoderDecoder.predict`` / ``SegTTAModel``). Returns the int32 ``[num_classes]`` areas of
  ``hrnet_jax.metrics.segmentation.intersect_and_union`` and the int32 ``[h, w]`` prediction."""
  model = model_def.merge(params, batch_stats, train=False)
  apply = lambda x: model(x).astype(jnp.float32)
  probs = segment.tta_probs(
    apply,
    normalize(image[None], mean, std),
    num_classes=num_classes,
    out_size_hw=label.shape,
    mode=mode,
    crop_hw=crop_hw,
    stride_hw=stride_hw,
    scales=scales,
    flip=flip,
  )
  pred = jnp.argmax(probs[0], axis=-1).astype(jnp.int32)
  areas = seg_metrics.intersect_and_union(pred, label.astype(jnp.int32), num_classes, ignore_index)
  return areas, pred


def jit_segment_image(**kwargs) -> Callable:
  """``segment_image`` jitted (one compilation per image and label shape; on the device of its
  arguments); ``kwargs`` are its keyword arguments."""
  return jax.jit(
    functools.partial(segment_image, **kwargs), compiler_options=runtime.compiler_options('infer')
  )
