"""A sweep's report, rebuilt from its run directories alone (at any time, also while the sweep
runs): one record per run, one summary row per label (its seeds averaged), runs.csv, results.csv,
results.md and the plots."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from gptjax import flops, workdir_lock
from gptjax.config import ModelConfig
from gptjax.files import read_json
from gptjax.logs import read_metrics
from gptjax.model import kv_cache_bytes
from gptjax.sweep.plan import CONFIG_FILE, STATUS_FILE, SWEEP_FILE, differing_keys
from gptjax.sweep import ladder
from gptjax.sweep.logits import logit_groups, logit_markdown, plot_logits
from gptjax.sweep.plots import plot_curves, plot_factors, plot_scaling, plot_tuned
from gptjax.sweep.stats import LEVEL, mean_interval, welch
from gptjax.sweep.tuned import METRIC_NAMES, tuned_markdown, tuned_rows
from gptjax.tables import format_bytes, format_si, markdown_table

KILLED = 'its process died (kill -9 or a crash) without recording it; rerun the sweep to resume'


def read_status(run_dir: Path) -> dict:
  """What the runner last recorded of a run; 'pending' for one it has not started. A run still
  recorded as running that no process trains (its workdir lock is free) was killed: it reads
  as interrupted."""
  status = read_json(Path(run_dir) / STATUS_FILE) or {'status': 'pending', 'reason': None}
  if status['status'] == 'running' and not workdir_lock.is_held(run_dir):
    status = {**status, 'status': 'interrupted', 'reason': KILLED}
  return status


def _kind(line: dict) -> int:
  """A metric line is the training step's (0), the validation loss's (1), or a downstream
  eval's (2: config.evals, metrics named '<eval>/<metric>'), in the order the trainer writes
  them at a step."""
  if 'val_loss' in line:
    return 1
  return 2 if any('/' in key for key in line) else 0


def _metrics(run_dir: Path) -> list[dict]:
  """The run's metric lines, one per step and kind (a resumed run may have logged a step twice:
  the later line wins). A line being appended while the report reads is skipped (read_metrics)."""
  lines = read_metrics(run_dir)
  latest = {}
  for line in lines:
    latest[(line['step'], _kind(line))] = line
  return [latest[key] for key in sorted(latest)]


def _median(values: Iterable[float]) -> float:
  values = [v for v in values if v is not None and math.isfinite(v)]
  return statistics.median(values) if values else math.nan


def load_run(run_dir: Path) -> dict | None:
  """One run's record for the report, from its own files; None for a directory with no config."""
  config = read_json(run_dir / CONFIG_FILE)
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
  final_bpb = [m['val_bpb'] for m in metrics if m['step'] == steps and 'val_bpb' in m]
  done = status['status'] == 'done'
  last_step = max((m['step'] for m in metrics), default=0)
  return {
      'slug': run_dir.name,
      'label': status.get('label') or run_dir.name,
      'seed': status.get('seed', config.get('seed')),
      'status': status['status'],
      'reason': status.get('reason'),
      'step': last_step,
      'steps': steps,
      'tokens': steps * tokens_per_step,
      'tokens_per_step': tokens_per_step,
      'final_val_loss': final[-1] if final and done else math.nan,
      # Bits per byte of the text (written since the report compares tokenizers): runs of
      # different tokenizers are compared by it, their nats per token are not comparable.
      'final_val_bpb': final_bpb[-1] if final_bpb and done else math.nan,
      'tokenizer': config['data']['tokenizer'],
      'best_val_loss': min(finite) if finite else math.nan,
      'tokens_per_sec': _median(m.get('tokens_per_sec') for m in metrics),
      'seconds': status.get('seconds'),
      'params': flops.count_params_for_config(cfg),
      'flops_per_token': flops.flops_per_token(cfg, seq_len),
      'kv_cache_bytes_per_token': kv_cache_bytes(cfg),  # what GQA/MQA shrink
      'd_ff': cfg.d_ff,
      'factors': status.get('factors'),  # None: recorded before runs kept their factors
      'config': config,
      'evals': evals,
      # config.evals' metrics at the last step ('<eval>/<metric>' -> value), of a finished run.
      'downstream': {
          key: value
          for m in metrics if m['step'] == steps and done for key, value in m.items() if '/' in key
      },
      # (step, largest attention logit) where the run logged it (train.log_attention_logits).
      'attn_logits': [(m['step'], m['max_attn_logit']) for m in metrics if 'max_attn_logit' in m],
  }


def _fill_missing_factors(runs: list[dict]) -> None:
  """Runs whose status.json names no factors (written before runs kept them) are told apart by
  the config keys in which they differ from one another."""
  missing = [run for run in runs if run['factors'] is None]
  for run, factors in zip(missing, differing_keys([run['config'] for run in missing])):
    run['factors'] = factors


def _mean(values: list[float]) -> float:
  return statistics.fmean(values) if values else math.nan


def _std(values: list[float]) -> float:
  return statistics.stdev(values) if len(values) > 1 else math.nan


# What every seed of a variant has in common, copied from its first run.
_SHARED_BY_SEEDS = ('params', 'flops_per_token', 'kv_cache_bytes_per_token', 'd_ff', 'tokens',
                    'tokenizer', 'factors')


def compared_metric(runs: list[dict]) -> str:
  """What the report compares runs by: nats per token, or bits per byte where the runs'
  tokenizers differ (a byte-level model's nats per token are not a BPE model's)."""
  return 'val_bpb' if len({run['tokenizer'] for run in runs}) > 1 else 'val_loss'


def summarize(runs: list[dict], planned: Mapping[str, int], baseline: str = 'baseline',
              metric: str = 'val_loss') -> list[dict]:
  """One row per label (variant without seed), sorted by the mean final `metric`, unfinished
  last. planned: label -> number of runs the sweep plans for it. Each row's final val loss (and
  bits per byte) has its t interval over seeds; its difference to the baseline label in `metric`
  has Welch's interval and p-value."""
  by_label: dict[str, list[dict]] = {}
  for run in runs:
    by_label.setdefault(run['label'], []).append(run)
  rows, finals_of = [], {}
  for label, group in by_label.items():
    done = [r for r in group if r['status'] == 'done']
    finals_of[label] = [r[f'final_{metric}'] for r in done]
    first = group[0]
    rows.append({
        'variant': label,
        'seeds': max(planned.get(label, 0), len(group)),
        'done': len(done),
        'diverged': sum(r['status'] == 'diverged' for r in group),
        'failed': sum(r['status'] == 'failed' for r in group),
        **_seed_stats('val_loss', [r['final_val_loss'] for r in done]),
        **_seed_stats('val_bpb', [r['final_val_bpb'] for r in done]),
        'best_val_loss': _mean([r['best_val_loss'] for r in done]),
        'tokens_per_sec': _mean(
            [r['tokens_per_sec'] for r in group if math.isfinite(r['tokens_per_sec'])]),
        **{k: first[k]
           for k in _SHARED_BY_SEEDS},
        **_downstream_stats(done),
    })
  for row in rows:
    comparison = welch(finals_of[row['variant']], finals_of.get(baseline, []))
    row.update(metric=metric, is_baseline=row['variant'] == baseline,
               delta_vs_baseline=comparison.difference.estimate,
               delta_ci_low=comparison.difference.low, delta_ci_high=comparison.difference.high,
               p_value=comparison.p_value, resolved=comparison.difference.resolved)
  return sorted(
      rows, key=lambda r: (math.isnan(r[f'final_{metric}_mean']), r[f'final_{metric}_mean']
                           if r['done'] else 0.0))


def downstream_names(runs: list[dict]) -> list[str]:
  """Every config.evals metric a run logged at its last step, in first-seen order."""
  return list(dict.fromkeys(name for run in runs for name in run.get('downstream', {})))


def _downstream_stats(done: list[dict]) -> dict:
  """'<eval>/<metric>_mean' and '_std' over the seeds that finished and logged it."""
  stats = {}
  for name in downstream_names(done):
    values = [r['downstream'][name] for r in done if name in r['downstream']]
    stats.update({f'{name}_mean': _mean(values), f'{name}_std': _std(values)})
  return stats


def _seed_stats(metric: str, finals: list[float]) -> dict:
  """A final metric over the seeds that finished: the values, mean, std and t interval (runs
  that did not record the metric, such as bits per byte before it was logged, left out)."""
  finals = [value for value in finals if math.isfinite(value)]
  interval = mean_interval(finals)
  return {
      f'final_{metric}_mean': _mean(finals), f'final_{metric}_std': _std(finals),
      f'final_{metric}_values': finals, f'final_{metric}_ci_low': interval.low,
      f'final_{metric}_ci_high': interval.high
  }


RUN_COLUMNS = ('slug', 'label', 'seed', 'status', 'reason', 'step', 'steps', 'final_val_loss',
               'final_val_bpb', 'best_val_loss', 'tokenizer', 'tokens_per_sec', 'seconds', 'tokens',
               'params', 'flops_per_token', 'kv_cache_bytes_per_token', 'd_ff')
RESULT_COLUMNS = ('variant', 'final_val_loss_mean', 'final_val_loss_std', 'final_val_loss_ci_low',
                  'final_val_loss_ci_high', 'final_val_bpb_mean', 'final_val_bpb_std',
                  'final_val_bpb_ci_low', 'final_val_bpb_ci_high', 'metric', 'delta_vs_baseline',
                  'delta_ci_low', 'delta_ci_high', 'p_value', 'resolved', 'best_val_loss', 'seeds',
                  'done', 'diverged', 'failed', 'params', 'flops_per_token',
                  'kv_cache_bytes_per_token', 'd_ff', 'tokens', 'tokenizer', 'tokens_per_sec')


def _csv_value(value):
  if isinstance(value, float):
    return '' if math.isnan(value) else repr(value)
  return '' if value is None else value


def factor_names(runs: list[dict]) -> list[str]:
  """Every factor a run names, in first-seen order: the CSVs' last columns, the plot's panels."""
  return list(dict.fromkeys(name for run in runs for name in run['factors']))


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
  """rows' factors are columns too; a factor a row lacks is a blank cell."""
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      cells = {**row['factors'], **row.get('downstream', {}), **row}
      writer.writerow([_csv_value(cells.get(c)) for c in columns])


def _loss(value: float, digits: int = 4) -> str:
  return '—' if math.isnan(value) else f'{value:.{digits}f}'


def _interval(low: float, high: float, signed: bool = False) -> str:
  if math.isnan(low):
    return '—'
  sign = '+' if signed else ''
  return f'[{low:{sign}.4f}, {high:{sign}.4f}]'


def _delta_cells(row: dict) -> list[str]:
  """Δ baseline with its interval, and the p-value with whether the sweep resolves the sign."""
  if row['is_baseline']:
    return ['(baseline)', '']
  if math.isnan(row['delta_vs_baseline']):
    return ['—', '']
  delta = f'{row["delta_vs_baseline"]:+.4f} ' + _interval(row['delta_ci_low'], row['delta_ci_high'],
                                                          signed=True)
  if math.isnan(row['p_value']):
    return [delta, 'not resolved (< 2 seeds)']
  return [delta, f'{row["p_value"]:.3g}' + ('' if row['resolved'] else ', not resolved')]


def _mean_std(row: dict, metric: str) -> str:
  return _mean_std_of(row, f'final_{metric}')


def _mean_std_of(row: dict, name: str) -> str:
  mean, std = row.get(f'{name}_mean', math.nan), row.get(f'{name}_std', math.nan)
  return _loss(mean) + ('' if math.isnan(std) else f' ± {std:.4f}')


def _results_table(rows: list[dict], metric: str) -> str:
  """One line per label; the Δ columns only where a finished baseline gives them a meaning.
  Runs of different tokenizers are compared in bits per byte (their columns say so)."""
  has_baseline = any(r['is_baseline'] and r['done'] for r in rows)
  by_bpb = metric == 'val_bpb'
  downstream = list(
      dict.fromkeys(key[:-len('_mean')] for row in rows for key in row
                    if '/' in key and key.endswith('_mean')))
  header = [
      'variant', *(['tokenizer', 'final val loss (nats/token)', 'final bits/byte']
                   if by_bpb else ['final val loss']), f'{LEVEL:.0%} CI',
      *([f'Δ baseline [{LEVEL:.0%} CI]', "p (Welch's t)"] if has_baseline else []), *downstream,
      'best val loss', 'params', 'FLOPs/token', 'KV cache/token', 'd_ff', 'tokens/s', 'diverged',
      'done'
  ]
  cells = []
  for row in rows:
    finals = ([row['tokenizer'],
               _mean_std(row, 'val_loss'),
               _mean_std(row, metric)] if by_bpb else [_mean_std(row, metric)])
    ci = _interval(row[f'final_{metric}_ci_low'], row[f'final_{metric}_ci_high'])
    delta = _delta_cells(row) if has_baseline else []
    tok_s = '—' if math.isnan(row['tokens_per_sec']) else f'{row["tokens_per_sec"]:,.0f}'
    cells.append([
        f'`{row["variant"]}`', *finals, ci, *delta,
        *(_mean_std_of(row, name) for name in downstream),
        _loss(row['best_val_loss']), f'{row["params"]:,}',
        format_si(row['flops_per_token']),
        format_bytes(row['kv_cache_bytes_per_token']),
        str(row['d_ff']), tok_s, f'{row["diverged"]}/{row["seeds"]}',
        f'{row["done"]}/{row["seeds"]}'
    ])
  return markdown_table(header, cells)


def _markdown(sweep_dir: Path, sweep: dict, runs: list[dict], rows: list[dict],
              plots: Sequence[str], baseline: str, metric: str, sections: Sequence[str]) -> str:
  """results.md: the summary table and its notes, then `sections` (a ladder's, a tuned sweep's),
  the runs that did not finish, and the plots."""
  counts = {
      s: sum(r['status'] == s for r in runs)
      for s in ('done', 'running', 'interrupted', 'diverged', 'failed')
  }
  pending = len(sweep.get('runs', [])) - sum(
      1 for r in runs if r['slug'] in {p['slug']
                                       for p in sweep.get('runs', [])})
  budgets = sorted({(r['steps'], r['tokens']) for r in runs})
  lines = [f'# Sweep results: {sweep_dir.name}', '']
  if sweep.get('command'):
    lines += ['```', sweep['command'], '```', '']
  lines.append(f'{len(runs) + max(pending, 0)} runs: '
               + ', '.join(f'{n} {s}'
                           for s, n in [*counts.items(), ('pending', max(pending, 0))] if n) + '. '
               + 'Token budget per run: ' + '; '.join(f'{t:,} tokens ({s} steps)'
                                                      for s, t in budgets)
               + ('' if len(budgets) <= 1 else ' (NOT equal: compare with care)') + '.')
  lines.append('')
  lines += [
      _results_table(rows, metric),
      '',
      '- final val loss: mean ± sample std over the seeds that finished, at the last step, and '
      f"the {LEVEL:.0%} t interval of that mean; best val loss: mean over those seeds of each "
      "run's lowest val loss.",
      *([
          '- The runs use different tokenizers, so they are compared in bits per byte of the '
          'validation text (nats per token / ln 2 / bytes per token): the interval, Δ and p are '
          "in bits per byte; a BPE token's nats are not a byte's."
      ] if metric == 'val_bpb' else []),
      *([
          f'- Δ baseline: mean difference to `{baseline}` with its {LEVEL:.0%} interval and the '
          "two-sided p-value of Welch's t-test (unequal variances) over seeds; *not resolved*: the "
          'interval holds 0, so this sweep cannot tell the sign of the difference.'
      ] if any(r['is_baseline'] and r['done'] for r in rows) else []),
      "- params: all parameters; FLOPs/token: training (6N + attention, PaLM's count); "
      'KV cache/token: 2 x layers x kv heads x head_dim x bytes of the compute dtype.',
      "- tokens/s: median over each run's log lines, mean over seeds (a wall-clock number: "
      'other load on the machine lowers it).',
      '- diverged: seeds whose loss became NaN/inf, of all seeds; done: seeds that finished.',
      *([
          '- `<eval>/<metric>`: a downstream eval of config.evals at the last step (accuracies, '
          'bits per byte), mean ± sample std over the seeds that finished.'
      ] if downstream_names(runs) else []),
  ]
  if sections:
    lines += ['', *sections]
  troubles = [r for r in runs if r['status'] in ('diverged', 'failed', 'interrupted')]
  if troubles:
    lines += ['', '## Runs that did not finish', '']
    lines += [
        f'- `{r["slug"]}`: {r["status"]} at step {r["step"]}: {r["reason"]}' for r in troubles
    ]
  lines += ['']
  lines += [f'![{Path(p).stem.replace("_", " ")}]({p})' for p in plots]
  return '\n'.join(lines) + '\n'


def report(sweep_dir: str | Path) -> list[dict]:
  """Rebuilds runs.csv, results.csv, results.md and the plots from the run directories (at any
  time: unfinished runs show as such); returns the results rows."""
  import matplotlib
  matplotlib.use('Agg')

  sweep_dir = Path(sweep_dir)
  if not sweep_dir.is_dir():
    raise FileNotFoundError(f'no sweep directory {sweep_dir}')
  sweep = read_json(sweep_dir / SWEEP_FILE) or {}
  order = [r['slug'] for r in sweep.get('runs', [])]
  dirs = sorted((d for d in sweep_dir.iterdir() if d.is_dir()), key=lambda d:
                (order.index(d.name) if d.name in order else len(order), d.name))
  runs = [run for run in map(load_run, dirs) if run is not None]
  _fill_missing_factors(runs)
  if not runs and not order:
    raise FileNotFoundError(f'{sweep_dir} holds no sweep runs (no */{CONFIG_FILE})')
  planned: dict[str, int] = {}
  for entry in sweep.get('runs', []):
    planned[entry['label']] = planned.get(entry['label'], 0) + 1
  baseline = sweep['baseline'] if 'baseline' in sweep else 'baseline'  # None: a tuned grid
  metric = compared_metric(runs)
  rows = summarize(runs, planned, baseline, metric)
  labels = list(
      dict.fromkeys([*(p['label'] for p in sweep.get('runs', [])), *(r['label'] for r in runs)]))

  factors, downstream = factor_names(runs), downstream_names(runs)
  _write_csv(sweep_dir / 'runs.csv', runs, (*RUN_COLUMNS, *downstream, *factors))
  _write_csv(sweep_dir / 'results.csv', rows,
             (*RESULT_COLUMNS, *(f'{name}_{s}' for name in downstream
                                 for s in ('mean', 'std')), *factors))
  curves = 'val_loss_curves.png'
  plots, sections = [curves], []
  if sweep.get('tune'):
    tuned = tuned_rows(rows, sweep['tune'], metric)
    sections += tuned_markdown(tuned, sweep['tune'], metric)
    plots.append('tuned.png')
    plot_tuned(sweep_dir / plots[-1], tuned, sweep['tune']['key'], metric, METRIC_NAMES[metric])
    # Every arm at every value would be a tangle of lines: each arm at its best value.
    labels = [arm['row']['variant'] for arm in tuned if arm['row'] is not None]
  groups = logit_groups(runs, sweep.get('tune'))
  if groups:
    sections += logit_markdown(groups, sweep.get('tune'), 'attention_logits.png')
    plot_logits(sweep_dir / 'attention_logits.png', groups, sweep.get('tune'))
  if sweep.get('ladder'):
    analysis = ladder.analyze(rows, sweep, metric)
    sections = ladder.ladder_markdown(analysis, sweep, METRIC_NAMES[metric]) + sections
    plots.insert(0, 'scaling.png')
    plot_scaling(sweep_dir / plots[0], analysis, METRIC_NAMES[metric])
    # Each arm at the largest rung; a factor's runs at every size would mix the sizes' losses.
    labels = ladder.at_rung(labels, sweep['ladder'], sweep['ladder']['rungs'][-1])
  else:
    plots.append('final_loss_by_factor.png')
    plot_factors(sweep_dir / plots[-1], runs, factors)
  plot_curves(sweep_dir / curves, runs, labels)
  (sweep_dir / 'results.md').write_text(
      _markdown(sweep_dir, sweep, runs, rows, plots, baseline, metric, sections), encoding='utf-8')
  return rows
