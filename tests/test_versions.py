"""The supported versions (docs/versions.md): pyproject's lower bounds are what .ci/oldest.txt
installs, and benchmarks/compat.py's end-to-end check passes on the versions installed here."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import subprocess_env

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


@pytest.mark.slow
def test_the_compatibility_script_passes_here(tmp_path):
  """Train, resume bit for bit, sample, the Hugging Face round trip against transformers, scan
  and a 4-device mesh: every check ok on this machine's versions."""
  result = subprocess.run(
      [sys.executable, str(REPO / 'benchmarks' / 'compat.py'), f'--out={tmp_path}'],
      env=subprocess_env(n_devices=4), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  report = json.loads((tmp_path / 'compat.json').read_text())
  assert report['versions']['jax'] != 'not installed'
  results = {check['check']: check['result'] for check in report['checks']}
  assert results == dict.fromkeys(('train', 'resume', 'sample', 'hf', 'scan', 'mesh'), 'ok')
  hf = next(c for c in report['checks'] if c['check'] == 'hf')
  assert 'logits vs transformers' in hf['detail']
  assert (tmp_path / 'compat.md').read_text().count('| ok') == 6
