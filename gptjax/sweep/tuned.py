"""A tuned sweep's comparison: every arm at its own best value of the tuned field (--tune), so that
an arm that prefers another learning rate does not lose for that reason alone.

The best value is the one with the lowest mean final val loss over the arm's finished seeds. An
optimum at either end of the range is flagged: the arm may do better outside it. Arms are then
compared with the first arm, each at its best, by Welch's test over seeds.
"""

from __future__ import annotations

import math
from typing import Mapping

from gptjax.sweep.stats import LEVEL, mean_interval, welch
from gptjax.tables import markdown_table

EDGE = 'at the edge: widen the range'
UNTUNED_ARM = '(config)'  # the one arm of a sweep that only tunes


def _split(label: str, key: str) -> tuple[str, str]:
  """'model.norm=rmsnorm,optim.lr=0.003' -> ('model.norm=rmsnorm', '0.003')."""
  items = label.split(',')
  value = next(item.partition('=')[2] for item in items if item.partition('=')[0] == key)
  return ','.join(i for i in items if i.partition('=')[0] != key) or UNTUNED_ARM, value


def tuned_rows(rows: list[dict], tune: Mapping, metric: str = 'val_loss') -> list[dict]:
  """One row per arm, in the sweep's arm order: its best value (the lowest mean final `metric`),
  whether that is at the range's edge, its final `metric` there (mean, std, interval) and its Δ
  to the first arm's best."""
  key, values = tune['key'], tune['values']
  by_arm: dict[str, list[tuple[str, dict]]] = {arm or UNTUNED_ARM: [] for arm in tune['arms']}
  for row in rows:
    arm, value = _split(row['variant'], key)
    if value in values:  # else a run of an earlier grid left in the workdir: not this tuning's
      by_arm.setdefault(arm, []).append((value, row))
  best = {}
  for arm, points in by_arm.items():
    finished = [(v, r) for v, r in points if r['done'] and math.isfinite(r[f'final_{metric}_mean'])]
    best[arm] = min(finished, key=lambda p: p[1][f'final_{metric}_mean'], default=None)
  first_arm = next(iter(best), None)
  base = best.get(first_arm)
  finals = f'final_{metric}_values'
  out = []
  for arm, point in best.items():
    # (value, mean final metric) of every finished point: the tuning curve.
    curve = [(float(v), r[f'final_{metric}_mean']) for v, r in by_arm[arm]
             if r['done'] and math.isfinite(r[f'final_{metric}_mean'])]
    if point is None:
      out.append({'arm': arm, 'value': None, 'values_done': 0, 'row': None, 'points': curve})
      continue
    value, row = point
    comparison = welch(row[finals], base[1][finals] if base else [])
    out.append({
        'arm': arm, 'value': value, 'edge': values.index(value) in (0, len(values) - 1),
        'values_done': sum(r['done'] > 0 for _, r in by_arm[arm]), 'row': row,
        'interval': mean_interval(row[finals]), 'comparison': comparison,
        'is_base': arm == first_arm, 'points': curve, 'vertex': parabola_vertex(curve, value)
    })
  return out


def parabola_vertex(curve: list[tuple[float, float]], best: str) -> float | None:
  """Where the optimum lies between grid points: the vertex of the parabola through the best
  point and its two neighbours, in log value (None at an edge, or where the three do not bend
  upwards). A grid of a few values can put an arm's optimum between two of them; this says
  roughly where, without another run."""
  curve = sorted(curve)
  xs = [x for x, _ in curve]
  i = xs.index(float(best))
  if i == 0 or i == len(curve) - 1:
    return None
  (x0, y0), (x1, y1), (x2, y2) = ((math.log(x), y) for x, y in curve[i - 1:i + 2])
  # Divided differences: y = y1 + b (x - x1) + c (x - x1)(x - x0), vertex where its slope is 0.
  d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
  c = (d12 - d01) / (x2 - x0)
  if c <= 0:
    return None
  vertex = (x0 + x1) / 2 - d01 / (2 * c)
  return math.exp(min(max(vertex, x0), x2))


METRIC_NAMES = {'val_loss': 'val loss', 'val_bpb': 'val bits/byte'}


def tuned_markdown(arms: list[dict], tune: Mapping, metric: str = 'val_loss') -> list[str]:
  """The report's section: one line per arm (tuned_rows') at its own best value."""
  key, values = tune['key'], tune['values']
  name = METRIC_NAMES[metric]
  header = [
      'arm', f'best {key}', 'parabola optimum', f'final {name} at it', f'{LEVEL:.0%} CI',
      'best val loss', f'Δ first arm [{LEVEL:.0%} CI]', "p (Welch's t)", 'values done'
  ]
  cells = []
  for arm in arms:
    if arm['row'] is None:
      cells.append([f'`{arm["arm"]}`', '—', '—', '—', '—', '—', '—', '', f'0/{len(values)}'])
      continue
    row, interval, comparison = arm['row'], arm['interval'], arm['comparison']
    mean, std = row[f'final_{metric}_mean'], row[f'final_{metric}_std']
    final = f'{mean:.4f}' + ('' if math.isnan(std) else f' ± {std:.4f}')
    ci = '—' if math.isnan(interval.low) else f'[{interval.low:.4f}, {interval.high:.4f}]'
    difference = comparison.difference
    if arm['is_base']:
      delta, p = '(first arm)', ''
    else:
      delta = f'{difference.estimate:+.4f}' + ('' if math.isnan(difference.low) else
                                               f' [{difference.low:+.4f}, {difference.high:+.4f}]')
      p = ('not resolved (< 2 seeds)' if math.isnan(comparison.p_value) else
           f'{comparison.p_value:.3g}' + ('' if difference.resolved else ', not resolved'))
    vertex = '—' if arm['vertex'] is None else f'{arm["vertex"]:.3g}'
    cells.append([
        f'`{arm["arm"]}`', arm['value'] + (f' ({EDGE})' if arm['edge'] else ''), vertex, final, ci,
        f'{row["best_val_loss"]:.4f}', delta, p, f'{arm["values_done"]}/{len(values)}'
    ])
  return [
      f'## Each arm at its own best {key}', '', f'Tried {key} = {", ".join(values)}.', '',
      markdown_table(header, cells), '',
      f"- best {key}: the value with the lowest mean final {name} over the arm's seeds; "
      f'"{EDGE}" marks an optimum at the end of the range: the arm may do better outside it.',
      '- parabola optimum: where a parabola through the best value and its two neighbours (in log '
      "value) has its minimum: roughly where the optimum lies between the grid's values. The "
      'losses compared are the measured ones, at grid values.',
      '- The best value is picked on the same seeds that are then compared, which flatters every '
      'arm (the minimum of noisy means is biased low): recheck a claim on fresh seeds at the '
      'chosen values.', ''
  ]
