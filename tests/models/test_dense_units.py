"""hrnet_jax.models.resize against PyTorch's own ops at sizes the parity models do not cover
(shrinking, odd factors), and the dense model registry."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import assert_close

import hrnet_jax
from hrnet_jax.models.resize import avg_pool, resize_bilinear


@pytest.mark.parametrize(
  'src,dst',
  [
    ((5, 7), (13, 4)),
    ((26, 36), (25, 35)),
    ((4, 5), (32, 40)),
    ((9, 9), (9, 20)),
    ((1, 3), (2, 7)),
  ],
)
def test_resize_bilinear_equals_interpolate(src, dst):
  x = np.random.RandomState(0).randn(2, *src, 3).astype(np.float32)
  ref = (
    F.interpolate(
      torch.from_numpy(x).permute(0, 3, 1, 2), size=dst, mode='bilinear', align_corners=False
    )
    .permute(0, 2, 3, 1)
    .numpy()
  )
  assert_close(resize_bilinear(jnp.asarray(x), dst), ref, f'{src}->{dst}', relative=1e-6)


@pytest.mark.parametrize('k', [1, 2, 4, 16])
def test_avg_pool_equals_torch(k):
  x = np.random.RandomState(1).randn(1, 32, 40, 2).astype(np.float32)
  ref = F.avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), kernel_size=k, stride=k)
  assert_close(
    avg_pool(jnp.asarray(x), k), ref.permute(0, 2, 3, 1).numpy(), f'k={k}', relative=1e-6
  )


def test_dense_registry():
  assert set(hrnet_jax.list_dense_models()).isdisjoint(hrnet_jax.list_models())
  with pytest.raises(ValueError, match='num_keypoints'):
    hrnet_jax.create_model('hrnet_w32_pose', num_classes=3)
  with pytest.raises(ValueError, match='num_classes'):
    hrnet_jax.create_model('hrnetv2_w18_seg', num_keypoints=3)
  with pytest.raises(ValueError, match='forward_features'):
    hrnet_jax.create_model('hrnetv2_w18_seg', features_only=True)
