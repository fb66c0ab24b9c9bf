"""Scaling ladders (gptjax.sweep.scaling, gptjax.sweep.ladder, --ladder): the power-law fit
recovers a planted law, the compute multiplier of an arm planted at k times the baseline's compute
efficiency is k, a poor fit says so, and a ladder plans each rung's steps from its parameters."""

import json
import math
import re

import numpy as np
import pytest

from gptjax import data, flops, sweep
from gptjax.config import ModelConfig
from gptjax.sweep import ladder, scaling
from gptjax.sweep.grid import GridSweep
from gptjax.tables import format_si
from test_sweep_grid import SMALL

A, B, E = 40.0, 0.12, 1.3  # L = A·C^-B + E, C in FLOPs
COMPUTE = np.geomspace(1e11, 1e14, 5)


def law(compute, worth=1.0):
  """The planted law, for an arm whose compute is worth `worth` times the baseline's."""
  return A * (worth * np.asarray(compute))**-B + E


def test_the_fit_recovers_a_planted_power_law():
  fit = scaling.fit_power_law(COMPUTE, law(COMPUTE))
  assert (fit.a_at_one_flop, fit.b, fit.e) == pytest.approx((A, B, E), rel=1e-6)
  assert fit.rms < 1e-9 and fit.n == 5
  # With the noise of a seed (3 millinats), still close; the residual is of that size.
  noisy = law(COMPUTE) + np.random.default_rng(0).normal(0, 0.003, len(COMPUTE))
  fit = scaling.fit_power_law(COMPUTE, noisy)
  assert fit.b == pytest.approx(B, rel=0.1) and fit.e == pytest.approx(E, abs=0.05)
  assert 0.0005 < fit.rms < 0.006
  assert fit.compute_for(float(law(3e12))) == pytest.approx(3e12, rel=0.05)
  assert fit.compute_for(fit.e) == math.inf


def test_a_fit_needs_three_distinct_computes():
  with pytest.raises(ValueError, match='needs 3 points of distinct compute'):
    scaling.fit_power_law([1e12, 1e12, 1e13], [3.0, 2.9, 2.5])


def test_an_arm_worth_k_times_the_compute_has_multiplier_k_with_an_interval_around_it():
  fit = scaling.fit_power_law(COMPUTE, law(COMPUTE))
  arm = law(COMPUTE[1:4], worth=2.5)
  assert scaling.multipliers(fit, COMPUTE[1:4], arm) == pytest.approx([2.5] * 3, rel=1e-6)
  interval = scaling.bootstrap_multiplier(COMPUTE, law(COMPUTE), COMPUTE[1:4], arm, 0.003, 0.003,
                                          draws=300)
  assert interval.draws == 300 and interval.low < 2.5 < interval.high
  assert 1.5 < interval.low and interval.high < 4
  wider = scaling.bootstrap_multiplier(COMPUTE, law(COMPUTE), COMPUTE[1:4], arm, 0.01, 0.01,
                                       draws=300)
  assert wider.high - wider.low > interval.high - interval.low


def test_pooled_seed_std_is_the_spread_of_one_run_around_its_points_mean():
  groups = [[1.0, 1.2], [2.0], [3.0, 3.1, 3.2]]
  squares = 0.02 + 0.02  # (0.1² + 0.1²) and (0.1² + 0 + 0.1²)
  assert scaling.pooled_seed_std(groups) == pytest.approx(math.sqrt(squares / 3))
  assert scaling.pooled_seed_std([[1.0], [2.0]]) is None


def test_a_poor_fit_names_its_problem():
  straight = 5.0 - 0.2 * np.log10(COMPUTE)  # no floor: a line in log C
  wavy = law(COMPUTE) + np.array([0.05, -0.05, 0.05, -0.05, 0.05])
  problems = {
      'straight': scaling.fit_problems(scaling.fit_power_law(COMPUTE, straight), straight,
                                       noise=0.003),
      'wavy': scaling.fit_problems(scaling.fit_power_law(COMPUTE, wavy), wavy, noise=0.003),
      'four': scaling.fit_problems(scaling.fit_power_law(COMPUTE[:3], law(COMPUTE[:3])),
                                   law(COMPUTE[:3]), noise=None),
      'good': scaling.fit_problems(scaling.fit_power_law(COMPUTE, law(COMPUTE)), law(COMPUTE),
                                   noise=0.003)
  }
  assert any('over twice the seed noise' in p for p in problems['wavy'])
  assert problems['four'] == ['3 points fix its 3 parameters: nothing checks the fit']
  assert problems['good'] == []
  assert 'its floor e is at 0: the losses do not bend yet, so e is not measured' in \
      problems['straight']


def _row(label, compute, losses, tokens=1_000_000):
  return {
      'variant': label, 'done': len(losses), 'params': 1000, 'tokens': tokens,
      'flops_per_token': compute / tokens, 'final_val_loss_mean': float(np.mean(losses)),
      'final_val_loss_values': list(losses)
  }


def test_the_ladder_section_reports_each_arms_fit_and_multiplier():
  keys = ['model.d_model']
  rungs = [f'model.d_model={d}' for d in (32, 64, 128, 256, 512)]
  noise = np.random.default_rng(1).normal(0, 0.002, (2, 5, 2))
  rows = []  # the report's rows come sorted by loss: the better arm first
  for a, (arm, worth) in enumerate((('model.norm=rmsnorm', 2.0), ('model.norm=layernorm', 1.0))):
    for r, (rung, compute) in enumerate(zip(rungs, COMPUTE)):
      rows.append(_row(f'{arm},{rung}', compute, law(compute, worth) + noise[a, r]))
  sweep_record = {
      'ladder': {'keys': keys, 'rungs': rungs, 'tokens_per_param': 20.0},
      'runs': [{'label': f'{arm},{rung}'} for arm in ('model.norm=layernorm', 'model.norm=rmsnorm')
               for rung in rungs]
  }
  analysis = ladder.analyze(rows, sweep_record, 'val_loss')
  base, arm = analysis
  assert base['arm'] == 'model.norm=layernorm' and base['is_base']
  assert [p['rung'] for p in arm['points']] == rungs
  assert base['fit'].b == pytest.approx(B, rel=0.15)
  assert arm['multiplier'] == pytest.approx(2.0, rel=0.25)
  assert arm['interval'].low < arm['multiplier'] < arm['interval'].high
  assert base['noise'] == pytest.approx(0.002, rel=0.6)  # the seeds' pooled spread
  text = re.sub(' +', ' ', '\n'.join(ladder.ladder_markdown(analysis, sweep_record, 'val loss')))
  assert '## Scaling ladder' in text and "the seeds' pooled spread" in text
  assert re.search(r'\| `model.norm=rmsnorm` \| 5 \| a=[\d.e+-]+, b=0\.1\d\d, e=1\.\d\d\d \|', text)
  assert re.search(r'\| \d\.\d\dx \[\d\.\d\dx, \d\.\d\dx\] \|', text)


def test_a_ladder_plans_every_rung_with_its_own_token_budget():
  grid = GridSweep(SMALL, ['model.norm=layernorm,rmsnorm'],
                   ladder=['model.d_model=32,64', 'model.n_heads=2,4'], tokens_per_param=10)
  assert grid.rungs == ['model.d_model=32,model.n_heads=2', 'model.d_model=64,model.n_heads=4']
  assert grid.variants == [
      'model.norm=layernorm,model.d_model=32,model.n_heads=2',
      'model.norm=layernorm,model.d_model=64,model.n_heads=4',
      'model.norm=rmsnorm,model.d_model=32,model.n_heads=2',
      'model.norm=rmsnorm,model.d_model=64,model.n_heads=4'
  ]
  runs = sweep.plan(grid, grid.variants)
  for run in runs:
    cfg = ModelConfig.from_config(run.config.model)
    tokens_per_step = run.config.train.batch_size * cfg.block_size
    assert run.config.train.steps == round(10 * flops.matmul_params(cfg) / tokens_per_step)
  assert runs[1].config.train.steps > 3 * runs[0].config.train.steps  # ~4x the parameters
  with pytest.raises(ValueError, match='--ladder axes must list as many values each'):
    GridSweep(SMALL, ladder=['model.d_model=32,64', 'model.n_heads=2'])
  with pytest.raises(ValueError, match='--tokens_per_param=0 must be > 0'):
    GridSweep(SMALL, ladder=['model.d_model=32,64'], tokens_per_param=0)


@pytest.mark.slow
@pytest.mark.usefixtures('fast_compiles')
def test_a_ladder_sweep_trains_every_rung_and_reports_the_fits(tmp_path):
  data_dir = tmp_path / 'data'
  data.prepare('stdlib', 'bytes', data_dir, max_bytes=100_000, progress=False)
  overrides = {
      'model.n_layers': 1, 'model.block_size': 16, 'data.max_bytes': 100_000,
      'data.data_dir': str(data_dir), 'optim.warmup_steps': 1, 'train.batch_size': 4,
      'train.log_every': 1, 'train.eval_every': 100, 'train.eval_batches': 1
  }
  grid = GridSweep(SMALL, ['model.norm=layernorm,rmsnorm'],
                   ladder=['model.d_model=8,16,32', 'model.n_heads=1,2,4'], tokens_per_param=0.05)
  statuses = sweep.run_sweep(SMALL, tmp_path / 'ladder', overrides=overrides, grid=grid)
  assert [s['status'] for s in statuses] == ['done'] * 6
  record = json.loads((tmp_path / 'ladder' / 'sweep.json').read_text())
  assert record['ladder'] == {
      'keys': ['model.d_model', 'model.n_heads'], 'rungs': grid.rungs, 'tokens_per_param': 0.05
  }
  markdown = (tmp_path / 'ladder' / 'results.md').read_text()
  assert '## Scaling ladder' in markdown and '![scaling](scaling.png)' in markdown
  assert 'final_loss_by_factor' not in markdown  # a factor's runs would mix the rungs' losses
  section = markdown.partition('## Scaling ladder')[2]
  table = [line for line in section.splitlines() if line.startswith('| `model.norm=')]
  assert len(table) == 2 + 6  # the fits, then every point
  assert table[0].startswith('| `model.norm=layernorm`') and '(baseline)' in table[0]
  assert '3 points fix its 3 parameters' in table[0]
  assert (tmp_path / 'ladder' / 'scaling.png').read_bytes()[:4] == b'\x89PNG'


def test_a_tuned_ladder_takes_each_arm_at_its_best_value_at_every_rung():
  rungs = [f'model.d_model={d}' for d in (32, 64, 128)]
  rows = []
  for rung, compute in zip(rungs, COMPUTE):
    for lr, penalty in (('0.001', 0.05), ('0.003', 0.0), ('0.01', 0.08)):
      seed_losses = law(compute) + penalty + np.array([0.0, 0.002])
      rows.append(_row(f'model.norm=rmsnorm,{rung},optim.lr={lr}', compute, seed_losses))
  tune = {
      'key': 'optim.lr', 'values': ['0.001', '0.003', '0.01'],
      'arms': [f'model.norm=rmsnorm,{rung}' for rung in rungs]
  }
  ladder_record = {'keys': ['model.d_model'], 'rungs': rungs, 'tokens_per_param': 20.0}
  points = ladder.ladder_points(rows, {'ladder': ladder_record, 'tune': tune}, 'val_loss')
  assert list(points) == ['model.norm=rmsnorm']
  best_means = [p['loss'] for p in points['model.norm=rmsnorm']]
  # Each rung's best lr (0.003) with its two seeds' mean.
  assert best_means == pytest.approx(list(law(COMPUTE[:3]) + 0.001))


def test_a_ladders_compute_is_written_with_si_prefixes_up_to_exa():
  written = [format_si(c) for c in (169e9, 1.86e12, 2.38e13, 6.1e17, 3e21)]
  assert written == ['169G', '1.86T', '23.8T', '610P', '3e+03E']


def test_a_ladders_loss_curves_are_each_arms_at_one_rung():
  ladder_record = {'keys': ['model.d_model', 'model.n_heads'], 'rungs': []}
  labels = [
      f'{arm}model.d_model={d},model.n_heads={h}' for arm in ('', 'pos=rope,')
      for d, h in ((32, 2), (64, 4))
  ]
  assert ladder.at_rung(labels, ladder_record, 'model.d_model=64,model.n_heads=4') == [
      'model.d_model=64,model.n_heads=4', 'pos=rope,model.d_model=64,model.n_heads=4'
  ]
