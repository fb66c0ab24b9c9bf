"""The statistics of a sweep's report: a t confidence interval of an arm's mean over seeds, and
Welch's t-test of an arm against the baseline (unequal variances; Welch-Satterthwaite degrees of
freedom), with the interval of the difference.

Seeds are few (2-5), so intervals are wide: a difference whose interval holds 0 is reported as not
resolved by the sweep, whatever its sign.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple, Sequence

LEVEL = 0.95  # confidence level of every interval in the report


class Interval(NamedTuple):
  estimate: float
  low: float
  high: float

  @property
  def resolved(self) -> bool:
    """The interval excludes 0 (for a difference: the sign is known at LEVEL)."""
    return self.low > 0 or self.high < 0


class Comparison(NamedTuple):
  difference: Interval  # arm mean - baseline mean
  p_value: float  # two-sided, Welch's t-test


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan)


def _t_quantile(df: float) -> float:
  from scipy import stats  # the report's only scipy use: import it where it is needed
  return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def mean_interval(values: Sequence[float]) -> Interval:
  """Mean of the seeds and its t interval (NaN bounds with fewer than 2 seeds)."""
  values = [v for v in values if math.isfinite(v)]
  if not values:
    return NAN_INTERVAL
  mean = statistics.fmean(values)
  if len(values) < 2:
    return Interval(mean, math.nan, math.nan)
  half = _t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
  return Interval(mean, mean - half, mean + half)


def welch(arm: Sequence[float], baseline: Sequence[float]) -> Comparison:
  """mean(arm) - mean(baseline) with its Welch interval and two-sided p-value; NaN where either
  side has fewer than 2 finite values or both have no spread."""
  from scipy import stats

  a = [v for v in arm if math.isfinite(v)]
  b = [v for v in baseline if math.isfinite(v)]
  if not a or not b:
    return Comparison(NAN_INTERVAL, math.nan)
  difference = statistics.fmean(a) - statistics.fmean(b)
  if len(a) < 2 or len(b) < 2:
    return Comparison(Interval(difference, math.nan, math.nan), math.nan)
  va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
  se = math.sqrt(va + vb)
  if se == 0:
    return Comparison(Interval(difference, difference, difference), 1.0 if difference == 0 else 0.0)
  df = (va + vb)**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  half = _t_quantile(df) * se
  p_value = float(2 * stats.t.sf(abs(difference) / se, df))
  return Comparison(Interval(difference, difference - half, difference + half), p_value)
