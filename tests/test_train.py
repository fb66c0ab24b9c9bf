"""Training end to end: the loop, checkpoints, resume, fine-tuning, evaluation, and the command
line's error paths.

Every run is configs/small.py shrunk to a 2-layer, d_model 32 byte-level model on 200 kB of the
standard library (prepared once per module), so a run takes a few seconds on a 2-core CPU. Most
tests call `trainer.train_and_evaluate` in-process; the ones about exit codes, one-line messages
and signals run `python train.py` in a subprocess, with the same overrides as flags; those and
the tests of several runs are marked slow. Compiling dominates a run's time, so the runs compile
with fast_compiles' flag (as subprocesses do) and share the session's persistent compilation
cache, and the schedule does not depend on train.steps: runs of any length with the same model
and optimizer compile the same programs, once, in-process or not.
"""

import contextlib
import gc
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import hf_model
from gptjax import checkpoint, cli, data, memory, model as model_lib, trainer
from gptjax.config import ModelConfig
from gptjax.logs import METRICS_FILE, read_metrics

pytestmark = pytest.mark.usefixtures('fast_compiles')

REPO = Path(__file__).resolve().parents[1]
SMALL_CONFIG = REPO / 'configs' / 'small.py'
TIMEOUT_S = 180  # per subprocess or wait; a healthy run takes seconds
CORPUS_BYTES = 200_000
STEPS = 16  # the reference run; the resume test stops it at STEPS // 2

# configs/small.py, shrunk. lr 3e-3 (small.py's) with a short warmup makes the loss fall by
# about 1 nat in STEPS steps; every step is logged, so runs can be compared step by step.
# Dropout puts the step's random key into the comparisons of resumed and straight runs.
TINY_RUN = {
    'model.n_layers': 2,
    'model.d_model': 32,
    'model.n_heads': 2,
    'model.block_size': 32,
    'model.resid_dropout': 0.1,
    'data.max_bytes': CORPUS_BYTES,
    'optim.warmup_steps': 2,
    'optim.decay_steps': STEPS,
    'train.steps': STEPS,
    'train.batch_size': 4,
    'train.log_every': 1,
    'train.eval_every': STEPS // 2,
    'train.eval_batches': 2,
    'train.ckpt_every': STEPS // 2,
}

# ---------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """The corpus, tokenized once for every run of this module."""
  directory = tmp_path_factory.mktemp('data')
  data.prepare('stdlib', 'bytes', directory, max_bytes=CORPUS_BYTES, progress=False)
  return directory


def overrides(data_dir, **changes) -> dict:
  """TINY_RUN plus `changes` (keys with '__' for '.', e.g. train__steps=2)."""
  return {
      **TINY_RUN, 'data.data_dir': str(data_dir),
      **{key.replace('__', '.'): value
         for key, value in changes.items()}
  }


def make_config(data_dir, **changes):
  """configs/small.py with the overrides applied, locked as train.py's flag parser locks it."""
  spec = importlib.util.spec_from_file_location('small_config', SMALL_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()  # a misspelled key in a test raises instead of adding a field
  for key, value in overrides(data_dir, **changes).items():
    *parents, name = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


def train_command(data_dir, workdir, *extra_flags, **changes) -> list[str]:
  flags = [f'--config.{key}={value}' for key, value in overrides(data_dir, **changes).items()]
  return [
      sys.executable,
      str(REPO / 'train.py'), f'--config={SMALL_CONFIG}', f'--workdir={workdir}', *flags,
      *extra_flags
  ]


@pytest.fixture
def cli_env() -> dict:
  """train.py's environment: CPU (this process may hold the accelerator); the session's
  compilation cache comes with os.environ (conftest)."""
  return dict(os.environ, JAX_PLATFORMS='cpu')


def run_cli(command, env) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT_S)


def last_line(stderr: str) -> str:
  """The last line a user sees: progress bars redraw with '\\r', so split on that too."""
  return [line.strip() for line in re.split(r'[\r\n]', stderr) if line.strip()][-1]


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
  report = f'exit code {result.returncode}; stderr:\n{result.stderr[-4000:]}'
  assert result.returncode != 0, report
  assert 'Traceback' not in result.stderr, report
  line = last_line(result.stderr)
  assert line.startswith('error: '), report
  for needle in needles:
    assert needle in line, report
  return line


def losses(workdir, name='loss') -> dict[int, float]:
  return {m['step']: m[name] for m in read_metrics(workdir) if name in m}


def abstract_params(model: dict):
  """The params tree of a checkpoint's saved `model` config, as shapes."""
  return model_lib.abstract_params(ModelConfig.from_config(model))


def saved_params(workdir, step=None):
  model = checkpoint.load_config(workdir, step)['model']
  return checkpoint.restore_params(workdir, abstract_params(model), step)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def checkpoint_steps(workdir) -> list[int]:
  directory = Path(workdir) / checkpoint.CHECKPOINT_DIR
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def snapshot(workdir) -> dict[str, tuple[int, int]]:
  """(size, mtime) of every file under the checkpoints, to show that nothing was written."""
  root = Path(workdir) / checkpoint.CHECKPOINT_DIR
  return {
      str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
      for p in root.rglob('*') if p.is_file()
  }


@contextlib.contextmanager
def count_compilations():
  """Names of the functions XLA compiles inside the block (jit(train_step), ...)."""
  names = []

  def listener(event, duration, **kwargs):
    if event == '/jax/core/compile/backend_compile_duration':
      names.append(kwargs.get('fun_name'))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def copy_run(workdir, tmp_path) -> Path:
  """A copy of a shared run, for a test that runs the trainer on it."""
  return Path(shutil.copytree(workdir, tmp_path / 'run'))


@pytest.fixture(scope='module')
def finished(data_dir, tmp_path_factory):
  """The reference run: STEPS steps from a clean workdir. Tests must not write into it."""
  workdir = tmp_path_factory.mktemp('finished')
  config = make_config(data_dir)
  with count_compilations() as compiled:
    result = trainer.train_and_evaluate(config, workdir)
  return {'workdir': workdir, 'config': config, 'result': result, 'compiled': compiled}


# ---------------------------------------------------------------------------------------------
# A run from scratch


def test_run_from_clean_workdir_learns_and_writes_its_files(finished, data_dir):
  workdir = finished['workdir']
  train_losses = losses(workdir)
  assert sorted(train_losses) == list(range(1, STEPS + 1))
  first, last_three = train_losses[1], [train_losses[s] for s in range(STEPS - 2, STEPS + 1)]
  assert first == pytest.approx(math.log(257), abs=0.3)  # uniform over the byte vocabulary
  assert max(last_three) < first - 0.5, train_losses
  assert finished['result']['step'] == STEPS

  assert checkpoint_steps(workdir) == [STEPS // 2, STEPS]
  assert checkpoint.load_config(workdir)['model']['d_model'] == 32
  keys = set().union(*read_metrics(workdir))
  assert {'loss', 'val_loss', 'lr', 'grad_norm', 'tokens_per_sec', 'mfu'} <= keys
  assert sorted(losses(workdir, 'val_loss')) == [STEPS // 2, STEPS]
  events = list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert events and all(e.stat().st_size > 0 for e in events)
  prepared = data.prepared_dir(data_dir, 'stdlib', 'bytes', max_bytes=CORPUS_BYTES)
  meta = json.loads((prepared / 'meta.json').read_text())
  assert meta['tokenizer'] == 'bytes' and meta['n_vocab'] == 257


def test_z_loss_is_palms_penalty_and_is_logged_apart_with_the_max_attention_logit(
    finished, data_dir, tmp_path):
  """training_loss adds z * mean(logsumexp(logits)^2) (scipy's logsumexp as the reference) and
  reports it apart; a run with it logs the cross-entropy as loss and the penalty as z_loss."""
  import scipy.special
  from gptjax.model import GPT
  cfg = trainer.check_config(finished['config'])
  params, _ = saved_params(finished['workdir'])
  tokens = np.random.default_rng(0).integers(0, 257, (2, 9)).astype(np.int32)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}
  total, parts = trainer.training_loss(cfg, params, batch, z_loss=1e-2)
  logits = np.asarray(GPT(cfg).apply({'params': params}, batch['inputs']), np.float64)
  lse = scipy.special.logsumexp(logits, axis=-1)
  expected_ce = (lse - np.take_along_axis(logits, batch['targets'][..., None], -1)[..., 0]).mean()
  assert float(parts['loss']) == pytest.approx(expected_ce, rel=1e-5)
  assert float(parts['z_loss']) == pytest.approx(1e-2 * np.mean(lse**2), rel=1e-5)
  assert float(total) == pytest.approx(float(parts['loss']) + float(parts['z_loss']), rel=1e-6)
  assert set(trainer.training_loss(cfg, params, batch)[1]) == {'loss'}  # off: nothing extra

  workdir = tmp_path / 'z_loss'
  trainer.train_and_evaluate(
      make_config(data_dir, train__z_loss=1e-4, train__steps=2, train__log_attention_logits=True),
      workdir)
  logged = read_metrics(workdir)
  assert logged[0]['z_loss'] > 0 and logged[0]['loss'] == pytest.approx(math.log(257), abs=0.3)
  evaluated = [m for m in logged if 'val_loss' in m]  # with the largest attention logit
  assert len(evaluated) == 1 and 0 < evaluated[0]['max_attn_logit'] < 10


def test_train_step_compiles_once(finished):
  assert finished['compiled'].count('jit(train_step)') == 1, finished['compiled']


def test_restore_params_reads_a_checkpoints_params_and_checks_their_shapes(finished):
  workdir = finished['workdir']
  model = checkpoint.load_config(workdir)['model']
  params, step = checkpoint.restore_params(workdir, abstract_params(model))
  assert step == STEPS
  expected = abstract_params(model)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == \
      jax.tree.map(lambda x: (x.shape, x.dtype), expected)
  assert checkpoint.restore_params(workdir, expected, step=STEPS // 2)[1] == STEPS // 2
  # The final params reproduce the run's last validation loss.
  config = finished['config']
  run = trainer.setup(config)
  val_loss = trainer.evaluate_loss(run, trainer.make_eval_step(run.cfg), params)
  assert val_loss == pytest.approx(losses(workdir, 'val_loss')[STEPS], rel=1e-5)
  # Another architecture's shapes are an error naming the parameter, not padded arrays.
  with pytest.raises(
      checkpoint.CheckpointError,
      match=r'other parameters than expected \(blocks_0/attn/\w+/\w+: checkpoint '
      r'\([\d, ]+\) vs expected \([\d, ]+\); .*; and \d+ more\)$'):
    checkpoint.restore_params(workdir, abstract_params({**model, 'd_model': 64, 'd_ff': None}))


def test_a_workdir_without_checkpoints_is_named_without_cli_flags(tmp_path):
  with pytest.raises(
      checkpoint.CheckpointError,
      match=f'no checkpoint in .*: nothing has been trained into {re.escape(str(tmp_path))} yet$'):
    checkpoint.load_config(tmp_path)


def test_rerunning_a_finished_run_takes_no_step(finished, tmp_path):
  workdir = copy_run(finished['workdir'], tmp_path)
  before, metrics_before = snapshot(workdir), (workdir / METRICS_FILE).read_bytes()
  result = trainer.train_and_evaluate(finished['config'], workdir)
  assert result['step'] == STEPS
  assert result['val_loss'] == pytest.approx(finished['result']['val_loss'], rel=1e-5)
  assert snapshot(workdir) == before
  assert (workdir / METRICS_FILE).read_bytes() == metrics_before


# ---------------------------------------------------------------------------------------------
# Resume


def interrupt_before_step(monkeypatch, step: int):
  """Sends this process SIGINT as step `step` (0-based) takes its batch, as Ctrl-C would. (In the
  loop's thread: the batches themselves are made ahead, on the prefetch thread.)"""
  batches = trainer._batches

  @contextlib.contextmanager
  def batches_then_signal(run, steps):
    with batches(run, steps) as made:

      def signalled():
        for s, batch in made:
          if s == step:
            signal.raise_signal(signal.SIGINT)
          yield s, batch

      yield signalled()

  monkeypatch.setattr(trainer, '_batches', batches_then_signal)


@pytest.mark.slow
def test_a_mup_run_learns_and_resumes_exactly(data_dir, tmp_path, monkeypatch):
  """μP adds per-group optimizer state (optax.multi_transform): it is checkpointed and
  restored like the rest."""
  changes = dict(model__parametrization='mup', model__mup_base_width=16, train__steps=8,
                 optim__decay_steps=8, train__ckpt_every=4, train__eval_every=4)
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  trainer.train_and_evaluate(make_config(data_dir, **changes), straight)
  interrupt_before_step(monkeypatch, 3)
  with pytest.raises(trainer.TrainingInterrupted):
    trainer.train_and_evaluate(make_config(data_dir, **changes), resumed)
  monkeypatch.undo()
  trainer.train_and_evaluate(make_config(data_dir, **changes), resumed)
  assert losses(resumed) == losses(straight)
  assert losses(straight)[8] < losses(straight)[1] - 0.3
  assert_trees_equal(saved_params(resumed)[0], saved_params(straight)[0])


@pytest.mark.slow
def test_resume_is_exact(finished, data_dir, tmp_path, monkeypatch):
  workdir, half = tmp_path / 'resumed', STEPS // 2
  config = make_config(data_dir)
  interrupt_before_step(monkeypatch, half - 1)
  with pytest.raises(trainer.TrainingInterrupted, match=f'SIGINT at step {half}:'):
    trainer.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  assert checkpoint_steps(workdir) == [half]
  assert sorted(losses(workdir)) == list(range(1, half + 1))

  with count_compilations() as compiled:  # the same call again: resumes at half
    trainer.train_and_evaluate(config, workdir)
  assert compiled.count('jit(train_step)') == 1, compiled

  # Bitwise: the batch and dropout key of a step depend on the step alone, and the checkpoint
  # holds the whole state.
  assert losses(workdir) == losses(finished['workdir'])
  assert losses(workdir, 'val_loss') == losses(finished['workdir'], 'val_loss')
  # Each run's first logged step ran only the compiling step (log_every=1): untimed by design.
  assert untimed_log_steps(workdir) == [1, half + 1]
  resumed, step = saved_params(workdir)
  straight, _ = saved_params(finished['workdir'])
  assert step == STEPS
  assert_trees_equal(resumed, straight)


def test_a_signal_lost_in_a_gc_callback_during_start_up_still_stops_the_run(
    data_dir, tmp_path, monkeypatch):
  """Ctrl-C during start-up, while JAX's garbage-collection callback runs: Python prints the
  KeyboardInterrupt raised there as 'Exception ignored' and goes on. The recorded signal stops
  the run before its first step instead of letting it train to the end."""
  def signal_during_gc(phase, info):
    if phase == 'start':
      gc.callbacks.remove(signal_during_gc)
      signal.raise_signal(signal.SIGINT)
      sum(range(10))  # the handler runs at a bytecode boundary here, inside the callback

  swallowed = []  # what Python prints as 'Exception ignored in: <function ...>'
  monkeypatch.setattr(sys, 'unraisablehook', lambda unraisable: swallowed.append(unraisable))
  previous = signal.getsignal(signal.SIGINT)
  cli.STOP.install()  # as train.py does first
  try:
    gc.callbacks.append(signal_during_gc)
    gc.collect()
    assert [u.exc_type for u in swallowed] == [KeyboardInterrupt]  # lost, as in the bug
    assert cli.STOP.signal_name == 'SIGINT'
    with pytest.raises(trainer.TrainingInterrupted, match=r'^SIGINT before step 1: nothing new '):
      trainer.train_and_evaluate(make_config(data_dir), tmp_path / 'run')
  finally:
    cli.STOP.uninstall()
    cli.STOP.signal_name = None
  assert checkpoint_steps(tmp_path / 'run') == []
  assert signal.getsignal(signal.SIGINT) is previous


def test_a_deferred_signal_is_acknowledged_at_once(capsys):
  """A step of a large model on a CPU can take an hour: the user hears at once that the stop
  will come after it, and that a second signal stops at once."""
  previous = signal.getsignal(signal.SIGTERM)
  with cli.STOP.watching() as stop, stop.deferring():
    signal.raise_signal(signal.SIGTERM)
    assert stop.signal_name == 'SIGTERM'  # recorded, not raised
    assert signal.getsignal(signal.SIGTERM) is previous  # the next one is not deferred
  assert capsys.readouterr().err.strip() == (
      'SIGTERM: stopping after the step under way, with a checkpoint; signal again to stop at '
      'once (losing the steps since the last checkpoint)')
  assert cli.STOP.signal_name is None


def _damage(step_dir: Path, how: str) -> None:
  state = step_dir / 'state'
  if how == 'truncated arrays':
    for path in (state / 'd').rglob('*'):
      if path.is_file():
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  elif how == 'garbage manifest':
    (state / 'manifest.ocdbt').write_bytes(os.urandom(64))
  elif how == 'no _METADATA':
    (state / '_METADATA').unlink()
  elif how == 'no state':
    shutil.rmtree(state)
  elif how == 'garbage config':
    (step_dir / 'config' / 'metadata').write_text('{not json')


@pytest.mark.parametrize(
    'how', ['truncated arrays', 'garbage manifest', 'no _METADATA', 'no state', 'garbage config'])
def test_a_damaged_checkpoint_is_one_line_naming_it_and_the_way_on(finished, data_dir, tmp_path,
                                                                   how):
  workdir = copy_run(finished['workdir'], tmp_path)
  step_dir = workdir / checkpoint.CHECKPOINT_DIR / str(STEPS)
  _damage(step_dir, how)
  message = (rf'^checkpoint {re.escape(str(step_dir))} is damaged \(.*\); move it away \(mv '
             rf'{re.escape(str(step_dir))} .*bad-{STEPS}\) to use step {STEPS // 2}$')
  with pytest.raises(checkpoint.CheckpointError, match=message):  # resuming
    trainer.train_and_evaluate(make_config(data_dir), workdir)
  expected = abstract_params(checkpoint.load_config(finished['workdir'])['model'])
  with pytest.raises(checkpoint.CheckpointError, match=message):  # sampling, fine-tuning
    checkpoint.load_config(workdir)
    checkpoint.restore_params(workdir, expected)
  assert step_dir.is_dir()  # never removed for the user
  # The way on works: the earlier checkpoint resumes.
  step_dir.rename(step_dir.parent / f'bad-{STEPS}')
  assert trainer.train_and_evaluate(make_config(data_dir), workdir)['step'] == STEPS


@pytest.mark.parametrize('when', ['before the save', 'during the save'])
def test_a_full_disk_is_one_line_and_keeps_the_checkpoints(finished, data_dir, tmp_path,
                                                           monkeypatch, when):
  workdir = copy_run(finished['workdir'], tmp_path)
  directory = workdir / checkpoint.CHECKPOINT_DIR
  before = sorted(p.name for p in directory.iterdir())
  if when == 'before the save':  # the check before writing sees too little room
    usage = shutil.disk_usage(directory)
    monkeypatch.setattr(checkpoint.shutil, 'disk_usage', lambda path: usage._replace(free=4096))
    detail = r'it needs about [\d.]+ MiB, 0.0 MiB is free'
  else:  # room enough at the check, and another writer fills the disk during the save

    def fill_up(*args, **kwargs):
      raise ValueError('RESOURCE_EXHAUSTED: Failed to write 709692 bytes to file 21: No space '
                       "left on device [os_error_code='28']")

    monkeypatch.setattr(ocp.CheckpointManager, 'save', fill_up)
    detail = 'the disk filled up while it was written'
  message = (rf'^no room on the disk for the checkpoint of step {STEPS + 4} in '
             rf'{re.escape(str(directory))}: {detail}; free some space \(or lower '
             rf'train.keep_checkpoints\) and rerun the same command, which resumes from step '
             rf'{STEPS}$')
  with pytest.raises(checkpoint.CheckpointError, match=message):
    trainer.train_and_evaluate(make_config(data_dir, train__steps=STEPS + 4), workdir)
  assert sorted(p.name for p in directory.iterdir()) == before


def test_a_killed_save_leaves_the_previous_checkpoint_in_use(finished, tmp_path):
  workdir = copy_run(finished['workdir'], tmp_path)
  directory = workdir / checkpoint.CHECKPOINT_DIR
  # What orbax leaves behind when a save of step STEPS + 8 dies half-way: its temporary
  # directory (renamed to the step's name only once complete), here with half a state in it.
  partial = directory / f'{STEPS + 8}.orbax-checkpoint-tmp-1700000000000'
  shutil.copytree(directory / str(STEPS), partial)
  for path in (partial / 'state').iterdir():
    if path.is_file():
      path.write_bytes(path.read_bytes()[:10])
  (partial / 'commit_success.txt').unlink(missing_ok=True)

  assert checkpoint.latest_step(workdir) == STEPS
  params, step = saved_params(workdir)
  assert step == STEPS
  assert_trees_equal(params, saved_params(finished['workdir'])[0])
  result = trainer.train_and_evaluate(finished['config'], workdir)  # resumes: restores STEPS
  assert result['step'] == STEPS
  assert result['val_loss'] == pytest.approx(finished['result']['val_loss'], rel=1e-5)
  assert_trees_equal(saved_params(workdir)[0], params)


# ---------------------------------------------------------------------------------------------
# Gradient accumulation


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(data_dir, tmp_path):
  runs = {}
  for k in (1, 2):
    workdir = tmp_path / f'accum{k}'
    # No dropout: each micro-batch draws its own mask, so the two would differ by design.
    config = make_config(data_dir, model__resid_dropout=0.0, train__steps=1,
                         optim__grad_accum_steps=k)
    trainer.train_and_evaluate(config, workdir)
    runs[k] = read_metrics(workdir)[0], saved_params(workdir)[0]
  (one, one_params), (two, two_params) = runs[1], runs[2]
  assert two['loss'] == pytest.approx(one['loss'], rel=1e-5)
  # Adam's first update is about lr * sign(g), blind to how the gradients are scaled; the
  # gradient norm is not.
  assert two['grad_norm'] == pytest.approx(one['grad_norm'], rel=1e-5)
  # The update is about lr (1.5e-3) per entry: a wrong micro-batch would move many entries by
  # that much; rounding moves a few entries whose gradient is near zero by ~1e-6.
  for a, b in zip(jax.tree.leaves(one_params), jax.tree.leaves(two_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=2e-5)


@pytest.mark.slow  # compiles the step at several micro-batch counts
def test_auto_grad_accum_takes_the_fewest_micro_batches_that_fit(data_dir, tmp_path, monkeypatch):
  """With the memory of 1 micro-batch's step just short, auto compiles more and trains with 2,
  exactly as optim.grad_accum_steps=2 does."""
  steps = {}
  real_fit = memory.fit_step

  def fit_in(free_fraction):
    def fit(compile_step, **kwargs):
      one = memory.needed_bytes(compile_step(1, False))
      return real_fit(compile_step, free=(int(one * free_fraction), 'test RAM'), **kwargs)

    return fit

  for k in (2, 'auto'):
    monkeypatch.setattr(memory, 'fit_step', fit_in(0.99))  # 1 needs more than 0.9 of it
    config = make_config(data_dir, model__resid_dropout=0.0, train__steps=1,
                         optim__grad_accum_steps=k)
    trainer.train_and_evaluate(config, tmp_path / str(k))
    steps[k] = read_metrics(tmp_path / str(k))[0]
  assert steps['auto']['loss'] == steps[2]['loss']
  assert steps['auto']['grad_norm'] == steps[2]['grad_norm']


@pytest.mark.slow  # compiles the step at several micro-batch counts
def test_a_step_that_does_not_fit_stops_before_anything_is_written(data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(memory, 'free_bytes', lambda: (1 << 10, 'test RAM'))
  # Nothing fits in 1 KiB, so the advice compiles every setting it tries: with a batch of 2
  # and one layer those are 4 small compilations.
  config = make_config(data_dir, train__steps=1, train__batch_size=2, model__n_layers=1)
  with pytest.raises(memory.DoesNotFit, match=r'of test RAM is free: .*micro-batches|shorten'):
    trainer.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run' / 'checkpoints').exists()


@pytest.mark.slow
def test_grad_accum_auto_is_a_command_line_value(data_dir, tmp_path):
  done = subprocess.run(
      train_command(data_dir, tmp_path / 'run', train__steps=2, optim__grad_accum_steps='auto'),
      capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert re.search(r'step: 1 micro-batch of \d+ sequences \(auto\)', done.stdout)


# ---------------------------------------------------------------------------------------------
# Evaluation only


def check_eval_result(result: dict, data_dir, rel: float):
  assert set(result) == {'val_loss', 'perplexity', 'bits_per_byte'}
  assert result['perplexity'] == pytest.approx(math.exp(result['val_loss']), rel=rel)
  prepared = data.prepared_dir(data_dir, 'stdlib', 'bytes', max_bytes=CORPUS_BYTES)
  bits = result['val_loss'] / math.log(2) / data.bytes_per_token(prepared, 'val')
  assert result['bits_per_byte'] == pytest.approx(bits, rel=rel)


def test_batches_follow_data_seed_not_the_init_seed(data_dir):
  """An ablation's repeats differ in `seed` (init, dropout) and must see the same data:
  the batch of a step depends on data.seed alone."""
  def first_batches(**changes):
    run = trainer.setup(make_config(data_dir, **changes))
    return [np.asarray(trainer._train_batch(run, step)['inputs']) for step in range(3)]

  reference = first_batches()
  assert all(np.array_equal(a, b) for a, b in zip(reference, first_batches(seed=7)))
  assert not any(np.array_equal(a, b) for a, b in zip(reference, first_batches(data__seed=7)))


def test_evaluate_reports_loss_perplexity_bits_per_byte_and_takes_no_step(finished, data_dir):
  workdir = finished['workdir']
  before, metrics_before = snapshot(workdir), (workdir / METRICS_FILE).read_bytes()
  result = trainer.evaluate(finished['config'], workdir)
  check_eval_result(result, data_dir, rel=1e-9)
  assert result['val_loss'] == pytest.approx(losses(workdir, 'val_loss')[STEPS], rel=1e-5)
  assert snapshot(workdir) == before
  assert (workdir / METRICS_FILE).read_bytes() == metrics_before


def test_evaluate_without_a_model_says_what_to_do(data_dir, tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match='init_from'):
    trainer.evaluate(make_config(data_dir), tmp_path)


@pytest.mark.slow
def test_eval_mode_on_the_command_line(cli_env, finished, data_dir):
  workdir = finished['workdir']
  before = snapshot(workdir)
  result = run_cli(train_command(data_dir, workdir, '--mode=eval'), cli_env)
  assert result.returncode == 0, result.stderr[-4000:]
  words = result.stdout.splitlines()[-1].split()
  reported = {k: float(v) for k, v in zip(words[::2], words[1::2])}
  check_eval_result(reported, data_dir, rel=1e-3)  # printed with 4 decimals
  # The subprocess runs on CPU; this process may not (TF32 matmuls on a GPU differ by ~1e-3).
  assert reported['val_loss'] == pytest.approx(losses(workdir, 'val_loss')[STEPS], abs=1e-2)
  assert snapshot(workdir) == before


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def test_fine_tuning_starts_from_the_source_runs_params(finished, data_dir, tmp_path):
  source = finished['workdir']
  config = make_config(data_dir, train__init_from=str(source), train__steps=2, train__eval_every=2,
                       train__ckpt_every=2)
  trainer.train_and_evaluate(config, tmp_path / 'tuned')
  scratch_first, source_last = losses(source)[1], losses(source)[STEPS]
  tuned_first = losses(tmp_path / 'tuned')[1]
  assert tuned_first < scratch_first - 0.5
  assert tuned_first == pytest.approx(source_last, abs=0.3)
  assert checkpoint.load_config(tmp_path / 'tuned')['model'] == \
      checkpoint.load_config(source)['model']


def test_fine_tuning_rejects_a_model_override_that_contradicts_the_source(
    finished, data_dir, tmp_path):
  config = make_config(data_dir, train__init_from=str(finished['workdir']), model__d_model=64)
  with pytest.raises(ValueError, match='d_model=64'):
    trainer.train_and_evaluate(config, tmp_path / 'tuned')
  assert not (tmp_path / 'tuned' / checkpoint.CHECKPOINT_DIR).exists()


@pytest.mark.slow
def test_fine_tuning_from_a_hugging_face_gpt2(data_dir, tmp_path):
  from gptjax.hf import from_hf

  # transformers' own initialisation (unperturbed): its predictions are nearly uniform, which the
  # evaluation below checks.
  hf_model('gpt2', perturb=0.0, vocab_size=257, n_positions=32, n_embd=32, n_layer=2,
           n_head=2).save_pretrained(tmp_path / 'hf')
  config = make_config(data_dir, train__init_from=f'hf:{tmp_path / "hf"}', train__steps=2,
                       train__eval_every=2, train__ckpt_every=2, model__resid_dropout=0.0,
                       model__position='learned')  # GPT-2's; small.py's own is rope
  trainer.train_and_evaluate(config, tmp_path / 'tuned')

  # The first step's loss (no dropout) is the imported model's loss on the first batch.
  cfg, params = from_hf(str(tmp_path / 'hf'))
  prepared = data.prepared_dir(data_dir, 'stdlib', 'bytes', max_bytes=CORPUS_BYTES)
  inputs, targets = data.get_batch(data.load_split(prepared, 'train'), seed=config.data.seed,
                                   step=0, batch_size=4, seq_len=32)
  expected = trainer.cross_entropy(cfg, params,
                                   {'inputs': jnp.asarray(inputs), 'targets': jnp.asarray(targets)})
  assert losses(tmp_path / 'tuned')[1] == pytest.approx(float(expected), rel=1e-5)
  model = checkpoint.load_config(tmp_path / 'tuned')['model']
  assert (model['n_layers'], model['d_model'], model['vocab_size']) == (2, 32, 257)

  # Evaluation only, of the imported model: random weights predict about uniformly.
  result = trainer.evaluate(config, tmp_path / 'no_checkpoint')
  check_eval_result(result, data_dir, rel=1e-9)
  assert result['val_loss'] == pytest.approx(math.log(257), abs=0.1)


# ---------------------------------------------------------------------------------------------
# The command line: one-line errors, nothing lost


@pytest.mark.slow
def test_misspelled_override_names_the_real_key(cli_env, data_dir, tmp_path):
  result = run_cli(train_command(data_dir, tmp_path / 'run', '--config.model.n_kv_head=2'), cli_env)
  assert_one_line_error(result, 'n_kv_heads')


@pytest.mark.slow
@pytest.mark.parametrize('flag, needle', [('--workdri=x', "'workdri'"), ('--mode=sample', 'mode'),
                                          ('positional', 'unexpected arguments: positional')])
def test_bad_flag_is_one_line(cli_env, data_dir, tmp_path, flag, needle):
  result = run_cli(train_command(data_dir, tmp_path / 'run', flag), cli_env)
  assert_one_line_error(result, needle)
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
@pytest.mark.parametrize('change, needle', [
    ({'model__n_heads': 3}, 'n_heads=3'),
    ({'data__tokenizer': 'gpt-2'}, "data.tokenizer='gpt-2' is not one of 'gpt2', 'bytes'"),
    ({'optim__decay_steps': 1}, 'optim.decay_steps=1 must be >= optim.warmup_steps=2'),
], ids=['model', 'data', 'optim'])
def test_invalid_value_names_the_field_before_anything_runs(cli_env, data_dir, tmp_path, change,
                                                            needle):
  result = run_cli(train_command(data_dir, tmp_path / 'run', **change), cli_env)
  assert_one_line_error(result, needle)
  assert not (tmp_path / 'run' / checkpoint.CHECKPOINT_DIR).exists()


@pytest.mark.parametrize(
    'change, message', [
        ({'train__init_from': None}, "train.init_from=None must be 'scratch', a workdir or "
         "'hf:PATH_OR_NAME'"),
        ({'train__seq_len': 0
          }, 'train.seq_len=0 must be None (model.block_size) or a positive integer'),
        ({'data__max_bytes': -1}, 'data.max_bytes=-1 must be None or a positive integer'),
        ({'sharding__mesh__tensor': 3}, 'sharding.mesh data=-1 x tensor=3: the fixed axes take 3 '
         'devices, which does not divide the 1 there are'),
    ], ids=['train.init_from', 'train.seq_len', 'data.max_bytes', 'sharding.mesh'])
def test_setup_checks_every_section(data_dir, change, message):
  with pytest.raises(ValueError) as e:
    trainer.setup(make_config(data_dir, **change))
  assert str(e.value) == message


@pytest.mark.slow
def test_missing_data_path_is_named(cli_env, data_dir, tmp_path):
  result = run_cli(train_command(data_dir, tmp_path / 'run', data__corpus='/nonexistent/corpus'),
                   cli_env)
  assert_one_line_error(result, '/nonexistent/corpus')


@pytest.mark.slow
def test_resuming_a_checkpoint_of_another_model_names_the_field(cli_env, finished, data_dir,
                                                                tmp_path):
  workdir = copy_run(finished['workdir'], tmp_path)
  before = snapshot(workdir)
  result = run_cli(train_command(data_dir, workdir, model__d_model=64), cli_env)
  assert_one_line_error(result, f'the checkpoint in {workdir} was written with a different model',
                        'd_model: checkpoint 32 vs config 64', 'train into another workdir')
  assert snapshot(workdir) == before
  assert_trees_equal(saved_params(workdir)[0], saved_params(finished['workdir'])[0])


@pytest.mark.slow
def test_valid_override_is_used_and_saved(cli_env, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  result = run_cli(
      train_command(data_dir, workdir, model__n_kv_heads=1, train__steps=2, train__ckpt_every=2,
                    train__eval_every=2), cli_env)
  assert result.returncode == 0, result.stderr[-4000:]
  assert re.fullmatch(r'done: .*step 2 .*', result.stdout.splitlines()[-1])
  model = checkpoint.load_config(workdir)['model']
  assert model['n_kv_heads'] == 1
  params, step = saved_params(workdir)
  assert step == 2
  # d_model 32, 2 heads of 16: queries and the output 32 x 32 each, keys and values 32 x 16 each
  # (1 kv head), plus their biases.
  attention_size = sum(x.size for x in jax.tree.leaves(params['blocks_0']['attn']))
  assert attention_size == 2 * (32 * 32 + 32) + 2 * (32 * 16 + 16)


@pytest.mark.slow
def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    cli_env, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  result = run_cli(
      train_command(data_dir, workdir, optim__lr=1e6, optim__grad_clip=0, optim__warmup_steps=0,
                    train__ckpt_every=1), cli_env)
  line = assert_one_line_error(result, 'at step')
  bad_step = int(re.search(r'is (nan|-?inf) at step (\d+)', line).group(2))
  good = checkpoint_steps(workdir)
  assert good and max(good) < bad_step, (line, good)
  assert all(m['step'] < bad_step for m in read_metrics(workdir))
  params, step = saved_params(workdir)
  assert step == max(good)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM


def logged_a_step(workdir: Path) -> bool:
  try:
    return bool(losses(workdir))
  except json.JSONDecodeError:  # caught the writer mid-line
    return False


def wait_for_first_step(process: subprocess.Popen, workdir: Path):
  deadline = time.monotonic() + TIMEOUT_S
  while not logged_a_step(workdir):
    if process.poll() is not None:
      pytest.fail(f'train.py exited {process.returncode} before a step:\n'
                  f'{process.stderr.read()[-4000:]}')
    if time.monotonic() > deadline:
      process.kill()
      pytest.fail(f'no step logged in {TIMEOUT_S} s')
    time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_saves_a_checkpoint_and_rerunning_resumes(cli_env, signum, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  many = {'train__steps': 100_000, 'train__ckpt_every': 100_000, 'train__eval_every': 100_000}
  process = subprocess.Popen(train_command(data_dir, workdir, **many), cwd=REPO, env=cli_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    wait_for_first_step(process, workdir)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=TIMEOUT_S)
  finally:
    if process.poll() is None:
      process.kill()
      process.communicate()
  report = f'exit code {process.returncode}; stderr:\n{stderr[-4000:]}'
  assert process.returncode == 128 + signum, report  # 130 for SIGINT, 143 for SIGTERM
  assert 'Traceback' not in stderr, report
  assert f'{signum.name}: stopping after the step under way' in stderr, report
  line = last_line(stderr)
  match = re.fullmatch(
      rf'stopped: {signum.name} at step (\d+): .*rerun the same command to '
      r'resume', line)
  assert match, report
  stopped_at = int(match.group(1))
  assert checkpoint_steps(workdir) == [stopped_at]
  assert max(losses(workdir)) == stopped_at

  # Rerunning resumes there (in-process, told to stop one step later).
  config = make_config(data_dir, **{**many, 'train__steps': stopped_at + 1})
  result = trainer.train_and_evaluate(config, workdir)
  assert result['step'] == stopped_at + 1
  assert sorted(losses(workdir)) == list(range(1, stopped_at + 2))


# ---------------------------------------------------------------------------------------------
# Throughput in the metrics


def untimed_log_steps(workdir) -> list[int]:
  """The logged train steps without tokens_per_sec and mfu; the others' must be positive."""
  untimed = []
  for line in read_metrics(workdir):
    if 'loss' not in line:
      continue
    if 'tokens_per_sec' in line or 'mfu' in line:
      assert line['tokens_per_sec'] > 0 and line['mfu'] > 0, line
    else:
      untimed.append(line['step'])
  return untimed


def test_every_timed_log_step_reports_tokens_per_sec_and_mfu(finished):
  """Compilation is kept out of tokens/s: a log step reports throughput when a step besides the
  compiling one ran since the meter's last restart, i.e. every one but the run's first here
  (log_every=1). The two-process test covers log_every=2, where every line has it."""
  assert untimed_log_steps(finished['workdir']) == [1]


# ---------------------------------------------------------------------------------------------
# cli.run: how an entry point ends, without a subprocess


def run_raising(error: BaseException):
  """cli.run of a main that raises `error`; a KeyboardInterrupt that escapes fails the test
  instead of stopping pytest."""
  def main(argv):
    raise error

  try:
    cli.run(main)
  except KeyboardInterrupt:
    pytest.fail('KeyboardInterrupt escaped cli.run')


@pytest.fixture
def cli_argv(monkeypatch):
  """cli.run parses sys.argv (pytest's here); absl's one-time setup (its logging handler,
  faulthandler) would outlive the test, so it is marked done and app.run only parses flags."""
  from absl import app
  monkeypatch.setattr(sys, 'argv', ['train.py'])
  monkeypatch.setattr(app._run_init, 'done', True)


@pytest.mark.parametrize(
    'error, line, code', [
        (KeyboardInterrupt(), 'stopped: SIGINT before anything was saved', 130),
        (KeyboardInterrupt('SIGTERM'), 'stopped: SIGTERM before anything was saved', 143),
        (cli.Interrupted('SIGINT at step 4: checkpoint saved\nin runs/x'),
         'stopped: SIGINT at step 4: checkpoint saved in runs/x', 130),
        (cli.Interrupted('SIGTERM at step 4: checkpoint saved\nin runs/x',
                         'SIGTERM'), 'stopped: SIGTERM at step 4: checkpoint saved in runs/x', 143),
    ], ids=['KeyboardInterrupt', 'KeyboardInterrupt-SIGTERM', 'Interrupted', 'Interrupted-SIGTERM'])
def test_cli_run_stopped_exits_128_plus_the_signal_with_one_line(cli_argv, capsys, error, line,
                                                                 code):
  with pytest.raises(SystemExit) as exit_info:
    run_raising(error)
  assert exit_info.value.code == code
  assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize(
    'error, message', [
        (ValueError('bad x\nmore'), 'error: bad x more'),
        (FileNotFoundError('no corpus at\n/x'), 'error: no corpus at /x'),
        (AttributeError(KeyError('Did you mean "n_kv_heads"')),
         'error: bad config override: Did you mean "n_kv_heads"'),
        (AttributeError(KeyError('No such field: n_kv_head\nDid you mean "n_kv_heads"?')),
         'error: bad config override: No such field: n_kv_head Did you mean "n_kv_heads"?'),
        (OSError(28, 'No space left on device', 'runs/x/metrics.jsonl'),
         'error: No space left on device: runs/x/metrics.jsonl (errno 28)'),
    ], ids=['ValueError', 'FileNotFoundError', 'override', 'override-multiline', 'OSError'])
def test_cli_run_user_error_exits_with_one_line(cli_argv, error, message):
  with pytest.raises(SystemExit) as exit_info:  # sys.exit(str): printed to stderr, exit code 1
    run_raising(error)
  assert exit_info.value.code == message


def test_cli_run_lets_a_bug_keep_its_traceback(cli_argv):
  with pytest.raises(AttributeError, match='no attribute'):
    run_raising(AttributeError("'Run' object has no attribute 'cfgg'"))


# ---------------------------------------------------------------------------------------------
# Warmup-stable-decay, and branching a run from a checkpoint


@pytest.mark.slow
def test_a_wsd_cooldown_branched_from_a_longer_run_is_the_short_run_exactly(data_dir, tmp_path):
  """Under 'wsd' a run of B steps and a longer one share the stable phase, so a run branched
  (init_state='full') from the longer one's checkpoint at B's decay start continues bit for bit
  as the B-step run trained from scratch: one long run gives every shorter budget's result."""
  wsd = dict(optim__schedule='wsd', optim__decay_fraction=0.25, optim__min_lr_ratio=0.0,
             optim__decay_steps=None)
  long_run, short, branch = tmp_path / 'long', tmp_path / 'short', tmp_path / 'branch'
  trainer.train_and_evaluate(
      make_config(data_dir, train__steps=16, train__ckpt_every=6, train__keep_checkpoints=5, **wsd),
      long_run)
  trainer.train_and_evaluate(make_config(data_dir, train__steps=8, **wsd), short)
  trainer.train_and_evaluate(
      make_config(data_dir, train__steps=8, train__init_from=str(long_run), train__init_step=6,
                  train__init_state='full', **wsd), branch)

  lrs = {m['step']: m['lr'] for m in read_metrics(long_run) if 'lr' in m}
  # lr is logged at the step it took: the 13th step (0-based 12) is the last at the peak.
  assert lrs[6] == lrs[13] == pytest.approx(3e-3) and lrs[16] < lrs[15] < lrs[13]
  assert sorted(losses(branch)) == [7, 8]  # it trained only the cooldown
  assert {s: losses(short)[s] for s in (7, 8)} == losses(branch)
  assert losses(branch, 'val_loss') == {8: losses(short, 'val_loss')[8]}
  assert_trees_equal(saved_params(branch)[0], saved_params(short)[0])
  assert losses(short)[6] == losses(long_run)[6]  # the shared stable phase

  with pytest.raises(ValueError, match='at step 6 is already at or past train.steps=6'):
    trainer.check_config(
        make_config(data_dir, train__steps=6, train__init_from=str(long_run), train__init_step=6,
                    train__init_state='full', **wsd))
  with pytest.raises(checkpoint.CheckpointError, match='no checkpoint for step 5 .* 6, 12, 16'):
    trainer.check_config(
        make_config(data_dir, train__steps=8, train__init_from=str(long_run), train__init_step=5,
                    train__init_state='full', **wsd))


@pytest.mark.slow
@pytest.mark.parametrize('first, then', [(False, True), (True, False)],
                         ids=['unrolled_then_scanned', 'scanned_then_unrolled'])
def test_a_checkpoint_continues_in_the_other_layers_layout(data_dir, tmp_path, first, then):
  """Two steps with model.scan_layers=first, two more resumed with scan_layers=then: the steps
  are the straight run's (without dropout, whose masks the layouts draw differently; to float32
  rounding, as the two layouts' programs differ). The checkpoint of a scanned run holds the
  stacked layout, and sampling reads it layer by layer."""
  from gptjax import loading

  def config(steps, scan):
    return make_config(data_dir, train__steps=steps, train__ckpt_every=2, train__eval_every=2,
                       model__resid_dropout=0.0, model__scan_layers=scan)

  straight = tmp_path / 'straight'
  trainer.train_and_evaluate(config(4, False), straight)
  workdir = tmp_path / 'run'
  trainer.train_and_evaluate(config(2, first), workdir)
  trainer.train_and_evaluate(config(4, then), workdir)
  got, want = losses(workdir), losses(straight)
  assert sorted(got) == [1, 2, 3, 4]
  for step in (1, 2, 3, 4):
    assert got[step] == pytest.approx(want[step], rel=1e-5), step
  scanned_step = 2 if first else 4
  saved = checkpoint.load_config(workdir, scanned_step)['model']
  assert saved['scan_layers'] and 'blocks' in saved_params(workdir, scanned_step)[0]
  loaded = loading.load_workdir(workdir, scanned_step)
  assert not loaded.cfg.scan_layers and 'blocks_1' in loaded.params


@pytest.mark.slow
def test_prefetched_batches_train_exactly_as_batches_made_in_the_loop(finished, data_dir, tmp_path):
  """The background thread only makes each step's batch earlier: the run is bit for bit the
  reference run (train.prefetch=2, the default) with every batch made in the loop."""
  workdir = tmp_path / 'in_loop'
  trainer.train_and_evaluate(make_config(data_dir, train__prefetch=0), workdir)
  assert losses(workdir) == losses(finished['workdir'])
  assert losses(workdir, 'val_loss') == losses(finished['workdir'], 'val_loss')


KILLED_MID_SAVE = """
import os, signal, sys
import jax.numpy as jnp
from gptjax import checkpoint

mngr = checkpoint.manager(sys.argv[1])
# 256 MiB: writing it takes far longer than the kill below.
checkpoint.save(mngr, 1, {'w': jnp.full((64, 2**20), 1.0)}, {'model': {}})
checkpoint.save(mngr, 2, {'w': jnp.full((64, 2**20), 2.0)}, {'model': {}}, wait=False)
os.kill(os.getpid(), signal.SIGKILL)  # kill -9 while step 2 is written in the background
"""


@pytest.mark.slow
def test_a_kill_during_an_async_save_keeps_the_previous_checkpoint(tmp_path):
  """The trainer's saves return once the arrays are off the devices and are written while
  training goes on. A process killed then leaves step 2 uncommitted: step 1 stays the latest,
  whole, and the next run saves its step 2 in the unfinished one's place."""
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-c', KILLED_MID_SAVE, str(workdir)],
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True, timeout=300)
  assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  assert checkpoint.latest_step(workdir) == 1
  restored = checkpoint.restore_state(workdir, {'w': jax.ShapeDtypeStruct((64, 2**20), np.float32)})
  assert float(restored['w'].min()) == float(restored['w'].max()) == 1.0
  # The resumed run saves step 2 over the unfinished one.
  with contextlib.closing(checkpoint.manager(workdir)) as mngr:
    assert mngr.all_steps() == [1]
    checkpoint.save(mngr, 2, {'w': jnp.full((4,), 3.0)}, {'model': {}})
  assert checkpoint.latest_step(workdir) == 2
  assert sorted(p.name for p in (workdir / checkpoint.CHECKPOINT_DIR).iterdir()) == ['1', '2']
