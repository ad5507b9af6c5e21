"""Dense-prediction heads of HRNet as NNX modules: per-pixel class logits or keypoint heatmaps.

One module, ``ConvHead``, serves every published layout: ``len(hidden)`` 1x1 ``conv + BN + ReLU``
layers (``convs``) and a 1x1 ``final_layer`` conv with bias. Its parameters map onto
(``hrnet_jax.convert.layouts.dense``):

- mmseg ``FCNHead`` (``fcn_hr18``): ``decode_head.convs.{i}.conv|bn`` (conv without bias) and
  ``decode_head.conv_seg``;
- HRNet-Semantic-Segmentation ``seg_hrnet.py``: ``last_layer.0`` (conv with bias),
  ``last_layer.1`` (BN), ``last_layer.3``;
- mmpose ``HeatmapHead``: ``head.conv_layers.{3i}`` (conv with bias), ``head.conv_layers.{3i+1}``
  (BN), ``head.final_layer``; with no hidden layer (``td-hm_hrnet-w32``) only ``final_layer``, as
  deep-high-resolution-net ``pose_hrnet.py``'s ``final_layer``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hrnet_jax.models.layers import ConvBN, Precision, conv2d, run_sequential


class ConvHead(nnx.Module):
  """``[B, h, w, in_chs]`` -> ``[B, h, w, num_outputs]`` (same stride as its input).

  Args:
    in_chs: input channels (HRNetV2: ``15C``; HRNetV1: ``C``).
    hidden: widths of the ``conv 1x1 + BN + ReLU`` layers before ``final_layer`` (may be empty).
    num_outputs: classes (segmentation) or keypoints (heatmaps).
    conv_bias: whether the hidden convs carry a bias (mmseg: no; official seg repo, mmpose: yes).
    init_std: when set, ``final_layer``'s kernel starts ``normal(0, init_std)`` and its bias 0, as
      mmpose ``HeatmapHead``'s ``init_cfg`` (``Normal`` std 0.001): heatmap targets are mostly 0,
      and PyTorch's default init leaves a pose model stuck predicting all-zero heatmaps.
  """

  def __init__(
    self,
    in_chs: int,
    hidden: Sequence[int],
    num_outputs: int,
    *,
    conv_bias: bool,
    init_std: float | None = None,
    precision: Precision,
    rngs: nnx.Rngs,
  ):
    if num_outputs < 1:
      raise ValueError(f'a dense head needs num_outputs >= 1, got {num_outputs}')
    kw = dict(precision=precision, rngs=rngs)
    layers = []
    for width in hidden:
      layers.append(ConvBN(in_chs, width, 1, act=True, bias=conv_bias, **kw))
      in_chs = width
    self.convs = nnx.List(layers)
    self.final_layer = conv2d(in_chs, num_outputs, 1, bias=True, **kw)
    if init_std is not None:
      kernel, bias = self.final_layer.kernel, self.final_layer.bias
      kernel[...] = init_std * jax.random.normal(rngs.params(), kernel.shape, kernel.dtype)
      bias[...] = jnp.zeros_like(bias[...])
    self.num_outputs = num_outputs

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.final_layer(run_sequential(self.convs, x))
