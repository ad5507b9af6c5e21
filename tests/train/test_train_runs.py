"""End-to-end ``hrnet-train`` / ``hrnet-eval`` runs in subprocesses (as users run them):

* killed at a random step (SIGTERM, then SIGKILL, then a damaged latest checkpoint) and
  restarted, a run ends with exactly the parameters of an uninterrupted run;
* ``train_and_evaluate`` called directly (no CLI around it) saves on SIGTERM, exits 143 and gives
  the SIGTERM handler back;
* a NaN loss stops the run with a clear message and keeps the last good checkpoint;
* the digits config trains ``hrnet_w18_small`` to >= 95% validation top-1, and ``hrnet-eval``
  on the workdir reports the same number;
* ``WORKDIR/best`` holds the arrays of the best evaluated step, named by the summary line, and
  every folder of a run records the class names (issue 23).

(Fine-tuning converted timm weights is tested through the Colab notebook, test_train_notebook.)

All processes share one persistent compilation cache, so only the first compiles.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import child_checks
import jax
import ml_collections  # noqa: F401  (the train extra; a missing install must fail, not skip)
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hrnet_jax.pretrained import checkpoint as hrnet_checkpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A short digits run: the first 12 steps of the digits config (so the same compiled programs as
# the full run), a checkpoint every 2 steps, one evaluation at the end.
TINY = [
  '--config.max_steps=12',
  '--config.checkpoint.every_steps=2',
  '--config.checkpoint.keep=10',
  '--config.eval_every_epochs=0',
  '--config.log_every_steps=1',
]


@pytest.fixture(scope='module')
def env():
  return child_checks.run_env()


def _train_cmd(workdir, *overrides, config='train/recipes/digits.py'):
  return [
    sys.executable,
    '-m',
    'hrnet_jax.train.main',
    f'--config={config}',
    f'--workdir={workdir}',
    *overrides,
  ]


def _run(cmd, env, timeout=600):
  proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
  return proc


def _model_arrays(workdir):
  return hrnet_checkpoint.read_pretrained(os.path.join(workdir, 'model'))[1]


def _steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _start(cmd, env, log):
  """Starts ``cmd`` with stdout and stderr in the file ``log`` (no pipe to fill and block)."""
  return subprocess.Popen(
    cmd, env=env, cwd=ROOT, stdout=open(log, 'w'), stderr=subprocess.STDOUT, text=True
  )


def _wait_for_checkpoint_after(workdir, step, proc, log, timeout=300):
  t0 = time.time()
  while not [s for s in _steps(workdir) if s > step]:
    assert proc.poll() is None, f'run ended early:\n{open(log).read()[-3000:]}'
    assert time.time() - t0 < timeout, 'no checkpoint appeared'
    time.sleep(0.1)


def _summary_top1(stdout):
  line = [l for l in stdout.splitlines() if l.startswith('hrnet-train:')][-1]
  return float(line.split('eval top-1 ')[1].split('%')[0])


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env):
  """An uninterrupted TINY run, evaluated at step 6 too (training is the same): (workdir, final
  arrays, printed eval top-1, the summary line)."""
  workdir = tmp_path_factory.mktemp('reference')
  proc = _run(_train_cmd(workdir, *TINY, '--config.eval_every_steps=6'), env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  summary = [l for l in proc.stdout.splitlines() if l.startswith('hrnet-train:')][-1]
  yield workdir, _model_arrays(workdir), _summary_top1(proc.stdout), summary
  shutil.rmtree(workdir)


def _checkpoint_arrays(workdir, step):
  """The params and BatchNorm statistics of training checkpoint ``step``, as stored."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  state = ocp.PyTreeCheckpointer().restore(path)
  return [np.asarray(x) for k in ('params', 'batch_stats') for x in jax.tree.leaves(state[k])]


def test_uninterrupted_run_outputs(reference):
  workdir, arrays, _, summary = reference
  assert _steps(workdir) == [2, 4, 6, 8, 10, 12]
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  # Step 1 and the step after the evaluation at 6 open a timing window: not logged.
  logged = [s for s in range(2, 13) if s != 7]
  assert [l['step'] for l in lines if 'train/loss' in l] == logged
  # The process's first step records its startup time (setup, compilation, the step) once.
  assert list(lines[0]) == ['step', 'perf/startup_s'] and lines[0]['step'] == 1
  run_seconds = float(re.search(r' in (\d+) s, ', summary).group(1))
  assert 0 < lines[0]['perf/startup_s'] <= run_seconds + 1
  assert [l for l in lines if 'perf/startup_s' in l] == lines[:1]
  assert {'train/lr', 'train/top1', 'perf/img_per_sec', 'perf/step_time_ms'} <= set(lines[1])
  assert 'eval/top1' in lines[-1] and 'eval/top5' in lines[-1]
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert arrays['classifier.kernel'].shape == (2048, 10)


def test_best_step_is_a_release_folder_with_the_class_names(reference):
  """Issue 23: ``WORKDIR/best`` holds the best evaluated step (named by the summary line), and
  every folder of the run records the digits' class names."""
  workdir, arrays, _, summary = reference
  evals = {
    l['step']: l['eval/top1']
    for l in map(json.loads, open(workdir / 'metrics.jsonl'))
    if 'eval/top1' in l
  }
  assert sorted(evals) == [6, 12]
  best_step = max((v, s) for s, v in evals.items())[1]  # a tie: the later step (as Orbax)
  assert f'at step {best_step}: weights in {workdir}/best (last step: {workdir}/model)' in summary
  names = [str(d) for d in range(10)]
  for folder in ('model', 'best'):
    assert hrnet_checkpoint.read_config(workdir / folder)['pretrained_cfg']['class_names'] == names
  assert json.load(open(workdir / 'train_config.json'))['class_names'] == names
  best = hrnet_checkpoint.read_pretrained(workdir / 'best')[1]
  stored = _checkpoint_arrays(workdir, best_step)
  # Every array of best/ is one of checkpoint best_step's (the two trees name leaves apart).
  missing = [k for k, v in best.items() if not any(np.array_equal(v, x) for x in stored)]
  assert not missing, missing[:3]
  same_as_model = all(np.array_equal(best[k], arrays[k]) for k in arrays)
  assert same_as_model == (best_step == 12)


def test_killed_runs_resume_bit_exact(tmp_path, env, reference):
  """SIGTERM at a random step (saves, exit 143), restart, SIGKILL at a random later step, damage
  the latest checkpoint, restart: the final parameters equal the uninterrupted run's."""
  seed = random.SystemRandom().randrange(10**6)
  rng = random.Random(seed)
  workdir = tmp_path / 'run'
  cmd = _train_cmd(workdir, *TINY)

  log = tmp_path / 'first.log'
  proc = _start(cmd, env, log)
  _wait_for_checkpoint_after(workdir, 0, proc, log)
  time.sleep(rng.uniform(0, 1.5))
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=300)
  err = log.read_text()
  assert proc.returncode == 143, f'seed {seed}\n{err[-3000:]}'
  preempted = int(err.split('preempted: saved checkpoint ')[1].split()[0])
  assert max(_steps(workdir)) == preempted < 12, f'seed {seed}'
  line = next(x for x in err.splitlines() if 'preempted: saved checkpoint' in x)
  assert line.startswith('hrnet-train: warning: '), line  # its own line, not after the bar

  log = tmp_path / 'second.log'
  proc = _start(cmd, env, log)
  _wait_for_checkpoint_after(workdir, preempted, proc, log)
  time.sleep(rng.uniform(0, 1.0))
  proc.kill()
  proc.wait(timeout=60)
  err = log.read_text()
  assert f'resuming from checkpoint {preempted}' in err, f'seed {seed}\n{err[-3000:]}'
  steps = _steps(workdir)
  assert len(steps) >= 2, f'seed {seed}: {steps}'

  latest = os.path.join(workdir, 'checkpoints', str(steps[-1]), 'default')
  for root, _, files in os.walk(latest):
    for f in files:
      os.truncate(os.path.join(root, f), os.path.getsize(os.path.join(root, f)) // 2)
  proc = _run(cmd, env)
  assert proc.returncode == 0, f'seed {seed}\n{proc.stderr[-3000:]}'
  assert f'checkpoints/{steps[-1]} cannot be read' in proc.stderr, f'seed {seed}'
  assert f'resuming from checkpoint {steps[-2]}' in proc.stderr, f'seed {seed}'
  # The damaged checkpoint was moved aside (never "best", never picked by hrnet-eval), the step
  # saved again, and every step is in metrics.jsonl once.
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert [n for n in names if n.startswith(f'corrupt-{steps[-1]}-')], names
  assert steps[-1] in _steps(workdir) and max(_steps(workdir)) == 12
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  logged = [l['step'] for l in lines if 'train/loss' in l]
  # Strictly increasing: no step twice. (The first step of each start is not timed, so some
  # steps are absent.)
  assert logged == sorted(set(logged)) and logged[-1] == 12, f'seed {seed}: {logged}'
  ev = _run(
    [
      sys.executable,
      '-m',
      'hrnet_jax.train.eval_main',
      f'--checkpoint={workdir}',
      '--dataset=digits',
      '--step=99',
    ],
    env,
  )
  assert ev.returncode == 2
  assert ev.stderr.strip().splitlines()[-1].startswith('hrnet-eval: error: --step=99: ')
  assert ', '.join(map(str, _steps(workdir))) in ev.stderr

  _, ref_arrays, ref_top1, _ = reference
  arrays = _model_arrays(workdir)
  assert arrays.keys() == ref_arrays.keys()
  bad = [k for k in arrays if not np.array_equal(arrays[k], ref_arrays[k])]
  assert not bad, f'seed {seed}: {len(bad)} arrays differ, e.g. {bad[:3]}'
  assert _summary_top1(proc.stdout) == ref_top1


# train_and_evaluate called directly (as a notebook does): no CLI, so no interrupts_raise around
# it; the TINY run of the digits recipe, then whether the SIGTERM handler was given back.
DIRECT = """
import signal, sys
from hrnet_jax.train import trainer
from hrnet_jax.train.recipes import digits
config = digits.get_config()
config.max_steps, config.checkpoint.every_steps, config.checkpoint.keep = 12, 2, 10
config.eval_every_epochs, config.log_every_steps = 0, 1
before = signal.getsignal(signal.SIGTERM)
try:
  trainer.train_and_evaluate(config, sys.argv[1])
finally:
  print('handler restored:', signal.getsignal(signal.SIGTERM) == before, flush=True)
"""


def test_sigterm_to_train_and_evaluate_called_directly_saves_and_exits_143(
  tmp_path, env, reference
):
  """(``reference`` first: its compiled programs are in the shared cache.)"""
  workdir = tmp_path / 'direct'
  log = tmp_path / 'direct.log'
  proc = _start([sys.executable, '-c', DIRECT, str(workdir)], env, log)
  _wait_for_checkpoint_after(workdir, 0, proc, log)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=300)
  out = log.read_text()
  assert proc.returncode == 143, out[-3000:]
  preempted = int(out.split('preempted: saved checkpoint ')[1].split()[0])
  assert max(_steps(workdir)) == preempted < 12
  assert 'handler restored: True' in out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, env):
  workdir = tmp_path / 'nan'
  # Left by killed runs: a lock record of a dead process and an uncommitted first save.
  os.makedirs(workdir / 'checkpoints' / '1.orbax-checkpoint-tmp-1795000000')
  (workdir / '.hrnet-train.lock').write_text(json.dumps({'pid': 4194999, 'host': 'gone'}))
  proc = _run(
    _train_cmd(
      workdir, *TINY, '--config.checkpoint.every_steps=1', '--config.optimizer.base_lr=1e30'
    ),
    env,
  )
  assert 'took over the lock of an earlier run (pid 4194999 on gone)' in proc.stderr
  assert 'discarded an incomplete save of step 1' in proc.stderr
  assert 'starting from step 0' in proc.stderr
  assert proc.returncode == 1
  assert 'hrnet-train: error: non-finite loss at step' in proc.stderr, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  bad_step = int(proc.stderr.split('non-finite loss at step ')[1].split()[0])
  good = _steps(workdir)
  assert good and max(good) < bad_step
  assert f'The last good checkpoint is step {max(good)}' in proc.stderr


def test_digits_reaches_95_percent_and_hrnet_eval_agrees(tmp_path, env):
  workdir = tmp_path / 'digits'
  proc = _run(_train_cmd(workdir), env, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-4000:]
  print(proc.stdout.splitlines()[-1])
  top1 = _summary_top1(proc.stdout) / 100
  assert top1 >= 0.95, proc.stdout[-2000:]
  ev = _run(
    [
      sys.executable,
      '-m',
      'hrnet_jax.train.eval_main',
      f'--checkpoint={workdir}',
      '--dataset=digits',
      '--json',
    ],
    env,
  )
  assert ev.returncode == 0, ev.stderr[-3000:]
  result = json.loads(ev.stdout.strip().splitlines()[-1])
  assert result['count'] == 360
  assert result['top1'] >= 0.95 and abs(result['top1'] - top1) < 1e-4
