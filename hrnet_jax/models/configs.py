"""Architecture configurations of the HRNet-C classification family, as data.

Mirrors ``cfg_cls`` in timm ``timm/models/hrnet.py`` and the ``MODEL.EXTRA`` sections of the
official ``experiments/cls_hrnet_*.yaml`` (HRNet/HRNet-Image-Classification). Every variant is one
``HRNetConfig``; a single builder (``hrnet_jax.models.hrnet.HighResolutionNet``) serves them all.
"""

from __future__ import annotations

import dataclasses

BASIC = 'BASIC'
BOTTLENECK = 'BOTTLENECK'
BLOCK_EXPANSION = {BASIC: 1, BOTTLENECK: 4}


@dataclasses.dataclass(frozen=True)
class StageConfig:
  """One stage: ``num_modules`` HighResolutionModules of ``len(num_channels)`` branches.

  ``num_blocks[b]`` residual blocks of type ``block`` run on branch ``b`` whose width is
  ``num_channels[b] * expansion``.
  """

  num_modules: int
  block: str
  num_blocks: tuple[int, ...]
  num_channels: tuple[int, ...]

  @property
  def num_branches(self) -> int:
    return len(self.num_channels)

  @property
  def out_channels(self) -> tuple[int, ...]:
    return tuple(c * BLOCK_EXPANSION[self.block] for c in self.num_channels)


@dataclasses.dataclass(frozen=True)
class HRNetConfig:
  """A whole HRNet-C: the stem is fixed (64 channels), ``stage1`` is ``layer1``.

  ``head_conv_bias`` says whether the classification head's ``downsamp_modules`` and
  ``final_layer`` convs carry a bias (official and timm ms/gluon weights: yes; PaddleClas ssld
  and mmpretrain weights: no), as timm's ``head_conv_bias``. ``se`` adds PaddleClas's
  squeeze-and-excitation to every residual block (``SE_HRNet_W*_C``, see
  ``hrnet_jax.models.layers.SqueezeExcitation``).

  Dense-prediction options (``hrnet_jax.models.dense``): ``fuse_upsample`` is how fuse layers upsample a
  lower-resolution branch, ``'nearest'`` (classification, mmpose body, mmdet) or ``'bilinear'``
  (mmseg, HRNet-Semantic-Segmentation); ``multi_scale_output=False`` makes the last stage-4
  module output branch 0 only (HRNetV1 pose models: no ``stage4.{last}.fuse_layers.{1,2,3}``).

  ``scan`` is an execution option, not architecture: run the identical residual blocks of a
  branch and the identical HighResolutionModules of a stage through one ``jax.lax.scan`` each
  (``hrnet_jax.models.hrnet.scan_layers``), for shorter tracing and compilation; parameters, state tree
  and results are those of the unrolled model. Off by default: on XLA:CPU it compiles faster but
  steps slower (docs/benchmarks.md, "Scan").
  """

  stage1: StageConfig
  stage2: StageConfig
  stage3: StageConfig
  stage4: StageConfig
  head_conv_bias: bool = True
  se: bool = False
  fuse_upsample: str = 'nearest'
  multi_scale_output: bool = True
  scan: bool = False

  @property
  def stages(self) -> tuple[StageConfig, StageConfig, StageConfig]:
    return (self.stage2, self.stage3, self.stage4)


def _wide(width: int, head_conv_bias: bool = True, se: bool = False) -> HRNetConfig:
  """W18..W64: the same depth (modules 1/4/3, 4 blocks per branch), branch widths C, 2C, 4C, 8C."""
  c = width
  return HRNetConfig(
    stage1=StageConfig(1, BOTTLENECK, (4,), (64,)),
    stage2=StageConfig(1, BASIC, (4, 4), (c, 2 * c)),
    stage3=StageConfig(4, BASIC, (4, 4, 4), (c, 2 * c, 4 * c)),
    stage4=StageConfig(3, BASIC, (4, 4, 4, 4), (c, 2 * c, 4 * c, 8 * c)),
    head_conv_bias=head_conv_bias,
    se=se,
  )


MODEL_CONFIGS: dict[str, HRNetConfig] = {
  'hrnet_w18_small': HRNetConfig(
    stage1=StageConfig(1, BOTTLENECK, (1,), (32,)),
    stage2=StageConfig(1, BASIC, (2, 2), (16, 32)),
    stage3=StageConfig(1, BASIC, (2, 2, 2), (16, 32, 64)),
    stage4=StageConfig(1, BASIC, (2, 2, 2, 2), (16, 32, 64, 128)),
  ),
  'hrnet_w18_small_v2': HRNetConfig(
    stage1=StageConfig(1, BOTTLENECK, (2,), (64,)),
    stage2=StageConfig(1, BASIC, (2, 2), (18, 36)),
    stage3=StageConfig(3, BASIC, (2, 2, 2), (18, 36, 72)),
    stage4=StageConfig(2, BASIC, (2, 2, 2, 2), (18, 36, 72, 144)),
  ),
  'hrnet_w18': _wide(18),
  'hrnet_w30': _wide(30),
  'hrnet_w32': _wide(32),
  'hrnet_w40': _wide(40),
  'hrnet_w44': _wide(44),
  'hrnet_w48': _wide(48),
  'hrnet_w64': _wide(64),
  # PaddleClas SSLD weights (converted by timm): same architectures, head convs without bias.
  'hrnet_w18_ssld': _wide(18, head_conv_bias=False),
  'hrnet_w48_ssld': _wide(48, head_conv_bias=False),
  # PaddleClas ``ppcls/arch/backbone/legendary_models/hrnet.py``: HRNet_W60_C and the SE-HRNet
  # family (no conv bias anywhere, so no head conv bias), every width PaddleClas defines.
  'hrnet_w60': _wide(60),
  **{
    f'se_hrnet_w{w}': _wide(w, head_conv_bias=False, se=True)
    for w in (18, 30, 32, 40, 44, 48, 60, 64)
  },
}


def get_config(name: str) -> HRNetConfig:
  """Returns the architecture config of ``name``; raises ``ValueError`` naming the valid ones."""
  try:
    return MODEL_CONFIGS[name]
  except KeyError:
    raise ValueError(
      f'unknown HRNet architecture {name!r}; valid names: {", ".join(MODEL_CONFIGS)}'
    ) from None
