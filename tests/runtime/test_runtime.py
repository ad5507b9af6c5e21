"""hrnet_jax.runtime: the compiler options reach XLA:CPU and keep the model's arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import assert_close, inputs

import hrnet_jax
from hrnet_jax import runtime


def _conv(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def _uses_ynnpack(fn, options, *args) -> bool:
  return 'ynn_fusion' in jax.jit(fn, compiler_options=options).lower(*args).compile().as_text()


def test_options_reach_xla():
  x, w = jnp.ones((8, 56, 56, 32)), jnp.ones((3, 3, 32, 32))
  mean = lambda x, w: jnp.mean(_conv(x, w), (0, 1, 2))
  # XLA's defaults hand a lone convolution to YNNPACK; both tasks' options keep it in XLA.
  assert _uses_ynnpack(_conv, {}, x, w)
  assert not _uses_ynnpack(_conv, runtime.compiler_options('infer', 'cpu'), x, w)
  assert not _uses_ynnpack(_conv, runtime.compiler_options('train', 'cpu'), x, w)
  # Training hands reductions (BatchNorm statistics) to YNNPACK; inference does not.
  assert _uses_ynnpack(mean, runtime.compiler_options('train', 'cpu'), x, w)
  assert not _uses_ynnpack(mean, runtime.compiler_options('infer', 'cpu'), x, w)


def test_other_backends_and_tasks():
  assert runtime.compiler_options('train', 'gpu') == {}
  assert runtime.compiler_options('infer', 'tpu') == {}
  with pytest.raises(ValueError, match='task must be one of'):
    runtime.compiler_options('predict', 'cpu')


@pytest.mark.parametrize('task', ['infer', 'train'])
def test_options_keep_the_logits(task):
  from flax import nnx

  model = hrnet_jax.create_model('hrnet_w18_small')
  model.train() if task == 'train' else model.eval()  # train: BatchNorm batch statistics
  graphdef, state = nnx.split(model)
  x = jnp.asarray(inputs(4, 64, 64))
  apply = lambda s, x: nnx.merge(graphdef, s)(x)
  with jax.default_matmul_precision('highest'):
    ref = np.asarray(jax.jit(apply)(state, x))
    out = np.asarray(
      jax.jit(apply, compiler_options=runtime.compiler_options(task, 'cpu'))(state, x)
    )
  assert_close(out, ref, f'{task} logits with the {task} options')
