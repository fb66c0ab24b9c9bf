"""Where training metrics go: JSONL beside the checkpoints, TensorBoard, and a progress bar.

Only process 0 writes (enabled=False elsewhere), so a multi-host run logs once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

METRICS_FILE = 'metrics.jsonl'


class MetricWriter:
  def __init__(self, workdir, enabled: bool = True):
    self.workdir = Path(workdir)
    self.enabled = enabled
    self._jsonl = None
    self._tensorboard = None

  def __enter__(self):
    if self.enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)
      # Appending keeps the history of a resumed run in one file; `step` orders the lines.
      path = self.workdir / METRICS_FILE
      _drop_torn_last_line(path)
      self._jsonl = open(path, 'a', encoding='utf-8')
      from tensorboardX import SummaryWriter
      self._tensorboard = SummaryWriter(str(self.workdir / 'tensorboard'))
    return self

  def __exit__(self, *exc):
    if self._jsonl:
      self._jsonl.close()
      self._tensorboard.close()

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': step, 'time': time.time(), **metrics}) + '\n')
    self._jsonl.flush()
    for name, value in metrics.items():
      if name != 'step':
        self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def info(self, message: str) -> None:
    if self.enabled:
      logging.info(message)
      tqdm.write(message)

  def progress(self, total: int, initial: int) -> tqdm:
    return tqdm(total=total, initial=initial, disable=not self.enabled, unit='step',
                dynamic_ncols=True, smoothing=0.1)


def _drop_torn_last_line(path: Path) -> None:
  """A kill mid-write leaves a last line without its newline; appending to it would glue the
  next record onto it. The torn record is dropped: resuming re-logs its step."""
  if not path.exists():
    return
  with open(path, 'rb+') as f:
    text = f.read()
    if text and not text.endswith(b'\n'):
      f.truncate(text.rfind(b'\n') + 1)


def read_metrics(workdir) -> list[dict]:
  """All metric lines of a run, in order (the trainer's and the sweep report's shared reader)."""
  path = Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  lines = path.read_text().splitlines()
  metrics = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      metrics.append(json.loads(line))
    except json.JSONDecodeError:
      if number < len(lines):  # only the last line can be torn by a kill mid-write
        raise ValueError(f'{path}, line {number}, is not JSON: {line[:60]!r}; the file is '
                         'damaged, not just cut off') from None
      logging.warning('%s: skipping its unfinished last line %r (being written, or cut by a kill)',
                      path, line[:60])
  return metrics
