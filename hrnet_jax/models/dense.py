"""HRNet for dense prediction: segmentation, pose and detection-pyramid models, one builder.

A ``DenseHRNet`` is an HRNet backbone (``hrnet_jax.models.hrnet.HighResolutionNet`` with no
classification head, options ``fuse_upsample`` / ``multi_scale_output`` from its config), one of the
representation necks of ``hrnet_jax.models.necks`` (HRNetV1 / HRNetV2 / HRNetV2p) and, for segmentation
and pose, a ``hrnet_jax.models.heads.ConvHead``. Every variant is one ``DenseConfig`` of
``DENSE_CONFIGS``; the model mirrors:

- ``hrnetv2_*_seg``: mmseg ``fcn_hr18s`` / ``fcn_hr18`` / ``fcn_hr48``
  (``configs/_base_/models/fcn_hr18.py``: ``EncoderDecoder``, bilinear fuse, ``FCNHead`` on the
  ``resize_concat`` of the four branches) and HRNet-Semantic-Segmentation ``seg_hrnet.py``
  (``last_layer``; ``head_conv_bias=True``);
- ``hrnet_w32_pose`` / ``hrnet_w48_pose``: mmpose ``td-hm_hrnet-w32/w48_8xb64-210e_coco-256x192``
  and deep-high-resolution-net ``pose_hrnet.py`` (nearest fuse, last module branch 0 only,
  ``final_layer`` 1x1 -> 17 COCO heatmaps); ``hrnet_w18_small_pose`` the same on the
  ``hrnet_w18_small`` backbone (no published weights: small embedded runs and tests);
- ``hrnetv2_w18_face``: mmpose ``td-hm_hrnetv2-w18_8xb64-60e_wflw-256x256`` (bilinear fuse,
  HRNetV2 concat, ``conv 1x1 (bias) + BN + ReLU``, ``final_layer`` -> 98 WFLW heatmaps);
- ``hrnetv2p_*``: the backbone and ``HRFPN`` neck of mmdet ``faster-rcnn_hrnetv2p-w18/w32/w40``
  (five 256-channel maps; the detector heads need compiled ops and are not part of this library).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from hrnet_jax.models.configs import get_config
from hrnet_jax.models.heads import ConvHead
from hrnet_jax.models.hrnet import HighResolutionNet
from hrnet_jax.models.layers import Precision
from hrnet_jax.models.necks import HRFPN, HRNetV1, HRNetV2

TASKS = ('segment', 'pose', 'detect')
REPRESENTATIONS = ('v1', 'v2', 'v2p')
OUTPUT_NAME = {'segment': 'num_classes', 'pose': 'num_keypoints'}


@dataclasses.dataclass(frozen=True)
class DenseConfig:
  """One dense model, as data.

  Attributes:
    backbone: the classification arch whose stem and stages it uses (``'hrnet_w18'``).
    task: ``'segment'`` (logits), ``'pose'`` (heatmaps) or ``'detect'`` (feature pyramid).
    representation: ``'v1'`` (branch 0), ``'v2'`` (concat) or ``'v2p'`` (HRFPN).
    fuse_upsample: ``'nearest'`` or ``'bilinear'`` upsampling in the backbone's fuse layers.
    head_convs: hidden ``conv 1x1 + BN + ReLU`` layers of the head, each as wide as its input.
    head_conv_bias: whether those convs carry a bias.
    num_outputs: default classes / keypoints (0 for ``'detect'``).
    fpn_channels, fpn_levels: HRFPN width and number of levels.
    input_size: ``(H, W)`` of the published training crops (preprocessing default).
  """

  backbone: str
  task: str
  representation: str
  fuse_upsample: str
  head_convs: int = 0
  head_conv_bias: bool = False
  num_outputs: int = 0
  fpn_channels: int = 256
  fpn_levels: int = 5
  input_size: tuple[int, int] = (512, 1024)


def _seg(backbone: str) -> DenseConfig:
  return DenseConfig(
    backbone, 'segment', 'v2', 'bilinear', head_convs=1, num_outputs=19, input_size=(512, 1024)
  )


def _pose(backbone: str) -> DenseConfig:
  return DenseConfig(backbone, 'pose', 'v1', 'nearest', num_outputs=17, input_size=(256, 192))


def _pyramid(backbone: str) -> DenseConfig:
  return DenseConfig(backbone, 'detect', 'v2p', 'nearest', input_size=(800, 1333))


HEATMAP_INIT_STD = 0.001  # mmpose HeatmapHead init_cfg Normal(std=0.001)

DENSE_CONFIGS: dict[str, DenseConfig] = {
  'hrnetv2_w18_small_seg': _seg('hrnet_w18_small_v2'),
  'hrnetv2_w18_seg': _seg('hrnet_w18'),
  'hrnetv2_w48_seg': _seg('hrnet_w48'),
  'hrnet_w18_small_pose': _pose('hrnet_w18_small'),
  'hrnet_w32_pose': _pose('hrnet_w32'),
  'hrnet_w48_pose': _pose('hrnet_w48'),
  'hrnetv2_w18_face': DenseConfig(
    'hrnet_w18',
    'pose',
    'v2',
    'bilinear',
    head_convs=1,
    head_conv_bias=True,
    num_outputs=98,
    input_size=(256, 256),
  ),
  'hrnetv2p_w18': _pyramid('hrnet_w18'),
  'hrnetv2p_w32': _pyramid('hrnet_w32'),
  'hrnetv2p_w40': _pyramid('hrnet_w40'),
}


def get_dense_config(name: str) -> DenseConfig:
  """``DenseConfig`` of ``name``; ``ValueError`` naming the valid ones."""
  try:
    return DENSE_CONFIGS[name]
  except KeyError:
    raise ValueError(
      f'unknown dense HRNet {name!r}; valid names: {", ".join(DENSE_CONFIGS)}'
    ) from None


class DenseHRNet(nnx.Module):
  """HRNet backbone + representation neck (+ head) for dense prediction, NHWC.

  ``model(x)`` with ``x [B, H, W, 3]`` (float, normalized, H and W >= 32) returns

  - ``'segment'``: class logits ``[B, ceil(H/4), ceil(W/4), num_classes]`` at stride 4 (mmseg
    ``EncoderDecoder(mode='tensor')``; ``predict`` resizes them to the input);
  - ``'pose'``: heatmaps ``[B, ceil(H/4), ceil(W/4), num_keypoints]`` at stride 4;
  - ``'detect'``: five maps ``[B, H/4 / 2**i, W/4 / 2**i, 256]``, strides 4, 8, 16, 32, 64.

  ``forward_features(x)`` returns the neck's maps (``feature_info`` gives their channels and
  strides): HRNetV1 ``[B, H/4, W/4, C]``, HRNetV2 ``[B, H/4, W/4, 15C]``, HRNetV2p as above.
  Any input size >= 32 runs; where the upstream code runs, the result is the upstream one.
  """

  def __init__(
    self,
    cfg: DenseConfig,
    *,
    num_outputs: int | None = None,
    head_conv_bias: bool | None = None,
    in_chans: int = 3,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if cfg.task not in TASKS or cfg.representation not in REPRESENTATIONS:
      raise ValueError(f'bad dense config {cfg}')
    precision = Precision(dtype, param_dtype)
    backbone_cfg = dataclasses.replace(
      get_config(cfg.backbone),
      fuse_upsample=cfg.fuse_upsample,
      multi_scale_output=cfg.representation != 'v1',
    )
    self.cfg = cfg
    self.task = cfg.task
    self.backbone = HighResolutionNet(
      backbone_cfg,
      num_classes=0,
      in_chans=in_chans,
      head='',
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    branch_chs = self.backbone.branch_chs
    if cfg.representation == 'v1':
      self.neck = HRNetV1(branch_chs)
    elif cfg.representation == 'v2':
      self.neck = HRNetV2(branch_chs)
    else:
      self.neck = HRFPN(
        branch_chs, cfg.fpn_channels, cfg.fpn_levels, precision=precision, rngs=rngs
      )
    self.feature_info = [
      dict(num_chs=c, reduction=r, module='neck', index=i)
      for i, (c, r) in enumerate(zip(self.neck.out_chs, self.neck.reductions))
    ]
    self.head_conv_bias = cfg.head_conv_bias if head_conv_bias is None else bool(head_conv_bias)
    self.num_outputs = 0
    self.head = nnx.data(None)
    if cfg.task != 'detect':
      self.num_outputs = cfg.num_outputs if num_outputs is None else int(num_outputs)
      in_chs = self.neck.out_chs[0]
      self.head = ConvHead(
        in_chs,
        (in_chs,) * cfg.head_convs,
        self.num_outputs,
        conv_bias=self.head_conv_bias,
        init_std=HEATMAP_INIT_STD if cfg.task == 'pose' else None,
        precision=precision,
        rngs=rngs,
      )

  def forward_features(self, x: jax.Array) -> list[jax.Array]:
    """The neck's maps (see ``feature_info``)."""
    _, x = self.backbone.stem(x)
    return self.neck(self.backbone.stages(x))

  def __call__(self, x: jax.Array) -> jax.Array | list[jax.Array]:
    feats = self.forward_features(x)
    return feats if self.head is None else self.head(feats[0])
