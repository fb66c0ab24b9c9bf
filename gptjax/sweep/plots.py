"""A sweep's pictures: validation loss curves per label (seeds as a band), and the final loss by
factor, where lines join runs that differ in that factor alone."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence


def _factor_contexts(runs: list[dict], factor: str, factors: Sequence[str]):
  """Runs grouped by the values of every other factor: in each group only `factor` changes, so
  its points compare like with like (one group around the baseline in a one-at-a-time sweep,
  one per combination of the others in a factorial)."""
  contexts: dict[tuple, dict[Any, list[float]]] = {}
  for run in runs:
    key = tuple(run['factors'].get(f) for f in factors if f != factor)
    contexts.setdefault(key, {}).setdefault(run['factors'].get(factor),
                                            []).append(run['final_val_loss'])
  return [c for c in contexts.values() if len(c) > 1]


def plot_curves(path: Path, runs: list[dict], labels: list[str]) -> None:
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


def plot_factors(path: Path, runs: list[dict], names: Sequence[str]) -> None:
  """One panel per factor (of `names`) that takes more than one value among the runs."""
  import matplotlib.pyplot as plt
  done = [r for r in runs if r['status'] == 'done']
  factors = [f for f in names if len({r['factors'].get(f) for r in runs}) > 1]
  shown = [(f, _factor_contexts(done, f, factors)) for f in factors]
  shown = [(f, contexts) for f, contexts in shown if contexts]
  fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.2 * max(len(shown), 1) + 1, 4),
                           squeeze=False, sharey=True)
  for ax, (factor, contexts) in zip(axes[0], shown):
    values = sorted({v
                     for c in contexts
                     for v in c}, key=lambda v: (v is None, isinstance(v, str), v))
    position = {v: i for i, v in enumerate(values)}
    for context in contexts:
      xs = sorted(context, key=position.get)
      ax.plot([position[v] for v in xs], [statistics.fmean(context[v]) for v in xs],
              color='tab:blue', alpha=0.5, marker='o')
      for v in xs:
        ax.scatter([position[v]] * len(context[v]), context[v], color='tab:blue', s=10, alpha=0.6)
    overall = [
        statistics.fmean([statistics.fmean(c[v]) for c in contexts if v in c]) for v in values
    ]
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
  fig.suptitle(
      'final val loss by factor (lines join runs that differ only in that factor; '
      'dots: seeds; black: mean)', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def tuned_panels(arms: list[dict]) -> dict[str, list[dict]]:
  """plot_tuned's panels: a product grid's arms grouped by their first item (sp/mup x widths:
  two panels of four), any other arms all in one panel ('') to compare them."""
  firsts = [arm['arm'].partition(',')[0] for arm in arms]
  group_sizes = {firsts.count(first) for first in firsts}
  product_grid = all(',' in arm['arm'] for arm in arms) and len(group_sizes) == 1
  if not product_grid or not 1 < group_sizes.pop() < len(arms):
    return {'': arms}
  panels: dict[str, list[dict]] = {}
  for arm, first in zip(arms, firsts):
    panels.setdefault(first, []).append(arm)
  return panels


def plot_tuned(path: Path, arms: list[dict], key: str, metric: str, metric_name: str) -> None:
  """The final metric against the tuned value, a line per arm (tuned.tuned_rows' arms, with
  their points), its best value starred. Arms that share their first item (e.g.
  model.parametrization=sp) share a panel, so that a width sweep under two parametrizations
  shows whether the optimum moves in one and not the other."""
  import matplotlib.pyplot as plt
  from matplotlib.ticker import NullFormatter
  panels = tuned_panels(arms)
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False,
                           sharey=True)
  best_values = [a['row'][f'final_{metric}_mean'] for a in arms if a['row'] is not None]
  for ax, (panel, group) in zip(axes[0], panels.items()):
    for i, arm in enumerate(group):
      points = sorted(arm['points'])
      if not points:
        continue
      color = _arm_color(plt, i, len(group))
      name = arm['arm'][len(panel):].lstrip(',') or arm['arm']
      ax.plot([x for x, _ in points], [y for _, y in points], marker='o', color=color, label=name)
      if arm['row'] is not None:
        ax.plot([float(arm['value'])], [arm['row'][f'final_{metric}_mean']], marker='*',
                markersize=16, color=color, markeredgecolor='black')
    ax.set_xscale('log')
    tried = sorted({x for arm in group for x, _ in arm['points']})
    ax.set_xticks(tried, [f'{x:.3g}' for x in tried], fontsize=8)  # the values tried, not 10^k
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(key)
    ax.set_title(panel or f'final {metric_name} by {key}')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  axes[0][0].set_ylabel(f'final {metric_name} (mean over seeds)')
  if best_values:  # diverged or stuck points would squash the interesting part
    low, high = min(best_values), max(best_values)
    top = high + max(0.5, 2 * (high - low))
    axes[0][0].set_ylim(low - 0.05 * (high - low) - 0.01, top)
    for ax, group in zip(axes[0], panels.values()):
      _mark_off_scale(ax, [x for arm in group for x, y in arm['points'] if y > top],
                      [y for arm in group for _, y in arm['points'] if y > top], top)
  fig.suptitle('each arm at every tuned value (star: its best)', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _arm_color(plt, i: int, n: int):
  """A few arms (often ordered: widths, sizes) as shades of one gradient; more than 5 (usually
  unordered variants) as distinct colours, which shades of one gradient are not."""
  if n > 5:
    return plt.get_cmap('tab10' if n <= 10 else 'tab20')(i)
  return plt.get_cmap('viridis')(0.85 * i / max(n - 1, 1))  # viridis' last yellow is pale


def _mark_off_scale(ax, xs: list[float], ys: list[float], top: float) -> None:
  """A point above the plot (a stuck or failed run) as a triangle on its top edge, its value
  written beside it, so a failure stays visible without squashing the curves."""
  by_x: dict[float, list[float]] = {}
  for x, y in zip(xs, ys):
    by_x.setdefault(x, []).append(y)
  for x, values in by_x.items():
    ax.plot([x], [top], marker='^', color='tab:red', clip_on=False, zorder=5)
    ax.annotate('/'.join(f'{y:.2f}' for y in sorted(values)), (x, top), textcoords='offset points',
                xytext=(0, -12), ha='center', fontsize=7, color='tab:red')


def plot_scaling(path: Path, analysis: list[dict], metric_name: str) -> None:
  """Each arm's final loss against training compute (a point per rung, bars: the seeds' spread)
  and its fitted power law, on log-scaled compute."""
  import matplotlib.pyplot as plt
  import numpy as np
  fig, ax = plt.subplots(figsize=(8, 5.5))
  colors = plt.get_cmap('tab10')
  computes = [p['compute'] for entry in analysis for p in entry['points']]
  for i, entry in enumerate(analysis):
    points, fit, color = entry['points'], entry['fit'], colors(i % 10)
    if not points:
      continue
    label = entry['arm']
    if fit is not None:
      label += f' (b={fit.b:.3f}, e={fit.e:.2f})'
    if 'multiplier' in entry:
      label += f', {entry["multiplier"]:.2f}x compute'
    errors = [np.std(p['values'], ddof=1) if len(p['values']) > 1 else 0.0 for p in points]
    ax.errorbar([p['compute'] for p in points], [p['loss'] for p in points], yerr=errors, fmt='o',
                color=color, label=label, capsize=3)
    if fit is not None:
      grid = np.geomspace(min(computes) / 1.5, max(computes) * 1.5, 100)
      ax.plot(grid, fit.loss(grid), '--', color=color, alpha=0.8)
  ax.set_xscale('log')
  ax.set_xlabel('training compute C (FLOPs)')
  ax.set_ylabel(f'final {metric_name}')
  ax.set_title('scaling ladder: points per rung, dashed: L(C) = a·C^-b + e', fontsize=10)
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
