"""HRNet-C (classification) in Flax NNX, NHWC, one builder for every variant.

Mirrors ``HighResolutionModule``, ``HighResolutionNet`` and ``HighResolutionNetFeatures`` of timm
``timm/models/hrnet.py`` (itself the official ``lib/models/cls_hrnet.py``). Attribute names equal
the PyTorch ones (``stage2``, ``transition1``, ``fuse_layers``, ``incre_modules``,
``downsamp_modules``, ``final_layer``, ``classifier``), so each parameter path maps to its
official state_dict key by the rules of ``hrnet_jax.convert.layouts.official``.

Compile time. With ``HRNetConfig.scan`` the consecutive residual blocks of a branch that share one
structure, and the consecutive HighResolutionModules of a stage that share one, run as one
``jax.lax.scan`` over their parameters stacked inside the forward pass (``scan_layers``): the
traced and compiled program holds one copy of the repeated body instead of N, while each block
keeps its own parameters and BatchNorm statistics, so the state tree, checkpoints and converter
keys are unchanged.

Input sizes. The official code and timm only run when ``ceil(H / 4) % 8 == 0`` (and likewise W):
there every upsampled branch has exactly its target's size. This port gives the identical result
at those sizes and also runs at any other size >= 32 (225x225, 240x240, 257x193, ...) by resizing
each upsampled fuse map to the exact size of its target branch with nearest-neighbour sampling
(``F.interpolate(size=...)`` semantics, the fix HRNet's own detection repo recommends).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hrnet_jax.models.configs import HRNetConfig, StageConfig
from hrnet_jax.models.layers import (
  BLOCKS,
  Bottleneck,
  ConvBN,
  Precision,
  _fan_in_uniform_bias,
  batch_norm,
  conv2d,
  linear_kernel_init,
  make_layer,
  run_sequential,
)
from hrnet_jax.models.resize import FUSE_UPSAMPLE_MODES, fuse_upsample

HEAD_CHANNELS = (32, 64, 128, 256)  # Bottleneck planes of incre_modules -> 128/256/512/1024
NUM_FEATURES = 2048
STEM_WIDTH = 64
MIN_INPUT_SIZE = 32


class FeatureInfo(list):
  """The feature maps' descriptions, one dict per map (``num_chs``, ``reduction``, ``module``,
  ``index``), with the accessors of timm's ``FeatureInfo`` (``timm/models/_features.py``):
  ``channels()``, ``reduction()``, ``module_name()``, ``get(key)`` give one value per map, or with
  ``idx`` (an int or a list) those of the maps at these positions of the list."""

  def get(self, key: str, idx: int | Sequence[int] | None = None):
    if idx is None:
      return [info[key] for info in self]
    if isinstance(idx, (list, tuple)):
      return [self[i][key] for i in idx]
    return self[idx][key]

  def channels(self, idx: int | Sequence[int] | None = None):
    return self.get('num_chs', idx)

  def reduction(self, idx: int | Sequence[int] | None = None):
    return self.get('reduction', idx)

  def module_name(self, idx: int | Sequence[int] | None = None):
    return self.get('module', idx)


def _trains_batch_stats(layer: nnx.Module) -> bool:
  """True when a BatchNorm inside ``layer`` updates its running statistics (train mode)."""
  return any(
    isinstance(m, nnx.BatchNorm) and not m.use_running_average for _, m in nnx.iter_modules(layer)
  )


def _structure_runs(layers) -> list[tuple[Any, list[nnx.Module], list[nnx.State]]]:
  """Splits ``layers`` into runs of consecutive layers with one structure: equal NNX graph
  definitions (classes, static attributes, variable types) and equal array shapes and dtypes.
  Returns ``(graphdef, layers, states)`` per run."""
  runs = []
  signature = lambda gd, state: (gd, [(a.shape, a.dtype) for a in jax.tree.leaves(state)])
  for layer in layers:
    graphdef, state = nnx.split(layer)
    if runs and signature(graphdef, state) == signature(runs[-1][0], runs[-1][2][0]):
      runs[-1][1].append(layer)
      runs[-1][2].append(state)
    else:
      runs.append((graphdef, [layer], [state]))
  return runs


def scan_layers(layers: Sequence[nnx.Module], x: Any) -> Any:
  """``run_sequential(layers, x)`` with each run of >= 2 consecutive layers of one structure
  (e.g. the residual blocks of a branch after its first, the HighResolutionModules of a stage) as
  one ``jax.lax.scan``, so tracing and compiling see its body once.

  ``x``: any pytree the layers map to one of the same shapes (``[B, H, W, C]``, or a list of
  branch maps for HighResolutionModules). Each layer's state (parameters, BatchNorm statistics)
  is stacked on a new leading axis inside the call and sliced per iteration; in train mode the
  updated BatchNorm statistics are written back to each layer, so the layers keep their own
  variables (same state tree, same values as the unrolled loop up to float rounding). A layer
  class wrapped by ``hrnet_jax.runtime.remat`` keeps its ``jax.checkpoint`` inside the scan body.
  """
  for graphdef, run, states in _structure_runs(layers):
    if len(run) == 1:
      x = run[0](x)
      continue

    def body(carry, state, graphdef=graphdef):
      layer = nnx.merge(graphdef, state)
      return layer(carry), nnx.state(layer, nnx.BatchStat)

    stacked = jax.tree.map(lambda *a: jnp.stack(a), *states)
    x, stats = jax.lax.scan(body, x, stacked)
    if _trains_batch_stats(run[0]):
      for i, layer in enumerate(run):
        nnx.update(layer, jax.tree.map(lambda a: a[i], stats))
  return x


def _run_layers(layers, x, scan: bool):
  return scan_layers(layers, x) if scan else run_sequential(layers, x)


class HighResolutionModule(nnx.Module):
  """Parallel branches of residual blocks, then a full exchange (``fuse_layers``) between them.

  ``fuse_layers[i][j]`` brings branch ``j`` to branch ``i``: ``ConvBN`` (1x1) + upsampling
  (``upsample``: ``'nearest'`` or ``'bilinear'``, see ``hrnet_jax.models.resize.fuse_upsample``) when
  ``j > i``, ``None`` (identity) when ``j == i``, and a list of ``i - j`` stride-2 3x3 ``ConvBN``
  (ReLU on all but the last) when ``j < i``. Output ``i`` is ``ReLU(sum_j ...)``; with
  ``multi_scale_output=False`` only output 0 is built and returned. ``scan``: run the identical
  blocks of each branch through ``scan_layers``.
  """

  def __init__(
    self,
    in_chs: Sequence[int],
    stage: StageConfig,
    *,
    se: bool = False,
    precision: Precision,
    rngs: nnx.Rngs,
    multi_scale_output: bool = True,
    upsample: str = 'nearest',
    scan: bool = False,
  ):
    if upsample not in FUSE_UPSAMPLE_MODES:
      raise ValueError(f'fuse upsampling must be one of {FUSE_UPSAMPLE_MODES}, got {upsample!r}')
    kw = dict(precision=precision, rngs=rngs)
    block_cls = BLOCKS[stage.block]
    n = stage.num_branches
    self.branches = nnx.List(
      [
        make_layer(stage.block, in_chs[b], stage.num_channels[b], stage.num_blocks[b], se=se, **kw)
        for b in range(n)
      ]
    )
    chs = [c * block_cls.expansion for c in stage.num_channels]
    num_out = n if multi_scale_output else 1
    self.out_chs = tuple(chs[:num_out])
    self.upsample = upsample
    self.scan = scan
    fuse_layers = []
    for i in range(num_out):
      row = []
      for j in range(n):
        if j > i:
          row.append(ConvBN(chs[j], chs[i], 1, act=False, **kw))
        elif j == i:
          row.append(None)
        else:
          row.append(
            nnx.List(
              [
                ConvBN(chs[j], chs[i] if k == i - j - 1 else chs[j], 3, 2, act=k < i - j - 1, **kw)
                for k in range(i - j)
              ]
            )
          )
      fuse_layers.append(nnx.List(row))
    self.fuse_layers = nnx.List(fuse_layers)

  def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
    xs = [_run_layers(branch, x, self.scan) for branch, x in zip(self.branches, xs)]
    out = []
    for i, row in enumerate(self.fuse_layers):
      target_hw = xs[i].shape[1:3]
      y = None
      for j, fuse in enumerate(row):  # summed in the official order, j = 0..n-1
        if j == i:
          z = xs[j]
        elif j > i:
          z = fuse_upsample(fuse(xs[j]), 2 ** (j - i), target_hw, self.upsample)
        else:
          z = run_sequential(fuse, xs[j])
        y = z if y is None else y + z
      out.append(jax.nn.relu(y))
    return out


def _transition(
  pre_chs: Sequence[int], cur_chs: Sequence[int], *, precision: Precision, rngs: nnx.Rngs
) -> nnx.List:
  """``_make_transition_layer``: width change on kept branches, a stride-2 conv for new ones."""
  kw = dict(precision=precision, rngs=rngs)
  layers = []
  for i, c in enumerate(cur_chs):
    if i < len(pre_chs):
      layers.append(ConvBN(pre_chs[i], c, 3, act=True, **kw) if pre_chs[i] != c else None)
    else:
      new = i + 1 - len(pre_chs)
      layers.append(
        nnx.List(
          [
            ConvBN(pre_chs[-1], c if k == new - 1 else pre_chs[-1], 3, 2, act=True, **kw)
            for k in range(new)
          ]
        )
      )
  return nnx.List(layers)


def _apply_transition(transition: nnx.List, ys: list[jax.Array]) -> list[jax.Array]:
  out = []
  for i, t in enumerate(transition):
    if isinstance(t, nnx.List):  # a new, lower-resolution branch grows from the last one
      out.append(run_sequential(t, ys[-1]))
    else:
      out.append(ys[i] if t is None else t(ys[i]))
  return out


class HighResolutionNet(nnx.Module):
  """HRNet-C: stem, ``layer1``, stages 2-4 with transitions, and a head.

  Args:
    cfg: the architecture (``hrnet_jax.models.configs.MODEL_CONFIGS``).
    num_classes: classifier outputs; 0 drops the classifier (``model(x)`` is then the pooled
      2048-d embedding).
    head: ``'classification'`` (incre + downsamp + final_layer + pool + classifier), ``'incre'``
      (incre_modules only) or ``''`` (no head), as timm.
    dtype: computation dtype (``jnp.bfloat16`` for mixed precision); ``param_dtype``: storage.
    rngs: ``nnx.Rngs`` for the random init (timm's: kaiming-normal fan-out convs, BN 1/0).

  Calling ``model(x)`` with ``x`` of shape ``[B, H, W, 3]`` (float, normalized, H and W >= 32)
  returns logits ``[B, num_classes]`` (dtype ``dtype``). ``model.train()`` / ``model.eval()``
  switch BatchNorm between batch statistics and running averages.
  """

  def __init__(
    self,
    cfg: HRNetConfig,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    head: str = 'classification',
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if head not in ('classification', 'incre', ''):
      raise ValueError(f"head must be 'classification', 'incre' or '', got {head!r}")
    if not cfg.multi_scale_output and head:
      raise ValueError('multi_scale_output=False (branch 0 only) needs head=""')
    precision = Precision(dtype, param_dtype)
    kw = dict(precision=precision, rngs=rngs)
    self.cfg = cfg
    self.dtype = dtype
    self.in_chans = in_chans
    self.head = head

    self.conv1 = conv2d(in_chans, STEM_WIDTH, 3, 2, **kw)
    self.bn1 = batch_norm(STEM_WIDTH, **kw)
    self.conv2 = conv2d(STEM_WIDTH, 64, 3, 2, **kw)
    self.bn2 = batch_norm(64, **kw)

    s1 = cfg.stage1
    self.layer1 = make_layer(s1.block, 64, s1.num_channels[0], s1.num_blocks[0], se=cfg.se, **kw)
    pre_chs = s1.out_channels
    for s, stage in enumerate(cfg.stages, start=2):
      setattr(self, f'transition{s - 1}', _transition(pre_chs, stage.out_channels, **kw))
      modules = []
      in_chs = stage.out_channels
      for m in range(stage.num_modules):
        last = s == 4 and m == stage.num_modules - 1
        modules.append(
          HighResolutionModule(
            in_chs,
            stage,
            se=cfg.se,
            multi_scale_output=cfg.multi_scale_output or not last,
            upsample=cfg.fuse_upsample,
            scan=cfg.scan,
            **kw,
          )
        )
        in_chs = modules[-1].out_chs
      setattr(self, f'stage{s}', nnx.List(modules))
      pre_chs = in_chs
    self.branch_chs = tuple(pre_chs)

    head_chs = [c * Bottleneck.expansion for c in HEAD_CHANNELS]
    # Unbuilt parts are None but stay data attributes (nnx.data), so a head can be set later.
    self.incre_modules = nnx.data(
      nnx.List(
        [
          make_layer('BOTTLENECK', c, HEAD_CHANNELS[i], 1, se=cfg.se, **kw)
          for i, c in enumerate(pre_chs)
        ]
      )
      if head in ('classification', 'incre')
      else None
    )
    self.downsamp_modules = nnx.data(None)
    self.final_layer = nnx.data(None)
    self.classifier = nnx.data(None)
    self.num_classes = 0
    self.num_features = head_chs[-1] if head == 'incre' else 256
    if head == 'classification':
      self.downsamp_modules = nnx.List(
        [
          ConvBN(head_chs[i], head_chs[i + 1], 3, 2, act=True, bias=cfg.head_conv_bias, **kw)
          for i in range(len(head_chs) - 1)
        ]
      )
      self.final_layer = ConvBN(
        head_chs[-1], NUM_FEATURES, 1, act=True, bias=cfg.head_conv_bias, **kw
      )
      self.num_features = NUM_FEATURES
      self.reset_classifier(num_classes, rngs=rngs)

    # Index 0 is the stem after conv1 (stride 2); 1-4 the branches, through incre when present.
    incre = self.incre_modules is not None
    self.feature_info = FeatureInfo(
      [dict(num_chs=STEM_WIDTH, reduction=2, module='stem', index=0)]
      + [
        dict(
          num_chs=head_chs[i] if incre else c,
          reduction=2 ** (i + 2),
          module=f'stage{i + 1}',
          index=i + 1,
        )
        for i, c in enumerate(pre_chs)
      ]
    )

  def reset_classifier(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
    """Replaces the classifier by a fresh ``Linear(2048, num_classes)`` (0: none), as timm."""
    if self.head != 'classification':
      raise ValueError('only a classification head has a classifier')
    self.num_classes = num_classes
    self.classifier = (
      None
      if num_classes == 0
      else nnx.Linear(
        NUM_FEATURES,
        num_classes,
        kernel_init=linear_kernel_init,
        bias_init=_fan_in_uniform_bias(NUM_FEATURES),
        dtype=self.dtype,
        param_dtype=self.conv1.param_dtype,
        rngs=rngs,
      )
    )

  def _check_input(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.in_chans:
      raise ValueError(
        f'expected input x of shape [B, H, W, {self.in_chans}] (NHWC), got {tuple(x.shape)}'
      )
    if min(x.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(
        f'input height and width must be >= {MIN_INPUT_SIZE}, got {tuple(x.shape[1:3])}'
      )
    return x.astype(self.dtype)

  def stem(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (after conv1/bn1/ReLU: stride 2, 64 ch; after conv2/bn2/ReLU: stride 4, 64 ch)."""
    x = self._check_input(x)
    f0 = jax.nn.relu(self.bn1(self.conv1(x)))
    return f0, jax.nn.relu(self.bn2(self.conv2(f0)))

  def stages(self, x: jax.Array) -> list[jax.Array]:
    """``layer1`` and stages 2-4 on the stride-4 stem output; returns the 4 branches.

    Shapes ``[B, H/4, W/4, C]``, ``[B, H/8, W/8, 2C]``, ``[B, H/16, W/16, 4C]``,
    ``[B, H/32, W/32, 8C]`` (sizes rounded up at each stride-2 conv).
    """
    scan = self.cfg.scan
    ys = [_run_layers(self.layer1, x, scan)]
    for s in (2, 3, 4):
      ys = _apply_transition(getattr(self, f'transition{s - 1}'), ys)
      ys = _run_layers(getattr(self, f'stage{s}'), ys, scan)
    return ys

  def forward_features(self, x: jax.Array) -> jax.Array | list[jax.Array]:
    """``[B, H, W, 3]`` -> ``[B, H/32, W/32, 2048]`` (final_layer output), or the branch list
    when the model has no classification head (timm semantics)."""
    _, x = self.stem(x)
    ys = self.stages(x)
    if self.incre_modules is None or self.downsamp_modules is None:
      return ys
    y = run_sequential(self.incre_modules[0], ys[0])
    for i, down in enumerate(self.downsamp_modules):
      # No ReLU after this sum (official cls_hrnet.py).
      y = run_sequential(self.incre_modules[i + 1], ys[i + 1]) + down(y)
    return self.final_layer(y)

  def forward_head(self, x: jax.Array, pre_logits: bool = False) -> jax.Array:
    """Global average pool ``[B, h, w, 2048] -> [B, 2048]``, then the classifier unless
    ``pre_logits`` (or ``num_classes == 0``)."""
    if isinstance(x, list):
      raise ValueError('forward_head needs the classification head; this model returns branches')
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
    if pre_logits or self.classifier is None:
      return x
    return self.classifier(x)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.forward_head(self.forward_features(x))


def set_scan(model: nnx.Module, scan: bool) -> nnx.Module:
  """Turns the ``scan`` option (``HRNetConfig.scan``) on or off for every HRNet inside ``model``
  (a classifier, backbone or dense model), in place; returns ``model``. Parameters are untouched,
  only how the forward pass is traced changes."""
  for _, m in nnx.iter_modules(model):
    if isinstance(m, HighResolutionNet):
      m.cfg = dataclasses.replace(m.cfg, scan=bool(scan))
    elif isinstance(m, HighResolutionModule):
      m.scan = bool(scan)
  return model


class HighResolutionNetFeatures(HighResolutionNet):
  """HRNet as a multi-resolution backbone (timm ``HighResolutionNetFeatures``).

  ``model(x)`` returns the maps selected by ``out_indices`` from: 0, the stem after conv1
  (``[B, H/2, W/2, 64]``); 1-4, the stage-4 branches at strides 4/8/16/32, passed through
  ``incre_modules`` (64.. channels 128/256/512/1024) when ``feature_location='incre'``, raw
  (C/2C/4C/8C) when ``feature_location=''``.
  """

  def __init__(
    self,
    cfg: HRNetConfig,
    *,
    feature_location: str = 'incre',
    out_indices: Sequence[int] = (0, 1, 2, 3, 4),
    in_chans: int = 3,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if feature_location not in ('incre', ''):
      raise ValueError(f"feature_location must be 'incre' or '', got {feature_location!r}")
    out_indices = tuple(sorted(set(out_indices)))  # returned in index order, as timm
    bad = [i for i in out_indices if not 0 <= i <= 4]
    if bad or not out_indices:
      raise ValueError(f'out_indices must be a non-empty subset of 0..4, got {out_indices}')
    super().__init__(
      cfg,
      num_classes=0,
      in_chans=in_chans,
      head=feature_location,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    self.out_indices = out_indices
    self.feature_info = FeatureInfo(self.feature_info[i] for i in out_indices)

  def forward_features(self, x):
    raise NotImplementedError('a features_only model returns its feature maps from model(x)')

  def __call__(self, x: jax.Array) -> list[jax.Array]:
    f0, x = self.stem(x)
    ys = self.stages(x)
    if self.incre_modules is not None:
      ys = [run_sequential(incre, y) for incre, y in zip(self.incre_modules, ys)]
    feats = [f0] + ys
    return [feats[i] for i in self.out_indices]
