"""The sweep report's statistics against scipy's own t-tests (gptjax.sweep.stats computes them
from the formulas; scipy.stats.ttest_ind / ttest_1samp are the independent reference)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from gptjax.sweep.stats import Interval, mean_interval, welch

SAMPLES = [
    ([3.21, 3.25, 3.19], [3.30, 3.28, 3.35]),
    ([2.50, 2.51], [2.49, 2.60, 2.55, 2.52]),
    ([1.0, 1.1, 0.9, 1.05, 0.95], [1.0, 1.3]),
]


@pytest.mark.parametrize('arm, baseline', SAMPLES)
def test_welch_matches_scipys_unequal_variance_t_test(arm, baseline):
  ours = welch(arm, baseline)
  reference = scipy_stats.ttest_ind(arm, baseline, equal_var=False)
  interval = reference.confidence_interval(0.95)
  np.testing.assert_allclose(ours.p_value, reference.pvalue, rtol=1e-10)
  np.testing.assert_allclose(ours.difference.estimate, np.mean(arm) - np.mean(baseline), rtol=1e-12)
  np.testing.assert_allclose([ours.difference.low, ours.difference.high],
                             [interval.low, interval.high], rtol=1e-10)
  assert ours.difference.resolved == (ours.p_value < 0.05)  # a 95% interval and a 5% test agree


@pytest.mark.parametrize('values', [[3.21, 3.25, 3.19], [2.5, 2.51], [1.0, 1.1, 0.9, 1.05, 0.95]])
def test_mean_interval_matches_scipys_one_sample_interval(values):
  ours = mean_interval(values)
  reference = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
  np.testing.assert_allclose([ours.low, ours.high], [reference.low, reference.high], rtol=1e-10)
  assert ours.estimate == pytest.approx(np.mean(values))


def test_too_few_seeds_give_no_interval_and_are_not_resolved():
  assert math.isnan(mean_interval([3.2]).low) and mean_interval([3.2]).estimate == 3.2
  assert math.isnan(mean_interval([]).estimate)
  one = welch([3.2], [3.3, 3.4])
  assert one.difference.estimate == pytest.approx(-0.15) and math.isnan(one.p_value)
  assert not one.difference.resolved
  assert math.isnan(welch([math.nan, math.inf], [3.0, 3.1]).difference.estimate)  # diverged seeds


def test_a_difference_is_resolved_only_when_its_interval_excludes_zero():
  assert Interval(0.1, 0.02, 0.18).resolved and Interval(-0.1, -0.18, -0.02).resolved
  assert not Interval(0.1, -0.02, 0.22).resolved
  far_apart = welch([3.0, 3.01, 3.02], [3.5, 3.51, 3.49])
  overlapping = welch([3.0, 3.2, 3.1], [3.05, 3.25, 3.0])
  assert far_apart.difference.resolved and far_apart.p_value < 1e-4
  assert not overlapping.difference.resolved and overlapping.p_value > 0.5


def test_attention_logit_section_groups_arms_by_tuned_value(tmp_path):
  """Runs that logged max_attn_logit: a row per arm and lr with the last and the peak logit
  (means over seeds) and the final loss; the plot's panels are the two highest lrs."""
  from gptjax.sweep.logits import logit_groups, logit_markdown, plot_logits

  def run(label, seed, logits, loss, status='done'):
    return {
        'label': label, 'seed': seed, 'status': status, 'final_val_loss': loss,
        'tokens_per_step': 100, 'attn_logits': list(enumerate(logits, start=1)),
        'evals': [(step, loss + 1.0 / step) for step in range(1,
                                                              len(logits) + 1)]
    }

  tune = {'key': 'optim.lr', 'values': ['0.001', '0.01', '0.03'], 'arms': ['', 'qk_norm=head']}
  runs = [
      run('optim.lr=0.03', 0, [2.0, 9.0, 7.0], 2.5),
      run('optim.lr=0.03', 1, [2.0, 11.0, 9.0], 2.7),
      run('qk_norm=head,optim.lr=0.03', 0, [2.0, 3.0, 3.5], 2.2),
      run('qk_norm=head,optim.lr=0.01', 0, [1.0, 2.0, 2.5], 2.1),
      run('optim.lr=0.001', 0, [1.0, 1.5, 2.0], 2.4),
      {'label': 'optim.lr=0.01', 'status': 'done', 'attn_logits': []},  # did not log them
  ]
  groups = logit_groups(runs, tune)
  assert set(groups) == {('(config)', '0.03'), ('qk_norm=head', '0.03'), ('qk_norm=head', '0.01'),
                         ('(config)', '0.001')}
  lines = logit_markdown(groups, tune, 'attention_logits.png')
  rows = [[cell.strip() for cell in line.strip('|').split('|')]
          for line in '\n'.join(lines).splitlines()
          if line.startswith('| ') and not line.startswith('| arm')]
  assert ['baseline', '0.03', '8.0', '10.0', '2.6000', '2'] in rows  # (7+9)/2, (9+11)/2
  assert ['qk_norm=head', '0.03', '3.5', '3.5', '2.2000', '1'] in rows
  assert len(rows) == 4
  assert lines[-1] == '![attention logits](attention_logits.png)'
  plot_logits(tmp_path / 'logits.png', groups, tune)
  assert (tmp_path / 'logits.png').stat().st_size > 10_000
  assert logit_markdown({}, tune, 'x.png') == []
