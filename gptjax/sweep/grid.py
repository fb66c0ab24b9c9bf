"""A sweep over any config file's fields, from the command line: the product of --grid axes, the
paired values of --zip axes, the rungs of a --ladder, a --tune axis, and --seeds.

  --grid=model.norm=layernorm,rmsnorm --grid=model.position=learned,rope --seeds=3

is 2 x 2 arms x 3 seeds = 12 runs of the config file's own get_config(), each with its fields set
as train.py's --config.KEY=VALUE would set them. Zipped axes advance together (--zip=model.d_model=
64,128 --zip=model.n_heads=2,4 is 2 arms, not 4) and multiply the grid axes. Ladder axes advance
together too, one model size per rung, and set each rung's train.steps from its parameter count
(--tokens_per_param). On a sweep config (one with SWEEPS) the axes multiply its named variants,
which its own get_config builds on the axes' fields (configs/ablation.py matches d_ff at a rung's
width). Every run's config is built and checked (trainer.check_config) when the sweep is
planned, so a misspelled key, a value of the wrong type or an impossible combination is refused,
naming it, before any run starts.

A run's variant is its items in order (a named variant's, the axes', the rung's, the tuned value,
the seed): 'model.norm=rmsnorm,model.position=rope,seed=1'; its label, which groups seeds, is
the same less the seed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

from gptjax.config import (ModelConfig, check_config_key, config_field_type, load_config_file,
                           parse_field_value, update_config)
from gptjax.sweep.plan import load_sweep_module, variant_label_of


def parse_axis(spec: str, flag: str) -> tuple[str, list[str]]:
  """'model.norm=layernorm,rmsnorm' -> ('model.norm', ['layernorm', 'rmsnorm'])."""
  key, sep, values = spec.partition('=')
  items = values.split(',')
  if not sep or not key or not all(items):
    raise ValueError(f'--{flag}={spec!r}: write --{flag}=KEY=VALUE1,VALUE2,... '
                     '(e.g. --grid=model.norm=layernorm,rmsnorm)')
  if len(set(items)) < len(items):
    raise ValueError(f'--{flag}={spec!r} lists a value twice')
  return key, items


def parse_tune(spec: str, config) -> tuple[str, list[str]]:
  """'optim.lr=1e-3:3e-2:5' -> ('optim.lr', ['0.001', '0.00234', ...]): n log-spaced values from
  lo to hi; or the values listed, 'optim.lr=0.000427,0.001,0.00234' (a range widened by a value
  keeps its runs). Values have 3 significant digits (an integer field's are rounded), in
  increasing order, repeats dropped."""
  usage = (f'--tune={spec!r}: write --tune=KEY=LO:HI:N, N log-spaced values (e.g. '
           'optim.lr=1e-3:3e-2:5), or --tune=KEY=V1,V2,... (e.g. optim.lr=0.001,0.003,0.01)')
  key, _, bounds = spec.partition('=')
  try:
    if ',' in bounds:
      points = [float(v) for v in bounds.split(',')]
      valid = len(points) >= 2 and all(0 < a < b for a, b in zip(points, points[1:]))
      requirement = 'needs 2 or more values > 0, in increasing order'
    else:
      parts = bounds.split(':')
      lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
      valid = len(parts) == 3 and 0 < lo < hi and n >= 2
      requirement = 'needs 0 < LO < HI and N >= 2'
      points = [lo * (hi / lo)**(i / (n - 1)) for i in range(n)] if valid else []
  except (ValueError, IndexError):
    raise ValueError(usage) from None
  if not valid:
    raise ValueError(f'{usage}; {requirement}')
  check_config_key(config, key, 'tune key')
  if config_field_type(config, key) is int:
    return key, list(dict.fromkeys(str(round(p)) for p in points))
  return key, list(dict.fromkeys(f'{p:.3g}' for p in points))


class GridSweep:
  """The planned variants of one config file under grid/zip axes, a scaling ladder, a tuned field
  and seeds; it answers gptjax.sweep.plan as a sweep config module would (get_config,
  variant_label).

  `arms`: a sweep config module's own variants (a named sweep's, with their seeds), which the
  axes multiply; None for a plain config file, whose only arm is its config. `ladder`: axes that
  advance together, as --zip's, one model size per rung; each rung trains for tokens_per_param
  tokens per parameter (the N of 6N), and the report fits a scaling law per arm."""
  def __init__(self, config_path: str | Path, grids: Sequence[str] = (), zips: Sequence[str] = (),
               seeds: int | None = None, tune: str | None = None, arms: Sequence[str] | None = None,
               ladder: Sequence[str] = (), tokens_per_param: float = 20.0):
    self.config_path = str(config_path)
    self.module = load_sweep_module(config_path) if arms is not None else None
    config = self._module_config('') if self.module else load_config_file(config_path)
    grid_axes = [parse_axis(spec, 'grid') for spec in grids]
    zip_axes = [parse_axis(spec, 'zip') for spec in zips]
    ladder_axes = [parse_axis(spec, 'ladder') for spec in ladder]
    # (key, values): every arm is trained at every value and reported at its own best.
    self.tune = parse_tune(tune, config) if tune else None
    if not grid_axes and not zip_axes and not ladder_axes and not self.tune and arms is None:
      raise ValueError('a grid sweep needs at least one --grid, --zip, --ladder or --tune axis')
    _check_axes(grid_axes + zip_axes + ladder_axes + ([self.tune] if self.tune else []),
                {'zip': zip_axes, 'ladder': ladder_axes}, seeds)
    if ladder_axes and not tokens_per_param > 0:
      raise ValueError(f'--tokens_per_param={tokens_per_param} must be > 0')
    self.tokens_per_param = tokens_per_param
    self.ladder_keys = [key for key, _ in ladder_axes]
    self.rungs = [','.join(items) for items in _paired(ladder_axes)]

    named = _named_arms(arms if arms is not None else [''], seeds)
    self.arms, arm_seeds = [], []
    for arm, seed_items in named.items():
      for point in _product(grid_axes):
        for paired in _paired(zip_axes):
          self.arms.append(_join(arm, *point, *paired))
          arm_seeds.append(seed_items or [''])
    tuned = [f'{self.tune[0]}={value}' for value in self.tune[1]] if self.tune else ['']
    self.variants = [
        _join(arm, rung, point, seed) for arm, seed_items in zip(self.arms, arm_seeds)
        for rung in self.rungs for point in tuned for seed in seed_items
    ]
    if self.module is not None and hasattr(self.module, 'factors'):
      self.factors = self.module.factors  # the module's own columns for the report

  def _split(self, variant: str) -> tuple[str, list[str]]:
    """A variant's items for the sweep module's get_config, and its config field assignments
    (dotted keys, and the seed)."""
    items = [item for item in variant.split(',') if item]
    fields = [item for item in items if self._is_field(item.partition('=')[0])]
    return ','.join(item for item in items if item not in fields), fields

  def _is_field(self, key: str) -> bool:
    return self.module is None or '.' in key or key == 'seed'

  def variant_label(self, variant: str) -> str:
    """The variant less its seed; a sweep module's part by the module's own label."""
    own, fields = self._split(variant)
    fields = [item for item in fields if not item.startswith('seed=')]
    if self.module is None:
      return ','.join(fields)
    return _join(variant_label_of(self.module, own), *fields)

  def arm_labels(self) -> list[str]:
    """What --tune tunes separately: every arm at every rung."""
    return [self.variant_label(_join(arm, rung)) for arm in self.arms for rung in self.rungs]

  def _module_config(self, own: str, overrides: Mapping[str, Any] | None = None):
    return self.module.get_config(own or None, overrides=dict(overrides or {}))

  def get_config(self, variant: str, overrides: Mapping[str, Any] | None = None):
    """The config file's config with the sweep's overrides and the variant's fields applied,
    checked as train.py would check it (a ValueError names the variant and the problem).

    A sweep module gets the fields as overrides of its base, before its own variant is built on
    them: configs/ablation.py matches a variant's d_ff to the baseline at a rung's width."""
    from gptjax.trainer import check_config  # the trainer imports JAX's device setup

    own, fields = self._split(variant)
    overrides = dict(overrides or {})
    if self.module is not None:
      config = self._module_config('', overrides)
    else:
      config = load_config_file(self.config_path)
      update_config(config, overrides)
    settings = {}
    for item in fields:
      key, _, text = item.partition('=')
      check_config_key(config, key, 'grid key')
      settings[key] = parse_field_value(config, key, text)
    try:
      if self.module is not None:
        config = self._module_config(own, {**overrides, **settings})
        _check_kept(config, settings, own)
      else:
        update_config(config, settings, where='grid key')
      if self.ladder_keys:
        config.train.steps = self._rung_steps(config)
      check_config(config)
    except ValueError as error:
      raise ValueError(f'grid point {variant}: {error}') from None
    return config

  def _rung_steps(self, config) -> int:
    """Steps that train for tokens_per_param tokens per matmul parameter (at least one)."""
    from gptjax.flops import matmul_params  # traces the model: only where a ladder needs it

    cfg = ModelConfig.from_config(config.model)
    tokens_per_step = config.train.batch_size * (config.train.seq_len or cfg.block_size)
    return max(1, round(self.tokens_per_param * matmul_params(cfg) / tokens_per_step))


def _check_axes(axes: list[tuple[str, list[str]]], paired: dict[str, list], seeds) -> None:
  keys = [key for key, _ in axes]
  repeated = {key for key in keys if keys.count(key) > 1}
  if repeated or 'seed' in keys:
    raise ValueError(f'{", ".join(sorted(repeated)) or "seed"} is given as two axes; '
                     'seeds come from --seeds')
  for flag, flag_axes in paired.items():
    if len({len(values) for _, values in flag_axes}) > 1:
      lengths = ', '.join(f'{key} has {len(values)}' for key, values in flag_axes)
      raise ValueError(f'--{flag} axes must list as many values each: {lengths}')
  if seeds is not None and seeds < 1:
    raise ValueError(f'--seeds={seeds} must be >= 1')


def _product(axes: list[tuple[str, list[str]]]) -> list[list[str]]:
  """Every combination of the axes' values, as KEY=VALUE items ([[]] for no axes)."""
  return [[f'{k}={v}' for k, v in zip([k for k, _ in axes], combo)]
          for combo in itertools.product(*[values for _, values in axes])]


def _paired(axes: list[tuple[str, list[str]]]) -> list[list[str]]:
  """The axes' i-th values together, for each i, as KEY=VALUE items ([[]] for no axes)."""
  return [[f'{k}={v}' for k, v in zip([k for k, _ in axes], combo)]
          for combo in zip(*[values for _, values in axes])] or [[]]


def _named_arms(arms: Sequence[str], seeds: int | None) -> dict[str, list[str]]:
  """Each arm (its variant less seeds) with its seed items: the ones its sweep lists, unless
  --seeds replaces them."""
  named: dict[str, list[str]] = {}
  for arm in arms:
    named.setdefault(_without_seed(arm),
                     []).extend(item for item in arm.split(',') if item.startswith('seed='))
  if seeds is not None:
    named = {arm: [f'seed={seed}' for seed in range(seeds)] for arm in named}
  return named


def _check_kept(config, settings: Mapping[str, Any], own: str) -> None:
  """A sweep module's variant that sets an axis' field itself would silently win over it."""
  for key, value in settings.items():
    node = config
    for part in key.split('.'):
      node = node[part]
    if node != value:
      raise ValueError(f'the variant {own!r} sets {key}={node!r} itself, over the axis value '
                       f'{value!r}; drop it from the variant or from the axes')


def _join(*items: str) -> str:
  return ','.join(item for item in items if item)


def _without_seed(variant: str) -> str:
  return _join(*(item for item in variant.split(',') if not item.startswith('seed=')))
