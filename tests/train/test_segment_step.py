"""One segmentation train step against mmseg's own: the same converted ``fcn_hr18s`` (random
weights, BatchNorm statistics and biases), the same batch (uint8 images normalized as mmseg's
``SegDataPreProcessor``, labels with ignored pixels), ``EncoderDecoder.loss`` + ``loss.backward()``
+ ``torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4).step()`` (what mmengine's
``OptimWrapper`` does with mmseg's schedule at iteration 0) against ``hrnet_jax.train.step.
train_step`` with the ``segment`` recipe's optimizer and the task's loss.

The updated weights and BatchNorm statistics of both are compared through the converter (the
torch model after its step is converted like any mmseg checkpoint). The loss agrees to 1e-5
relative and the running statistics (forward only; PyTorch's unbiased running variance) to 1e-4.
The weight changes agree to 1% over all tensors together (relative L2) and to 5% of its largest
change in every tensor, beyond two float32 ulps of the weight: the kernel gradients behind
BatchNorm are sums with strong cancellation, which XLA:CPU accumulates in float32 less exactly
than PyTorch (torch float32 is within 4e-5 of float64 here; our worst tensor is ~3% off, the
whole step 0.2%).
"""

import jax
import mm_models
import numpy as np
import torch

from hrnet_jax.pretrained import checkpoint, state
from hrnet_jax.pretrained.cfgs import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hrnet_jax.train import step as step_lib
from hrnet_jax.train import tasks
from hrnet_jax.train import train_state as ts
from hrnet_jax.train.recipes import segment

NUM_CLASSES = 4


def test_one_sgd_step_equals_mmseg(tmp_path):
  reference, folder = mm_models.mmseg_fcn_hr18s(tmp_path / 'before', NUM_CLASSES, seed=31)
  rs = np.random.RandomState(32)
  images = rs.randint(0, 256, (4, 96, 96, 3)).astype(np.uint8)
  labels = rs.randint(0, NUM_CLASSES, (4, 96, 96)).astype(np.uint8)
  labels[rs.rand(4, 96, 96) < 0.2] = 255

  # mmseg: normalized NCHW float input, one OptimWrapper step of its SGD.
  x = (images / 255.0 - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)
  x = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32).copy())
  reference.train()
  optimizer = torch.optim.SGD(reference.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
  ref_loss = reference.loss(x, mm_models.seg_data_samples(labels))['decode.loss_ce']
  ref_loss.backward()
  optimizer.step()
  mm_models.save_and_convert(
    reference, (tmp_path / 'after').mkdir() or tmp_path / 'after', 'fcn', 'mmseg'
  )
  _, before = checkpoint.read_pretrained(folder)
  _, after = checkpoint.read_pretrained(tmp_path / 'after' / 'flax')

  # Ours: the segment recipe with the batch of 2 (lr 0.01 at step 0 of the poly schedule).
  config = segment.get_config()
  config.pretrained = str(folder)
  config.batch_size = config.optimizer.base_batch_size = 4
  model_def, params, stats = ts.split_model(ts.recipe_model(config, NUM_CLASSES))
  tx = ts.create_optimizer(config, steps_per_epoch=1)
  new_state, metrics = jax.jit(
    lambda s, b: step_lib.train_step(
      s,
      b,
      model_def=model_def,
      tx=tx,
      lr_fn=ts.learning_rate_schedule(config, 1),
      mean=tuple(config.input.mean),
      std=tuple(config.input.std),
      loss_fn=tasks.get_task(config).loss_fn(config),
    )
  )(ts.init_state(params, stats, tx), {'image': images, 'label': labels})
  ours = state.model_arrays(model_def.merge(new_state.params, new_state.batch_stats, train=False))

  assert abs(float(metrics['loss']) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss))
  assert float(metrics['lr']) == np.float32(0.01)
  assert ours.keys() == after.keys()
  stats = [k for k in after if k.endswith(('.mean', '.var'))]
  for key in stats:  # forward-only: as exact as the logits
    np.testing.assert_allclose(ours[key], after[key], rtol=1e-4, atol=1e-6, err_msg=key)
  num = den = 0.0
  for key in sorted(set(after) - set(stats)):
    ref_delta = after[key].astype(np.float64) - before[key]
    our_delta = ours[key].astype(np.float64) - before[key]
    ulp = np.spacing(np.abs(after[key]).astype(np.float32))  # the weights are float32
    err = np.maximum(np.abs(our_delta - ref_delta) - 2 * ulp, 0)
    assert err.max() <= 0.05 * np.abs(ref_delta).max(), key
    num, den = num + (err**2).sum(), den + (ref_delta**2).sum()
  assert den > 0 and np.sqrt(num / den) <= 1e-2
