"""hrnet-jax: HRNet-C (Wang et al., TPAMI 2019) in JAX/Flax NNX, NHWC.

Public API in timm's terms::

    import hrnet_jax
    model = hrnet_jax.create_model('hrnet_w18.ms_aug_in1k', pretrained=True)  # or a folder
    model.eval()
    logits = model(x)                 # x: [B, H, W, 3] float32 -> [B, 1000]

``create_model`` is ``hrnet_jax.convert.api.create_model`` (names, tags, ``hf-hub:``,
``local-dir:``, ``pretrained=True``: converted once, cached), which builds with
``hrnet_jax.factory.create_model``.
"""

from hrnet_jax.convert.api import create_model, pretrained_folder, push_to_hub, save_for_hub
from hrnet_jax.factory import (
  list_dense_models,
  list_models,
  load_pretrained,
  save_pretrained,
)
from hrnet_jax.models.configs import MODEL_CONFIGS, HRNetConfig, StageConfig, get_config
from hrnet_jax.models.dense import DENSE_CONFIGS, DenseConfig, DenseHRNet
from hrnet_jax.models.hrnet import (
  HighResolutionModule,
  HighResolutionNet,
  HighResolutionNetFeatures,
)
from hrnet_jax.pretrained.state import CheckpointMismatchError
from hrnet_jax.runtime.fold import fold_batchnorm

__all__ = [
  'CheckpointMismatchError',
  'DENSE_CONFIGS',
  'DenseConfig',
  'DenseHRNet',
  'HRNetConfig',
  'HighResolutionModule',
  'HighResolutionNet',
  'HighResolutionNetFeatures',
  'MODEL_CONFIGS',
  'StageConfig',
  'create_model',
  'fold_batchnorm',
  'get_config',
  'list_dense_models',
  'list_models',
  'load_pretrained',
  'pretrained_folder',
  'push_to_hub',
  'save_for_hub',
  'save_pretrained',
]
