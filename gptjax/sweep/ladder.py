"""A ladder sweep's report section: each arm's final loss at every rung (model size) against its
training compute, the power law L(C) = a·C^-b + e fitted per arm (gptjax.sweep.scaling), and each
arm's compute multiplier against the first arm, with its interval and what makes a fit poor.

Compute is training FLOPs: gptjax.flops' FLOPs per token (6N + attention) times the tokens the
run trained. Under --tune, each arm's point at a rung is its best tuned value's there.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from gptjax.sweep import scaling
from gptjax.sweep.tuned import UNTUNED_ARM, tuned_rows
from gptjax.tables import format_si, markdown_table

# A multiplier whose baseline compute lies this far outside the baseline's rungs is flagged.
EXTRAPOLATION = 2.0


def _split(label: str, keys) -> tuple[str, str]:
  """'mlp=swiglu,model.d_model=64,model.n_layers=2' -> ('mlp=swiglu', 'model.d_model=64,...')."""
  items = label.split(',')
  rung = [item for item in items if item.partition('=')[0] in keys]
  return ','.join(item for item in items if item not in rung) or UNTUNED_ARM, ','.join(rung)


def at_rung(labels: list[str], ladder: Mapping, rung: str) -> list[str]:
  """The labels of runs at `rung` (one of ladder['rungs'])."""
  return [label for label in labels if _split(label, ladder['keys'])[1] == rung]


def ladder_points(rows: list[dict], sweep: Mapping, metric: str) -> dict[str, list[dict]]:
  """{arm: [point per finished rung, in rung order]}, arms in the sweep's order."""
  keys, rungs = sweep['ladder']['keys'], sweep['ladder']['rungs']
  if sweep.get('tune'):
    best = [(arm['arm'], arm['row']) for arm in tuned_rows(rows, sweep['tune'], metric)]
  else:
    best = [(row['variant'], row) for row in rows]
  by_arm: dict[str, list[dict]] = {}
  for label, row in best:
    arm, rung = _split(label, keys)
    by_arm.setdefault(arm, [])
    if row is None or not row['done'] or not math.isfinite(row[f'final_{metric}_mean']):
      continue
    by_arm[arm].append({
        'rung': rung, 'compute': row['flops_per_token'] * row['tokens'], 'params': row['params'],
        'tokens': row['tokens'], 'loss': row[f'final_{metric}_mean'],
        'values': row[f'final_{metric}_values']
    })
  for points in by_arm.values():
    points.sort(key=lambda p: rungs.index(p['rung']) if p['rung'] in rungs else len(rungs))
  # The sweep's order (the report's rows come sorted by loss): its first arm is the baseline.
  planned = list(dict.fromkeys(_split(r['label'], keys)[0] for r in sweep.get('runs', [])))
  order = planned + [arm for arm in by_arm if arm not in planned]
  return {arm: by_arm[arm] for arm in order if arm in by_arm}


def _noise(by_arm: dict[str, list[dict]],
           base_fit: scaling.PowerLaw | None) -> tuple[float | None, str]:
  """One run's loss noise, and where it comes from: the seeds' pooled spread, else the
  baseline fit's residuals (with their degrees of freedom)."""
  pooled = scaling.pooled_seed_std([p['values'] for points in by_arm.values() for p in points])
  if pooled is not None:
    return pooled, "the seeds' pooled spread"
  if base_fit is not None and base_fit.n > 3:
    return base_fit.rms * math.sqrt(base_fit.n / (base_fit.n - 3)), (
        f"the baseline fit's residuals ({base_fit.n - 3} degree"
        f'{"s" if base_fit.n > 4 else ""} of freedom: rough)')
  return None, 'nothing (one seed and no spare rung): no interval'


def _fit(points: list[dict]) -> scaling.PowerLaw | None:
  if len(points) < 3:
    return None
  return scaling.fit_power_law([p['compute'] for p in points], [p['loss'] for p in points])


def analyze(rows: list[dict], sweep: Mapping, metric: str) -> list[dict]:
  """Per arm: its points, fit, fit problems, and (for arms after the first) the multiplier at
  each rung, their geometric mean and its bootstrap interval."""
  by_arm = ladder_points(rows, sweep, metric)
  if not by_arm:
    return []
  base_arm = next(iter(by_arm))
  base_points = by_arm[base_arm]
  base_fit = _fit(base_points)
  noise, noise_source = _noise(by_arm, base_fit)
  out = []
  for arm, points in by_arm.items():
    fit = _fit(points)
    entry = {
        'arm': arm, 'points': points, 'fit': fit, 'is_base': arm == base_arm, 'noise': noise,
        'noise_source': noise_source,
        'problems': scaling.fit_problems(fit, [p['loss'] for p in points], noise) if fit else
        [f'{len(points)} rung{"s" if len(points) != 1 else ""} finished: a fit needs 3']
    }
    if arm != base_arm and base_fit is not None and points:
      entry.update(_multiplier(base_fit, base_points, points, noise))
    out.append(entry)
  return out


def _multiplier(base_fit: scaling.PowerLaw, base_points: list[dict], points: list[dict],
                noise: float | None) -> dict:
  compute = [p['compute'] for p in points]
  losses = [p['loss'] for p in points]
  each = scaling.multipliers(base_fit, compute, losses)
  base_range = (min(p['compute'] for p in base_points), max(p['compute'] for p in base_points))
  needed = each * np.asarray(compute)
  outside = [
      p['rung'] for p, c in zip(points, needed)
      if not base_range[0] / EXTRAPOLATION <= c <= base_range[1] * EXTRAPOLATION
  ]
  interval = scaling.MultiplierInterval(math.nan, math.nan, 0)
  if noise is not None:
    interval = scaling.bootstrap_multiplier(
        [p['compute'] for p in base_points], [p['loss'] for p in base_points], compute, losses,
        [noise / math.sqrt(len(p['values']))
         for p in base_points], [noise / math.sqrt(len(p['values'])) for p in points])
  return {
      'multipliers': each, 'multiplier': scaling.geometric_mean(each), 'interval': interval,
      'extrapolated': outside
  }


def _times(value: float) -> str:
  return '∞' if math.isinf(value) else '—' if math.isnan(value) else f'{value:.2f}x'


def ladder_markdown(analysis: list[dict], sweep: Mapping, metric_name: str) -> list[str]:
  if not analysis:
    return []
  ladder = sweep['ladder']
  base = analysis[0]
  header = [
      'arm', 'rungs', 'fit: L = a·C^-b + e', 'RMS residual', 'multiplier per rung',
      f'compute multiplier [{scaling.LEVEL:.0%} CI]', 'fit problems'
  ]
  cells = []
  for entry in analysis:
    fit = entry['fit']
    law = (f'a={fit.a_at_one_flop:.3g}, b={fit.b:.3f}, e={fit.e:.3f}' if fit else '—')
    if entry['is_base']:
      each, summary = '(baseline)', '1 (baseline)'
    elif 'multipliers' in entry:
      each = ' / '.join(_times(m) for m in entry['multipliers'])
      low, high = entry['interval'].low, entry['interval'].high
      summary = _times(
          entry['multiplier']) + ('' if math.isnan(low) else f' [{_times(low)}, {_times(high)}]')
    else:
      each, summary = '—', '— (no baseline fit)'
    problems = list(entry['problems'])
    if entry.get('extrapolated'):
      problems.append("the baseline compute it is matched to lies beyond the baseline's rungs at "
                      + ', '.join(entry['extrapolated']))
    cells.append([
        f'`{entry["arm"]}`',
        str(len(entry['points'])), law, f'{fit.rms:.4f}' if fit else '—', each, summary,
        '; '.join(problems) or 'none seen'
    ])
  point_cells = [[
      f'`{entry["arm"]}`', f'`{p["rung"]}`', f'{p["params"]:,}',
      format_si(p['tokens']),
      format_si(p['compute']), f'{p["loss"]:.4f}' +
      (f' ± {np.std(p["values"], ddof=1):.4f}' if len(p['values']) > 1 else ''),
      str(len(p['values']))
  ] for entry in analysis for p in entry['points']]
  return [
      '## Scaling ladder', '',
      f'Rungs: {"; ".join(f"`{r}`" for r in ladder["rungs"])}; each trained on '
      f'{ladder["tokens_per_param"]:g} tokens per parameter (the N of 6N).', '',
      markdown_table(header, cells), '',
      f'- fit: least squares of the final {metric_name} (mean over seeds) against training compute '
      'C in FLOPs (FLOPs/token x tokens); e is the loss no compute removes.',
      f'- compute multiplier: the compute the baseline (`{base["arm"]}`) needs, by its fit, to '
      "reach the arm's measured loss, over the compute the arm used, at each rung; summarized by "
      f'their geometric mean. Its {scaling.LEVEL:.0%} interval is a parametric bootstrap with the '
      f"noise of one run from {base['noise_source']}" +
      (f' ({base["noise"]:.4f} nats)' if base['noise'] is not None else '') + '.',
      '- A multiplier leans on the baseline fit: where that fit has a problem, or the compute it '
      'is matched to lies beyond the rungs, read the multiplier as indicative only.', '',
      markdown_table(
          ['arm', 'rung', 'params', 'tokens', 'compute (FLOPs)', f'final {metric_name}', 'seeds'],
          point_cells), ''
  ]
