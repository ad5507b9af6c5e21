"""Two processes on localhost joined by ``jax.distributed.initialize`` (CPU collectives), each
feeding its half of the global batch, equal one process with the whole batch: the train step
(params, BN statistics, momentum; float64, see test_train_sharded), exact evaluation over the
padded per-process eval shards, and an Orbax checkpoint save/restore across both processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip('ml_collections')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import json, os, sys
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from train import distributed
    if nproc > 1:
      assert distributed.maybe_initialize(coordinator_address=f'localhost:{port}',
                                          num_processes=nproc, process_id=pid)
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update('jax_enable_x64', True)
    from jax.experimental import multihost_utils
    import hrnet_jax
    from train import checkpointing, evaluate, input_pipeline, mesh as mesh_lib
    from train import step as step_lib, train_state as ts
    from train.configs import digits

    assert jax.process_count() == nproc and jax.device_count() == nproc
    cfg = digits.get_config()
    cfg.batch_size, cfg.eval_batch_size = 16, 64  # 360 eval images: 180 per process, padded
    cfg.optimizer.schedule = 'step'
    data = input_pipeline.create_input(cfg, process_index=pid, process_count=nproc)
    md, params, stats = ts.split_model(hrnet_jax.create_model(
        cfg.model, num_classes=10, dtype=jnp.float64, param_dtype=jnp.float64))
    tx = ts.create_optimizer(cfg, data.steps_per_epoch)
    host = ts.init_state(params, stats, tx)
    mesh = mesh_lib.create_mesh(1)
    shardings = mesh_lib.state_shardings(mesh, host)
    state = mesh_lib.put_replicated_or_sharded(host, shardings)
    rng = np.random.default_rng(0)
    batch = {'image': rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             'label': rng.integers(0, 10, 16).astype(np.int32)}
    local = {k: np.split(v, nproc)[pid] for k, v in batch.items()}  # this process's rows
    norm = dict(mean=tuple(cfg.input.mean), std=tuple(cfg.input.std))
    bs, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
    fn = step_lib.jit_train_step(shardings, bs, rep, model_def=md, tx=tx,
                                 lr_fn=ts.learning_rate_schedule(cfg, data.steps_per_epoch),
                                 label_smoothing=0.0, **norm)
    state, metrics = fn(state, mesh_lib.global_batch(local, bs))

    ckpts = checkpointing.Checkpoints(os.path.join(out, 'run'), async_save=True)
    ckpts.save(1, state)
    ckpts.wait()
    restored, step = ckpts.restore(checkpointing.abstract_like(state, shardings))
    ckpts.close()
    same = all(bool(np.array_equal(np.asarray(a.addressable_data(0)), np.asarray(b.addressable_data(0))))
               for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)))

    eval_fn = step_lib.jit_eval_step(shardings.params, shardings.batch_stats, bs, rep,
                                     model_def=md, **norm)
    results = evaluate.evaluate(eval_fn, state.params, state.batch_stats, data.eval_batches(), bs)
    gathered = multihost_utils.process_allgather(state, tiled=True)
    if pid == 0:
      np.savez(os.path.join(out, 'state.npz'), *jax.tree.leaves(gathered))
      with open(os.path.join(out, 'result.json'), 'w') as f:
        json.dump(dict(loss=float(metrics['loss']), eval=results, restored_equal=same,
                       restored_step=step, eval_batches=data.num_eval_batches), f)
''')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(nproc, out):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, '-c', SCRIPT, str(pid), str(nproc), port, str(out)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for pid in range(nproc)]
  return procs


def _finish(procs):
  for p in procs:
    output, _ = p.communicate(timeout=900)
    assert p.returncode == 0, output[-4000:]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  one, two = tmp_path_factory.mktemp('one_process'), tmp_path_factory.mktemp('two_processes')
  procs = _launch(2, two) + _launch(1, one)  # all three at once
  _finish(procs)
  load = lambda d: (json.load(open(d / 'result.json')),
                    [a for _, a in sorted(np.load(d / 'state.npz').items(),
                                          key=lambda kv: int(kv[0].split('_')[1]))])
  return load(one), load(two)


def test_two_processes_step_equals_one_process(runs):
  (r1, s1), (r2, s2) = runs
  assert len(s1) == len(s2)
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(s1, s2))
  assert diff <= 1e-5, diff
  assert abs(r1['loss'] - r2['loss']) <= 1e-6


def test_two_processes_exact_eval_and_checkpoint(runs):
  (r1, _), (r2, _) = runs
  assert r2['eval_batches'] == r1['eval_batches'] == 6  # ceil(180 / 32), ceil(360 / 64)
  assert r1['eval']['count'] == r2['eval']['count'] == 360
  assert r1['eval']['top1'] == r2['eval']['top1'] and r1['eval']['top5'] == r2['eval']['top5']
  assert r2['restored_equal'] and r2['restored_step'] == 1
