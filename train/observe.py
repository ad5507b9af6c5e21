"""What a run shows: a tqdm progress bar (steps, img/s, loss), TensorBoard scalars and the same
scalars as JSON lines (``metrics.jsonl``, for plotting without TensorBoard), written by process 0
only (other processes get a silent ``Observer``)."""

from __future__ import annotations

import json
import os
import time

from tqdm import tqdm

from hrnet_jax.train import workdir


class Observer:
  """Progress bar over ``[start_step, total_steps)``, a TensorBoard writer in ``logdir`` and
  ``jsonl_path`` (one ``{"step": ..., "<scalar>": ...}`` object per log point, appended).

  A run resumed at ``start_step`` first drops what a stopped run logged after that step, so each
  step is recorded once: lines of ``jsonl_path`` (atomically) and, through TensorBoard's
  ``purge_step``, the events of earlier event files.

  Scalars: ``train/loss``, the task's train metrics (``train/top1``), ``train/lr``, ``train/grad_norm`` (means over the
  last ``log_every`` steps), ``perf/img_per_sec``, ``perf/step_time_ms`` (wall time per step over
  that window, compilation excluded), ``perf/startup_s`` (once per process, at its first step:
  seconds from ``t_start`` to that step's metrics: a start's or restart's setup, tracing,
  compilation or compilation-cache reads, and the first step), and the task's eval scalars: ``eval/top1``, ``eval/top5``
  (classification, fractions) or ``eval/mIoU``, ``eval/aAcc``, ``eval/mAcc`` (segmentation,
  percent).
  """

  def __init__(
    self,
    logdir: str,
    jsonl_path: str,
    *,
    start_step: int,
    total_steps: int,
    batch_size: int,
    log_every: int,
    active: bool,
    t_start: float | None = None,
  ):
    self._active = active
    self._batch = batch_size
    self._log_every = max(1, log_every)
    self._window: dict[str, float] = {}
    self._window_steps = 0
    self._t0 = None  # set after the first step (its time includes compilation)
    self._t_start = t_start  # time.time() when the run began; None: no perf/startup_s
    self.train_time = 0.0  # seconds of timed steps, for the summary
    self.timed_steps = 0
    self._writer = self._bar = self._jsonl = None
    if active:
      from tensorboardX import SummaryWriter  # imports torch where it is installed

      os.makedirs(logdir, exist_ok=True)
      self._writer = SummaryWriter(logdir, purge_step=start_step + 1 if start_step else None)
      workdir.truncate_jsonl(jsonl_path, start_step)
      self._jsonl = open(jsonl_path, 'a')
      self._bar = tqdm(
        total=total_steps, initial=start_step, desc='train', unit='step', dynamic_ncols=True
      )

  def step(self, step: int, metrics: dict[str, float]) -> None:
    """Records the host metrics of step ``step`` (1-based: updates done)."""
    if not self._active:
      return
    now = time.perf_counter()
    if self._t_start is not None:
      self._scalars(step, {'perf/startup_s': time.time() - self._t_start})
      self._t_start = None
    if self._t0 is None:
      self._t0 = now
    else:
      self._window_steps += 1
      for k, v in metrics.items():
        self._window[k] = self._window.get(k, 0.0) + v
    self._bar.update(1)
    if self._window_steps and (step % self._log_every == 0):
      elapsed = now - self._t0
      n = self._window_steps
      means = {k: v / n for k, v in self._window.items()}
      img_s = n * self._batch / elapsed
      self._scalars(
        step,
        {
          **{f'train/{k}': v for k, v in means.items()},
          'perf/img_per_sec': img_s,
          'perf/step_time_ms': 1000 * elapsed / n,
        },
      )
      self._bar.set_postfix(loss=f'{means["loss"]:.4f}', img_s=f'{img_s:.1f}')
      self.train_time += elapsed
      self.timed_steps += n
      self._window, self._window_steps, self._t0 = {}, 0, now

  def pause(self) -> None:
    """Stops the clock (evaluation, checkpoint waits are not training time)."""
    if self._active and self._t0 is not None:
      self.train_time += time.perf_counter() - self._t0
      self.timed_steps += self._window_steps
      self._window, self._window_steps, self._t0 = {}, 0, None

  def eval(self, step: int, scalars: dict[str, float], line: str) -> None:
    """Records the eval ``scalars`` (as ``eval/<name>``) and prints ``step N: <line>``."""
    if not self._active:
      return
    self._scalars(step, {f'eval/{k}': v for k, v in scalars.items()})
    self._bar.write(f'step {step}: {line}')

  def _scalars(self, step: int, scalars: dict[str, float]) -> None:
    for k, v in scalars.items():
      self._writer.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    """Closes the bar and the files; calling it again does nothing."""
    if self._active:
      self._active = False
      self._bar.close()
      self._writer.close()
      self._jsonl.close()
