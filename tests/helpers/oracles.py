"""Reference (oracle) models for parity tests: timm and mmpretrain, never our own PyTorch code.

Their weights are random: convs keep the library's init; every BatchNorm's running mean, running
var, weight and bias, and every conv/linear bias, are randomized (``randomize_``) so that a
mapping error cannot hide behind an identity BatchNorm.
"""

from __future__ import annotations

import copy

import numpy as np
import torch


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
  """Random BatchNorm affine params, conv/linear biases and running statistics, in place.

  The running statistics are first measured on a random batch (so activations stay at a sane
  scale through ~300 layers instead of growing by 1e8) and then perturbed per channel, so that
  neither an identity BatchNorm nor swapped mean/var could pass. Returns the model in eval mode.
  """
  g = torch.Generator().manual_seed(seed)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
      elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    for m in bns:
      m.reset_running_stats()
      m.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    model(torch.randn(4, 3, 64, 64, generator=g))
    for m in bns:
      m.momentum = 0.1
      std = m.running_var.sqrt()
      m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.2 * std)
      m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.6 + 0.7)
  return model.eval()


def timm_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
  import timm

  torch.manual_seed(seed)
  return randomize_(timm.create_model(name, pretrained=False, **kwargs), seed)


def inputs(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """Random non-constant NHWC float32 images."""
  return np.random.RandomState(seed).randn(batch, height, width, 3).astype(np.float32)


def float64_copy(model: torch.nn.Module) -> torch.nn.Module:
  """A float64 deep copy of ``model`` (``model`` itself is left as it is).

  The parity tests compare our float32 output with the oracle run in float64, its exact
  reference: were the oracle run in float32 too, both sides' rounding (each ~6-8e-6 of
  max(|ref|, 10) on the deep HRNet maps) would add up past the 1e-5 bound.
  """
  return copy.deepcopy(model).double()


def torch_forward(model: torch.nn.Module, x_nhwc: np.ndarray, float64: bool = False, **kwargs):
  """Runs ``model`` on NHWC numpy input; returns NHWC (maps) / [B, N] (logits) numpy output.

  ``float64``: runs ``float64_copy(model)`` on the input cast to float64 (float64 output).
  """
  x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())
  if float64:
    model, x = float64_copy(model), x.double()
  with torch.no_grad():
    out = model(x, **kwargs)
  as_np = lambda t: t.numpy().transpose(0, 2, 3, 1) if t.ndim == 4 else t.numpy()
  return [as_np(t) for t in out] if isinstance(out, (list, tuple)) else as_np(out)


def tolerance(ref: np.ndarray, relative: float = 1e-5) -> float:
  """max abs diff allowed: 1e-4 read relative to max(|ref|, 10), i.e. 1e-5 relative."""
  return relative * max(float(np.abs(ref).max()), 10.0)


def assert_close(out, ref: np.ndarray, what: str, relative: float = 1e-5) -> float:
  out = np.asarray(out, dtype=np.float32)
  assert out.shape == ref.shape, f'{what}: shape {out.shape} vs reference {ref.shape}'
  diff = float(np.abs(out - ref).max())
  bound = tolerance(ref, relative)
  assert diff <= bound, f'{what}: max abs diff {diff:.3g} > {bound:.3g}'
  return diff
