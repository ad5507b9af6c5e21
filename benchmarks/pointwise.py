"""Experimental: 1x1 stride-1 convolutions computed as matrix products (``dot_general``).

A 1x1 conv over NHWC is ``x @ W[0, 0]`` on the channel axis. Written as a conv, XLA:CPU
differentiates it into a convolution whose window is the whole image (the weight gradient) plus
layout transposes; written as a dot, both gradients are plain matrix products. Same parameters
(``kernel`` stays ``[1, 1, Cin, Cout]``), so checkpoints are unaffected. A library version would
pass ``conv_general_dilated=pointwise_conv`` to the 1x1 ``nnx.Conv`` layers in
``hrnet_jax.models.layers.conv2d``.
"""

from __future__ import annotations

import jax
from flax import nnx


def pointwise_conv(
  inputs,
  kernel,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  preferred_element_type=None,
  **_,
):
  """Drop-in for ``lax.conv_general_dilated`` on NHWC input and an HWIO ``[1, 1, I, O]``
  kernel with unit strides, no padding and no grouping (what ``use_dot_for_pointwise`` picks)."""
  return jax.lax.dot_general(
    inputs,
    kernel[0, 0],
    (((inputs.ndim - 1,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def use_dot_for_pointwise(model: nnx.Module) -> int:
  """Makes every 1x1, stride-1, unpadded, ungrouped ``nnx.Conv`` of ``model`` use
  ``pointwise_conv``, in place; returns how many."""
  count = 0
  for _, module in nnx.iter_graph(model):
    if not isinstance(module, nnx.Conv):
      continue
    strides = module.strides if isinstance(module.strides, (tuple, list)) else (module.strides,)
    if (
      tuple(module.kernel_size) == (1, 1)
      and all(s in (None, 1) for s in strides)
      and module.feature_group_count == 1
      and all(tuple(p) == (0, 0) for p in module.padding)
    ):
      module.conv_general_dilated = pointwise_conv
      count += 1
  return count
