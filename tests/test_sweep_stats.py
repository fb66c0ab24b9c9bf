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
