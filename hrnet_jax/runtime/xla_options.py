"""XLA:CPU compiler options for HRNet programs, given to each ``jax.jit`` that runs the model.

    step = jax.jit(train_step, compiler_options=hrnet_jax.runtime.compiler_options('train'))
    forward = jax.jit(apply, compiler_options=hrnet_jax.runtime.compiler_options('infer'))

hrnet-train, hrnet-eval, hrnet-predict and the benchmarks' 'xla' rows jit with them. They are
per executable, so nothing global changes, and inference and training each get their own.

Why (jaxlib 0.10, x86-64; measurements in docs/benchmarks.md, "Profile"): XLA:CPU hands every
convolution to YNNPACK by default (``individual_convolution`` in
``xla_cpu_experimental_ynn_fusion_type``); HRNet's convolutions run faster in XLA's own Eigen
kernels. Training also hands its reductions (BatchNorm's batch statistics) to YNNPACK
(``reduce``), which speeds the step up but slows inference (a reduction pulls the convolution
that feeds it into YNNPACK). Results stay within float32 rounding of XLA's defaults
(tests/runtime/test_runtime.py).
"""

from __future__ import annotations

import jax

_YNN_FUSION_TYPE = 'xla_cpu_experimental_ynn_fusion_type'
_CPU_OPTIONS = {
  'infer': {_YNN_FUSION_TYPE: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'},
  'train': {_YNN_FUSION_TYPE: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'},
}


def compiler_options(task: str, backend: str | None = None) -> dict[str, str]:
  """The ``compiler_options`` for ``jax.jit`` of an HRNet program.

  ``task``: 'infer' (eval-mode forward) or 'train' (a step with BatchNorm batch statistics).
  ``backend``: the platform the program compiles for (default ``jax.default_backend()``); the
  options are XLA:CPU's, so other platforms get ``{}``. Raises ``ValueError`` for another task.
  """
  if task not in _CPU_OPTIONS:
    raise ValueError(f'task must be one of {sorted(_CPU_OPTIONS)}, got {task!r}')
  if backend is None:
    backend = jax.default_backend()
  return dict(_CPU_OPTIONS[task]) if backend == 'cpu' else {}
