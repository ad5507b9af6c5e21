"""Inference-only transform: every BatchNorm folded into the conv before it.

``y = gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta`` becomes ``conv(x, W * s) + b'``
with ``s = gamma / sqrt(var + eps)`` (per output channel) and ``b' = (b - mean) * s + beta``.
Each HRNet BatchNorm directly follows a conv named alike (``conv``/``bn``, ``convN``/``bnN``), so
the pairs are found by name. The folded model has no BatchNorm left and must not be trained.

Its speed-up is in docs/benchmarks.md ("Profile"); its logits equal to the unfolded model's within float32 rounding (tests/models/test_model.py and the
benchmarks' parity gate).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Identity(nnx.Module):
  """Stands in for a BatchNorm whose affine map now lives in the conv."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return x


def _fold_pair(conv: nnx.Conv, bn: nnx.BatchNorm) -> None:
  # float64 on the host so that folding adds no more than one float32 rounding per weight.
  kernel = np.asarray(conv.kernel[...], np.float64)  # [kh, kw, Cin, Cout]
  scale = np.asarray(bn.scale[...], np.float64) / np.sqrt(
    np.asarray(bn.var[...], np.float64) + bn.epsilon
  )
  bias = np.zeros(kernel.shape[-1]) if conv.bias is None else np.asarray(conv.bias[...], np.float64)
  new_bias = (bias - np.asarray(bn.mean[...], np.float64)) * scale + np.asarray(
    bn.bias[...], np.float64
  )
  dtype = conv.kernel[...].dtype
  conv.kernel[...] = jnp.asarray(kernel * scale, dtype)
  if conv.bias is None:
    conv.bias = nnx.Param(jnp.asarray(new_bias, dtype))
    conv.use_bias = True
  else:
    conv.bias[...] = jnp.asarray(new_bias, dtype)


def fold_batchnorm(model: nnx.Module) -> int:
  """Folds, in place, every ``bn*`` BatchNorm of ``model`` into its ``conv*``; returns the count.

  Uses the BatchNorms' running statistics (eval mode), puts ``model`` in eval mode, and leaves
  its input/output contract unchanged (``[B, H, W, 3]`` -> logits or feature maps). Raises
  ``ValueError`` naming the module if a BatchNorm has no conv partner; nothing is folded then.
  """
  pairs = []
  for _, module in nnx.iter_graph(model):
    if not isinstance(module, nnx.Module):
      continue
    for name, value in vars(module).items():
      if isinstance(value, nnx.BatchNorm):
        conv = getattr(module, name.replace('bn', 'conv', 1), None)
        if not isinstance(conv, nnx.Conv):
          raise ValueError(f'{type(module).__name__}.{name}: no conv to fold into')
        pairs.append((module, name, conv, value))
  model.eval()
  for module, name, conv, bn in pairs:
    _fold_pair(conv, bn)
    setattr(module, name, Identity())
  return len(pairs)
