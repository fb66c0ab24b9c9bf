"""Scaling laws of a ladder sweep: a power law L(C) = a·C^-b + e fitted to each arm's final losses
against training compute C, and each arm's compute multiplier against the baseline arm.

The compute multiplier of an arm at a rung is C_base(L) / C: the compute the baseline's fitted
law needs to reach the loss L that the arm measured with compute C (> 1: the arm is worth that
much more compute). It leans on the baseline's fit only, not on the arm's. Its interval comes from
a parametric bootstrap: every point is redrawn around the fitted (baseline) or measured (arm)
loss with the noise of one run (the seeds' pooled spread, or else the fit's residuals), the
baseline refitted and the multipliers recomputed.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

LEVEL = 0.95
B_MAX = 5.0  # a loss falling faster than C^-5 is not a power law worth extrapolating


class PowerLaw(NamedTuple):
  a: float  # in units of the loss, at the reference compute c0
  b: float
  e: float  # the loss no compute removes
  c0: float  # reference compute: the geometric mean of the fitted points'
  rms: float  # root-mean-square residual of the fit, nats
  n: int  # points fitted

  def loss(self, compute) -> np.ndarray:
    return self.a * (np.asarray(compute, float) / self.c0)**-self.b + self.e

  def compute_for(self, loss: float) -> float:
    """The compute at which this law reaches `loss`; inf at or below its floor e."""
    if loss <= self.e:
      return math.inf
    return self.c0 * ((loss - self.e) / self.a)**(-1 / self.b)

  @property
  def a_at_one_flop(self) -> float:
    """a in L = a·C^-b + e with C in FLOPs (c0 folded in)."""
    return self.a * self.c0**self.b


def fit_power_law(compute: Sequence[float], loss: Sequence[float]) -> PowerLaw:
  """Least-squares fit of L = a·(C/c0)^-b + e, with a > 0, 0 < b <= B_MAX, 0 <= e < min(L).

  For a fixed e the law is a line in log-log space, so a profile over e gives the starting
  point, and scipy's bounded least squares refines all three. Needs 3 points of distinct compute.
  """
  from scipy import optimize

  c, l = np.asarray(compute, float), np.asarray(loss, float)
  if len(c) < 3 or len(set(c)) < 3:
    raise ValueError(f'a power law with a floor needs 3 points of distinct compute; got {len(c)}')
  if not (np.all(np.isfinite(l)) and np.all(np.isfinite(c)) and np.all(c > 0)):
    raise ValueError('compute must be > 0 and losses finite')
  c0 = float(np.exp(np.mean(np.log(c))))
  x = np.log(c / c0)

  def residuals(theta):
    a, b, e = theta
    return a * np.exp(-b * x) + e - l

  e_max = float(l.min()) * (1 - 1e-9)
  starts = []
  for e in np.linspace(0, e_max, 64, endpoint=False):
    slope, intercept = np.polyfit(x, np.log(l - e), 1)
    theta = (math.exp(intercept), float(np.clip(-slope, 1e-6, B_MAX)), e)
    starts.append((float(np.sum(residuals(theta)**2)), theta))
  theta0 = min(starts)[1]
  result = optimize.least_squares(residuals, theta0, bounds=([1e-12, 1e-6,
                                                              0], [np.inf, B_MAX, e_max]),
                                  x_scale='jac', xtol=1e-12, ftol=1e-12, gtol=1e-12)
  a, b, e = (float(v) for v in result.x)
  rms = float(np.sqrt(np.mean(residuals(result.x)**2)))
  return PowerLaw(a, b, e, c0, rms, len(c))


def multipliers(baseline: PowerLaw, compute: Sequence[float], loss: Sequence[float]) -> np.ndarray:
  """Each point's compute multiplier C_base(L) / C (inf below the baseline's floor)."""
  return np.array([baseline.compute_for(l) / c for c, l in zip(compute, loss)])


def geometric_mean(values: np.ndarray) -> float:
  values = np.asarray(values, float)
  return float(np.exp(np.mean(np.log(values)))) if np.all(np.isfinite(values)) else math.inf


class MultiplierInterval(NamedTuple):
  low: float
  high: float
  draws: int  # bootstrap draws whose baseline refit succeeded


def bootstrap_multiplier(base_compute, base_loss, arm_compute, arm_loss, base_sigma, arm_sigma,
                         draws: int = 1000, seed: int = 0) -> MultiplierInterval:
  """The LEVEL interval of the geometric-mean multiplier over the arm's points, by a parametric
  bootstrap: baseline losses redrawn around its fit, the arm's around its measurements, each
  with its point's noise (sigma: one number or one per point)."""
  rng = np.random.default_rng(seed)
  fitted = fit_power_law(base_compute, base_loss)
  base_center = fitted.loss(base_compute)
  base_sigma = np.broadcast_to(np.asarray(base_sigma, float), base_center.shape)
  arm_center = np.asarray(arm_loss, float)
  arm_sigma = np.broadcast_to(np.asarray(arm_sigma, float), arm_center.shape)
  values = []
  for _ in range(draws):
    try:
      refit = fit_power_law(base_compute, base_center + rng.normal(0, base_sigma))
    except (ValueError, np.linalg.LinAlgError):
      continue
    values.append(
        geometric_mean(multipliers(refit, arm_compute, arm_center + rng.normal(0, arm_sigma))))
  if not values:
    return MultiplierInterval(math.nan, math.nan, 0)
  tail = (1 - LEVEL) / 2 * 100
  low, high = np.percentile(values, [tail, 100 - tail])
  return MultiplierInterval(float(low), float(high), len(values))


def pooled_seed_std(groups: Sequence[Sequence[float]]) -> float | None:
  """The spread of one run around its point's mean, pooled over the points with several seeds
  (None where no point has two)."""
  squares, dof = 0.0, 0
  for values in groups:
    values = [v for v in values if math.isfinite(v)]
    if len(values) > 1:
      squares += float(np.sum((np.asarray(values) - np.mean(values))**2))
      dof += len(values) - 1
  return math.sqrt(squares / dof) if dof else None


def fit_problems(fit: PowerLaw, loss: Sequence[float], noise: float | None) -> list[str]:
  """What makes a fit untrustworthy, in words (empty: none seen)."""
  problems = []
  if fit.n <= 3:
    problems.append(f'{fit.n} points fix its 3 parameters: nothing checks the fit')
  if noise is not None and fit.n > 3 and fit.rms > 2 * noise:
    problems.append(f'misses the points by {fit.rms:.4f} nats RMS, over twice the seed noise '
                    f'({noise:.4f})')
  if fit.e <= 1e-6:
    problems.append('its floor e is at 0: the losses do not bend yet, so e is not measured')
  elif fit.e >= min(loss) * (1 - 1e-6):
    problems.append('its floor e is at the lowest loss: the law is not a power law there')
  if fit.b >= B_MAX * (1 - 1e-6):
    problems.append(f'its exponent hit the bound {B_MAX}')
  return problems
