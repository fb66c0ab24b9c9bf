"""The report's attention-logit section, for runs that logged max_attn_logit
(train.log_attention_logits): how large the largest attention logit grew, arm by arm, beside the
loss. The growth of these logits is the instability QK-norm and soft-capping exist to prevent
(Dehghani et al. 2023; Wortsman et al. 2023), so a sweep over learning rates shows whether an arm
keeps them bounded where the baseline's run away, and what that does to the loss.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Mapping

from gptjax.sweep.tuned import UNTUNED_ARM, _split
from gptjax.tables import markdown_table


def logit_groups(runs: list[dict], tune: Mapping | None) -> dict[tuple[str, str], list[dict]]:
  """{(arm, tuned value or ''): the finished or diverged runs that logged attention logits}."""
  groups: dict[tuple[str, str], list[dict]] = {}
  for run in runs:
    if not run.get('attn_logits') or run['status'] not in ('done', 'diverged'):
      continue
    arm, value = (_split(run['label'], tune['key']) if tune else (run['label'], ''))
    groups.setdefault((arm, value), []).append(run)
  return groups


def _mean(values: list[float]) -> float:
  finite = [v for v in values if math.isfinite(v)]
  return statistics.fmean(finite) if finite else math.nan


def _cell(value: float, digits: int = 1) -> str:
  return '—' if not math.isfinite(value) else f'{value:.{digits}f}'


def logit_markdown(groups: Mapping[tuple[str, str], list[dict]], tune: Mapping | None,
                   plot: str) -> list[str]:
  """A table: per arm (and tuned value), the largest attention logit at the end of training and
  its peak over training (means over seeds), and the final val loss."""
  if not groups:
    return []
  values = tune['values'] if tune else ['']
  arms = list(dict.fromkeys(arm for arm, _ in groups))
  header = [
      'arm', *([tune['key']] if tune else []), 'max attention logit at the end', 'peak',
      'final val loss', 'seeds'
  ]
  rows = []
  for arm in arms:
    for value in values:
      group = groups.get((arm, value))
      if not group:
        continue
      final_logit = _mean([r['attn_logits'][-1][1] for r in group])
      peak = _mean([max(v for _, v in r['attn_logits']) for r in group])
      losses = [r['final_val_loss'] for r in group]
      diverged = sum(r['status'] == 'diverged' for r in group)
      loss = _cell(_mean(losses), 4) + (f' ({diverged} diverged)' if diverged else '')
      rows.append([
          arm if arm != UNTUNED_ARM else 'baseline', *([value] if tune else []),
          _cell(final_logit),
          _cell(peak), loss,
          str(len(group))
      ])
  return [
      '## The largest attention logit', '',
      markdown_table(header, rows), '',
      '- max attention logit: the largest q·k logit (scaled, with position biases, before any '
      'soft-cap) of any layer and head over the visible pairs of the first validation batch, '
      'logged at each evaluation; mean over seeds. QK-norm and soft-capping exist to keep it from '
      'growing at high learning rates.', '', f'![attention logits]({plot})'
  ]


def _mean_curve(group: list[dict], series: str) -> tuple[list[float], list[float]]:
  """(training tokens in M, mean over the group's runs) of a run series of (step, value)."""
  by_step: dict[int, list[float]] = {}
  for run in group:
    for step, value in run[series]:
      by_step.setdefault(step, []).append(value)
  steps = sorted(by_step)
  return ([s * group[0]['tokens_per_step'] / 1e6
           for s in steps], [_mean(by_step[s]) for s in steps])


def plot_logits(path: Path, groups: Mapping[tuple[str, str], list[dict]],
                tune: Mapping | None) -> None:
  """One column per tuned value (the two highest: where the logits grow), a line per arm: the
  largest attention logit (top) and the val loss (bottom) over training, means over seeds."""
  import matplotlib.pyplot as plt
  values = (tune['values'][-2:] if tune else [''])
  arms = list(dict.fromkeys(arm for arm, _ in groups))
  colors = plt.get_cmap('tab10' if len(arms) <= 10 else 'tab20')
  fig, axes = plt.subplots(2, len(values), figsize=(6.5 * len(values), 8), squeeze=False)
  positive = all(v > 0 for group in groups.values() for run in group for _, v in run['attn_logits'])
  for column, value in enumerate(values):
    for i, arm in enumerate(arms):
      group = groups.get((arm, value))
      if not group:
        continue
      name = arm if arm != UNTUNED_ARM else 'baseline'
      for row, series in enumerate(('attn_logits', 'evals')):
        x, y = _mean_curve(group, series)
        axes[row][column].plot(x, y, color=colors(i % colors.N), label=name, marker='.')
    title = f'{tune["key"]}={value}' if tune else ''
    axes[0][column].set_title(f'largest attention logit {title}')
    axes[0][column].set_ylabel('max attention logit (before soft-caps)')
    if positive:  # bounded arms sit orders of magnitude below growing ones
      axes[0][column].set_yscale('log')
    axes[1][column].set_title(f'validation loss {title}')
    axes[1][column].set_ylabel('val loss')
    for ax in axes[:, column]:
      ax.set_xlabel('training tokens (M)')
      ax.grid(alpha=0.3)
  axes[1][-1].legend(fontsize=8, loc='upper right')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
