"""The parity gate run before any timing, and the weights both frameworks are then timed with.

``python -m benchmarks.parity MODEL WORK_DIR [IMG_SIZE]`` builds the timm model with random weights,
randomized as the parity tests do (``tests/helpers/oracles.py``, ``randomize_``: BatchNorm statistics /
affine parameters and conv/linear biases, so a mapping error cannot hide behind an identity
BatchNorm), saves ``WORK_DIR/MODEL/timm.pth`` as the official repo ships weights
(``torch.save(state_dict)``), converts it with the converter's own code path into
``WORK_DIR/MODEL/jax`` and compares float32 logits at full matmul precision, for the library and for
each experimental JAX mode (``jax_worker.MODES``), on 2 images of IMG_SIZE (default 224) px, jitted
with the compiler options the 'xla' rows run with. Pass: max |diff| <= 1e-5 * max(max |logit|, 10).
Prints one JSON result line; exit code 0 on pass, 1 on failure.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np

from benchmarks.common import RESULT_TAG

# The parity tests' oracle (tests/helpers/oracles.py), put on the path as pytest does: 'tests' is not a
# package, and some distributions install a top-level 'tests' package that would shadow it.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / 'tests' / 'helpers'))
from oracles import inputs, timm_model, tolerance, torch_forward  # noqa: E402


def gate(
  model_name: str,
  work_dir: str | pathlib.Path,
  *,
  batch: int = 2,
  img_size: int = 224,
  seed: int = 0,
) -> dict:
  """Writes the shared weights and returns the comparison: ``max_abs_diff[MODE]``,
  ``passed[MODE]`` per JAX mode, ``tolerance``; ``passed`` is the library's ('xla')."""
  import jax

  jax.config.update('jax_default_matmul_precision', 'highest')
  import jax.numpy as jnp
  import torch
  from flax import nnx

  import hrnet_jax
  from benchmarks.jax_worker import MODES, apply_mode, numerics_mode
  from hrnet_jax import runtime
  from hrnet_jax.convert import convert_checkpoint

  out = pathlib.Path(work_dir) / model_name
  out.mkdir(parents=True, exist_ok=True)
  reference = timm_model(model_name, seed)
  torch.save(reference.state_dict(), out / 'timm.pth')
  t0 = time.perf_counter()
  convert_checkpoint(out / 'timm.pth', out / 'jax', overwrite=True)
  convert_s = time.perf_counter() - t0

  x = inputs(batch, img_size, img_size, seed)
  ref = torch_forward(reference, x)
  tol = tolerance(ref)
  result = dict(
    model=model_name,
    batch=batch,
    img_size=img_size,
    max_abs_logit=float(np.abs(ref).max()),
    tolerance=tol,
    convert_s=round(convert_s, 2),
    timm_weights=str(out / 'timm.pth'),
    jax_weights=str(out / 'jax'),
  )
  for mode in dict.fromkeys(map(numerics_mode, MODES)):  # the library ('xla'), each experiment
    model = hrnet_jax.load_pretrained(out / 'jax')
    apply_mode(model, mode)
    # Jitted as the 'xla' rows are timed: with the library's compiler options.
    graphdef, state = nnx.split(model)
    forward = jax.jit(
      lambda s, x: nnx.merge(graphdef, s)(x), compiler_options=runtime.compiler_options('infer')
    )
    logits = np.asarray(forward(state, jnp.asarray(x)))
    diff = float(np.abs(logits - ref).max())
    result[f'max_abs_diff[{mode}]'] = diff
    result[f'passed[{mode}]'] = diff <= tol
    if mode == 'xla':
      result['top1_agree'] = bool((logits.argmax(-1) == ref.argmax(-1)).all())
  result['passed'] = result['passed[xla]']
  return result


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) not in (2, 3):
    print(__doc__, file=sys.stderr)
    return 2
  result = gate(argv[0], argv[1], img_size=int(argv[2]) if len(argv) == 3 else 224)
  print(RESULT_TAG + json.dumps(result), flush=True)
  return 0 if result['passed'] else 1


if __name__ == '__main__':
  sys.exit(main())
