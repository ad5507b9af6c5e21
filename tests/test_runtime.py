"""hrnet_jax.runtime: the XLA:CPU flags reach XLA and keep the model's arithmetic."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hrnet_jax import runtime

FLAG = runtime.CPU_XLA_FLAGS[0]

# Prints, as JSON: whether a lone convolution compiled to a YNNPACK fusion (XLA's stock choice),
# and the logits of a random hrnet_w18_small in eval mode and in train mode (batch statistics,
# the reductions the flags move to YNNPACK).
_PROBE = '''
import json, sys
import jax, jax.numpy as jnp, numpy as np
from hrnet_jax import create_model, runtime
if sys.argv[1] == 'configured':
  runtime.configure_xla_cpu()
jax.config.update('jax_default_matmul_precision', 'highest')
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
hlo = conv.lower(jnp.ones((8, 56, 56, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
model = create_model('hrnet_w18_small')
x = jnp.asarray(np.random.RandomState(0).randn(4, 64, 64, 3).astype(np.float32))
model.eval()
infer = model(x)
model.train()
train = model(x)
print(json.dumps(dict(ynn_conv='ynn_fusion' in hlo, infer=np.asarray(infer).tolist(),
                      train=np.asarray(train).tolist())))
'''


def test_adds_the_flags_to_an_empty_environment():
  env = {}
  assert runtime.configure_xla_cpu(env) == FLAG
  assert env['XLA_FLAGS'] == FLAG


def test_keeps_other_flags_and_is_idempotent():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  runtime.configure_xla_cpu(env)
  runtime.configure_xla_cpu(env)
  assert env['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=8', FLAG]


def test_a_users_value_for_the_same_flag_wins():
  mine = '--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution'
  env = {'XLA_FLAGS': mine}
  assert runtime.configure_xla_cpu(env) == mine


def test_warns_when_jax_already_runs(monkeypatch):
  import jax.numpy as jnp
  jnp.zeros(1).block_until_ready()  # the backend is up in this test process
  monkeypatch.setenv('XLA_FLAGS', '')
  with pytest.warns(RuntimeWarning, match='already initialised'):
    runtime.configure_xla_cpu()


def _probe(mode: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([sys.executable, '-c', _PROBE, mode], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_flags_reach_xla_and_keep_the_logits():
  stock, configured = _probe('stock'), _probe('configured')
  # The probe can tell the two apart: XLA's stock flags hand the convolution to YNNPACK.
  assert stock['ynn_conv'] and not configured['ynn_conv']
  for task in ('infer', 'train'):
    ref, out = np.asarray(stock[task]), np.asarray(configured[task])
    assert np.abs(out - ref).max() <= 1e-5 * max(np.abs(ref).max(), 10.0), task
