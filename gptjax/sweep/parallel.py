"""Several runs of a sweep at once (--parallel=N): each in a process of its own
(gptjax.sweep.worker) on its own share of this machine's CPU cores, so that N small runs, each
too small to keep every core busy, share the machine instead of queueing for it.

A worker trains, records and is interrupted exactly as a sequential sweep's run is; its progress
bar goes to RUN_DIR/train.log, and this process shows one bar over all of them. Ctrl-C or SIGTERM
here is passed on once to every worker, each saves a checkpoint and records itself interrupted;
a worker whose sweep process dies is sent SIGTERM by the kernel (Linux) and does the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from gptjax import cli
from gptjax.logs import read_metrics
from gptjax.sweep.plan import PlannedRun, as_json
from gptjax.sweep.report import KILLED, read_status

LOG_FILE = 'train.log'  # a parallel run's own output
POLL_S = 0.5


def core_slots(n: int) -> list[list[int]]:
  """This process's CPU cores in n contiguous, near-equal shares."""
  cores = sorted(os.sched_getaffinity(0))
  if n > len(cores):
    raise ValueError(f'--parallel={n} needs {n} CPU cores, one per run at least; this process '
                     f'may use {len(cores)}')
  size, extra = divmod(len(cores), n)
  bounds = [i * size + min(i, extra) for i in range(n + 1)]
  return [cores[bounds[i]:bounds[i + 1]] for i in range(n)]


def check_cpu_backend() -> None:
  import jax
  if jax.default_backend() != 'cpu':
    raise ValueError(f'--parallel splits CPU cores between runs; on {jax.default_backend()} a run '
                     'uses every device: run the sweep without --parallel')


@dataclasses.dataclass
class _Worker:
  run: PlannedRun
  run_dir: Path
  slot: int
  first_step: int
  process: subprocess.Popen

  def steps_done(self) -> int:
    steps = [m['step'] for m in read_metrics(self.run_dir) if 'loss' in m]
    return max(0, max(steps, default=self.first_step) - self.first_step)


def _start(run: PlannedRun, run_dir: Path, cores: Sequence[int], slot: int,
           first_step: int) -> _Worker:
  run_dir.mkdir(parents=True, exist_ok=True)
  fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name != 'config'}
  task = {'run': fields, 'config': as_json(run.config), 'run_dir': str(run_dir)}
  with open(run_dir / LOG_FILE, 'a', encoding='utf-8') as log:
    # A session of its own: a Ctrl-C at the terminal reaches this process only, which passes it
    # on once (a second SIGINT would make a worker stop without its checkpoint).
    process = subprocess.Popen(
        [sys.executable, '-m', 'gptjax.sweep.worker', ','.join(map(str, cores))],
        stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
  process.stdin.write(json.dumps(task))
  process.stdin.close()
  return _Worker(run, run_dir, slot, first_step, process)


def train_parallel(todo: Sequence[tuple[PlannedRun, Path, int]], n: int,
                   on_finish: Callable[[PlannedRun, Path, int | None], dict]) -> None:
  """Trains todo's runs ((run, run_dir, steps left)) n at a time, in order. on_finish(run, run_dir,
  exit code) is called as each worker ends and returns the run's status (the caller records a
  worker that died without recording one). Raises cli.Interrupted after a stop signal, once
  every worker has saved its checkpoint and stopped."""
  slots = core_slots(n)
  queue, workers, free = list(todo), [], list(range(n))
  total_steps = sum(steps for _, _, steps in todo)
  finished_steps = 0
  with cli.STOP.watching() as stop, stop.deferring(), \
       tqdm(total=total_steps, unit='step', desc=f'{n} at once', dynamic_ncols=True,
            mininterval=1.0) as bar:
    forwarded = False
    while queue or workers:
      while queue and free and not stop.signal_name:
        run, run_dir, steps = queue.pop(0)
        slot = free.pop(0)
        first_step = run.config.train.steps - steps
        workers.append(_start(run, run_dir, slots[slot], slot, first_step))
        bar.write(f'{run.label}, seed {run.seed}: started on cores '
                  f'{",".join(map(str, slots[slot]))} (log: {run_dir / LOG_FILE})')
      time.sleep(POLL_S)
      if stop.signal_name and not forwarded:
        for worker in workers:
          worker.process.send_signal(signal.Signals[stop.signal_name])
        forwarded = True
        bar.write(f'{stop.signal_name}: each run under way saves a checkpoint and stops')
      for worker in [w for w in workers if w.process.poll() is not None]:
        workers.remove(worker)
        free.append(worker.slot)
        finished_steps += worker.steps_done()
        status = on_finish(worker.run, worker.run_dir, worker.process.returncode)
        reason = f': {status["reason"]}' if status.get('reason') else ''
        bar.write(f'{worker.run.label}, seed {worker.run.seed}: {status["status"]}{reason}')
      done = min(total_steps, finished_steps + sum(w.steps_done() for w in workers))
      if done != bar.n:
        bar.set_postfix(running=len(workers), waiting=len(queue), refresh=False)
        bar.update(done - bar.n)
    if stop.signal_name:  # inside: watching() forgets the signal on its way out
      raise cli.Interrupted(
          f'{stop.signal_name}: the runs under way saved checkpoints; rerun the same command to '
          'resume', stop.signal_name)


def recorded_end(run_dir: Path) -> dict | None:
  """The end a worker recorded (done, diverged, failed, interrupted), or None if its process
  died without recording one."""
  status = read_status(run_dir)
  return None if status['status'] == 'pending' or status['reason'] == KILLED else status
