"""A sweep over any config file's fields, from the command line: the product of --grid axes, the
paired values of --zip axes, and --seeds.

  --grid=model.norm=layernorm,rmsnorm --grid=model.position=learned,rope --seeds=3

is 2 x 2 arms x 3 seeds = 12 runs of the config file's own get_config(), each with its fields set
as train.py's --config.KEY=VALUE would set them. Zipped axes advance together (--zip=model.d_model=
64,128 --zip=model.n_heads=2,4 is 2 arms, not 4) and multiply the grid axes. Every run's config
is built and checked (trainer.check_config) when the sweep is planned, so a misspelled key, a
value of the wrong type or an impossible combination is refused, naming it, before any run starts.

A run's variant is its assignments in axis order, 'model.norm=rmsnorm,model.position=rope,seed=1';
its label, which groups seeds, is the same less the seed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

from gptjax.config import (check_config_key, config_field_type, load_config_file, parse_field_value,
                           update_config)


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
  """'optim.lr=1e-3:3e-2:5' -> ('optim.lr', ['0.001', '0.00237', ...]): n log-spaced values from
  lo to hi (3 significant digits; an integer field's rounded, repeats dropped)."""
  usage = (f'--tune={spec!r}: write --tune=KEY=LO:HI:N, N log-spaced values '
           '(e.g. optim.lr=1e-3:3e-2:5)')
  key, _, bounds = spec.partition('=')
  parts = bounds.split(':')
  try:
    lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
  except (ValueError, IndexError):
    raise ValueError(usage) from None
  if len(parts) != 3 or not 0 < lo < hi or n < 2:
    raise ValueError(f'{usage}; needs 0 < LO < HI and N >= 2')
  check_config_key(config, key, 'tune key')
  points = [lo * (hi / lo)**(i / (n - 1)) for i in range(n)]
  if config_field_type(config, key) is int:
    return key, list(dict.fromkeys(str(round(p)) for p in points))
  return key, list(dict.fromkeys(f'{p:.3g}' for p in points))


class GridSweep:
  """The planned variants of one config file under grid/zip axes and seeds; it answers
  gptjax.sweep.plan as a sweep config module would (get_config, variant_label)."""
  def __init__(self, config_path: str | Path, grids: Sequence[str] = (), zips: Sequence[str] = (),
               seeds: int | None = None, tune: str | None = None):
    self.config_path = str(config_path)
    config = load_config_file(config_path)  # the file exists and builds
    grid_axes = [parse_axis(spec, 'grid') for spec in grids]
    zip_axes = [parse_axis(spec, 'zip') for spec in zips]
    # (key, values): every arm is trained at every value and reported at its own best.
    self.tune = parse_tune(tune, config) if tune else None
    if not grid_axes and not zip_axes and not self.tune:
      raise ValueError('a grid sweep needs at least one --grid, --zip or --tune axis')
    keys = [key for key, _ in grid_axes + zip_axes + ([self.tune] if self.tune else [])]
    repeated = {key for key in keys if keys.count(key) > 1}
    if repeated or 'seed' in keys:
      raise ValueError(f'{", ".join(sorted(repeated)) or "seed"} is given as two axes; '
                       'seeds come from --seeds')
    if len({len(values) for _, values in zip_axes}) > 1:
      lengths = ', '.join(f'{key} has {len(values)}' for key, values in zip_axes)
      raise ValueError(f'--zip axes must list as many values each: {lengths}')
    if seeds is not None and seeds < 1:
      raise ValueError(f'--seeds={seeds} must be >= 1')

    points = [
        list(zip([k for k, _ in grid_axes], combo))
        for combo in itertools.product(*[values for _, values in grid_axes])
    ]
    zipped = [
        list(zip([k for k, _ in zip_axes], combo))
        for combo in zip(*[values for _, values in zip_axes])
    ] or [[]]
    self.arms = [
        ','.join(f'{k}={v}' for k, v in point + paired) for point in points for paired in zipped
    ]
    tuned = [(self.tune[0], value) for value in self.tune[1]] if self.tune else [None]
    seeded = [f'seed={seed}' for seed in range(seeds)] if seeds is not None else [None]
    self.variants = [
        ','.join(item for item in (arm, point and f'{point[0]}={point[1]}', seed) if item)
        for arm in self.arms for point in tuned for seed in seeded
    ]

  @staticmethod
  def variant_label(variant: str) -> str:
    return ','.join(item for item in variant.split(',') if not item.startswith('seed='))

  def get_config(self, variant: str, overrides: Mapping[str, Any] | None = None):
    """The config file's config, the sweep's overrides and then the variant's fields applied,
    checked as train.py would check it (a ValueError names the variant and the problem)."""
    from gptjax.trainer import check_config  # the trainer imports JAX's device setup

    config = load_config_file(self.config_path)
    update_config(config, dict(overrides or {}))
    settings = {}
    for item in variant.split(','):
      key, _, text = item.partition('=')
      check_config_key(config, key, 'grid key')
      settings[key] = parse_field_value(config, key, text)
    try:
      update_config(config, settings, where='grid key')
      check_config(config)
    except ValueError as error:
      raise ValueError(f'grid point {variant}: {error}') from None
    return config
