"""A real Hugging Face hub cache built offline, the way huggingface_hub lays it out
(``models--{org}--{name}/{blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main}``),
holding repos written by timm's own ``save_for_hf`` from randomized timm models, or folders
written by ``hrnet_jax.save_for_hub``; ``HF_HOME`` points at it and ``HF_HUB_OFFLINE=1``.
huggingface_hub reads its environment at import, so ``huggingface_hub.constants`` is reloaded
(and reloaded again, as it was, at teardown)."""

import hashlib
import importlib
import os
import pathlib
import shutil
import socket

import pytest
from oracles import timm_model

NETWORK_ENV = ('HF_HOME', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_ASSETS_CACHE', 'HF_ENDPOINT')


class HubCache:
  def __init__(self, root: pathlib.Path, connect, create_connection):
    self.root = root
    self.hub = root / 'hub'
    self._network = connect, create_connection

  def allow_network(self, monkeypatch) -> None:
    """Lets sockets connect again (the unreachable-host test)."""
    monkeypatch.setattr(socket.socket, 'connect', self._network[0])
    monkeypatch.setattr(socket, 'create_connection', self._network[1])

  @staticmethod
  def reload() -> None:
    """Makes huggingface_hub read the environment again."""
    _reload_hub_constants()

  def add_folder(
    self, repo_id: str, folder: pathlib.Path, commit: str | None = None
  ) -> pathlib.Path:
    """Puts every file of ``folder`` into the cache as repo ``repo_id`` at ``refs/main``."""
    repo = self.hub / f'models--{repo_id.replace("/", "--")}'
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / 'snapshots' / commit
    (repo / 'blobs').mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.iterdir()):
      digest = hashlib.sha256(f.read_bytes()).hexdigest()
      shutil.copyfile(f, repo / 'blobs' / digest)
      (snapshot / f.name).symlink_to(os.path.relpath(repo / 'blobs' / digest, snapshot))
    (repo / 'refs').mkdir(exist_ok=True)
    (repo / 'refs' / 'main').write_text(commit)
    return snapshot

  def add_timm(self, tag: str, model, tmp: pathlib.Path) -> pathlib.Path:
    """``timm/<tag>`` as timm publishes it: ``save_for_hf`` (config.json + model.safetensors)."""
    from timm.models._hub import save_for_hf

    folder = tmp / f'timm-{tag}'
    save_for_hf(model, folder, safe_serialization=True)
    return self.add_folder(f'timm/{tag}', folder)


def _reload_hub_constants():
  from huggingface_hub import constants

  importlib.reload(constants)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  """An empty offline hub cache (``HF_HOME``), this library's cache at ``tmp_path/cache``
  (``HRNET_JAX_CACHE``), and no socket may connect anywhere: offline means no network call."""
  for name in NETWORK_ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setenv('HRNET_JAX_CACHE', str(tmp_path / 'cache'))
  _reload_hub_constants()

  def refuse(*args, **kwargs):
    raise AssertionError(f'network call while offline: {args}')

  cache = HubCache(tmp_path / 'hf', socket.socket.connect, socket.create_connection)
  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)
  yield cache
  monkeypatch.undo()
  _reload_hub_constants()


@pytest.fixture(scope='module')
def small_timm():
  """timm ``hrnet_w18_small.ms_in1k`` with random weights and randomized BatchNorm."""
  return timm_model('hrnet_w18_small.ms_in1k', seed=4)
