"""benchmarks/gpu.py at its tiny shape on CPU, so that the script a lent GPU runs never rots."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]


def run_gpu_benchmark(tmp_path, *args):
  result = subprocess.run(
      [sys.executable,
       str(REPO / 'benchmarks' / 'gpu.py'), '--tiny', f'--out={tmp_path}', *args],
      env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  return result, json.loads((tmp_path / 'gpu.json').read_text())


@pytest.mark.slow
def test_every_row_runs_and_the_variants_compute_the_same_step(tmp_path):
  """Each row measures; its table and JSON are written; the rows at batch 2 (cuDNN asked for,
  and falling back to XLA on a CPU; remat; scanned layers) train to the same loss after the same
  steps, so the comparison is of speed alone (bfloat16: to 1e-2)."""
  result, report = run_gpu_benchmark(tmp_path)
  rows = report['rows']
  assert len(rows) == 5 and not report['skipped']
  assert all('error' not in r and r['tokens_per_s'] > 0 and 0 < r['mfu'] < 1 for r in rows), rows
  batch2 = [r for r in rows if r['row'].startswith('batch 2,')]
  assert len(batch2) == 4 and {r['attention'] for r in batch2} == {'xla'}
  for r in batch2:
    assert r['loss'] == pytest.approx(batch2[0]['loss'], abs=1e-2), (r, batch2[0])
  table = (tmp_path / 'gpu.md').read_text()
  assert '| batch 2, xla attention, remat none, scanned' in table
  assert table.strip() in result.stdout


@pytest.mark.slow
def test_rows_past_the_budget_are_skipped_and_listed(tmp_path):
  _, report = run_gpu_benchmark(tmp_path, '--budget_s=0')
  assert report['rows'] == [] and len(report['skipped']) == 5
