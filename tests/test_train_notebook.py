"""Executes colab/train_tpu.ipynb top to bottom on CPU with its smoke-test parameters (no network:
a random timm checkpoint converted locally, the embedded digits, a few steps), so the notebook
cannot rot."""

import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')
pytest.importorskip('timm')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'colab', 'train_tpu.ipynb')


def test_colab_notebook_runs_on_cpu(tmp_path, tmp_path_factory, monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(params) == 1
  params[0].source = '\n'.join([
      'SMOKE_TEST = True', "REPO = ''", "ARCH = 'hrnet_w18_small'", "HUB_ID = ''",
      "DATASET = 'digits'", "TRAIN_SPLIT, EVAL_SPLIT = 'train', 'validation'",
      'IMAGE_SIZE = 32', 'BATCH_SIZE = 32', 'EPOCHS = 10', 'MAX_STEPS = 6',
      f"WORKDIR = {str(tmp_path / 'run')!r}", f"CONVERTED = {str(tmp_path / 'converted')!r}"])
  # The kernel inherits this environment: the checkout on the path, CPU, the compilation cache
  # the other run tests fill.
  monkeypatch.setenv('PYTHONPATH', ROOT)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path_factory.getbasetemp() / 'jax_cache'))
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  monkeypatch.delenv('MPLBACKEND', raising=False)  # the kernel's inline backend shows plots
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute()
  assert (tmp_path / 'run' / 'model' / 'config.json').exists()
  outputs = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                    for o in c.get('outputs', []))
  assert 'top-1' in outputs
  images = [o for c in nb.cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert images  # the curves were plotted
