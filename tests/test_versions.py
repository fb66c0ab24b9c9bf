"""The supported versions (docs/versions.md): pyproject's lower bounds are what .ci/oldest.txt
installs. (benchmarks/compat.py, the end-to-end check of the installed versions, is run by .ci/run
in its newest environments, not by a test: it trains in subprocesses for a minute.)"""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r'^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$')


def requirements(extras=('test', 'test-no-torch', 'hf', 'eval')) -> list[str]:
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  found = list(project['dependencies'])
  for extra in extras:
    found += project['optional-dependencies'][extra]
  return [r for r in found if not r.startswith('gptjax[')]


def lower_bound(requirement: str) -> tuple[str, str]:
  """('flax', '0.12.8') from 'flax>=0.12.8,<0.13' (or from '==V')."""
  name, _, specifiers, _ = REQUIREMENT.match(requirement).groups()
  bounds = [s.strip() for s in specifiers.split(',')]
  lower = [s[2:] for s in bounds if s.startswith(('>=', '=='))]
  assert len(lower) == 1, f'{requirement}: give one lower bound (>= or ==), so CI can test it'
  return name.lower().replace('_', '-'), release(lower[0])


def release(version: str) -> tuple[int, ...]:
  """'2.0.0' and '2.0' -> (2,): versions that pip takes for the same release compare equal."""
  parts = [int(part) for part in version.split('.')]
  while parts and parts[-1] == 0:
    parts.pop()
  return tuple(parts)


def test_the_oldest_constraints_pin_every_lower_bound():
  pins = {}
  for line in (REPO / '.ci' / 'oldest.txt').read_text().splitlines():
    line = line.split('#', 1)[0].strip()
    if line:
      name, version = line.split('==')
      pins[name.lower()] = release(version)
  bounds = dict(lower_bound(r) for r in requirements())
  assert pins == bounds


def test_the_gpu_extras_admit_the_jax_the_package_does():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  jax = next(r for r in project['dependencies'] if r.startswith('jax>='))
  for extra, cuda in (('gpu', 'cuda12'), ('gpu-cuda13', 'cuda13')):
    (gpu,) = project['optional-dependencies'][extra]
    name, extras, specifiers, _ = REQUIREMENT.match(gpu).groups()
    assert (name, extras, specifiers) == ('jax', f'[{cuda}]', REQUIREMENT.match(jax).group(3))
