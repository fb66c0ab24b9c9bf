"""What a sweep runs: the variants of a config file's grid, each a PlannedRun with its label, slug,
seed, factors and its config, built (and so validated) before anything trains."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections

from gptjax.config import load_config_module
from gptjax.files import directory_name

# A sweep's workdir: the plan, and per run (in <slug>/) its exact config, status and trace.
SWEEP_FILE = 'sweep.json'
CONFIG_FILE = 'config.json'
STATUS_FILE = 'status.json'
ERROR_LOG = 'error.log'


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  variant: str  # as written in the sweep
  label: str  # canonical name without the seed: seeds of one label are averaged
  seed: int
  slug: str  # its directory under the sweep's workdir
  config: ml_collections.ConfigDict
  factors: Mapping[str, Any]  # {name: value}: the report's per-run columns and factor plot


def load_sweep_module(path: str | Path):
  """A sweep config file as a module; beyond any config file's get_config, it needs SWEEPS."""
  module = load_config_module(path)
  if not hasattr(module, 'SWEEPS'):
    raise ValueError(f'{path} defines no SWEEPS; a sweep config defines get_config(variant, '
                     'overrides=None) and SWEEPS = {name: [variant, ...]}')
  return module


def sweep_variants(module, name: str) -> list[str]:
  if name not in module.SWEEPS:
    raise ValueError(f'sweep {name!r} is not one of {", ".join(map(repr, module.SWEEPS))} '
                     f'(SWEEPS in {module.__file__})')
  return list(module.SWEEPS[name])


def slugify(label: str, seed: int) -> str:
  """'norm=rmsnorm,pos=rope', 1 -> 'norm-rmsnorm_pos-rope_seed-1' (a plain directory name)."""
  return f'{directory_name(label)}_seed-{seed}'


def variant_label_of(module, variant: str) -> str:
  """A variant's label: the module's variant_label, else the variant less its seed= items."""
  if hasattr(module, 'variant_label'):
    return module.variant_label(variant)
  kept = [item for item in variant.split(',') if item and not item.startswith('seed=')]
  return ','.join(kept) or 'baseline'


def as_json(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON data: what config.json holds and what runs are compared by."""
  return json.loads(json.dumps(config.to_dict()))


def flatten(tree: Mapping, prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def differing_keys(configs: Sequence[Mapping]) -> list[dict[str, Any]]:
  """Each config's values of the keys (seed aside) that differ between the configs (plain JSON
  data, as config.json holds): the factors of a sweep whose config module names none. Lists
  become their JSON text, so they group."""
  flats = [flatten(config) for config in configs]
  keys = dict.fromkeys(key for flat in flats for key in flat if key != 'seed')
  varying = [k for k in keys if len({json.dumps(flat.get(k)) for flat in flats}) > 1]
  return [{
      k: json.dumps(v) if isinstance(v, list) else v
      for k, v in ((k, flat.get(k)) for k in varying)
  } for flat in flats]


def _factors(module, configs: Sequence[ml_collections.ConfigDict]) -> list[dict[str, Any]]:
  if hasattr(module, 'factors'):
    return [dict(module.factors(config)) for config in configs]
  return differing_keys([as_json(config) for config in configs])


def plan(module, variants: Sequence[str],
         overrides: Mapping[str, Any] | None = None) -> list[PlannedRun]:
  """One PlannedRun per variant, every config built (and so validated) before anything runs."""
  configs = [module.get_config(variant, overrides=dict(overrides or {})) for variant in variants]
  runs, by_slug, by_config = [], {}, {}
  for variant, config, factors in zip(variants, configs, _factors(module, configs)):
    label = variant_label_of(module, variant)
    run = PlannedRun(variant, label, config.seed, slugify(label, config.seed), config, factors)
    same_config = json.dumps(as_json(config), sort_keys=True)
    for seen, key in ((by_slug, run.slug), (by_config, same_config)):
      if key in seen:
        raise ValueError(f'variants {seen[key]!r} and {variant!r} are the same run; '
                         'list each variant once')
      seen[key] = variant
    runs.append(run)
  return runs
