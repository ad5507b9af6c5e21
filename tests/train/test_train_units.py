"""Fast in-process tests of the training modules: configs, schedule, optimizer (against
torch.optim.SGD), digits input order / resume / sharding across processes, mesh rules,
multi-host detection, checkpoint fallback."""

import logging
import os

import ml_collections  # noqa: F401  (the train extra; a missing install must fail, not skip)
import numpy as np
import pytest

from hrnet_jax.train import checkpointing, distributed  # noqa: E402
from hrnet_jax.train import data as input_pipeline
from hrnet_jax.train import mesh as mesh_lib
from hrnet_jax.train import train_state as ts  # noqa: E402
from hrnet_jax.train.data import arrays  # noqa: E402
from hrnet_jax.train.recipes import (  # noqa: E402
  base,
  digits,
  finetune,
  imagenet_cosine,
  imagenet_official,
  seg_digit_scenes,
)


@pytest.mark.parametrize('module', [base, digits, finetune, imagenet_cosine, imagenet_official])
def test_configs_load(module):
  config = module.get_config()
  assert config.batch_size > 0 and config.optimizer.schedule in ('step', 'cosine')


def test_official_recipe_values():
  c = imagenet_official.get_config()
  opt = c.optimizer
  assert (opt.base_lr, opt.base_batch_size, opt.momentum) == (0.05, 128, 0.9)
  assert c.optimizer.nesterov and c.optimizer.weight_decay == 1e-4
  assert c.optimizer.weight_decay_on == 'all' and c.num_epochs == 100
  assert tuple(c.optimizer.decay_epochs) == (30, 60, 90) and c.input.image_size == 224
  assert int(224 / c.input.crop_pct) == 256
  cos = imagenet_cosine.get_config()
  assert cos.dtype == 'bfloat16' and cos.label_smoothing == 0.1
  assert cos.optimizer.schedule == 'cosine'


def test_step_schedule_scales_with_batch_and_decays_at_epochs():
  c = imagenet_official.get_config()
  c.batch_size = 256
  lr = ts.learning_rate_schedule(c, steps_per_epoch=10)
  np.testing.assert_allclose(
    [float(lr(s)) for s in (0, 299, 300, 599, 600, 900, 999)],
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001],
    rtol=1e-6,
  )


def test_cosine_schedule_warms_up_then_decays():
  c = imagenet_cosine.get_config()
  lr = ts.learning_rate_schedule(c, steps_per_epoch=10)
  peak = 0.05 * 1024 / 128
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(50)), peak, rtol=1e-6)
  assert float(lr(999)) < 1e-3 * peak


def test_warmup_steps_ramp_the_poly_schedule_and_are_refused_with_cosine():
  """mmengine's LinearLR(start_factor=f, end=w) x PolyLR: factor f at step 0, 1 at step w - 1."""
  c = seg_digit_scenes.get_config()
  c.num_steps, c.optimizer.warmup_steps, c.optimizer.warmup_factor = 100, 11, 0.1
  lr = ts.learning_rate_schedule(c, steps_per_epoch=10)
  c.optimizer.warmup_steps = 0
  poly = ts.learning_rate_schedule(c, steps_per_epoch=10)
  for s, f in ((0, 0.1), (5, 0.55), (10, 1.0), (50, 1.0)):
    np.testing.assert_allclose(float(lr(s)), f * float(poly(s)), rtol=1e-6)
  c = imagenet_cosine.get_config()
  c.optimizer.warmup_steps = 5
  with pytest.raises(ValueError, match='warmup_epochs'):
    ts.learning_rate_schedule(c, 10)


@pytest.mark.parametrize('on', ['all', 'kernels'])
def test_optimizer_matches_torch_sgd_nesterov(on):
  """Coupled weight decay + Nesterov momentum, step for step, as torch.optim.SGD's documented
  update: g += wd * p; b = mu * b + g (b = g at the first step); p -= lr * (g + mu * b)."""
  import jax.numpy as jnp
  import optax

  c = imagenet_official.get_config()
  c.optimizer.weight_decay_on = on
  tx = ts.create_optimizer(c, steps_per_epoch=1000)
  rng = np.random.default_rng(0)
  params = {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=(4,))}
  wd = {'kernel': 1e-4, 'bias': 1e-4 if on == 'all' else 0.0}
  ref, buf = dict(params), {}
  p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  state = tx.init(p)
  for _ in range(4):
    g = {k: rng.normal(size=v.shape) for k, v in params.items()}
    updates, state = tx.update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()}, state, p)
    p = optax.apply_updates(p, updates)
    for k in ref:
      d = g[k] + wd[k] * ref[k]
      buf[k] = d if k not in buf else 0.9 * buf[k] + d
      ref[k] = ref[k] - 0.05 * (d + 0.9 * buf[k])
  for k in params:
    np.testing.assert_allclose(np.asarray(p[k]), ref[k], rtol=1e-5, atol=1e-6)


def test_bad_config_values_name_the_field():
  c = digits.get_config()
  c.optimizer.schedule = 'linear'
  with pytest.raises(ValueError, match='config.optimizer.schedule'):
    ts.learning_rate_schedule(c, 10)
  c = digits.get_config()
  c.dtype = 'float16'
  with pytest.raises(ValueError, match='config.dtype'):
    ts.parse_dtype(c.dtype)
  c = digits.get_config()
  c.batch_size = 30
  with pytest.raises(ValueError, match='config.batch_size=30'):
    input_pipeline.create_input(c, process_index=0, process_count=4)
  c = finetune.get_config()
  with pytest.raises(ValueError, match='--config.pretrained'):
    ts.recipe_model(c, 10)


# ------------------------------------------------------------------------------- digits input


@pytest.fixture(scope='module')
def digits_config():
  c = digits.get_config()
  c.batch_size, c.eval_batch_size = 64, 96
  return c


def _digits(config, pi=0, pc=1):
  return input_pipeline.create_input(config, process_index=pi, process_count=pc)


def test_digits_dataset(digits_config):
  data = _digits(digits_config)
  assert (data.info.num_train, data.info.num_eval, data.info.num_classes) == (1437, 360, 10)
  batch = next(data.train_batches())
  assert batch['image'].shape == (64, 32, 32, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].dtype == np.int32 and set(batch['label']) <= set(range(10))
  assert data.steps_per_epoch == 1437 // 64


def test_digits_order_is_deterministic_resumable_and_process_invariant(digits_config):
  data = _digits(digits_config)
  it = data.train_batches(0)
  stream = [next(it) for _ in range(data.steps_per_epoch + 3)]  # crosses an epoch boundary
  again = data.train_batches(0)
  for b in stream:
    np.testing.assert_array_equal(next(again)['image'], b['image'])
  resumed = data.train_batches(data.steps_per_epoch - 2)
  for b in stream[data.steps_per_epoch - 2 :]:
    np.testing.assert_array_equal(next(resumed)['label'], b['label'])
  epoch0 = np.concatenate([b['label'] for b in stream[: data.steps_per_epoch]])
  epoch1 = np.concatenate([b['label'] for b in stream[data.steps_per_epoch :]])
  assert not np.array_equal(epoch0[: len(epoch1)], epoch1)  # reshuffled each epoch
  # Two processes read disjoint halves whose union is the one-process global batch.
  halves = [next(_digits(digits_config, pi, 2).train_batches(5)) for pi in (0, 1)]
  whole = stream[5]
  key = lambda b: sorted(map(bytes, b['image']))
  assert key({'image': np.concatenate([h['image'] for h in halves])}) == key(whole)


@pytest.mark.parametrize('pc', [1, 2, 3])
def test_digits_eval_counts_each_example_once(digits_config, pc):
  config = digits_config.copy_and_resolve_references()
  config.batch_size = 60
  config.eval_batch_size = 42  # a multiple of 1, 2 and 3 that does not divide the 360 examples
  seen, batches = [], set()
  for pi in range(pc):
    data = _digits(config, pi, pc)
    n = 0
    for b in data.eval_batches():
      assert b['image'].shape[0] == config.eval_batch_size // pc
      seen.extend(map(bytes, b['image'][b['mask']]))
      assert not b['image'][~b['mask']].any()  # padding is zeros
      n += 1
    batches.add(n)
  assert len(batches) == 1  # every process runs the same number of batches
  assert len(seen) == 360
  _, (images, _), _ = arrays.load_digits(32)
  assert sorted(seen) == sorted(map(bytes, images))


# ------------------------------------------------------------------------------ mesh, hosts


def test_fsdp_leaf_sharding_rule():
  import jax

  mesh = mesh_lib.create_mesh(1, devices=jax.devices()[:1])
  assert mesh_lib.leaf_sharding(mesh, (3, 3, 64, 128)).spec == jax.sharding.PartitionSpec()
  with pytest.raises(ValueError, match='config.mesh.fsdp=3'):
    mesh_lib.create_mesh(3, devices=jax.devices()[:1] * 2)


@pytest.mark.parametrize(
  'env,expected',
  [
    ({}, False),
    ({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '1'}, False),
    ({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '4'}, True),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'localhost'}, False),
    ({'TPU_WORKER_HOSTNAMES': 'h0,h1,h2,h3'}, True),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, True),
  ],
)
def test_environment_detection(env, expected):
  assert distributed.environment_wants_distributed(env) is expected


def test_explicit_coordinator_needs_all_flags():
  with pytest.raises(ValueError, match='--num_processes'):
    distributed.maybe_initialize(coordinator_address='localhost:1234')


# ------------------------------------------------------------------------------ checkpoints


def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, caplog):
  import jax

  tree = {'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'step': np.int32(0)}
  ckpts = checkpointing.Checkpoints(tmp_path, keep=3, async_save=False)
  for step in (1, 2):
    ckpts.save(step, {'w': tree['w'] + step, 'step': np.int32(step)})
  ckpts.close()
  for root, _, files in os.walk(tmp_path / 'checkpoints' / '2' / 'default'):
    for f in files:  # a damaged latest checkpoint: every file cut to a third
      path = os.path.join(root, f)
      os.truncate(path, os.path.getsize(path) // 3)
  half_written = tmp_path / 'checkpoints' / '3.orbax-checkpoint-tmp'  # a save killed midway
  half_written.mkdir()
  (half_written / '_CHECKPOINT_METADATA').write_text('{')
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)
  with caplog.at_level(logging.WARNING):
    state, step = checkpointing.Checkpoints(tmp_path, async_save=False).restore(abstract)
  assert step == 1
  np.testing.assert_array_equal(state['w'], tree['w'] + 1)
  assert any('checkpoints/2 cannot be read' in r.getMessage() for r in caplog.records)
  assert any('incomplete save of step 3' in r.getMessage() for r in caplog.records)
  names = os.listdir(tmp_path / 'checkpoints')  # the damaged one moved aside, not deleted
  assert '2' not in names and [n for n in names if n.startswith('corrupt-2-')], names


def test_no_readable_checkpoint_is_an_error(tmp_path):
  import jax

  ckpts = checkpointing.Checkpoints(tmp_path, async_save=False)
  ckpts.save(1, {'w': np.ones(3, np.float32)})
  ckpts.close()
  abstract = {'w': jax.ShapeDtypeStruct((4,), np.float32)}  # another model: unusable
  with pytest.raises(checkpointing.ConfigMismatch, match='does not match the model'):
    checkpointing.Checkpoints(tmp_path).restore(abstract)
  for root, _, files in os.walk(tmp_path / 'checkpoints' / '1' / 'default'):
    for f in files:  # damaged: an error, and nothing is moved
      os.truncate(os.path.join(root, f), 0)
  with pytest.raises(ValueError, match='none of the 1 checkpoints.*nothing was moved'):
    checkpointing.Checkpoints(tmp_path).restore({'w': jax.ShapeDtypeStruct((3,), np.float32)})
  assert os.listdir(tmp_path / 'checkpoints') == ['1']


def test_keeps_latest_n_plus_best(tmp_path):
  ckpts = checkpointing.Checkpoints(tmp_path, keep=2, async_save=False)
  for step, top1 in ((1, 0.5), (2, 0.9), (3, None), (4, 0.7), (5, None)):
    ckpts.save(
      step,
      {'w': np.full(2, step, np.float32)},
      None if top1 is None else {'top1': top1, 'top5': 1.0},
    )
  assert ckpts.steps() == [2, 4, 5] and ckpts.best() == (2, 0.9)
  ckpts.close()


def test_bf16_step_keeps_float32_state():
  """bf16 compute; params, BN statistics, optimizer state and loss stay float32 (traced only)."""
  import jax
  import jax.numpy as jnp

  from hrnet_jax.train import step as step_lib

  c = digits.get_config()
  c.dtype = 'bfloat16'
  model_def, params, stats = ts.split_model(ts.recipe_model(c, 10))
  tx = ts.create_optimizer(c, 10)
  state = ts.init_state(params, stats, tx)
  batch = {
    'image': jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.uint8),
    'label': jax.ShapeDtypeStruct((4,), jnp.int32),
  }
  new_state, metrics = jax.eval_shape(
    lambda s, b: step_lib.train_step(
      s,
      b,
      model_def=model_def,
      tx=tx,
      lr_fn=ts.learning_rate_schedule(c, 10),
      mean=(0.5,) * 3,
      std=(0.5,) * 3,
      loss_fn=step_lib.cross_entropy_loss(0.1),
    ),
    state,
    batch,
  )
  dtypes = {
    x.dtype
    for x in jax.tree.leaves((new_state.params, new_state.batch_stats, new_state.opt_state))
    if jnp.issubdtype(x.dtype, jnp.floating)
  }  # (the schedule's step count is int32)
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert metrics['loss'].dtype == jnp.float32
  assert model_def.merge(params, stats, train=False).dtype == jnp.bfloat16


def test_hrnet_eval_names_a_bad_checkpoint(tmp_path):
  from hrnet_jax.train import eval_main

  with pytest.raises(FileNotFoundError, match='neither a training workdir'):
    eval_main.evaluate_checkpoint(str(tmp_path), dataset='digits')
  with pytest.raises(FileNotFoundError, match='no such folder'):
    eval_main.evaluate_checkpoint(str(tmp_path / 'nope'), dataset='digits')
