"""The three HRNet representations of the TPAMI paper (Wang et al. 2019, Fig. 4) as NNX necks.

Each neck takes the branch list of an HRNet backbone (``[B, H/4, W/4, C]``, ``[B, H/8, W/8, 2C]``,
``[B, H/16, W/16, 4C]``, ``[B, H/32, W/32, 8C]``) and returns a list of maps:

- ``HRNetV1``: branch 0 only (human pose; deep-high-resolution-net ``pose_hrnet.py``).
- ``HRNetV2``: every branch bilinearly resized to branch 0 and concatenated, ``15C`` channels at
  stride 4 (segmentation; mmseg ``BaseDecodeHead._transform_inputs`` with
  ``input_transform='resize_concat'``, mmpose ``FeatureMapProcessor(concat=True)``).
- ``HRFPN`` (HRNetV2p): HRNetV2, a 1x1 ``reduction_conv``, average pooling to ``num_outs`` levels
  (strides 4, 8, ..., 4 * 2**(num_outs-1)) and a 3x3 ``fpn_convs[i]`` per level (detection;
  mmdet ``mmdet/models/necks/hrfpn.py`` ``HRFPN``). Attribute names are mmdet's.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hrnet_jax.models.layers import Precision, conv2d
from hrnet_jax.models.resize import avg_pool, resize_bilinear


class HRNetV1(nnx.Module):
  """Branch 0: ``[B, H/4, W/4, C]``; no parameters."""

  def __init__(self, in_chs: Sequence[int]):
    self.out_chs = (in_chs[0],)
    self.reductions = (4,)

  def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
    return [xs[0]]


def concat_branches(xs: list[jax.Array]) -> jax.Array:
  """HRNetV2's map: each branch ``F.interpolate(size=branch 0, mode='bilinear',
  align_corners=False)``, concatenated on channels -> ``[B, H/4, W/4, sum(C_i)]``."""
  size = xs[0].shape[1:3]
  return jnp.concatenate([resize_bilinear(x, size) for x in xs], axis=-1)


class HRNetV2(nnx.Module):
  """All branches at stride 4, concatenated: ``[B, H/4, W/4, 15C]``; no parameters."""

  def __init__(self, in_chs: Sequence[int]):
    self.out_chs = (sum(in_chs),)
    self.reductions = (4,)

  def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
    return [concat_branches(xs)]


class HRFPN(nnx.Module):
  """HRNetV2p: a feature pyramid ``[B, H/4 / 2**i, W/4 / 2**i, out_chs]``, ``i < num_outs``.

  ``reduction_conv`` (1x1) and ``fpn_convs[i]`` (3x3, padding 1) carry biases, no norm and no
  activation (mmdet ``ConvModule(norm_cfg=None, act_cfg=None)``); pooling is
  ``F.avg_pool2d(kernel=2**i, stride=2**i)``. mmdet upsamples branch ``i`` with
  ``F.interpolate(scale_factor=2**i)``, which equals the resize to branch 0's size wherever
  mmdet runs (input sizes divisible by 32).
  """

  def __init__(
    self,
    in_chs: Sequence[int],
    out_chs: int = 256,
    num_outs: int = 5,
    *,
    precision: Precision,
    rngs: nnx.Rngs,
  ):
    kw = dict(bias=True, precision=precision, rngs=rngs)
    self.reduction_conv = conv2d(sum(in_chs), out_chs, 1, **kw)
    self.fpn_convs = nnx.List([conv2d(out_chs, out_chs, 3, **kw) for _ in range(num_outs)])
    self.out_chs = (out_chs,) * num_outs
    self.reductions = tuple(4 * 2**i for i in range(num_outs))

  def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
    y = self.reduction_conv(concat_branches(xs))
    return [conv(avg_pool(y, 2**i)) for i, conv in enumerate(self.fpn_convs)]
