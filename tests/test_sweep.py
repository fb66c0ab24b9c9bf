"""Ablation sweeps: configs/ablation.py's variant strings, and gptjax.sweep's runner and report.

The sweep tests share one real sweep (module fixture) over configs/ablation.py shrunk to a 1-layer,
d_model 32 byte model on 100 kB of the standard library, 2 steps per run: two seeds of the
baseline and, between them, a run forced to diverge (lr 1e30, no clipping, no warmup). Each run
compiles in a few seconds; the other tests reuse its directories, and are marked slow with it
(about 40 s together); `-m 'not slow'` keeps the variant, plan and failure-path tests.
"""

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from gptjax import checkpoint, data, flops, sweep, trainer, workdir_lock
from gptjax.config import ModelConfig
from gptjax.logs import read_metrics
from gptjax.sweep.grid import GridSweep
from gptjax.sweep.report import RUN_COLUMNS, read_status

# The sweep's runs, in-process and in a subprocess, compile most of their time.
pytestmark = pytest.mark.usefixtures('fast_compiles')

REPO = Path(__file__).resolve().parents[1]
ABLATION = REPO / 'configs' / 'ablation.py'
CORPUS_BYTES = 100_000
STEPS = 2
TINY = {
    'model.n_layers': 1,
    'model.d_model': 32,
    'model.n_heads': 4,
    'model.block_size': 32,
    'data.max_bytes': CORPUS_BYTES,
    'optim.warmup_steps': 1,
    'train.steps': STEPS,
    'train.batch_size': 4,
    'train.log_every': 1,
    'train.eval_every': 1,
    'train.eval_batches': 1,
    'train.ckpt_every': STEPS,
}
DIVERGENT = 'lr=1e30,clip=0,warmup=0,seed=0'
VARIANTS = ['seed=0', DIVERGENT, 'seed=1']
SLUGS = ['baseline_seed-0', 'lr-1e+30_warmup-0_clip-0_seed-0', 'baseline_seed-1']


@pytest.fixture(scope='module')
def ablation():
  return sweep.load_sweep_module(ABLATION)


# ---------------------------------------------------------------------------------------------
# Variant strings


@pytest.mark.parametrize('variant, expected', [
    ('norm=rmsnorm', {'model.norm': 'rmsnorm'}),
    ('norm_position=post', {'model.norm_position': 'post'}),
    ('np=post', {'model.norm_position': 'post'}),
    ('pos=rope', {'model.position': 'rope'}),
    ('pos=none', {'model.position': 'none'}),
    ('attn=mha', {'model.n_kv_heads': 4}),
    ('attn=gqa2', {'model.n_kv_heads': 2}),
    ('attn=mqa', {'model.n_kv_heads': 1}),
    ('mlp=swiglu', {'model.mlp': 'swiglu'}),
    ('np=sandwich', {'model.norm_position': 'sandwich'}),
    ('norm_position=output', {'model.norm_position': 'output'}),
    ('parallel=true', {'model.parallel_block': True}),
    ('pos=alibi', {'model.position': 'alibi'}),
    ('qk_norm=projection', {'model.qk_norm': 'projection'}),
    ('softcap=20', {'model.attn_logit_softcap': 20.0}),
    ('final_softcap=30,softcap=none', {'model.final_logit_softcap': 30.0}),
    ('z_loss=1e-4', {'train.z_loss': 1e-4}),
    ('seed=3', {'seed': 3}),
    ('lr=1e-2', {'optim.lr': 0.01}),
    ('warmup=0', {'optim.warmup_steps': 0}),
    ('clip=0', {'optim.grad_clip': 0.0}),
    (' NORM = RMSNorm , pos=rope,attn=gqa2,seed=1',
     {'model.norm': 'rmsnorm', 'model.position': 'rope', 'model.n_kv_heads': 2, 'seed': 1}),
])
def test_variant_string_sets_its_field_and_nothing_else(ablation, variant, expected):
  base = sweep.flatten(ablation.get_config().to_dict())
  config = sweep.flatten(ablation.get_config(variant).to_dict())
  changed = {k: config[k] for k in config if config[k] != base[k] and k != 'model.d_ff'}
  assert changed == expected
  ModelConfig.from_config(ablation.get_config(variant).model)  # a valid model


@pytest.mark.slow  # in the full suite; out of the inner loop (-m "not slow")
def test_baseline_is_gpt2_recipe_and_every_sweep_parses(ablation):
  cfg = ModelConfig.from_config(ablation.get_config('').model)
  assert (cfg.norm, cfg.norm_position, cfg.position, cfg.n_kv_heads, cfg.mlp) == \
      ('layernorm', 'pre', 'learned', cfg.n_heads, 'gelu')
  assert ablation.get_config(None).to_dict() == ablation.get_config('seed=0').to_dict()
  for name in ablation.SWEEPS:
    runs = sweep.plan(ablation, ablation.SWEEPS[name])  # builds and checks every config
    assert len({r.slug for r in runs}) == len(runs)
    assert len({r.seed for r in runs}) >= 2, name
    budgets = {(r.config.train.steps, r.config.train.batch_size, r.config.model.block_size,
                r.config.data.corpus, r.config.data.seed)
               for r in runs}
    assert len(budgets) == 1, f'{name}: every run must see the same tokens in the same order'
  assert len(ablation.SWEEPS['full']) == 2 * 2 * 2 * 3 * 2
  for name, spec in ablation.TUNE.items():  # each named sweep's tuning builds on its arms
    grid = GridSweep(ABLATION, tune=spec, arms=ablation.SWEEPS[name])
    assert len(grid.variants) == len(ablation.SWEEPS[name]) * len(grid.tune[1]), name


@pytest.mark.parametrize('variant, needles', [
    ('nrom=rmsnorm', ["'nrom'", "did you mean 'norm'", 'norm_position (np)']),
    ('norm=rms', ["norm='rms'", 'layernorm, rmsnorm']),
    ('np=middle', ["norm_position='middle'", 'pre, post, sandwich, output']),
    ('pos=t5', ["pos='t5'", 'learned, rope, none, alibi']),
    ('softcap=0', ["softcap='0'", '> 0 | none']),
    ('z_loss=-1', ["z_loss='-1'", '>= 0']),
    ('parallel=yes', ["parallel='yes'", 'true, false']),
    ('attn=gqa3', ["attn='gqa3'", 'n_heads=4']),
    ('attn=gqa', ["attn='gqa'", 'mha, mqa, gqaN']),
    ('mlp=relu', ["mlp='relu'", 'gelu, gelu_exact, relu2, swiglu, geglu']),
    ('seed=-1', ["seed='-1'", 'integer']),
    ('lr=0', ["lr='0'", '> 0']),
    ('lr=fast', ["lr='fast'", '> 0']),
    ('warmup=1.5', ["warmup='1.5'", 'integer']),
    ('match_params=maybe', ["match_params='maybe'", 'true, false']),
    ('rmsnorm', ["'rmsnorm'", 'KEY=VALUE']),
    ('norm=rmsnorm,norm=layernorm', ["'norm'", 'twice']),
])
def test_bad_variant_names_the_key_or_value_and_the_allowed_ones(ablation, variant, needles):
  with pytest.raises(ValueError) as error:
    ablation.get_config(variant)
  for needle in needles:
    assert needle in str(error.value)


def test_variant_label_is_canonical(ablation):
  assert ablation.variant_label('np=post,norm=RMSNorm,seed=3') == \
      ablation.variant_label('norm=rmsnorm,norm_position=post') == 'norm=rmsnorm,norm_position=post'
  assert ablation.variant_label('seed=1') == ablation.variant_label(None) == 'baseline'
  assert sweep.slugify('norm=rmsnorm,lr=0.01', 2) == 'norm-rmsnorm_lr-0.01_seed-2'


@pytest.mark.parametrize(
    'variant',
    ['mlp=swiglu', 'attn=gqa2', 'attn=mqa', 'pos=rope', 'norm=rmsnorm,mlp=swiglu,attn=mqa'])
def test_match_params_gives_the_baseline_matmul_params_and_flops(ablation, variant):
  baseline = ModelConfig.from_config(ablation.get_config().model)
  matched = ModelConfig.from_config(ablation.get_config(variant).model)
  own = ModelConfig.from_config(ablation.get_config(variant + ',match_params=false').model)
  n = flops.matmul_params
  step = ablation.D_FF_MULTIPLE
  per_unit = (n(matched.replace(d_ff=matched.d_ff + step)) - n(matched)) / step
  # Within half a d_ff step of the baseline's N, and never further than the unmatched variant.
  assert abs(n(matched) - n(baseline)) <= per_unit * step / 2
  assert abs(n(matched) - n(baseline)) <= abs(n(own) - n(baseline))
  assert flops.flops_per_token(matched) == pytest.approx(flops.flops_per_token(baseline), rel=0.01)


def test_match_params_follows_overridden_sizes(ablation):
  overrides = {'model.d_model': 64, 'model.n_layers': 2}
  baseline = ModelConfig.from_config(ablation.get_config(None, overrides).model)
  matched = ModelConfig.from_config(ablation.get_config('mlp=swiglu', overrides).model)
  assert (baseline.d_model, matched.d_model) == (64, 64)
  assert abs(flops.matmul_params(matched) - flops.matmul_params(baseline)) < 0.01 * \
      flops.matmul_params(baseline)


@pytest.mark.parametrize('key, hint', [
    ('train.stesp', "did you mean 'train.steps'?"),
    ('trian.steps', "did you mean 'train.steps'?"),
    ('model.n_layer', "did you mean 'model.n_layers'?"),
])
def test_a_misspelled_override_names_the_closest_key(ablation, key, hint):
  with pytest.raises(ValueError, match=re.escape(f'unknown config key {key!r}; {hint}')):
    ablation.get_config(None, {key: 3})
  with pytest.raises(ValueError, match="config key train.steps='many'"):
    ablation.get_config(None, {'train.steps': 'many'})


def test_ablation_names_each_runs_factors_the_baseline_included(ablation):
  runs = sweep.plan(ablation, ['seed=0', 'attn=gqa4,np=post,seed=1', 'attn=mqa,lr=0.01'])
  assert [r.factors['attn'] for r in runs] == ['mha', 'mha', 'mqa']  # gqa4 with 4 heads is mha
  assert [r.factors['norm_position'] for r in runs] == ['pre', 'post', 'pre']
  assert {r.factors['qk_norm'] for r in runs} == {'none'}
  assert runs[2].factors['lr'] == 0.01 and runs[0].factors['lr'] == runs[1].factors['lr']
  assert list(runs[0].factors) == [
      'norm_position', 'norm', 'pos', 'parallel', 'attn', 'qk_norm', 'softcap', 'final_softcap',
      'z_loss', 'mlp', 'lr', 'warmup', 'grad_clip'
  ]


def test_a_config_module_without_factors_or_labels_still_plans(ablation):
  """The sweep needs only get_config and SWEEPS: labels drop the seed, and the factors are the
  config keys that differ between the runs."""
  def get_config(variant, overrides=None):
    return ablation.get_config(variant.replace('rate', 'lr'), overrides)

  module = types.SimpleNamespace(get_config=get_config, SWEEPS={})
  runs = sweep.plan(module, ['rate=0.01,seed=0', 'rate=0.02,seed=0', 'rate=0.02,seed=1'])
  assert [r.label for r in runs] == ['rate=0.01', 'rate=0.02', 'rate=0.02']
  assert [r.slug for r in runs] == ['rate-0.01_seed-0', 'rate-0.02_seed-0', 'rate-0.02_seed-1']
  assert [r.factors for r in runs] == [{'optim.lr': 0.01}, {'optim.lr': 0.02}, {'optim.lr': 0.02}]


def test_unknown_sweep_and_duplicate_variants_are_refused(ablation):
  with pytest.raises(ValueError, match=r"sweep 'nope' is not one of 'default', 'full'"):
    sweep.sweep_variants(ablation, 'nope')
  with pytest.raises(ValueError, match='same run'):
    sweep.plan(ablation, ['np=post', 'norm_position=post'])
  with pytest.raises(ValueError, match='same run'):  # gqa4 is mha with 4 heads
    sweep.plan(ablation, ['attn=gqa4', 'attn=mha'])


# ---------------------------------------------------------------------------------------------
# A real sweep


@pytest.fixture(scope='module')
def overrides(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('data')
  data.prepare('stdlib', 'bytes', data_dir, max_bytes=CORPUS_BYTES, progress=False)
  return {**TINY, 'data.data_dir': str(data_dir)}


@pytest.fixture(scope='module')
def finished(overrides, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('sweep')
  statuses = sweep.run_sweep(ABLATION, workdir, variants=VARIANTS, overrides=overrides)
  return workdir, statuses


def csv_rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def markdown_rows(markdown):
  """The results table of results.md: each row's cells, by its variant cell."""
  rows = [[cell.strip() for cell in line.strip().strip('|').split('|')]
          for line in markdown.splitlines() if line.startswith('| `')]
  return {row[0]: row for row in rows}


def val_losses(run_dir):
  return {m['step']: m['val_loss'] for m in read_metrics(run_dir) if 'val_loss' in m}


@pytest.mark.slow
def test_sweep_trains_each_run_in_its_own_dir_and_goes_on_after_a_divergence(finished):
  workdir, statuses = finished
  assert [s['status'] for s in statuses] == ['done', 'diverged', 'done']
  assert 'is nan' in statuses[1]['reason'] or 'is inf' in statuses[1]['reason']
  for slug, variant in zip(SLUGS, VARIANTS):
    run_dir = workdir / slug
    status = json.loads((run_dir / 'status.json').read_text())
    assert status['variant'] == variant
    saved = json.loads((run_dir / 'config.json').read_text())
    assert saved['train']['steps'] == STEPS and saved['model']['d_model'] == 32
    assert saved['seed'] == int(variant[-1])
  assert checkpoint.latest_step(workdir / SLUGS[0]) == STEPS
  assert checkpoint.load_config(workdir / SLUGS[2])['seed'] == 1
  diverged = json.loads((workdir / SLUGS[1] / 'config.json').read_text())['optim']
  assert (diverged['lr'], diverged['grad_clip'], diverged['warmup_steps']) == (1e30, 0.0, 0)
  plan = json.loads((workdir / 'sweep.json').read_text())
  assert [r['slug'] for r in plan['runs']] == SLUGS


@pytest.mark.slow
def test_report_numbers_come_from_the_runs_own_metrics(finished, overrides):
  workdir, _ = finished
  prepared = data.prepare('stdlib', 'bytes', overrides['data.data_dir'], max_bytes=CORPUS_BYTES,
                          progress=False)
  val_tokens = np.asarray(data.load_split(prepared, 'val'))
  bytes_per_token = np.mean(val_tokens < 256)  # the end-of-text token between files has no bytes
  assert 0.99 < bytes_per_token < 1
  for name in ('results.csv', 'results.md', 'runs.csv'):
    assert (workdir / name).stat().st_size > 0
  for name in ('val_loss_curves.png', 'final_loss_by_factor.png'):
    assert (workdir / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

  runs = {r['slug']: r for r in csv_rows(workdir / 'runs.csv')}
  finals = []
  for slug in (SLUGS[0], SLUGS[2]):
    losses = val_losses(workdir / slug)
    assert float(runs[slug]['final_val_loss']) == losses[STEPS]
    assert float(runs[slug]['best_val_loss']) == min(losses.values())
    expected_bpb = losses[STEPS] / math.log(2) / bytes_per_token
    assert float(runs[slug]['final_val_bpb']) == pytest.approx(expected_bpb, rel=1e-12)
    finals.append(losses[STEPS])
  assert finals[0] != finals[1]  # the seeds really differ
  assert runs[SLUGS[1]]['status'] == 'diverged' and runs[SLUGS[1]]['final_val_loss'] == ''
  assert (runs[SLUGS[0]]['attn'], runs[SLUGS[1]]['lr']) == ('mha', '1e+30')

  results = {r['variant']: r for r in csv_rows(workdir / 'results.csv')}
  assert list(results) == ['baseline', 'lr=1e+30,warmup=0,clip=0']  # sorted: finished first
  row = results['baseline']
  assert float(row['final_val_loss_mean']) == pytest.approx(sum(finals) / 2, rel=1e-12)
  assert float(row['final_val_loss_std']) == pytest.approx(
      abs(finals[0] - finals[1]) / 2**0.5, rel=1e-9)
  assert (row['seeds'], row['done'], row['diverged']) == ('2', '2', '0')
  cfg = ModelConfig.from_config(
      json.loads((workdir / SLUGS[0] / 'config.json').read_text())['model'])
  assert int(row['params']) == flops.count_params_for_config(cfg)
  assert float(row['flops_per_token']) == flops.flops_per_token(cfg)
  assert int(row['kv_cache_bytes_per_token']) == 2 * 1 * 4 * 8 * 4
  assert int(row['tokens']) == STEPS * 4 * 32
  speeds = [
      float(m['tokens_per_sec']) for slug in (SLUGS[0], SLUGS[2])
      for m in read_metrics(workdir / slug) if 'tokens_per_sec' in m
  ]
  assert min(speeds) <= float(row['tokens_per_sec']) <= max(speeds)
  bad = results['lr=1e+30,warmup=0,clip=0']
  assert (bad['seeds'], bad['done'], bad['diverged'], bad['final_val_loss_mean']) == \
      ('1', '0', '1', '')

  markdown = (workdir / 'results.md').read_text()
  table = markdown_rows(markdown)
  mean, std = float(row['final_val_loss_mean']), float(row['final_val_loss_std'])
  assert table['`baseline`'][1] == f'{mean:.4f} ± {std:.4f}'
  interval = scipy_stats.ttest_1samp(finals, 0.0).confidence_interval(0.95)
  assert table['`baseline`'][2] == f'[{interval.low:.4f}, {interval.high:.4f}]'
  assert float(row['final_val_loss_ci_low']) == pytest.approx(interval.low, rel=1e-10)
  assert table['`baseline`'][3:5] == ['(baseline)', '']
  assert table['`lr=1e+30,warmup=0,clip=0`'][3] == '—'  # no finished seed: no difference
  assert table['`baseline`'][8] == '256 B'  # KV cache/token
  assert table['`lr=1e+30,warmup=0,clip=0`'][-2:] == ['1/1', '0/1']  # diverged 1 of 1, none done
  assert f'`{SLUGS[1]}`: diverged at step' in markdown
  assert '![val loss curves](val_loss_curves.png)' in markdown


@pytest.mark.slow
def test_rerun_skips_finished_and_diverged_runs(finished, overrides, monkeypatch):
  workdir, statuses = finished
  before = {
      p: p.stat().st_mtime_ns
      for p in workdir.rglob('*')
      if p.is_file() and 'checkpoints' in p.parts or p.name == 'metrics.jsonl'
  }
  calls = []
  monkeypatch.setattr(trainer, 'train_and_evaluate', lambda *args: calls.append(args))
  again = sweep.run_sweep(ABLATION, workdir, variants=VARIANTS, overrides=overrides)
  assert calls == []
  assert [s['status'] for s in again] == [s['status'] for s in statuses]
  assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
def test_a_changed_config_is_refused_instead_of_mixed_in(finished, overrides, tmp_path,
                                                         monkeypatch):
  workdir = Path(shutil.copytree(finished[0], tmp_path / 'sweep'))
  with pytest.raises(ValueError, match=r'train.steps=2 \(now 3\); use another sweep workdir'):
    sweep.run_sweep(ABLATION, workdir, variants=VARIANTS, overrides={**overrides, 'train.steps': 3})
  # A field that gptjax gained after the runs were saved is no change while it keeps its default.
  for slug in SLUGS:
    path = workdir / slug / 'config.json'
    saved = json.loads(path.read_text())
    del saved['optim']['decay_fraction']
    path.write_text(json.dumps(saved))
  monkeypatch.setattr(trainer, 'train_and_evaluate', lambda config, run_dir: pytest.fail())
  sweep.run_sweep(ABLATION, workdir, variants=VARIANTS, overrides=overrides)
  with pytest.raises(ValueError, match=r'optim.decay_fraction=None \(now 0.5\)'):
    sweep.run_sweep(ABLATION, workdir, variants=VARIANTS,
                    overrides={**overrides, 'optim.decay_fraction': 0.5})


@pytest.mark.slow
def test_report_of_a_partial_sweep(finished, tmp_path):
  """One run still training (status running, no final eval yet), one not started."""
  workdir = Path(shutil.copytree(finished[0], tmp_path / 'sweep'))
  running = workdir / SLUGS[2]
  shutil.rmtree(workdir / SLUGS[0])
  shutil.rmtree(running / 'checkpoints')
  lines = (running / 'metrics.jsonl').read_text().splitlines()
  (running / 'metrics.jsonl').write_text('\n'.join(l
                                                   for l in lines if json.loads(l)['step'] < STEPS)
                                         + '\n{"step": 2, "lo')  # and a line cut by a kill
  status = json.loads((running / 'status.json').read_text())
  (running / 'status.json').write_text(json.dumps({**status, 'status': 'running'}))

  with workdir_lock.hold(running):  # its trainer is alive
    rows = {r['variant']: r for r in sweep.report(workdir)}
  assert rows['baseline']['done'] == 0 and rows['baseline']['seeds'] == 2
  assert math.isnan(rows['baseline']['final_val_loss_mean'])
  runs = {r['slug']: r for r in csv_rows(workdir / 'runs.csv')}
  assert runs[SLUGS[2]]['status'] == 'running' and runs[SLUGS[2]]['step'] == '1'
  assert float(runs[SLUGS[2]]['best_val_loss']) == val_losses(running)[1]
  assert '1 running, 1 diverged, 1 pending' in (workdir / 'results.md').read_text()
  for name in ('val_loss_curves.png', 'final_loss_by_factor.png'):
    assert (workdir / name).exists()


@pytest.mark.slow
def test_runs_recorded_without_factors_are_told_apart_by_their_configs(finished, tmp_path):
  """Sweeps run before status.json kept each run's factors still get factor columns."""
  workdir = Path(shutil.copytree(finished[0], tmp_path / 'sweep'))
  for slug in SLUGS:
    status = json.loads((workdir / slug / 'status.json').read_text())
    del status['factors']
    (workdir / slug / 'status.json').write_text(json.dumps(status))
  sweep.report(workdir)
  runs = {r['slug']: r for r in csv_rows(workdir / 'runs.csv')}
  lrs = [runs[slug]['optim.lr'] for slug in SLUGS]
  assert lrs == [lrs[0], '1e+30', lrs[0]] and lrs[0] != '1e+30'
  factor_columns = set(runs[SLUGS[0]]) - set(RUN_COLUMNS)
  assert factor_columns == {'optim.lr', 'optim.warmup_steps', 'optim.grad_clip'}  # seed aside


@pytest.mark.slow
def test_a_killed_run_reads_as_interrupted_and_keeps_its_training_time(
    finished, overrides, tmp_path, monkeypatch):
  """kill -9 leaves status.json saying 'running': no process holds the run's workdir lock, so
  the report says what happened, and the rerun counts the time the run trained before it."""
  workdir = Path(shutil.copytree(finished[0], tmp_path / 'sweep'))
  run_dir = workdir / SLUGS[0]
  times = [m['time'] for m in read_metrics(run_dir)]
  status = json.loads((run_dir / 'status.json').read_text())
  killed = {**status, 'status': 'running', 'seconds': 7.0, 'started': times[0] - 5}
  (run_dir / 'status.json').write_text(json.dumps(killed))
  sweep.report(workdir)
  runs = {r['slug']: r for r in csv_rows(workdir / 'runs.csv')}
  assert runs[SLUGS[0]]['status'] == 'interrupted'
  assert 'its process died' in runs[SLUGS[0]]['reason']
  with workdir_lock.hold(run_dir):  # a live trainer: still running
    assert read_status(run_dir)['status'] == 'running'

  # Killed just past its final checkpoint: the rerun trains nothing, and keeps the time.
  monkeypatch.setattr(trainer, 'train_and_evaluate', lambda config, run_dir: pytest.fail())
  again = sweep.run_sweep(ABLATION, workdir, variants=VARIANTS, overrides=overrides)
  assert again[0]['status'] == 'done'
  assert again[0]['seconds'] >= round(7.0 + times[-1] - times[0] + 5, 1) - 0.1


def test_interrupt_marks_the_run_and_stops_the_sweep(overrides, tmp_path, monkeypatch):
  workdir = tmp_path / 'sweep'

  def interrupted(config, run_dir):
    raise trainer.TrainingInterrupted('SIGINT at step 1: checkpoint saved')

  monkeypatch.setattr(trainer, 'train_and_evaluate', interrupted)
  with pytest.raises(trainer.TrainingInterrupted):
    sweep.run_sweep(ABLATION, workdir, variants=['seed=5', 'seed=6'], overrides=overrides)
  status = json.loads((workdir / 'baseline_seed-5' / 'status.json').read_text())
  assert status['status'] == 'interrupted' and 'SIGINT' in status['reason']
  assert not (workdir / 'baseline_seed-6').exists()
  assert 'pending' in (workdir / 'results.md').read_text()


def test_a_failing_run_is_recorded_with_its_reason(overrides, tmp_path, monkeypatch):
  def broken(config, run_dir):
    if config.seed == 7:
      raise FileNotFoundError('no corpus at /nowhere')
    raise trainer.TrainingDiverged('loss is nan at step 3')

  monkeypatch.setattr(trainer, 'train_and_evaluate', broken)
  statuses = sweep.run_sweep(ABLATION, tmp_path, variants=['seed=7', 'seed=8'], overrides=overrides)
  assert [(s['status'], s['reason'])
          for s in statuses] == [('failed', 'FileNotFoundError: no corpus at /nowhere'),
                                 ('diverged', 'loss is nan at step 3')]
  assert 'Traceback' in (tmp_path / 'baseline_seed-7' / 'error.log').read_text()


@pytest.mark.slow
def test_command_line_applies_overrides_to_every_run_and_skips_finished(finished, overrides):
  workdir = finished[0]
  flags = [f'--config.{k}={v}' for k, v in overrides.items()]
  command = [
      sys.executable, '-m', 'gptjax.sweep', f'--config={ABLATION}', f'--workdir={workdir}',
      *(f'--variant={v}' for v in VARIANTS), *flags
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count('already, skipped') == 3, result.stdout[-3000:]
  assert '2/3 runs done' in result.stdout

  bad = subprocess.run([*command[:4], '--report_only', f'--workdir={workdir / "nope"}'], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == \
      f'error: no sweep directory {workdir / "nope"}'


def _fake_run(label, seed, tokenizer, loss, bpb):
  return {
      'slug': f'{label}_{seed}', 'label': label, 'seed': seed, 'status': 'done',
      'final_val_loss': loss, 'final_val_bpb': bpb, 'best_val_loss': loss, 'tokenizer': tokenizer,
      'tokens_per_sec': 1.0, 'params': 10, 'flops_per_token': 60.0, 'kv_cache_bytes_per_token': 8,
      'd_ff': 4, 'tokens': 100, 'factors': {'data.tokenizer': tokenizer}
  }


def test_runs_of_different_tokenizers_are_compared_in_bits_per_byte():
  """A BPE token holds several bytes: its nats are not a byte's. The byte model has the lower
  loss per token and the higher bits per byte; the comparison must follow bits per byte."""
  from gptjax.sweep.report import _results_table, compared_metric, summarize

  runs = [
      *(_fake_run('data.tokenizer=bytes', s, 'bytes', 1.40 + s / 100, 2.02 + s / 100)
        for s in range(3)),
      *(_fake_run('data.tokenizer=gpt2', s, 'gpt2', 4.10 + s / 100, 1.61 + s / 100)
        for s in range(3)),
  ]
  assert compared_metric(runs) == 'val_bpb' and compared_metric(runs[:3]) == 'val_loss'
  rows = summarize(runs, {}, 'data.tokenizer=bytes', 'val_bpb')
  assert [r['variant'] for r in rows] == ['data.tokenizer=gpt2', 'data.tokenizer=bytes']
  gpt2 = rows[0]
  assert gpt2['delta_vs_baseline'] == pytest.approx(1.62 - 2.03)
  reference = scipy_stats.ttest_ind([1.61, 1.62, 1.63], [2.02, 2.03, 2.04], equal_var=False)
  assert gpt2['p_value'] == pytest.approx(reference.pvalue, rel=1e-9)
  assert gpt2['final_val_loss_mean'] == pytest.approx(4.11)  # still reported, beside
  table = markdown_rows(_results_table(rows, 'val_bpb'))
  assert table['`data.tokenizer=gpt2`'][1:4] == ['gpt2', '4.1100 ± 0.0100', '1.6200 ± 0.0100']


def test_downstream_evals_get_a_column_each_with_their_seed_mean_and_std():
  from gptjax.sweep.report import _results_table, summarize

  runs = []
  for label, accs in [('baseline', [0.30, 0.34]), ('norm=rmsnorm', [0.40, 0.42])]:
    for seed, acc in enumerate(accs):
      run = _fake_run(label, seed, 'bytes', 1.5 - acc, 2.0 - acc)
      runs.append({**run, 'downstream': {'choices/acc': acc, 'text/bpb': 2 * acc}})
  rows = summarize(runs, {}, 'baseline', 'val_loss')
  rmsnorm = next(r for r in rows if r['variant'] == 'norm=rmsnorm')
  assert rmsnorm['choices/acc_mean'] == pytest.approx(0.41)
  assert rmsnorm['choices/acc_std'] == pytest.approx(np.std([0.40, 0.42], ddof=1))
  header = [cell.strip() for cell in _results_table(rows, 'val_loss').splitlines()[0].split('|')]
  assert header[6:8] == ['choices/acc', 'text/bpb']
  table = markdown_rows(_results_table(rows, 'val_loss'))
  assert table['`norm=rmsnorm`'][5:7] == ['0.4100 ± 0.0141', '0.8200 ± 0.0283']


def test_an_eval_line_at_a_logged_step_hides_neither_line(tmp_path):
  """The trainer writes a downstream eval's metrics as their own line at the step they
  evaluated; the report keeps that step's training line (tokens/s) and validation line too."""
  from gptjax.sweep.report import _metrics
  lines = [{'step': 4, 'loss': 2.0, 'tokens_per_sec': 9.0}, {'step': 4, 'val_loss': 2.1},
           {'step': 4, 'choices/acc': 0.5}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))
  assert _metrics(tmp_path) == lines
