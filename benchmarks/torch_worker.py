"""Times one timm configuration (``Spec``) and prints its CSV row.

Modes as timm's ``benchmark.py`` runs them: 'eager' (NCHW), 'channels_last' (NHWC memory
format), 'compile' (channels_last + ``torch.compile``, inductor, default mode). bf16 is
``torch.autocast`` with float32 parameters (timm's AMP; the same split as hrnet-jax's
``dtype=bfloat16``). Training: forward, cross-entropy on random labels, backward,
``torch.optim.SGD`` (Nesterov momentum 0.9, weight decay 1e-4, lr 1e-4).
"""

from __future__ import annotations

import contextlib
import os

from benchmarks.common import (
  Spec,
  base_row,
  cpu_model,
  peak_rss_mb,
  synthetic_batch,
  task_columns,
  time_steps,
  versions,
  worker_main,
)

LR, MOMENTUM, WEIGHT_DECAY = 1e-4, 0.9, 1e-4
MODES = ('eager', 'channels_last', 'compile')


def build_step(spec: Spec):
  """The step of ``spec`` on its input: ``(step, sync, param_count)``; ``sync(step())`` waits
  for the device."""
  import timm
  import torch

  if spec.mode not in MODES:
    raise ValueError(f'timm mode must be one of {MODES}, got {spec.mode!r}')
  torch.set_num_threads(os.cpu_count())
  cuda = spec.device == 'gpu'
  device = torch.device('cuda' if cuda else 'cpu')
  torch.backends.cudnn.benchmark = True
  torch.manual_seed(spec.seed)

  model = timm.create_model(spec.model, pretrained=False)
  if spec.weights:
    model.load_state_dict(torch.load(spec.weights, map_location='cpu'))
  param_count = sum(p.numel() for p in model.parameters())
  x_np, y_np = synthetic_batch(spec)
  x = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(device)
  y = torch.from_numpy(y_np).long().to(device)
  model.to(device)
  if spec.mode in ('channels_last', 'compile'):
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  fwd = torch.compile(model) if spec.mode == 'compile' else model
  amp = (
    (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
    if spec.dtype == 'bf16'
    else contextlib.nullcontext
  )
  sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)

  if spec.task == 'infer':
    model.eval()

    def step():
      with torch.inference_mode(), amp():
        return fwd(x)
  else:
    model.train()
    opt = torch.optim.SGD(
      model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
      with amp():
        loss = loss_fn(fwd(x).float(), y)
      loss.backward()
      opt.step()
      opt.zero_grad(set_to_none=True)
      return loss

  return step, sync, param_count


def run(spec: Spec) -> dict:
  import torch

  step, sync, param_count = build_step(spec)
  cuda = spec.device == 'gpu'
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  timing = time_steps(step, sync, spec)
  peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
  channels_last = spec.mode in ('channels_last', 'compile')
  row = base_row(spec)
  row.update(task_columns(spec, timing, peak))
  row.update(
    layout='NHWC' if channels_last else 'NCHW',
    compiled=spec.mode == 'compile',
    device_name=torch.cuda.get_device_name() if cuda else cpu_model(),
    param_count=round(param_count / 1e6, 3),
    peak_mem_kind='device' if cuda else 'rss',
    num_threads=torch.get_num_threads(),
    versions=versions('torch', 'timm'),
    note='',
  )
  return row


if __name__ == '__main__':
  worker_main(run)
