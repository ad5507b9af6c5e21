"""The parity gate run before any timing, and the weights both frameworks are then timed with.

``python -m benchmarks.parity MODEL WORK_DIR [IMG_SIZE]`` builds the timm model with random
weights and randomized BatchNorm statistics / affine parameters and conv/linear biases (so a
mapping error cannot hide behind an identity BatchNorm), saves ``WORK_DIR/MODEL/timm.pth`` as the
official repo ships weights (``torch.save(state_dict)``), converts it with the converter's own
code path into ``WORK_DIR/MODEL/jax`` and compares float32 logits at full matmul precision, for
the library and for each experimental JAX mode (``jax_worker.MODES``), on 2 images of IMG_SIZE (default 224) px. Pass: max |diff| <=
1e-5 * max(max |logit|, 10). Prints one JSON result line; exit code 0 on pass, 1 on failure.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np

from benchmarks.common import RESULT_TAG


def tolerance(ref: np.ndarray) -> float:
  return 1e-5 * max(float(np.abs(ref).max()), 10.0)


def randomize_(model, seed: int = 0):
  """Random BN statistics and affine parameters and conv/linear biases; returns ``model.eval()``."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
      elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
  return model.eval()


def gate(model_name: str, work_dir: str | pathlib.Path, *, batch: int = 2, img_size: int = 224,
         seed: int = 0) -> dict:
  """Writes the shared weights and returns the comparison: ``max_abs_diff[MODE]``,
  ``passed[MODE]`` per JAX mode, ``tolerance``; ``passed`` is the library's ('xla')."""
  import jax
  jax.config.update('jax_default_matmul_precision', 'highest')
  import jax.numpy as jnp
  import timm
  import torch

  import hrnet_jax
  from benchmarks.jax_worker import MODES, apply_mode
  from convert import convert_checkpoint

  out = pathlib.Path(work_dir) / model_name
  out.mkdir(parents=True, exist_ok=True)
  torch.manual_seed(seed)
  reference = randomize_(timm.create_model(model_name, pretrained=False), seed)
  torch.save(reference.state_dict(), out / 'timm.pth')
  t0 = time.perf_counter()
  convert_checkpoint(out / 'timm.pth', out / 'jax', overwrite=True)
  convert_s = time.perf_counter() - t0

  x = np.random.default_rng(seed).standard_normal((batch, img_size, img_size, 3), np.float32)
  with torch.no_grad():
    ref = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  tol = tolerance(ref)
  result = dict(model=model_name, batch=batch, img_size=img_size,
                max_abs_logit=float(np.abs(ref).max()), tolerance=tol,
                convert_s=round(convert_s, 2), timm_weights=str(out / 'timm.pth'),
                jax_weights=str(out / 'jax'))
  for mode in MODES:  # the library ('xla') and each experiment on the same weights
    model = hrnet_jax.load_pretrained(out / 'jax')
    apply_mode(model, mode)
    logits = np.asarray(model(jnp.asarray(x)))
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
