"""Fault injection: every CLI under the error policy of ``hrnet_jax.errors``, checkpoints that
can be trusted, and nothing lost or half-written.

Each case asserts the exit code, the one ``PROG: error:`` line, and what is left on disk (hashes
before and after). Signals are real (SIGKILL / SIGTERM / SIGINT to a converter subprocess); a
full disk is a small tmpfs mounted in a private mount namespace (``unshare``), read-only folders
a read-only one, so the tests need no privileges and touch no real mount.
"""

import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from oracles import timm_model
from PIL import Image

import hrnet_jax
from hrnet_jax import errors, interrupts
from hrnet_jax.cli.predict import main as predict_main
from hrnet_jax.convert.cli import main as convert_main
from hrnet_jax.pretrained import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = 'hrnet_w18_small'


def _tree_hashes(folder) -> dict[str, str]:
  """Relative path -> sha256 of every file under ``folder`` (itself included if a file)."""
  folder = pathlib.Path(folder)
  files = [folder] if folder.is_file() else sorted(p for p in folder.rglob('*') if p.is_file())
  return {
    str(p.relative_to(folder) if p != folder else p.name): hashlib.sha256(
      p.read_bytes()
    ).hexdigest()
    for p in files
  }


def _one_error_line(err: str, prog: str, *expected: str) -> str:
  """The stderr of a failed command: exactly one ``PROG: error:`` line, no traceback, holding
  every ``expected`` text; returns that line."""
  assert 'Traceback' not in err, err
  lines = [l for l in err.splitlines() if l.startswith(f'{prog}: error:')]
  assert len(lines) == 1, err
  for text in expected:
    assert text in err, f'{text!r} not in:\n{err}'
  return lines[0]


def _env(**extra):
  return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', **extra)


def _unshare_ok() -> bool:
  probe = subprocess.run(
    ['unshare', '--user', '--map-root-user', '--mount', 'true'], capture_output=True
  )
  return probe.returncode == 0


def _run_on_small_fs(
  mount_dir, seed_dir, cmd, *, size: str, options: str = '', env=None, timeout=600
) -> subprocess.CompletedProcess:
  """Runs ``cmd`` with a fresh tmpfs of ``size`` at ``mount_dir`` (private to the command),
  first filled with a copy of ``seed_dir``; afterwards ``mount_dir`` is replaced on the real disk
  by a copy of what the tmpfs held, for the test to inspect."""
  mount_dir = pathlib.Path(mount_dir)
  mount_dir.mkdir(parents=True, exist_ok=True)
  keep = mount_dir.with_name(mount_dir.name + '.after')
  script = (
    f'set -e; mount -t tmpfs -o size={size} tmpfs {mount_dir}; '
    f'cp -a {seed_dir}/. {mount_dir}/ 2>/dev/null || true; '
    f'{"mount -o remount," + options + " " + str(mount_dir) + "; " if options else ""}'
    f'set +e; "$@"; rc=$?; cp -a {mount_dir}/. {keep}/; exit $rc'
  )
  keep.mkdir()
  proc = subprocess.run(
    ['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c', script, 'sh', *cmd],
    env=env or _env(),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  shutil.rmtree(mount_dir)
  keep.rename(mount_dir)
  return proc


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A random-weight official-format hrnet_w18_small checkpoint file."""
  path = tmp_path_factory.mktemp('src') / 'hrnet.pth'
  torch.save(timm_model(NAME, seed=1).state_dict(), path)
  return path


@pytest.fixture(scope='module')
def converted(tmp_path_factory, source):
  out = tmp_path_factory.mktemp('conv') / 'ckpt'
  assert convert_main([str(source), str(out), '--quiet']) == 0
  return out


def _convert(args, capsys):
  rc = convert_main(args)
  return rc, capsys.readouterr().err


# --- 1. Never delete what the tool did not write --------------------------------------------


def test_overwrite_refuses_folders_that_are_not_checkpoints(
  tmp_path, source, converted, capsys, monkeypatch
):
  prog = 'convert_official_weights'
  models = tmp_path / 'models'
  models.mkdir()
  shutil.copy(source, models / 'hrnet.pth')
  (models / 'notes.txt').write_text('mine')
  home = tmp_path / 'home'
  home.mkdir()
  (home / '.bashrc').write_text('mine')
  monkeypatch.setenv('HOME', str(home))
  before = _tree_hashes(tmp_path)
  cases = [
    ([str(models / 'hrnet.pth'), str(models), '--overwrite'], 'is inside the output folder'),
    ([str(source), str(models), '--overwrite'], 'not an hrnet-jax checkpoint folder'),
    ([str(source), str(home), '--overwrite'], 'the home folder'),
    ([str(source), '/', '--overwrite'], 'the root folder'),
    ([str(source), str(models / 'notes.txt')], 'is a file, not a folder'),
  ]
  for args, message in cases:
    rc, err = _convert(args + ['--quiet'], capsys)
    assert rc == 2, (args, err)
    _one_error_line(err, prog, message)
  # The current folder and its ancestors.
  monkeypatch.chdir(models)
  for out in ('.', str(tmp_path)):
    rc, err = _convert([str(source), out, '--overwrite', '--quiet'], capsys)
    assert rc == 2
    _one_error_line(err, prog, 'current folder')
  assert _tree_hashes(tmp_path) == before, 'a refused conversion touched files'


def test_overwrite_replaces_a_checkpoint_folder_atomically(tmp_path, source, converted, capsys):
  out = tmp_path / 'ckpt'
  shutil.copytree(converted, out)
  (tmp_path / 'src.pth').write_bytes(source.read_bytes())
  rc, err = _convert([str(tmp_path / 'src.pth'), str(out), '--overwrite', '--quiet'], capsys)
  assert rc == 0, err
  assert checkpoint.is_checkpoint_folder(out)
  assert sorted(os.listdir(tmp_path)) == ['ckpt', 'src.pth'], 'temporary folders left behind'


def _write_started(parent: pathlib.Path, name: str, proc, timeout=300):
  """Waits until ``proc`` has created its temporary output folder."""
  t0 = time.time()
  while not list(parent.glob(f'.{name}.tmp-{proc.pid}-*/state')):
    assert proc.poll() is None, proc.communicate()
    assert time.time() - t0 < timeout
    time.sleep(0.005)


@pytest.mark.parametrize(
  'sig, code',
  [
    (signal.SIGKILL, -signal.SIGKILL),
    (signal.SIGTERM, errors.EXIT_PREEMPTED),
    (signal.SIGINT, errors.EXIT_INTERRUPTED),
  ],
)
def test_killed_conversion_keeps_the_old_folder(tmp_path, source, converted, sig, code):
  out = tmp_path / 'ckpt'
  shutil.copytree(converted, out)
  before = _tree_hashes(out)
  cmd = [
    sys.executable,
    '-m',
    'hrnet_jax.convert.cli',
    str(source),
    str(out),
    '--overwrite',
    '--quiet',
  ]
  for _ in range(3):
    proc = subprocess.Popen(
      cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _write_started(tmp_path, 'ckpt', proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == code or _tree_hashes(out) == before:
      break
    # On a busy machine the conversion can finish before the signal lands (exit 0, or -15 when
    # it lands during the interpreter's shutdown): then the new folder is whole (it loads) and
    # the attempt is repeated on the old one.
    hrnet_jax.load_pretrained(out)
    shutil.rmtree(out)
    shutil.copytree(converted, out)
  assert proc.returncode == code, err
  assert _tree_hashes(out) == before, 'the old checkpoint changed'
  leftovers = [n for n in os.listdir(tmp_path) if n != 'ckpt']
  if sig == signal.SIGKILL:  # no chance to clean up: the next run does
    assert leftovers, 'expected the killed run to leave its temporary folder'
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'left by an interrupted run' in done.stderr
    assert os.listdir(tmp_path) == ['ckpt']
  else:
    _one_error_line(
      err, 'convert_official_weights', 'terminated' if sig == signal.SIGTERM else 'interrupted'
    )
    assert leftovers == [], leftovers


# Stand-ins for a library function and for hrnet-jax code calling it: ``interrupts_raise`` tells
# them apart by module name.
_LIBRARY = """
import signal
def work(log, *signums):
  for signum in signums:
    signal.raise_signal(signum)
    log.append(f'library went on after {signal.Signals(signum).name}')
"""
_OWN = """
def call(work, log, *signums):
  work(log, *signums)
  log.append('our next line ran')

def call_then_try(work, log, *signums):
  work(log, *signums)
  try:
    log.append('try body ran')
  finally:
    log.append('finally ran')
"""


def _modules():
  library, own = {'__name__': 'somelib'}, {'__name__': 'hrnet_jax.caller'}
  exec(_LIBRARY, library)
  exec(_OWN, own)
  return library['work'], own['call'], own['call_then_try']


def test_a_signal_inside_a_library_is_raised_at_our_next_line():
  work, call, call_then_try = _modules()
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  log = []
  with pytest.raises(errors.Terminated):
    with interrupts.interrupts_raise():
      call(work, log, signal.SIGTERM)
  assert log == ['library went on after SIGTERM']
  # Called straight from a frame that is not ours: raised when the block ends, not lost.
  log = []
  with pytest.raises(KeyboardInterrupt):
    with interrupts.interrupts_raise():
      work(log, signal.SIGINT)
      log.append('block went on')
  assert log == ['library went on after SIGINT', 'block went on']
  # A second signal is raised at once, wherever it lands.
  log = []
  with pytest.raises(KeyboardInterrupt):
    with interrupts.interrupts_raise():
      call(work, log, signal.SIGTERM, signal.SIGINT)
  assert log == ['library went on after SIGTERM']
  # Not at a ``try:`` line: raised there, the exception would skip the ``finally``
  # (python/cpython#148278; CI, 2026-11: the storm below escaped its ``except``).
  log = []
  with pytest.raises(errors.Terminated):
    with interrupts.interrupts_raise():
      call_then_try(work, log, signal.SIGTERM)
  assert log == ['library went on after SIGTERM', 'finally ran']
  assert sys.gettrace() is None
  assert {s: signal.getsignal(s) for s in before} == before


_SIGNAL_STORM = """
import os, random, signal, sys, threading
import numpy as np
from hrnet_jax.pretrained import checkpoint
from hrnet_jax import errors, interrupts
arrays = {f'a{i}': np.full((4,), i, np.float32) for i in range(200)}
terminated = 0
for _ in range(int(sys.argv[1])):
  timer = threading.Timer(random.random() * 0.01, os.kill, (os.getpid(), signal.SIGTERM))
  try:
    with interrupts.interrupts_raise():
      timer.start()
      try:
        for _ in range(50):  # about 0.1 s: the timer fires inside
          checkpoint.content_checksum(arrays)
      finally:
        timer.join()  # a late timer (busy machine) still fires inside the block
  except errors.Terminated:
    terminated += 1
print(terminated)
"""


def test_sigterm_storm_over_a_thread_pool_neither_hangs_nor_is_lost():
  # Each SIGTERM lands at a random point of the checksum's thread pool, mostly inside
  # concurrent.futures / threading. Raised there, about 3% were dropped (raised in JAX's gc
  # callback) and some left a lock held, hanging the process at exit (CI, 2026-11).
  n = 300
  done = subprocess.run(
    [sys.executable, '-c', _SIGNAL_STORM, str(n)],
    env=_env(),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert done.returncode == 0, done.stderr
  assert int(done.stdout) == n, done.stderr[-3000:]
  assert 'Exception ignored' not in done.stderr, done.stderr[-3000:]


def test_old_folder_moved_aside_by_a_killed_run_is_put_back(
  tmp_path, source, converted, capsys, caplog
):
  # State of a run killed between "old folder moved aside" and "new folder renamed in".
  aside = tmp_path / '.ckpt.old-4194999'  # above Linux's largest pid: not alive
  shutil.copytree(converted, aside)
  before = _tree_hashes(aside)
  rc, err = _convert([str(source), str(tmp_path / 'ckpt'), '--quiet'], capsys)
  assert rc == 2  # the restored folder is not empty and --overwrite was not given
  assert 'restored the previous folder' in caplog.text
  assert _tree_hashes(tmp_path / 'ckpt') == before
  assert os.listdir(tmp_path) == ['ckpt']


def test_to_pytorch_onto_a_folder(tmp_path, converted, capsys):
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  rc, err = _convert(['--to-pytorch', str(converted), str(tmp_path)], capsys)
  assert rc == 2
  _one_error_line(err, 'convert_official_weights', 'is a folder')
  assert os.listdir(tmp_path) == []
  # Called in-process, the CLI gives the caller's SIGINT / SIGTERM handlers back.
  assert {s: signal.getsignal(s) for s in before} == before


def test_read_only_parent_and_full_disk(tmp_path, source, converted):
  if not _unshare_ok():
    pytest.fail('unshare --user --mount is not permitted here; the disk-full test needs it')
  seed = tmp_path / 'seed'
  shutil.copytree(converted, seed / 'ckpt')
  before = _tree_hashes(seed / 'ckpt')
  fs = tmp_path / 'fs'
  cmd = [
    sys.executable,
    '-m',
    'hrnet_jax.convert.cli',
    str(source),
    str(fs / 'ckpt'),
    '--overwrite',
    '--quiet',
  ]
  # Read-only: exit 1 (environment), the path named, nothing changed.
  proc = _run_on_small_fs(fs, seed, cmd, size='200m', options='ro')
  assert proc.returncode == 1, proc.stderr
  _one_error_line(proc.stderr, 'convert_official_weights', str(fs))
  assert _tree_hashes(fs / 'ckpt') == before
  # Disk full: the checkpoint (52 MB) does not fit beside the old one.
  proc = _run_on_small_fs(fs, seed, cmd, size='70m')
  assert proc.returncode == 1, proc.stderr
  _one_error_line(proc.stderr, 'convert_official_weights', 'No space left on device')
  assert _tree_hashes(fs / 'ckpt') == before, 'the old checkpoint changed'
  assert os.listdir(fs) == ['ckpt'], 'a temporary folder was left on the full disk'


# --- 2. Non-finite and corrupted weights are refused -----------------------------------------


def test_non_finite_weights_are_refused_unless_allowed(tmp_path, source, capsys):
  sd = torch.load(source, weights_only=True)
  sd['layer1.0.conv1.weight'][0, 0, 0, 0] = float('nan')
  sd['stage2.0.fuse_layers.0.1.1.running_var'][3] = float('inf')
  torch.save(sd, tmp_path / 'nan.pth')
  rc, err = _convert([str(tmp_path / 'nan.pth'), str(tmp_path / 'out'), '--quiet'], capsys)
  assert rc == 2
  _one_error_line(
    err,
    'convert_official_weights',
    'NaN or inf',
    'layer1.0.conv1.weight',
    'stage2.0.fuse_layers.0.1.1.running_var',
  )
  assert not (tmp_path / 'out').exists()
  rc, err = _convert(
    [str(tmp_path / 'nan.pth'), str(tmp_path / 'out'), '--quiet', '--allow-non-finite'], capsys
  )
  assert rc == 0, err
  assert json.loads((tmp_path / 'out' / 'config.json').read_text())['allow_non_finite'] is True


def _data_files(ckpt):
  return sorted(
    (p for p in (ckpt / 'state').rglob('*') if p.is_file() and p.stat().st_size > 1 << 20),
    key=lambda p: p.stat().st_size,
  )


def test_bit_rot_is_detected(tmp_path, converted, capsys):
  ckpt = tmp_path / 'ckpt'
  shutil.copytree(converted, ckpt)
  data = _data_files(ckpt)[-1]
  raw = bytearray(data.read_bytes())
  middle = len(raw) // 2
  raw[middle : middle + 4096] = os.urandom(4096)
  data.write_bytes(bytes(raw))
  with pytest.raises(checkpoint.CheckpointIntegrityError, match='checksum'):
    hrnet_jax.load_pretrained(ckpt)
  image = tmp_path / 'x.png'
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
  rc = predict_main(['--checkpoint', str(ckpt), str(image)])
  err = capsys.readouterr().err
  assert rc == 2
  _one_error_line(err, 'hrnet-predict', str(ckpt), 'checksum')


def test_folders_without_checksum_still_load(tmp_path, converted, caplog):
  # As written before checksums existed: format_version 1, no checksum.
  ckpt = tmp_path / 'old'
  shutil.copytree(converted, ckpt)
  config = json.loads((ckpt / 'config.json').read_text())
  del config['checksum']
  config['format_version'] = 1
  (ckpt / 'config.json').write_text(json.dumps(config))
  hrnet_jax.load_pretrained(ckpt)
  assert 'no checksum' in caplog.text


def test_a_folder_whose_version_promises_a_checksum_must_have_one(tmp_path, converted, capsys):
  ckpt = tmp_path / 'edited'
  shutil.copytree(converted, ckpt)
  config = json.loads((ckpt / 'config.json').read_text())
  assert config['format_version'] == 2
  del config['checksum']
  (ckpt / 'config.json').write_text(json.dumps(config))
  image = tmp_path / 'x.png'
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
  assert predict_main(['--checkpoint', str(ckpt), str(image)]) == 2
  _one_error_line(capsys.readouterr().err, 'hrnet-predict', str(ckpt), 'format_version 2')


def test_predict_never_prints_nan(tmp_path, source, capsys):
  sd = torch.load(source, weights_only=True)
  sd['classifier.bias'][7] = float('nan')
  torch.save(sd, tmp_path / 'nan.pth')
  assert (
    convert_main(
      [str(tmp_path / 'nan.pth'), str(tmp_path / 'ckpt'), '--quiet', '--allow-non-finite']
    )
    == 0
  )
  capsys.readouterr()
  image = tmp_path / 'x.png'
  Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 40, 3), np.uint8)).save(image)
  rc = predict_main(['--checkpoint', str(tmp_path / 'ckpt'), str(image), '--json'])
  out, err = capsys.readouterr()
  assert rc == 1
  assert 'non-finite logits' in err

  def refuse(name):
    raise ValueError(f'not strict JSON: {name}')

  doc = json.loads(out, parse_constant=refuse)
  assert 'error' in doc['results'][0] and 'top_k' not in doc['results'][0]
  rc = predict_main(['--checkpoint', str(tmp_path / 'ckpt'), str(image)])  # the table
  out, err = capsys.readouterr()
  assert rc == 1 and out == '' and 'non-finite logits' in err


def test_float_tiff_is_scaled_not_black(tmp_path):
  import skimage.data

  from hrnet_jax.data.transforms import load_image

  gray = skimage.data.camera()
  Image.fromarray(gray.astype(np.float32) / 255.0, 'F').save(tmp_path / 'unit.tif')
  Image.fromarray(gray.astype(np.float32), 'F').save(tmp_path / 'byte.tif')
  expected = np.asarray(Image.fromarray(gray).convert('RGB'), np.int16)
  for name in ('unit.tif', 'byte.tif'):
    got = np.asarray(load_image(tmp_path / name), np.int16)
    assert np.abs(got - expected).max() <= 1, name
  Image.fromarray(np.full((8, 8), 300.0, np.float32), 'F').save(tmp_path / 'hdr.tif')
  with pytest.raises(ValueError, match=r'hdr\.tif.*values in \[300, 300\]'):
    load_image(tmp_path / 'hdr.tif')


# --- 4. One error policy: short, specific messages -------------------------------------------


def test_messages_are_short_and_specific(tmp_path, capsys):
  import torchvision

  prog = 'convert_official_weights'
  torch.save(torchvision.models.resnet18().state_dict(), tmp_path / 'resnet.pth')
  rc, err = _convert([str(tmp_path / 'resnet.pth'), str(tmp_path / 'out')], capsys)
  assert rc == 2
  _one_error_line(err, prog, 'not an HRNet checkpoint', 'conv1.weight')
  assert len(err.splitlines()) == 1

  t0 = time.time()
  rc, err = _convert(['models/hrnet.pth', str(tmp_path / 'out')], capsys)
  assert rc == 2 and time.time() - t0 < 5
  _one_error_line(err, prog, 'models/hrnet.pth: no such file')

  torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pth')  # a pickled Module, not tensors
  rc, err = _convert([str(tmp_path / 'module.pth'), str(tmp_path / 'out')], capsys)
  assert rc == 2
  _one_error_line(err, prog, 'not a plain tensor checkpoint')
  assert 'weights_only' not in err
  assert sorted(os.listdir(tmp_path)) == ['module.pth', 'resnet.pth']


# --- 3. Training workdirs ----------------------------------------------------------------------


@pytest.fixture(scope='module')
def train_env(tmp_path_factory):
  cache = tmp_path_factory.getbasetemp() / 'jax_cache'  # shared with the other training tests
  return _env(
    XLA_FLAGS='',
    JAX_COMPILATION_CACHE_DIR=str(cache),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )


def _train(workdir, *flags, config='train/recipes/digits.py'):
  return [
    sys.executable,
    '-m',
    'hrnet_jax.train.main',
    f'--config={config}',
    f'--workdir={workdir}',
    '--config.checkpoint.every_steps=2',
    '--config.eval_every_epochs=0',
    *flags,
  ]


def test_bad_config_or_workdir_writes_nothing(tmp_path, train_env):
  (tmp_path / 'file').write_text('mine')
  cases = [
    (_train(tmp_path / 'a', '--config.model=hrnet_w99'), 'hrnet_w99'),
    (_train(tmp_path / 'b', '--config.modell=hrnet_w18'), 'did you mean --config.model'),
    (_train(tmp_path / 'c', config='train/recipes/nope.py'), 'nope.py: no such file'),
    (_train(tmp_path / 'file'), 'is a file, not a folder'),
  ]
  for cmd, message in cases:
    proc = subprocess.run(cmd, env=train_env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    _one_error_line(proc.stderr, 'hrnet-train', message)
  assert os.listdir(tmp_path) == ['file'] and (tmp_path / 'file').read_text() == 'mine'


def test_a_second_run_on_a_locked_workdir_fails_at_once(tmp_path, train_env):
  import socket

  from hrnet_jax.train.workdir import WorkdirLock

  with WorkdirLock(str(tmp_path / 'run')):  # held by this live process
    t0 = time.time()
    proc = subprocess.run(
      _train(tmp_path / 'run', '--config.max_steps=2'),
      env=train_env,
      cwd=ROOT,
      capture_output=True,
      text=True,
    )
  assert proc.returncode == 2, proc.stderr[-2000:]
  _one_error_line(
    proc.stderr,
    'hrnet-train',
    'in use by another hrnet-train run',
    f'pid {os.getpid()} on {socket.gethostname()}',
  )
  assert time.time() - t0 < 60, 'the second run must fail before compiling'
  assert sorted(os.listdir(tmp_path / 'run')) == ['.hrnet-train.lock']


def test_disk_full_during_a_save(tmp_path, train_env):
  import orbax.checkpoint as ocp

  if not _unshare_ok():
    pytest.fail('unshare --user --mount is not permitted here; the disk-full test needs it')
  fs = tmp_path / 'fs'
  empty = tmp_path / 'empty'
  empty.mkdir()
  # 120 MB: checkpoint 2 (~85 MB) fits, checkpoint 4 does not fit beside it.
  proc = _run_on_small_fs(fs, empty, _train(fs, '--config.max_steps=4'), size='120m', env=train_env)
  assert proc.returncode == 1, proc.stderr[-3000:]
  _one_error_line(
    proc.stderr,
    'hrnet-train',
    'No space left on device',
    str(fs / 'checkpoints'),
    'checkpoint 4 needs',
  )
  assert sorted(os.listdir(fs / 'checkpoints')) == ['2'], 'a temporary folder was left'
  with ocp.CheckpointManager(
    fs / 'checkpoints', options=ocp.CheckpointManagerOptions(read_only=True)
  ) as manager:
    assert list(manager.all_steps()) == [2]  # the previous checkpoint is committed and whole
    restored = manager.restore(2, args=ocp.args.StandardRestore())
  assert int(restored['step']) == 2
