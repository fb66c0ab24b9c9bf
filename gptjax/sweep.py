"""Ablation sweeps: every variant of a config file's grid, trained one after another, and a report
that compares them at equal token budget.

  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/ablation [--sweep=default]
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/ablation --report_only
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/mine \\
      --variant=mlp=swiglu,seed=0 --variant=mlp=swiglu,seed=1 --config.train.steps=600

The config file defines `get_config(variant, overrides=None)`, `SWEEPS` ({name: [variant, ...]})
and, optionally, `variant_label(variant)` (the variant's canonical name without its seed, which
groups seeds). `--config.KEY=VALUE` flags become `overrides`, applied to every run alike.

WORKDIR holds
  sweep.json                 the planned runs in order, so a report also shows what is pending
  <slug>/config.json         the run's exact config (the checkpoints carry it too)
  <slug>/status.json         {'status': 'running'|'done'|'diverged'|'failed'|'interrupted',
                              'reason': ..., 'seconds': ...}
  <slug>/metrics.jsonl, checkpoints/, tensorboard/: the trainer's
  runs.csv, results.csv, results.md, val_loss_curves.png, final_loss_by_factor.png: the report
Rerunning the command skips finished runs (a checkpoint at train.steps) and diverged ones
(training is deterministic: they would diverge again), resumes interrupted ones and retries failed
ones. The report reads only these files, so `--report_only` works at any time, also while the
sweep runs.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import re
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import ml_collections
from tqdm.auto import tqdm

from gptjax import checkpoint, cli, flops, trainer
from gptjax.config import ModelConfig
from gptjax.logs import read_metrics

SWEEP_FILE = 'sweep.json'
CONFIG_FILE = 'config.json'
STATUS_FILE = 'status.json'
ERROR_LOG = 'error.log'
# Reported per run and grouped by in the factor plot: (column, how to read it from a config dict).
FACTORS = {
    'norm_position': lambda c, m: m.norm_position,
    'norm': lambda c, m: m.norm,
    'pos': lambda c, m: m.position,
    'attn': lambda c, m: ('mha' if m.n_kv_heads == m.n_heads else
                          'mqa' if m.n_kv_heads == 1 else f'gqa{m.n_kv_heads}'),
    'mlp': lambda c, m: m.mlp,
    'lr': lambda c, m: c['optim']['lr'],
    'warmup': lambda c, m: c['optim']['warmup_steps'],
    'grad_clip': lambda c, m: c['optim']['grad_clip'],
}


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  variant: str  # as written in the sweep
  label: str  # canonical name without the seed: seeds of one label are averaged
  seed: int
  slug: str  # its directory under the sweep's workdir
  config: ml_collections.ConfigDict


# ---------------------------------------------------------------------------------------------
# Planning


def load_config_module(path: str | Path):
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'no config file {path}')
  spec = importlib.util.spec_from_file_location(f'sweep_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name in ('get_config', 'SWEEPS'):
    if not hasattr(module, name):
      raise ValueError(f'{path} defines no {name}; a sweep config defines get_config(variant, '
                       'overrides=None) and SWEEPS = {name: [variant, ...]}')
  return module


def sweep_variants(module, name: str) -> list[str]:
  if name not in module.SWEEPS:
    raise ValueError(f'sweep {name!r} is not one of {", ".join(map(repr, module.SWEEPS))} '
                     f'(SWEEPS in {module.__file__})')
  return list(module.SWEEPS[name])


def slugify(label: str, seed: int) -> str:
  """'norm=rmsnorm,pos=rope', 1 -> 'norm-rmsnorm_pos-rope_seed-1' (a plain directory name)."""
  name = re.sub(r'[^A-Za-z0-9.+-]', '_', label.replace('=', '-').replace(',', '_'))
  return f'{name}_seed-{seed}'


def _label(module, variant: str) -> str:
  if hasattr(module, 'variant_label'):
    return module.variant_label(variant)
  kept = [item for item in variant.split(',') if item and not item.startswith('seed=')]
  return ','.join(kept) or 'baseline'


def _as_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(json.dumps(config.to_dict()))


def plan(module, variants: Sequence[str], overrides: Mapping[str, Any] | None = None
         ) -> list[PlannedRun]:
  """One PlannedRun per variant, every config built (and so validated) before anything runs."""
  runs, by_slug, by_config = [], {}, {}
  for variant in variants:
    config = module.get_config(variant, overrides=dict(overrides or {}))
    label = _label(module, variant)
    run = PlannedRun(variant, label, config.seed, slugify(label, config.seed), config)
    same_config = json.dumps(_as_json(config), sort_keys=True)
    for seen, key in ((by_slug, run.slug), (by_config, same_config)):
      if key in seen:
        raise ValueError(f'variants {seen[key]!r} and {variant!r} are the same run; '
                         'list each variant once')
      seen[key] = variant
    runs.append(run)
  return runs


def _flat(tree: Mapping, prefix: str = '') -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _check_unchanged(run: PlannedRun, run_dir: Path) -> None:
  """A run directory must hold the run this sweep would start: resuming or skipping it under a
  different config would put two experiments in one row."""
  path = run_dir / CONFIG_FILE
  if not path.exists():
    return
  saved, new = _flat(json.loads(path.read_text())), _flat(_as_json(run.config))
  changed = [f'{k}={saved.get(k)!r} (now {new.get(k)!r})'
             for k in sorted(set(saved) | set(new)) if saved.get(k) != new.get(k)]
  if changed:
    raise ValueError(f'{run_dir} was run with {", ".join(changed)}; use another --workdir for '
                     'the changed sweep, or delete that run directory')


# ---------------------------------------------------------------------------------------------
# Running


def _read_json(path: Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _write_json(path: Path, obj) -> None:
  """Atomic, so a report reading while the sweep writes never sees half a file."""
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(json.dumps(obj, indent=2) + '\n')
  tmp.replace(path)


def read_status(run_dir: Path) -> dict:
  return _read_json(Path(run_dir) / STATUS_FILE) or {'status': 'pending', 'reason': None}


def _write_status(run: PlannedRun, run_dir: Path, status: str, reason: str | None = None,
                  seconds: float = 0.0) -> dict:
  record = {'status': status, 'reason': reason, 'variant': run.variant, 'label': run.label,
            'seed': run.seed, 'seconds': round(seconds, 1)}
  _write_json(run_dir / STATUS_FILE, record)
  return record


def _finished(run: PlannedRun, run_dir: Path) -> str | None:
  """'done' or 'diverged' when the run needs no more training, else None."""
  step = checkpoint.latest_step(run_dir)
  if step is not None and step >= run.config.train.steps:
    return 'done'
  if read_status(run_dir)['status'] == 'diverged':
    return 'diverged'
  return None


def _train(run: PlannedRun, run_dir: Path) -> dict:
  """Trains one run to its end; records and returns its status. Only a stop request (Ctrl-C,
  SIGTERM) propagates, after the trainer saved a checkpoint."""
  previous = read_status(run_dir).get('seconds') or 0.0
  run_dir.mkdir(parents=True, exist_ok=True)
  _write_json(run_dir / CONFIG_FILE, _as_json(run.config))
  _write_status(run, run_dir, 'running', seconds=previous)
  start = time.perf_counter()
  seconds = lambda: previous + time.perf_counter() - start  # noqa: E731
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


def _duration(seconds: float) -> str:
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{secs:02d}s'


def _steps_left(run: PlannedRun, run_dir: Path) -> int:
  return run.config.train.steps - (checkpoint.latest_step(run_dir) or 0)


def run_sweep(config_path: str | Path, workdir: str | Path, sweep: str = 'default',
              variants: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
              command: str | None = None) -> list[dict]:
  """Runs every variant of SWEEPS[sweep] (or `variants`) in workdir/<slug>, then writes the
  report; returns each run's status record, in order."""
  workdir = Path(workdir)
  module = load_config_module(config_path)
  sweep = None if variants else sweep
  runs = plan(module, list(variants) if variants else sweep_variants(module, sweep), overrides)
  for run in runs:
    _check_unchanged(run, workdir / run.slug)
  workdir.mkdir(parents=True, exist_ok=True)
  _write_json(workdir / SWEEP_FILE, {
      'config': str(config_path), 'sweep': sweep,
      'overrides': dict(overrides or {}), 'command': command,
      'runs': [{'slug': r.slug, 'variant': r.variant, 'label': r.label, 'seed': r.seed}
               for r in runs]})

  finished = {run.slug: _finished(run, workdir / run.slug) for run in runs}
  n_todo = sum(status is None for status in finished.values())
  tqdm.write(f'sweep of {len(runs)} runs in {workdir}: {len(runs) - n_todo} finished, '
             f'{n_todo} to run')
  steps_left = sum(_steps_left(r, workdir / r.slug) for r in runs if finished[r.slug] is None)
  trained_steps, trained_seconds = 0, 0.0
  statuses = []
  for i, run in enumerate(runs, 1):
    run_dir = workdir / run.slug
    header = f'[run {i}/{len(runs)}] {run.label}, seed {run.seed} ({run.slug})'
    if finished[run.slug]:
      if read_status(run_dir)['status'] != finished[run.slug]:  # e.g. killed right after saving
        _write_status(run, run_dir, finished[run.slug])
      statuses.append(read_status(run_dir))
      tqdm.write(f'{header}: {finished[run.slug]} already, skipped')
      continue
    n_todo -= 1
    eta = (f', ETA {_duration(steps_left * trained_seconds / trained_steps)}'
           if trained_steps else '')
    tqdm.write(f'{header}: training; {n_todo} more after this{eta}')
    run_steps = _steps_left(run, run_dir)
    start = time.perf_counter()
    try:
      status = _train(run, run_dir)
    except (cli.Interrupted, KeyboardInterrupt):
      report(workdir)
      raise
    trained_steps += run_steps
    trained_seconds += time.perf_counter() - start
    steps_left -= run_steps
    statuses.append(status)
    reason = f': {status["reason"]}' if status['reason'] else ''
    tqdm.write(f'{header}: {status["status"]} in {_duration(status["seconds"])}{reason}')
  report(workdir)
  return statuses


# ---------------------------------------------------------------------------------------------
# Report


def _metrics(run_dir: Path) -> list[dict]:
  """The run's metric lines, one per step and kind (a resumed run may have logged a step twice:
  the later line wins). Retried once: a report may read while the trainer appends a line."""
  for attempt in range(3):
    try:
      lines = read_metrics(run_dir)
      break
    except json.JSONDecodeError:
      if attempt == 2:
        raise
      time.sleep(0.2)
  latest = {}
  for line in lines:
    latest[(line['step'], 'val_loss' in line)] = line
  return [latest[key] for key in sorted(latest)]


def _median(values: Iterable[float]) -> float:
  values = [v for v in values if v is not None and math.isfinite(v)]
  return statistics.median(values) if values else math.nan


def kv_cache_bytes_per_token(cfg: ModelConfig) -> int:
  """Keys and values of every layer for one token: what GQA/MQA shrink by n_heads/n_kv_heads."""
  return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * cfg.compute_dtype.itemsize


def load_run(run_dir: Path) -> dict | None:
  """One run's record for the report, from its own files; None for a directory with no config."""
  config = _read_json(run_dir / CONFIG_FILE)
  if config is None:
    return None
  status = read_status(run_dir)
  cfg = ModelConfig.from_config(config['model'])
  seq_len = config['train'].get('seq_len') or cfg.block_size
  tokens_per_step = config['train']['batch_size'] * seq_len
  steps = config['train']['steps']
  metrics = _metrics(run_dir)
  evals = [(m['step'], m['val_loss']) for m in metrics if 'val_loss' in m]
  finite = [loss for _, loss in evals if math.isfinite(loss)]
  final = [loss for step, loss in evals if step == steps]
  last_step = max((m['step'] for m in metrics), default=0)
  return {
      'slug': run_dir.name, 'label': status.get('label') or run_dir.name,
      'seed': status.get('seed', config.get('seed')),
      'status': status['status'], 'reason': status.get('reason'),
      'step': last_step, 'steps': steps,
      'tokens': steps * tokens_per_step, 'tokens_per_step': tokens_per_step,
      'final_val_loss': final[-1] if final and status['status'] == 'done' else math.nan,
      'best_val_loss': min(finite) if finite else math.nan,
      'tokens_per_sec': _median(m.get('tokens_per_sec') for m in metrics),
      'seconds': status.get('seconds'),
      'params': flops.count_params_for_config(cfg),
      'flops_per_token': flops.flops_per_token(cfg, seq_len),
      'kv_cache_bytes_per_token': kv_cache_bytes_per_token(cfg),
      'd_ff': cfg.d_ff,
      **{name: read(config, cfg) for name, read in FACTORS.items()},
      'evals': evals,
  }


def _mean(values: list[float]) -> float:
  return statistics.fmean(values) if values else math.nan


def _std(values: list[float]) -> float:
  return statistics.stdev(values) if len(values) > 1 else math.nan


def summarize(runs: list[dict], planned: Mapping[str, int]) -> list[dict]:
  """One row per label (variant without seed), sorted by mean final val loss, unfinished last.
  planned: label -> number of runs the sweep plans for it."""
  by_label: dict[str, list[dict]] = {}
  for run in runs:
    by_label.setdefault(run['label'], []).append(run)
  rows = []
  for label, group in by_label.items():
    done = [r for r in group if r['status'] == 'done']
    finals = [r['final_val_loss'] for r in done]
    first = group[0]
    rows.append({
        'variant': label,
        'seeds': max(planned.get(label, 0), len(group)),
        'done': len(done),
        'diverged': sum(r['status'] == 'diverged' for r in group),
        'failed': sum(r['status'] == 'failed' for r in group),
        'final_val_loss_mean': _mean(finals),
        'final_val_loss_std': _std(finals),
        'best_val_loss': _mean([r['best_val_loss'] for r in done]),
        'tokens_per_sec': _mean([r['tokens_per_sec'] for r in group
                                 if math.isfinite(r['tokens_per_sec'])]),
        **{k: first[k] for k in ('params', 'flops_per_token', 'kv_cache_bytes_per_token',
                                 'd_ff', 'tokens', *FACTORS)},
    })
  baseline = next((r['final_val_loss_mean'] for r in rows if r['variant'] == 'baseline'),
                  math.nan)
  for row in rows:
    row['delta_vs_baseline'] = row['final_val_loss_mean'] - baseline
  return sorted(rows, key=lambda r: (math.isnan(r['final_val_loss_mean']),
                                     r['final_val_loss_mean'] if r['done'] else 0.0))


RUN_COLUMNS = ('slug', 'label', 'seed', 'status', 'reason', 'step', 'steps', 'final_val_loss',
               'best_val_loss', 'tokens_per_sec', 'seconds', 'tokens', 'params',
               'flops_per_token', 'kv_cache_bytes_per_token', 'd_ff', *FACTORS)
RESULT_COLUMNS = ('variant', 'final_val_loss_mean', 'final_val_loss_std', 'delta_vs_baseline',
                  'best_val_loss', 'seeds', 'done', 'diverged', 'failed', 'params',
                  'flops_per_token', 'kv_cache_bytes_per_token', 'd_ff', 'tokens',
                  'tokens_per_sec', *FACTORS)


def _csv_value(value):
  if isinstance(value, float):
    return '' if math.isnan(value) else repr(value)
  return '' if value is None else value


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_csv_value(row[c]) for c in columns])


def _si(value: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if value >= scale:
      return f'{value / scale:.3g}{unit}'
  return f'{value:.3g}'


def _bytes(n: int) -> str:
  return f'{n / 1024:g} KiB' if n >= 1024 else f'{n} B'


def _loss(value: float, digits: int = 4) -> str:
  return '—' if math.isnan(value) else f'{value:.{digits}f}'


def _markdown(sweep_dir: Path, sweep: dict, runs: list[dict], rows: list[dict],
              plots: Sequence[str]) -> str:
  counts = {s: sum(r['status'] == s for r in runs) for s in
            ('done', 'running', 'interrupted', 'diverged', 'failed')}
  pending = len(sweep.get('runs', [])) - sum(
      1 for r in runs if r['slug'] in {p['slug'] for p in sweep.get('runs', [])})
  budgets = sorted({(r['steps'], r['tokens']) for r in runs})
  lines = [f'# Sweep results: {sweep_dir.name}', '']
  if sweep.get('command'):
    lines += ['```', sweep['command'], '```', '']
  lines.append(f'{len(runs) + max(pending, 0)} runs: ' + ', '.join(
      f'{n} {s}' for s, n in [*counts.items(), ('pending', max(pending, 0))] if n) + '. ' +
      'Token budget per run: ' + '; '.join(f'{t:,} tokens ({s} steps)' for s, t in budgets) +
      ('' if len(budgets) <= 1 else ' (NOT equal: compare with care)') + '.')
  lines.append('')
  has_baseline = any(r['variant'] == 'baseline' and r['done'] for r in rows)
  header = ['variant', 'final val loss', *(['Δ baseline'] if has_baseline else []),
            'best val loss', 'params', 'FLOPs/token', 'KV cache/token', 'd_ff', 'tokens/s',
            'diverged', 'done']
  lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in rows:
    mean, std = row['final_val_loss_mean'], row['final_val_loss_std']
    final = _loss(mean) + ('' if math.isnan(std) else f' ± {std:.4f}')
    delta = ([] if not has_baseline else
             ['—' if math.isnan(row['delta_vs_baseline']) else f'{row["delta_vs_baseline"]:+.4f}'])
    tok_s = '—' if math.isnan(row['tokens_per_sec']) else f'{row["tokens_per_sec"]:,.0f}'
    cells = [f'`{row["variant"]}`', final, *delta, _loss(row['best_val_loss']),
             f'{row["params"]:,}', _si(row['flops_per_token']),
             _bytes(row['kv_cache_bytes_per_token']), str(row['d_ff']), tok_s,
             f'{row["diverged"]}/{row["seeds"]}', f'{row["done"]}/{row["seeds"]}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += [
      '',
      '- final val loss: mean ± sample std over the seeds that finished, at the last step; '
      'best val loss: mean over those seeds of each run\'s lowest val loss.',
      '- params: all parameters; FLOPs/token: training (6N + attention, PaLM\'s count); '
      'KV cache/token: 2 x layers x kv heads x head_dim x bytes of the compute dtype.',
      '- tokens/s: median over each run\'s log lines, mean over seeds (a wall-clock number: '
      'other load on the machine lowers it).',
      '- diverged: seeds whose loss became NaN/inf, of all seeds; done: seeds that finished.',
  ]
  troubles = [r for r in runs if r['status'] in ('diverged', 'failed', 'interrupted')]
  if troubles:
    lines += ['', '## Runs that did not finish', '']
    lines += [f'- `{r["slug"]}`: {r["status"]} at step {r["step"]}: {r["reason"]}'
              for r in troubles]
  lines += ['']
  lines += [f'![{Path(p).stem.replace("_", " ")}]({p})' for p in plots]
  return '\n'.join(lines) + '\n'


def _factor_contexts(runs: list[dict], factor: str, factors: Sequence[str]):
  """Runs grouped by the values of every other factor: in each group only `factor` changes, so
  its points compare like with like (one group around the baseline in a one-at-a-time sweep,
  one per combination of the others in a factorial)."""
  contexts: dict[tuple, dict[Any, list[float]]] = {}
  for run in runs:
    key = tuple(run[f] for f in factors if f != factor)
    contexts.setdefault(key, {}).setdefault(run[factor], []).append(run['final_val_loss'])
  return [c for c in contexts.values() if len(c) > 1]


def _plot_curves(path: Path, runs: list[dict], labels: list[str]) -> None:
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(13, 5))
  colors = plt.get_cmap('tab10' if len(labels) <= 10 else 'tab20')
  tail_low, tail_high = math.inf, -math.inf
  for i, label in enumerate(labels):
    group = [r for r in runs if r['label'] == label and r['evals']]
    if not group:
      continue
    by_step: dict[int, list[float]] = {}
    for run in group:
      for step, loss in run['evals']:
        if math.isfinite(loss):
          by_step.setdefault(step, []).append(loss)
    steps = sorted(by_step)
    if not steps:  # e.g. diverged before its first evaluation
      continue
    x = [s * group[0]['tokens_per_step'] / 1e6 for s in steps]
    mean = [statistics.fmean(by_step[s]) for s in steps]
    low = [min(by_step[s]) for s in steps]
    high = [max(by_step[s]) for s in steps]
    color = colors(i % colors.N)
    for ax in axes:
      ax.plot(x, mean, color=color, label=f'{label} (n={len(group)})')
      ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    for run in group:
      if run['status'] == 'diverged':
        axes[0].plot([run['step'] * run['tokens_per_step'] / 1e6], [mean[-1]], 'x', color=color,
                     markersize=9)
    half = [(xi, lo, hi) for xi, lo, hi in zip(x, low, high) if xi >= x[-1] / 2]
    tail_low = min([tail_low, *(lo for _, lo, _ in half)])
    tail_high = max([tail_high, *(hi for _, _, hi in half)])
  axes[0].set_title('validation loss (band: min..max over seeds; x: diverged)')
  axes[1].set_title('second half of training')
  if math.isfinite(tail_low):
    margin = 0.05 * (tail_high - tail_low) + 1e-3
    axes[1].set_ylim(tail_low - margin, tail_high + margin)
    axes[1].set_xlim(left=max(ax.get_xlim()[1] for ax in axes) / 2 * 0.95)
  for ax in axes:
    ax.set_xlabel('training tokens (M)')
    ax.set_ylabel('val loss (nats/token)')
    ax.grid(alpha=0.3)
  if any(ax.get_legend_handles_labels()[0] for ax in axes):
    axes[1].legend(fontsize=8, loc='upper right')
  else:
    axes[0].text(0.5, 0.5, 'no evaluations yet', ha='center', transform=axes[0].transAxes)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_factors(path: Path, runs: list[dict]) -> None:
  import matplotlib.pyplot as plt
  done = [r for r in runs if r['status'] == 'done']
  factors = [f for f in FACTORS if len({r[f] for r in runs}) > 1]
  shown = [(f, _factor_contexts(done, f, factors)) for f in factors]
  shown = [(f, contexts) for f, contexts in shown if contexts]
  fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.2 * max(len(shown), 1) + 1, 4),
                           squeeze=False, sharey=True)
  for ax, (factor, contexts) in zip(axes[0], shown):
    values = sorted({v for c in contexts for v in c}, key=lambda v: (isinstance(v, str), v))
    position = {v: i for i, v in enumerate(values)}
    for context in contexts:
      xs = sorted(context, key=position.get)
      ax.plot([position[v] for v in xs], [statistics.fmean(context[v]) for v in xs],
              color='tab:blue', alpha=0.5, marker='o')
      for v in xs:
        ax.scatter([position[v]] * len(context[v]), context[v], color='tab:blue', s=10,
                   alpha=0.6)
    overall = [_mean([statistics.fmean(c[v]) for c in contexts if v in c]) for v in values]
    ax.scatter(range(len(values)), overall, color='black', marker='_', s=600, zorder=3,
               label='mean')
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_title(factor)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('final val loss')
  if not shown:
    axes[0][0].text(0.5, 0.5, 'no finished runs that differ in one factor yet', ha='center',
                    transform=axes[0][0].transAxes)
  fig.suptitle('final val loss by factor (lines join runs that differ only in that factor; '
               'dots: seeds; black: mean)', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def report(sweep_dir: str | Path) -> list[dict]:
  """Rebuilds runs.csv, results.csv, results.md and the plots from the run directories (at any
  time: unfinished runs show as such); returns the results rows."""
  import matplotlib
  matplotlib.use('Agg')

  sweep_dir = Path(sweep_dir)
  if not sweep_dir.is_dir():
    raise FileNotFoundError(f'no sweep directory {sweep_dir}')
  sweep = _read_json(sweep_dir / SWEEP_FILE) or {}
  order = [r['slug'] for r in sweep.get('runs', [])]
  dirs = sorted((d for d in sweep_dir.iterdir() if d.is_dir()),
                key=lambda d: (order.index(d.name) if d.name in order else len(order), d.name))
  runs = [run for run in map(load_run, dirs) if run is not None]
  if not runs and not order:
    raise FileNotFoundError(f'{sweep_dir} holds no sweep runs (no */{CONFIG_FILE})')
  planned: dict[str, int] = {}
  for entry in sweep.get('runs', []):
    planned[entry['label']] = planned.get(entry['label'], 0) + 1
  rows = summarize(runs, planned)
  labels = list(dict.fromkeys([*(p['label'] for p in sweep.get('runs', [])),
                               *(r['label'] for r in runs)]))

  _write_csv(sweep_dir / 'runs.csv', runs, RUN_COLUMNS)
  _write_csv(sweep_dir / 'results.csv', rows, RESULT_COLUMNS)
  plots = ['val_loss_curves.png', 'final_loss_by_factor.png']
  _plot_curves(sweep_dir / plots[0], runs, labels)
  _plot_factors(sweep_dir / plots[1], runs)
  (sweep_dir / 'results.md').write_text(_markdown(sweep_dir, sweep, runs, rows, plots),
                                        encoding='utf-8')
  return rows


# ---------------------------------------------------------------------------------------------
# Command line


def _command(argv: Sequence[str]) -> str:
  return ' '.join(['python -m gptjax.sweep', *argv[1:]])


def main(argv):
  from absl import flags
  from absl import logging as absl_logging
  from ml_collections import config_flags

  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value)')
  flags_ = flags.FLAGS
  if flags_.workdir is None:
    sys.exit('error: --workdir is required, e.g. --workdir=runs/ablation')
  absl_logging.set_verbosity(absl_logging.WARNING)
  if flags_.report_only:
    report(flags_.workdir)
    print(f'report: {Path(flags_.workdir) / "results.md"}')
    return
  if flags_.config is None:
    sys.exit('error: --config is required, e.g. --config=configs/ablation.py')
  path = config_flags.get_config_filename(flags_['config'])
  if ':' in path:
    sys.exit('error: name the variants with --sweep or --variant, not after the config file')
  statuses = run_sweep(path, flags_.workdir, flags_.sweep, flags_.variant,
                       config_flags.get_override_values(flags_['config']),
                       command=_command(sys.argv))
  done = sum(s['status'] == 'done' for s in statuses)
  print(f'{done}/{len(statuses)} runs done; report: {Path(flags_.workdir) / "results.md"}')


def _define_flags():
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file('config', None, 'Sweep config file (e.g. configs/ablation.py); '
                                  '--config.KEY=VALUE overrides apply to every run.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory of the sweep: one subdirectory per run.')
  flags.DEFINE_string('sweep', 'default', 'Name of a grid in the config file\'s SWEEPS.')
  flags.DEFINE_multi_string('variant', None, 'Run these variants instead of a named sweep '
                            '(repeat the flag), e.g. --variant=mlp=swiglu,seed=0.')
  flags.DEFINE_bool('report_only', False, 'Only rebuild the report from the run directories.')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
