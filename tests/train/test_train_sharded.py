"""Sharded training and evaluation equal their single-device versions, in subprocesses (the
device count is fixed when JAX starts):

* 8 simulated CPU devices (``--xla_force_host_platform_device_count=8``): one sharded step (pure
  data parallel, and data x fsdp) equals the single-device step on the same global batch;
  evaluation with a padded last batch equals a one-by-one loop.
* Two processes on localhost joined by ``jax.distributed.initialize`` (CPU collectives), each
  feeding its half of the global batch, equal the single-device step; their exact evaluation
  over padded per-process shards equals the loop; an Orbax checkpoint saves and restores across
  both.

The steps run the model in float64. In float32 the partitioned CPU program is less accurate than
the single-device one (measured: conv1's gradient 1% away from the float64 value on 8 devices,
1e-5 on one), which would hide the sharding logic behind XLA's rounding; in float64 they agree
to ~1e-14, so any real difference (e.g. per-device BN statistics, a missed gradient reduction)
shows.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import ml_collections  # noqa: F401  (the train extra; a missing install must fail, not skip)
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Shared set-up: PID, NPROC, OUT are defined before it runs.
PRELUDE = textwrap.dedent("""
    import json, os
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update('jax_enable_x64', True)
    import hrnet_jax
    from hrnet_jax.train import checkpointing, evaluate, data as input_pipeline, mesh as mesh_lib
    from hrnet_jax.train import step as step_lib, train_state as ts
    from hrnet_jax.train.data import arrays
    from hrnet_jax.train.recipes import digits

    cfg = digits.get_config()
    cfg.batch_size, cfg.eval_batch_size = 16, 48  # 360 eval images: never a multiple
    cfg.optimizer.schedule = 'step'  # full lr at step 0, so the step moves the params
    data = input_pipeline.create_input(cfg, process_index=PID, process_count=NPROC)
    md, params, stats = ts.split_model(hrnet_jax.create_model(
        cfg.model, num_classes=10, dtype=jnp.float64, param_dtype=jnp.float64))
    tx = ts.create_optimizer(cfg, data.steps_per_epoch)
    host = ts.init_state(params, stats, tx)
    rng = np.random.default_rng(0)
    # Noise images: digits' constant backgrounds make BN backprop at init ill-conditioned.
    batch = {'image': rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             'label': rng.integers(0, 10, 16).astype(np.int32)}
    norm = dict(mean=tuple(cfg.input.mean), std=tuple(cfg.input.std))

    def train_one_step(devices, fsdp):
      mesh = mesh_lib.create_mesh(fsdp, devices)
      shardings = mesh_lib.state_shardings(mesh, host)
      state = mesh_lib.put_replicated_or_sharded(host, shardings)
      bs, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
      fn = step_lib.jit_train_step(shardings, bs, rep, model_def=md, tx=tx,
                                   lr_fn=ts.learning_rate_schedule(cfg, data.steps_per_epoch),
                                   loss_fn=step_lib.cross_entropy_loss(), **norm)
      local = {k: np.split(v, NPROC)[PID] for k, v in batch.items()}  # this process's rows
      gb = mesh_lib.global_batch(local, bs)
      state, metrics = fn(state, gb)
      return state, float(metrics['loss']), mesh, shardings, gb

    def sharded_eval(state, mesh, shardings):
      bs, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
      fn = step_lib.jit_eval_step(shardings.params, shardings.batch_stats, bs, rep,
                                  model_def=md, **norm)
      return evaluate.evaluate(fn, state.params, state.batch_stats, data.eval_batches(), bs)

    def save(name, **values):
      with open(os.path.join(OUT, name), 'w') as f:
        json.dump(values, f)
""")

EIGHT_DEVICES = (
  'import sys\nPID, NPROC, OUT = 0, 1, sys.argv[1]\n'
  + PRELUDE
  + textwrap.dedent("""
    assert jax.device_count() == 8, jax.devices()
    ref, ref_loss, mesh, shardings, _ = train_one_step(jax.devices()[:1], 1)
    ref_leaves = jax.tree.leaves(jax.device_get(ref))  # params, BN statistics, momentum
    np.savez(os.path.join(OUT, 'single.npz'), *ref_leaves)
    out = {'single_loss': ref_loss}
    for name, fsdp in (('data8', 1), ('data4_fsdp2', 2)):
      state, loss, _, _, gb = train_one_step(jax.devices(), fsdp)
      diff = max(float(np.max(np.abs(a - b))) for a, b in
                 zip(jax.tree.leaves(jax.device_get(state)), ref_leaves))
      out[name] = dict(diff=diff, loss_diff=abs(loss - ref_loss),
                       sharded=sum(not x.sharding.is_fully_replicated
                                   for x in jax.tree.leaves(state.params)),
                       per_device=sorted({s.data.shape[0]
                                          for s in gb['image'].addressable_shards}))

    mesh8 = mesh_lib.create_mesh(1)
    shardings8 = mesh_lib.state_shardings(mesh8, ref)
    ref8 = mesh_lib.put_replicated_or_sharded(jax.device_get(ref), shardings8)
    out['eval'] = sharded_eval(ref8, mesh8, shardings8)
    model = md.merge(*jax.device_get((ref.params, ref.batch_stats)), train=False)
    forward = jax.jit(lambda x: model(step_lib.normalize(x, **norm)))
    _, (images, labels), _ = arrays.load_digits(32)
    correct1 = correct5 = 0
    for x, y in zip(images, labels):  # the one-by-one loop
      logits = np.asarray(forward(x[None]))[0]
      correct1 += int(np.argmax(logits) == y)
      correct5 += int(y in np.argsort(-logits, kind='stable')[:5])
    out['loop'] = dict(top1=correct1 / len(labels), top5=correct5 / len(labels), n=len(labels))
    save('eight_devices.json', **out)
""")
)

TWO_PROCESSES = (
  textwrap.dedent("""
    import sys
    PID, NPROC, PORT, OUT = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3]
    from hrnet_jax.train import distributed
    assert distributed.maybe_initialize(coordinator_address=f'localhost:{PORT}',
                                        num_processes=NPROC, process_id=PID)
""")
  + PRELUDE
  + textwrap.dedent("""
    from jax.experimental import multihost_utils
    assert jax.process_count() == 2 and jax.device_count() == 2
    state, loss, mesh, shardings, _ = train_one_step(jax.devices(), 1)
    ckpts = checkpointing.Checkpoints(os.path.join(OUT, 'run'))
    ckpts.save(1, state)
    ckpts.wait()
    restored, step = ckpts.restore(checkpointing.abstract_like(state, shardings))
    ckpts.close()
    same = all(bool(np.array_equal(a.addressable_data(0), b.addressable_data(0)))
               for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)))
    results = sharded_eval(state, mesh, shardings)
    gathered = multihost_utils.process_allgather(state, tiled=True)
    if PID == 0:
      np.savez(os.path.join(OUT, 'two.npz'), *jax.tree.leaves(gathered))
      save('two_processes.json', loss=loss, eval=results, restored_equal=same,
           restored_step=step, eval_batches=data.num_eval_batches)
""")
)


def _env(xla_flags=''):
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags)


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _load(out, name):
  arrays = np.load(out / name)
  return [arrays[f'arr_{i}'] for i in range(len(arrays.files))]


def _wait(procs):
  for p in procs:
    output, _ = p.communicate(timeout=900)
    assert p.returncode == 0, output[-4000:]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Runs the 8-device process, then the two processes (one after the other: a process waiting
  in a collective for a peer that is still compiling would only compete for the CPU)."""
  out = tmp_path_factory.mktemp('sharded')
  _wait(
    [
      subprocess.Popen(
        [sys.executable, '-c', EIGHT_DEVICES, str(out)],
        env=_env('--xla_force_host_platform_device_count=8'),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
    ]
  )
  port = str(_free_port())
  _wait(
    [
      subprocess.Popen(
        [sys.executable, '-c', TWO_PROCESSES, str(pid), port, str(out)],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
      for pid in range(2)
    ]
  )
  yield out
  shutil.rmtree(out)


@pytest.mark.parametrize('name', ['data8', 'data4_fsdp2'])
def test_sharded_step_equals_single_device(runs, name):
  r = json.load(open(runs / 'eight_devices.json'))[name]
  assert r['per_device'] == [2]  # the global batch of 16 is split over the 8 devices
  assert r['diff'] <= 1e-5, r  # params, BN statistics and momentum after one step
  assert r['loss_diff'] <= 1e-6, r
  if name == 'data4_fsdp2':
    assert r['sharded'] > 0  # parameters really are split over the fsdp axis
  else:
    assert r['sharded'] == 0


def test_sharded_eval_with_padding_equals_one_by_one_loop(runs):
  r = json.load(open(runs / 'eight_devices.json'))
  assert r['eval']['count'] == r['loop']['n'] == 360
  assert r['eval']['top1'] == r['loop']['top1'] and r['eval']['top5'] == r['loop']['top5']


def test_two_processes_equal_one_device(runs):
  single, two = _load(runs, 'single.npz'), _load(runs, 'two.npz')
  assert len(single) == len(two)
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, two))
  assert diff <= 1e-5, diff
  r = json.load(open(runs / 'two_processes.json'))
  assert abs(r['loss'] - json.load(open(runs / 'eight_devices.json'))['single_loss']) <= 1e-6


def test_two_processes_exact_eval_and_checkpoint(runs):
  r = json.load(open(runs / 'two_processes.json'))
  loop = json.load(open(runs / 'eight_devices.json'))['loop']
  assert r['eval_batches'] == 8  # ceil(180 / 24) on each process
  assert r['eval']['count'] == 360
  assert r['eval']['top1'] == loop['top1'] and r['eval']['top5'] == loop['top5']
  assert r['restored_equal'] and r['restored_step'] == 1
