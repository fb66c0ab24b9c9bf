"""Running a sweep: its planned runs one after another, each in its own directory, resumable.

A run's status.json says what became of it, so a rerun knows what to skip (done, or diverged:
training is deterministic, it would diverge again), what to resume (interrupted) and what to retry
(failed); a failure of one run is recorded with its reason and the sweep goes on.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from gptjax import checkpoint, cli, tables, trainer
from gptjax.config import base_config
from gptjax.files import write_json_atomic
from gptjax.sweep.plan import (CONFIG_FILE, ERROR_LOG, STATUS_FILE, SWEEP_FILE, PlannedRun, as_json,
                               flatten, load_sweep_module, plan, sweep_variants)
from gptjax.logs import read_metrics
from gptjax.sweep.grid import GridSweep
from gptjax.sweep.parallel import (LOG_FILE, check_cpu_backend, core_slots, recorded_end,
                                   train_parallel)
from gptjax.sweep.report import KILLED, read_status, report


def _check_unchanged(run: PlannedRun, run_dir: Path) -> None:
  """A run directory must hold the run this sweep would start: resuming or skipping it under a
  different config would put two experiments in one row."""
  path = run_dir / CONFIG_FILE
  if not path.exists():
    return
  saved, new = flatten(json.loads(path.read_text())), flatten(as_json(run.config))
  # A field added to gptjax after the run was saved is no change while it keeps its default.
  defaults = flatten(as_json(base_config()))
  changed = [
      f'{k}={saved.get(k)!r} (now {new.get(k)!r})' for k in sorted(set(saved) | set(new))
      if saved.get(k) != new.get(k)
      and not (k not in saved and k in defaults and new.get(k) == defaults[k])
  ]
  if changed:
    raise ValueError(f'{run_dir} was run with {", ".join(changed)}; use another sweep workdir for '
                     'the changed sweep, or delete that run directory')


def _write_status(run: PlannedRun, run_dir: Path, status: str, reason: str | None = None,
                  seconds: float = 0.0, **extra) -> dict:
  record = {
      'status': status, 'reason': reason, 'variant': run.variant, 'label': run.label,
      'seed': run.seed, 'factors': dict(run.factors), 'seconds': round(seconds, 1), **extra
  }
  write_json_atomic(run_dir / STATUS_FILE, record)
  return record


def _finished(run: PlannedRun, run_dir: Path) -> str | None:
  """'done' or 'diverged' when the run needs no more training, else None."""
  step = checkpoint.latest_step(run_dir)
  if step is not None and step >= run.config.train.steps:
    return 'done'
  if read_status(run_dir)['status'] == 'diverged':
    return 'diverged'
  return None


def _seconds_so_far(status: dict, run_dir: Path) -> float:
  """Training time already spent on a run. A killed run recorded none past its start: it
  trained until its last logged metric line."""
  seconds = status.get('seconds') or 0.0
  if status.get('reason') == KILLED and status.get('started'):
    last = max((m['time'] for m in read_metrics(run_dir) if 'time' in m), default=0.0)
    seconds += max(0.0, last - status['started'])
  return seconds


def train_one(run: PlannedRun, run_dir: str | Path) -> dict:
  """Trains one run to its end; records and returns its status. Only a stop request (Ctrl-C,
  SIGTERM) propagates, after the trainer saved a checkpoint."""
  run_dir = Path(run_dir)
  previous = _seconds_so_far(read_status(run_dir), run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  write_json_atomic(run_dir / CONFIG_FILE, as_json(run.config))
  _write_status(run, run_dir, 'running', seconds=previous, started=time.time())
  start = time.perf_counter()
  seconds = lambda: previous + time.perf_counter() - start
  try:
    trainer.train_and_evaluate(run.config, run_dir)
  except trainer.TrainingDiverged as e:
    return _write_status(run, run_dir, 'diverged', cli.one_line(e), seconds())
  except (cli.Interrupted, KeyboardInterrupt) as e:
    reason = cli.one_line(e) if isinstance(e, cli.Interrupted) else 'interrupted'
    _write_status(run, run_dir, 'interrupted', reason, seconds())
    raise
  except Exception as e:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
    (run_dir / ERROR_LOG).write_text(traceback.format_exc())
    return _write_status(run, run_dir, 'failed', f'{type(e).__name__}: {cli.one_line(e)}',
                         seconds())
  return _write_status(run, run_dir, 'done', seconds=seconds())


def _steps_left(run: PlannedRun, run_dir: Path) -> int:
  return run.config.train.steps - (checkpoint.latest_step(run_dir) or 0)


def _header(run: PlannedRun, i: int, n: int) -> str:
  return f'[run {i}/{n}] {run.label}, seed {run.seed} ({run.slug})'


def _train_in_turn(todo: Sequence[tuple[int, PlannedRun]], workdir: Path, n_runs: int) -> None:
  """One run after another, in this process, with the trainer's own progress bar and a line per
  run with the ETA of the rest (from the steps trained so far)."""
  steps_left = sum(_steps_left(run, workdir / run.slug) for _, run in todo)
  trained_steps, trained_seconds = 0, 0.0
  for position, (i, run) in enumerate(todo):
    run_dir = workdir / run.slug
    header = _header(run, i, n_runs)
    eta = (f', ETA {tables.duration(steps_left * trained_seconds / trained_steps)}'
           if trained_steps else '')
    tqdm.write(f'{header}: training; {len(todo) - position - 1} more after this{eta}')
    run_steps = _steps_left(run, run_dir)
    start = time.perf_counter()
    status = train_one(run, run_dir)
    trained_steps += run_steps
    trained_seconds += time.perf_counter() - start
    steps_left -= run_steps
    reason = f': {status["reason"]}' if status['reason'] else ''
    tqdm.write(f'{header}: {status["status"]} in {tables.duration(status["seconds"])}{reason}')


def _train_parallel(todo: Sequence[tuple[int, PlannedRun]], workdir: Path, n: int) -> None:
  """n runs at a time, each in a worker process (gptjax.sweep.parallel)."""
  def on_finish(run: PlannedRun, run_dir: Path, exit_code: int | None) -> dict:
    status = recorded_end(run_dir)
    if status is None:  # the worker died before its run could record an end
      status = _write_status(
          run, run_dir, 'failed', f'its worker process exited with code {exit_code} without '
          f'recording an end (see {run_dir / LOG_FILE})',
          _seconds_so_far(read_status(run_dir), run_dir))
    return status

  train_parallel([(run, workdir / run.slug, _steps_left(run, workdir / run.slug))
                  for _, run in todo], n, on_finish)


def _baseline(grid: GridSweep | None, runs: Sequence[PlannedRun]) -> str | None:
  """The label the report measures differences from: a named sweep's 'baseline' variant, a grid's
  first arm; none for a tuned grid, whose arms are compared each at its own best value."""
  if grid is None:
    return 'baseline'
  return None if grid.tune else runs[0].label


def _ladder(grid: GridSweep | None) -> dict | None:
  if grid is None or not grid.ladder_keys:
    return None
  return {'keys': grid.ladder_keys, 'rungs': grid.rungs, 'tokens_per_param': grid.tokens_per_param}


def _tune(grid: GridSweep | None) -> dict | None:
  if grid is None or not grid.tune:
    return None
  return {'key': grid.tune[0], 'values': grid.tune[1], 'arms': grid.arm_labels()}


def run_sweep(config_path: str | Path, workdir: str | Path, sweep: str = 'default',
              variants: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
              command: str | None = None, grid: GridSweep | None = None,
              parallel: int = 1) -> list[dict]:
  """Runs every variant of SWEEPS[sweep] (or `variants`, or a GridSweep's over config_path) in
  workdir/<slug>, `parallel` at a time, then writes the report; returns each run's status
  record, in order."""
  workdir, overrides = Path(workdir), dict(overrides or {})
  if grid is not None:
    module, sweep, variants = grid, None, grid.variants
  else:
    module = load_sweep_module(config_path)
    sweep = None if variants else sweep
  runs = plan(module, list(variants) if variants else sweep_variants(module, sweep), overrides)
  if parallel > 1:
    check_cpu_backend()
    core_slots(parallel)  # enough cores, before anything is written
  for run in runs:
    _check_unchanged(run, workdir / run.slug)
  workdir.mkdir(parents=True, exist_ok=True)
  record = {
      'config': str(config_path), 'sweep': sweep, 'baseline': _baseline(grid, runs),
      'tune': _tune(grid), 'ladder': _ladder(grid), 'overrides': overrides, 'command': command,
      'runs': [{'slug': r.slug, 'variant': r.variant, 'label': r.label, 'seed': r.seed}
               for r in runs]
  }
  write_json_atomic(workdir / SWEEP_FILE, record)

  finished = {run.slug: _finished(run, workdir / run.slug) for run in runs}
  n_todo = sum(status is None for status in finished.values())
  tqdm.write(f'sweep of {len(runs)} runs in {workdir}: {len(runs) - n_todo} finished, '
             f'{n_todo} to run')
  for i, run in enumerate(runs, 1):
    if finished[run.slug]:
      run_dir = workdir / run.slug
      recorded = read_status(run_dir)
      if recorded['status'] != finished[run.slug]:  # e.g. killed right after its last save
        _write_status(run, run_dir, finished[run.slug], seconds=_seconds_so_far(recorded, run_dir))
      tqdm.write(f'{_header(run, i, len(runs))}: {finished[run.slug]} already, skipped')
  todo = [(i, run) for i, run in enumerate(runs, 1) if not finished[run.slug]]
  try:
    if parallel > 1 and todo:
      _train_parallel(todo, workdir, parallel)
    else:
      _train_in_turn(todo, workdir, len(runs))
  except (cli.Interrupted, KeyboardInterrupt):
    report(workdir)
    raise
  report(workdir)
  return [read_status(workdir / run.slug) for run in runs]
