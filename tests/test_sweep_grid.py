"""Sweeps over any config file's fields (gptjax.sweep.grid): --grid products, --zip pairs, --seeds,
checked before anything runs, and one real grid sweep through the command line."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from gptjax import checkpoint, data, sweep
from gptjax.config import ModelConfig
from gptjax.logs import read_metrics
from gptjax.sweep import plots
from gptjax.sweep.grid import GridSweep
from gptjax.sweep.tuned import parabola_vertex, tuned_markdown, tuned_rows

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / 'configs' / 'small.py'


def test_grid_axes_multiply_zip_axes_pair_and_seeds_repeat_every_arm():
  grid = GridSweep(SMALL, ['model.norm=layernorm,rmsnorm', 'optim.lr=1e-3,3e-3'],
                   ['model.d_model=64,128', 'model.n_heads=2,4'], seeds=2)
  arms = [
      f'model.norm={n},optim.lr={lr},model.d_model={d},model.n_heads={h}'
      for n in ('layernorm', 'rmsnorm') for lr in ('1e-3', '3e-3') for d, h in ((64, 2), (128, 4))
  ]
  assert grid.variants == [f'{arm},seed={s}' for arm in arms for s in (0, 1)]
  assert grid.variant_label(grid.variants[1]) == arms[0]
  assert GridSweep(SMALL, ['model.norm=layernorm,rmsnorm']).variants == [
      'model.norm=layernorm', 'model.norm=rmsnorm'
  ]


def test_each_value_takes_its_fields_type_and_nothing_else_changes():
  grid = GridSweep(SMALL, [
      'model.n_layers=2', 'optim.lr=1e-3', 'model.norm=rmsnorm', 'model.remat=true',
      'optim.grad_accum_steps=auto'
  ], seeds=1)
  config = grid.get_config(grid.variants[0])
  assert config.model.n_layers == 2 and type(config.model.n_layers) is int
  assert config.optim.lr == 1e-3 and type(config.optim.lr) is float
  assert config.model.norm == 'rmsnorm' and config.model.remat is True
  assert config.optim.grad_accum_steps == 'auto' and config.seed == 0
  base = sweep.as_json(
      grid.get_config('model.n_layers=4,optim.lr=3e-3,model.norm=layernorm,'
                      'model.remat=false,optim.grad_accum_steps=1,seed=0'))
  changed = sweep.flatten(sweep.as_json(config))
  assert {k
          for k, v in sweep.flatten(base).items() if changed[k] != v} == {
              'model.n_layers', 'optim.lr', 'model.norm', 'model.remat', 'optim.grad_accum_steps'
          }


def test_a_grid_plans_labelled_runs_told_apart_by_their_fields():
  grid = GridSweep(SMALL, ['model.norm=layernorm,rmsnorm'], seeds=2)
  runs = sweep.plan(grid, grid.variants, {'train.steps': 10, 'optim.warmup_steps': 2})
  assert [r.slug for r in runs] == [
      'model.norm-layernorm_seed-0', 'model.norm-layernorm_seed-1', 'model.norm-rmsnorm_seed-0',
      'model.norm-rmsnorm_seed-1'
  ]
  assert [r.label for r in runs] == ['model.norm=layernorm'] * 2 + ['model.norm=rmsnorm'] * 2
  assert [r.factors for r in runs] == [{'model.norm': n}
                                       for n in ['layernorm'] * 2 + ['rmsnorm'] * 2]
  assert all(r.config.train.steps == 10 for r in runs)


@pytest.mark.parametrize('grids, zips, seeds, message', [
    (['model.nrom=rmsnorm'], [], None, "unknown grid key 'model.nrom'; did you mean 'model.norm'?"),
    (['model.n_layers=two'], [], None, 'model.n_layers takes a number (int)'),
    (['model.use_bias=yes'], [], None, 'model.use_bias takes true or false'),
    (['model.norm=rmsnorm,batchnorm'
      ], [], None, "grid point model.norm=batchnorm: norm='batchnorm'"),
    (['model.n_kv_heads=1,3'], [], None, 'grid point model.n_kv_heads=3: '),
    (['data.tokenizer=bytes,gpt2'], [], None,
     "grid point data.tokenizer=gpt2: model.vocab_size=257 is smaller than the gpt2 tokenizer's "
     '50257 tokens'),
    (['model.norm'], [], None, 'write --grid=KEY=VALUE1,VALUE2'),
    (['model.norm=rmsnorm,rmsnorm'], [], None, 'lists a value twice'),
    (['model.norm=rmsnorm', 'model.norm=layernorm'], [], None, 'model.norm is given as two axes'),
    ([], ['model.d_model=64,128', 'model.n_heads=2'
          ], None, 'model.d_model has 2, model.n_heads has 1'),
    (['seed=1,2'], [], None, 'seeds come from --seeds'),
    (['model.norm=rmsnorm'], [], 0, '--seeds=0 must be >= 1'),
    ([], [], 2, 'at least one --grid, --zip, --ladder or --tune'),
])
def test_a_bad_grid_is_refused_naming_the_key_before_any_run(tmp_path, grids, zips, seeds, message):
  workdir = tmp_path / 'sweep'
  with pytest.raises(ValueError) as error:
    grid = GridSweep(SMALL, grids, zips, seeds)
    sweep.run_sweep(SMALL, workdir, grid=grid)
  assert message in str(error.value), str(error.value)
  assert not workdir.exists()  # refused while planning: nothing was started or written


@pytest.mark.slow
def test_a_grid_sweep_runs_from_the_command_line_on_a_plain_config(tmp_path):
  data_dir = tmp_path / 'data'
  data.prepare('stdlib', 'bytes', data_dir, max_bytes=100_000, progress=False)
  tiny = {
      'model.n_layers': 1, 'model.d_model': 32, 'model.block_size': 32, 'data.max_bytes': 100_000,
      'data.data_dir': data_dir, 'optim.warmup_steps': 1, 'train.steps': 2, 'train.batch_size': 4,
      'train.log_every': 1, 'train.eval_every': 1, 'train.eval_batches': 1, 'train.ckpt_every': 2
  }
  workdir = tmp_path / 'norms'
  command = [
      sys.executable, '-m', 'gptjax.sweep', f'--config={SMALL}', f'--workdir={workdir}',
      '--grid=model.norm=layernorm,rmsnorm', '--seeds=2',
      *(f'--config.{k}={v}' for k, v in tiny.items())
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '4/4 runs done' in result.stdout
  for norm in ('layernorm', 'rmsnorm'):
    for seed in (0, 1):
      run_dir = workdir / f'model.norm-{norm}_seed-{seed}'
      config = json.loads((run_dir / 'config.json').read_text())
      assert ModelConfig.from_config(config['model']).norm == norm and config['seed'] == seed
      assert json.loads((run_dir / 'status.json').read_text())['status'] == 'done'
  assert 'model.norm=rmsnorm' in (workdir / 'results.md').read_text()

  bad = subprocess.run([*command[:5], '--grid=model.nrom=rmsnorm'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines()[-1] == (
      "error: unknown grid key 'model.nrom'; did you mean 'model.norm'?")


# --tune


def test_tune_values_are_log_spaced_and_an_integer_field_is_rounded():
  grid = GridSweep(SMALL, ['model.norm=layernorm,rmsnorm'], seeds=2, tune='optim.lr=1e-3:3e-2:5')
  key, values = grid.tune
  assert key == 'optim.lr'
  np.testing.assert_allclose([float(v) for v in values], np.geomspace(1e-3, 3e-2, 5), rtol=2e-3)
  assert len(grid.variants) == 2 * 5 * 2
  assert grid.variants[:3] == [
      f'model.norm=layernorm,optim.lr={values[0]},seed=0',
      f'model.norm=layernorm,optim.lr={values[0]},seed=1',
      f'model.norm=layernorm,optim.lr={values[1]},seed=0'
  ]
  assert type(grid.get_config(grid.variants[2]).optim.lr) is float
  warmup = GridSweep(SMALL, tune='optim.warmup_steps=1:4:6')
  assert warmup.tune[1] == ['1', '2', '3', '4']  # rounded, repeats dropped
  assert warmup.arms == [''] and warmup.variants[0] == 'optim.warmup_steps=1'
  # A listed grid: the values written as LO:HI:N writes them, so a widened range keeps its runs.
  widened = GridSweep(SMALL, tune='optim.lr=4.27e-4,1e-3,2.34e-3,0.00548,0.0128,0.03')
  assert widened.tune[1] == ['0.000427', *grid.tune[1]
                             ] == ['0.000427', '0.001', '0.00234', '0.00548', '0.0128', '0.03']


@pytest.mark.parametrize('tune, message', [
    ('optim.lr=1e-3:3e-2', 'write --tune=KEY=LO:HI:N'),
    ('optim.lr=3e-2:1e-3:5', 'needs 0 < LO < HI and N >= 2'),
    ('optim.lr=0:1e-3:5', 'needs 0 < LO < HI'),
    ('optim.lrr=1e-3:3e-2:5', "unknown tune key 'optim.lrr'; did you mean 'optim.lr'?"),
    ('optim.lr=a:b:c', 'write --tune=KEY=LO:HI:N'),
    ('optim.lr=0.01,0.001', 'needs 2 or more values > 0, in increasing order'),
    ('optim.lr=0.001,x', 'or --tune=KEY=V1,V2,...'),
])
def test_a_bad_tune_axis_is_refused(tune, message):
  with pytest.raises(ValueError) as error:
    GridSweep(SMALL, tune=tune)
  assert message in str(error.value)


def _row(label, finals):
  return {
      'variant': label, 'done': len(finals), 'final_val_loss_values': finals,
      'final_val_loss_mean': float(np.mean(finals)) if finals else math.nan,
      'final_val_loss_std': float(np.std(finals, ddof=1)) if len(finals) > 1 else math.nan,
      'best_val_loss': float(np.mean(finals)) if finals else math.nan
  }


def test_each_arm_is_reported_at_its_own_best_value_and_an_edge_optimum_is_flagged():
  tune = {'key': 'optim.lr', 'values': ['0.001', '0.003', '0.01'], 'arms': ['n=a', 'n=b']}
  rows = [
      _row('n=a,optim.lr=0.001', [3.5, 3.6]),
      _row('n=a,optim.lr=0.003', [3.1, 3.2]),
      _row('n=a,optim.lr=0.01', [3.3, 3.4]),
      _row('n=b,optim.lr=0.001', [3.6, 3.7]),
      _row('n=b,optim.lr=0.003', [3.4, 3.5]),
      _row('n=b,optim.lr=0.01', [3.0, 3.05]),
  ]
  arms = {arm['arm']: arm for arm in tuned_rows(rows, tune)}
  assert (arms['n=a']['value'], arms['n=a']['edge']) == ('0.003', False)
  assert (arms['n=b']['value'], arms['n=b']['edge']) == ('0.01', True)
  reference = scipy_stats.ttest_ind([3.0, 3.05], [3.1, 3.2], equal_var=False)
  assert arms['n=b']['comparison'].p_value == pytest.approx(reference.pvalue, rel=1e-10)
  assert arms['n=b']['comparison'].difference.estimate == pytest.approx(3.025 - 3.15)
  text = re.sub(' +', ' ', '\n'.join(tuned_markdown(tuned_rows(rows, tune),
                                                    tune)))  # table padding aside
  assert '| `n=b` | 0.01 (at the edge: widen the range) | — | 3.0250 ± 0.0354 |' in text
  vertex = arms['n=a']['vertex']  # past 0.003: the loss rises less steeply towards 0.01
  assert 0.003 < vertex < 0.01 and f'| `n=a` | 0.003 | {vertex:.3g} | 3.1500 ± 0.0707 |' in text


def test_the_parabola_through_the_best_value_and_its_neighbours_finds_a_planted_optimum():
  optimum = 0.0042
  loss = lambda lr: 2.0 + 0.3 * (math.log(lr) - math.log(optimum))**2
  curve = [(lr, loss(lr)) for lr in (0.001, 0.00234, 0.00548, 0.0128)]
  assert parabola_vertex(curve, '0.00548') == pytest.approx(optimum, rel=1e-9)
  assert parabola_vertex(curve, '0.001') is None  # an edge: no neighbour on one side
  flat = [(0.001, 2.0), (0.002, 2.0), (0.004, 2.0)]
  assert parabola_vertex(flat, '0.002') is None  # no bend: no optimum to place


def test_tuned_plot_panels_split_by_first_item_only_when_that_groups_arms():
  arm = lambda name: {'arm': name, 'points': [], 'row': None}
  widths = [
      arm(f'model.parametrization={p},model.d_model={d}') for p in ('sp', 'mup') for d in (32, 64)
  ]
  panels = plots.tuned_panels(widths)
  assert list(panels) == ['model.parametrization=sp', 'model.parametrization=mup']
  assert [len(group) for group in panels.values()] == [2, 2]
  pairs = [arm('norm_position=pre,warmup=0'), arm('norm_position=post,warmup=0')]
  assert list(plots.tuned_panels(pairs)) == ['']  # one arm per first item: compare in one
  variants = [arm('baseline'), arm('norm=rmsnorm'), arm('norm=rmsnorm,pos=rope')]
  assert list(plots.tuned_panels(variants)) == ['']


# A sweep config's own arms (configs/ablation.py's variants), tuned


def test_a_sweep_configs_named_arms_are_tuned_and_keep_their_own_seeds():
  ablation = REPO / 'configs' / 'ablation.py'
  named = ['seed=0', 'seed=1', 'mlp=swiglu,seed=0', 'mlp=swiglu,seed=1']
  grid = GridSweep(ablation, tune='optim.lr=1e-3:1e-2:2', arms=named)
  assert grid.arm_labels() == ['baseline', 'mlp=swiglu']
  assert grid.variants == [
      f'{arm}optim.lr={lr},seed={seed}' for arm in ('', 'mlp=swiglu,') for lr in ('0.001', '0.01')
      for seed in (0, 1)
  ]
  runs = sweep.plan(grid, grid.variants, {'train.steps': 10, 'optim.warmup_steps': 2})
  assert [r.label for r in runs[:4]] == ['baseline,optim.lr=0.001'] * 2 + \
      ['baseline,optim.lr=0.01'] * 2
  swiglu = runs[-1].config
  # The module built the arm (SwiGLU at matched parameters), then the tuned value was set.
  assert (swiglu.model.mlp, swiglu.model.d_ff, swiglu.optim.lr, swiglu.seed) == \
      ('swiglu', 344, 0.01, 1)
  assert swiglu.train.steps == 10
  assert runs[-1].factors['lr'] == 0.01 and runs[-1].factors['mlp'] == 'swiglu'
  # --seeds replaces the sweep's own seeds.
  assert GridSweep(ablation, seeds=3, arms=named).variants == [
      'seed=0', 'seed=1', 'seed=2', 'mlp=swiglu,seed=0', 'mlp=swiglu,seed=1', 'mlp=swiglu,seed=2'
  ]


# --parallel


@pytest.mark.slow
def test_parallel_runs_train_on_their_own_cores_and_a_sigterm_stops_them_with_checkpoints(tmp_path):
  """Two runs at once, one core each; SIGTERM to the sweep reaches each worker once: each saves
  a checkpoint and records itself interrupted, the sweep exits 143, and the same command
  resumes both to the end."""
  data_dir = tmp_path / 'data'
  data.prepare('stdlib', 'bytes', data_dir, max_bytes=100_000, progress=False)
  tiny = {
      'model.n_layers': 1, 'model.d_model': 32, 'model.block_size': 32, 'data.max_bytes': 100_000,
      'data.data_dir': data_dir, 'optim.warmup_steps': 1, 'train.steps': 3000,
      'train.batch_size': 4, 'train.log_every': 10, 'train.eval_every': 3000,
      'train.eval_batches': 1, 'train.ckpt_every': 3000
  }
  workdir = tmp_path / 'norms'
  command = [
      sys.executable, '-m', 'gptjax.sweep', f'--config={SMALL}', f'--workdir={workdir}',
      '--grid=model.norm=layernorm,rmsnorm', '--parallel=2',
      *(f'--config.{k}={v}' for k, v in tiny.items())
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  run_dirs = [workdir / f'model.norm-{norm}_seed-0' for norm in ('layernorm', 'rmsnorm')]
  sweep_process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while not all(read_metrics(d) if d.exists() else [] for d in run_dirs):  # both are training
    assert time.time() < deadline and sweep_process.poll() is None, sweep_process.communicate()
    time.sleep(0.2)
  sweep_process.send_signal(signal.SIGTERM)
  out, err = sweep_process.communicate(timeout=120)
  assert sweep_process.returncode == 143, err[-3000:]
  assert 'stopped: SIGTERM: the runs under way saved checkpoints' in err
  stopped_at = []
  for run_dir in run_dirs:
    status = json.loads((run_dir / 'status.json').read_text())
    assert status['status'] == 'interrupted' and 'SIGTERM' in status['reason'], status
    stopped_at.append(checkpoint.latest_step(run_dir))
    assert 0 < stopped_at[-1] < 3000
    assert 'started on cores' in out + err
  cores = re.findall(r'started on cores (\d+)', out + err)
  assert sorted(cores) == ['0', '1']

  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '2/2 runs done' in result.stdout
  for run_dir, step in zip(run_dirs, stopped_at):
    log = (run_dir / 'train.log').read_text()
    assert 'steps 0..3000' in log and f'steps {step}..3000' in log  # resumed where it stopped
    assert checkpoint.latest_step(run_dir) == 3000
