"""Building blocks of HRNet in Flax NNX, NHWC.

Mirrors ``conv3x3``, ``BasicBlock`` and ``Bottleneck`` of the official
``lib/models/cls_hrnet.py`` (timm: ``timm/models/resnet.py`` blocks). Attribute names equal the
PyTorch module names (``conv1``, ``bn1``, ``downsample``), so a parameter path reads like its
state_dict key; a ``Sequential(conv, bn[, relu])`` of the official code is a ``ConvBN`` whose
``conv``/``bn`` stand for the ``0``/``1`` indices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# PyTorch BatchNorm2d(momentum=0.1) keeps 0.9 of the running statistics; Flax names that decay.
BN_MOMENTUM = 0.9
BN_EPS = 1e-5


def _host_initializer(sample, fallback):
  """An initializer drawing on the host with NumPy, seeded by the JAX key.

  Eager ``jax.random`` compiles one XLA program per parameter shape (about a hundred for HRNet,
  seconds each on a small CPU); NumPy needs none. Under tracing (``jax.jit``, ``nnx.eval_shape``)
  the key has no value, so ``fallback`` draws the same distribution with ``jax.random``.
  """

  def init(key, shape, dtype=jnp.float32):
    if isinstance(key, jax.core.Tracer):
      return fallback(key, shape, dtype)
    seed = np.asarray(jax.random.key_data(key)).ravel()
    return jnp.asarray(sample(np.random.default_rng(seed), shape), dtype)

  return init


def _fan_in(shape) -> int:
  return int(np.prod(shape[:-1]))


def _fan_out(shape) -> int:
  return int(np.prod(shape[:-2])) * shape[-1]


# timm init_weights: kaiming_normal_(mode='fan_out', nonlinearity='relu') for every conv.
conv_kernel_init = _host_initializer(
  lambda rng, shape: rng.standard_normal(shape, np.float32) * math.sqrt(2.0 / _fan_out(shape)),
  nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
)
# PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
linear_kernel_init = _host_initializer(
  lambda rng, shape: rng.uniform(-1, 1, shape).astype(np.float32) / math.sqrt(_fan_in(shape)),
  nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform'),
)


def _fan_in_uniform_bias(fan_in: int):
  """PyTorch's default conv / Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return _host_initializer(
    lambda rng, shape: rng.uniform(-bound, bound, shape).astype(np.float32),
    lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound),
  )


@dataclasses.dataclass(frozen=True)
class Precision:
  """Computation dtype and parameter dtype of every layer (``dtype=bf16`` keeps f32 params)."""

  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32


def conv2d(
  in_chs: int,
  out_chs: int,
  kernel_size: int,
  stride: int = 1,
  *,
  bias: bool = False,
  precision: Precision,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """PyTorch ``Conv2d(k, stride, padding=k // 2)``: explicit symmetric padding, never 'SAME'.

  'SAME' pads a stride-2 3x3 conv (0, 1) on even inputs where PyTorch pads (1, 1).
  """
  pad = kernel_size // 2
  return nnx.Conv(
    in_chs,
    out_chs,
    kernel_size=(kernel_size, kernel_size),
    strides=stride,
    padding=((pad, pad), (pad, pad)),
    use_bias=bias,
    kernel_init=conv_kernel_init,
    bias_init=_fan_in_uniform_bias(in_chs * kernel_size * kernel_size),
    dtype=precision.dtype,
    param_dtype=precision.param_dtype,
    rngs=rngs,
  )


class BatchNorm(nnx.BatchNorm):
  """``nnx.BatchNorm`` whose running variance follows PyTorch's ``BatchNorm2d``: in training the
  batch is normalized by its biased variance, but the running average takes the unbiased one
  (``x n / (n - 1)``, ``n`` = elements per channel). Same variables as ``nnx.BatchNorm``."""

  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    if mask is not None:
      raise ValueError('BatchNorm: masks are not supported')
    train = not (self.use_running_average if use_running_average is None else use_running_average)
    old = self.var[...]
    out = super().__call__(x, use_running_average=not train)
    n = x.size // x.shape[-1]
    if train and n > 1:
      # new = m old + (1 - m) v; PyTorch's update adds (1 - m) v / (n - 1) = (new - m old) / (n - 1)
      new = self.var[...]
      self.var[...] = new + (new - self.momentum * old) / (n - 1)
    return out


def batch_norm(channels: int, *, precision: Precision, rngs: nnx.Rngs) -> BatchNorm:
  """PyTorch ``BatchNorm2d(channels, momentum=0.1, eps=1e-5)``."""
  return BatchNorm(
    channels,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPS,
    dtype=precision.dtype,
    param_dtype=precision.param_dtype,
    rngs=rngs,
  )


class ConvBN(nnx.Module):
  """``Sequential(Conv2d, BatchNorm2d[, ReLU])``; ``conv``/``bn`` are the torch indices 0/1."""

  def __init__(
    self,
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    stride: int = 1,
    *,
    act: bool,
    bias: bool = False,
    precision: Precision,
    rngs: nnx.Rngs,
  ):
    self.conv = conv2d(
      in_chs, out_chs, kernel_size, stride, bias=bias, precision=precision, rngs=rngs
    )
    self.bn = batch_norm(out_chs, precision=precision, rngs=rngs)
    self.act = act

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.bn(self.conv(x))
    return jax.nn.relu(x) if self.act else x


class SqueezeExcitation(nnx.Module):
  """PaddleClas ``SELayer`` (``ppcls/arch/backbone/legendary_models/hrnet.py``), NHWC.

  ``x [B, H, W, C] -> x * sigmoid(fc_excitation(relu(fc_squeeze(mean_HW(x)))))`` with
  ``Linear(C, int(C / 16))`` and ``Linear(int(C / 16), C)``, both with bias: no rounding to a
  multiple and no minimum width (timm's ``SEModule`` differs on both).
  """

  def __init__(self, channels: int, *, precision: Precision, rngs: nnx.Rngs):
    squeezed = int(channels / 16)
    linear = lambda i, o: nnx.Linear(
      i,
      o,
      kernel_init=linear_kernel_init,
      bias_init=nnx.initializers.zeros_init(),
      dtype=precision.dtype,
      param_dtype=precision.param_dtype,
      rngs=rngs,
    )
    self.fc_squeeze = linear(channels, squeezed)
    self.fc_excitation = linear(squeezed, channels)

  def __call__(self, x: jax.Array) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
    s = jax.nn.sigmoid(self.fc_excitation(jax.nn.relu(self.fc_squeeze(s))))
    return x * s[:, None, None, :]


def _maybe_se(se: bool, channels: int, **kw) -> SqueezeExcitation | None:
  return SqueezeExcitation(channels, **kw) if se else None


class BasicBlock(nnx.Module):
  """``conv3x3-BN-ReLU-conv3x3-BN[-SE] + shortcut, ReLU`` (expansion 1)."""

  expansion = 1

  def __init__(
    self,
    in_chs: int,
    planes: int,
    stride: int = 1,
    *,
    se: bool = False,
    precision: Precision,
    rngs: nnx.Rngs,
  ):
    kw = dict(precision=precision, rngs=rngs)
    out_chs = planes * self.expansion
    self.conv1 = conv2d(in_chs, planes, 3, stride, **kw)
    self.bn1 = batch_norm(planes, **kw)
    self.conv2 = conv2d(planes, planes, 3, **kw)
    self.bn2 = batch_norm(planes, **kw)
    self.downsample = (
      ConvBN(in_chs, out_chs, 1, stride, act=False, **kw)
      if stride != 1 or in_chs != out_chs
      else None
    )
    self.se = _maybe_se(se, out_chs, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.se is not None:
      y = self.se(y)
    return jax.nn.relu(y + shortcut)


class Bottleneck(nnx.Module):
  """``1x1-BN-ReLU-3x3(stride)-BN-ReLU-1x1(4*planes)-BN[-SE] + shortcut, ReLU`` (expansion 4)."""

  expansion = 4

  def __init__(
    self,
    in_chs: int,
    planes: int,
    stride: int = 1,
    *,
    se: bool = False,
    precision: Precision,
    rngs: nnx.Rngs,
  ):
    kw = dict(precision=precision, rngs=rngs)
    out_chs = planes * self.expansion
    self.conv1 = conv2d(in_chs, planes, 1, **kw)
    self.bn1 = batch_norm(planes, **kw)
    self.conv2 = conv2d(planes, planes, 3, stride, **kw)
    self.bn2 = batch_norm(planes, **kw)
    self.conv3 = conv2d(planes, out_chs, 1, **kw)
    self.bn3 = batch_norm(out_chs, **kw)
    self.downsample = (
      ConvBN(in_chs, out_chs, 1, stride, act=False, **kw)
      if stride != 1 or in_chs != out_chs
      else None
    )
    self.se = _maybe_se(se, out_chs, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.se is not None:
      y = self.se(y)
    return jax.nn.relu(y + shortcut)


BLOCKS = {'BASIC': BasicBlock, 'BOTTLENECK': Bottleneck}


def make_layer(
  block: str,
  in_chs: int,
  planes: int,
  num_blocks: int,
  *,
  se: bool = False,
  precision: Precision,
  rngs: nnx.Rngs,
) -> nnx.List:
  """``_make_layer``: ``num_blocks`` blocks; the first adapts the width with a 1x1 shortcut."""
  block_cls = BLOCKS[block]
  layers = []
  for _ in range(num_blocks):
    layers.append(block_cls(in_chs, planes, se=se, precision=precision, rngs=rngs))
    in_chs = planes * block_cls.expansion
  return nnx.List(layers)


def run_sequential(layers, x: jax.Array) -> jax.Array:
  for layer in layers:
    x = layer(x)
  return x


def _nearest_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
  in_size = x.shape[axis]
  if out_size == in_size:
    return x
  if out_size % in_size == 0:
    # Exact integer factor: what nn.Upsample(scale_factor=2**k, mode='nearest') computes.
    return jnp.repeat(x, out_size // in_size, axis=axis)
  # Any other size: PyTorch F.interpolate(size=..., mode='nearest'), src = floor(dst * in / out).
  index = (jnp.arange(out_size) * in_size) // out_size
  return jnp.take(x, index, axis=axis)


def upsample_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour resize of ``x [B, H, W, C]`` to ``size = (H', W')``.

  Equals ``nn.Upsample(scale_factor, mode='nearest')`` whenever ``H' = H * scale`` (every input
  size the official code accepts), and ``F.interpolate(size=size, mode='nearest')`` otherwise.
  """
  x = _nearest_axis(x, 1, size[0])
  return _nearest_axis(x, 2, size[1])
