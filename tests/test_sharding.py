"""Many devices and many processes compute what one device computes.

The multi-device runs need `--xla_force_host_platform_device_count` set before JAX starts, and
the multi-process runs need one interpreter per process, so both run train.py in subprocesses
(CPU only) and are compared through their metrics.jsonl and checkpoints. A tiny byte-level model
keeps every run to a few seconds.
"""

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, subprocess_env
from gptjax import data, parallel
from gptjax.logs import read_metrics

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240  # per subprocess; a healthy run takes seconds
N_DEVICES = 8
STEPS = 4  # a run; a resumed run goes on for 2 more steps
# The single-device reference's length: past any step the two-process run plausibly stops at
# (it is stopped once step STEPS is evaluated), plus the 2 steps resumed from there.
REFERENCE_STEPS = 48
CORPUS_BYTES = 200_000

# The config file every run uses: a 2-layer byte-level model and a schedule that does not depend
# on train.steps (decay_steps is fixed), so runs of any length take the same first steps. A large
# lr and dropout make the steps differ visibly, so a wrong gradient reduction or a
# sharding-dependent dropout mask shows in the losses. An evaluation every other step gives every
# run val_loss lines at the reference's even steps.
CONFIG = """
from gptjax.config import base_config, eval_config_dict


def get_config():
  config = base_config(vocab_size=257, vocab_pad_multiple=64, n_layers=2, d_model=32,
                       n_heads=2, block_size=32, resid_dropout=0.1)
  config.data.corpus = 'stdlib'
  config.data.tokenizer = 'bytes'
  config.data.data_dir = {data_dir!r}
  config.data.max_bytes = {max_bytes}
  config.optim.lr = 3e-3
  config.optim.warmup_steps = 1
  config.optim.decay_steps = 8
  config.train.steps = {steps}
  config.train.batch_size = 8
  config.train.log_every = 1
  config.train.eval_every = 2
  config.train.eval_batches = 2
  config.train.ckpt_every = 100  # only the final checkpoint
  # An eval in the loop: on a sharded model it needs the params gathered (FSDP, two processes).
  config.evals.held_out = eval_config_dict(type='loglikelihood', path={held_out!r})
  return config
"""

# ---------------------------------------------------------------------------------------------
# Arguments (the sharding rules themselves: tests/test_parallel.py)


@pytest.mark.parametrize('num_processes, process_id, message', [
    (None, 0, 'needs num_processes and process_id'),
    (2, None, 'needs num_processes and process_id'),
    (2, 2, r'process_id=2 .*0\.\.1'),
])
def test_initialize_distributed_checks_its_arguments(num_processes, process_id, message):
  with pytest.raises(ValueError, match=message):
    parallel.initialize_distributed('127.0.0.1:1', num_processes, process_id)


def test_auto_coordinator_takes_no_process_numbers():
  with pytest.raises(ValueError, match='auto finds num_processes and process_id itself'):
    parallel.initialize_distributed('auto', 2, 0)


@pytest.mark.slow
def test_auto_coordinator_outside_a_cluster_is_a_one_line_error(tmp_path, config_file):
  """--coordinator_address=auto where JAX detects no cluster (no SLURM, mpirun or TPU pod)."""
  env = {
      k: v
      for k, v in subprocess_env(1).items() if not k.startswith(('SLURM_', 'OMPI_', 'TPU_'))
  }
  result = subprocess.run(
      _train_command(config_file, tmp_path / 'run', '--coordinator_address=auto'), env=env,
      cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert_user_error(result, 'coordinator_address=auto: no cluster detected')
  assert not (tmp_path / 'run').exists()


# ---------------------------------------------------------------------------------------------
# Subprocess helpers


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
  """The run config (a file, as train.py takes), its corpus prepared once for every process."""
  root = tmp_path_factory.mktemp('sharding')
  data_dir = root / 'data'
  data.prepare('stdlib', 'bytes', data_dir, max_bytes=CORPUS_BYTES, progress=False)
  held_out = root / 'held_out.txt'
  held_out.write_text('def held_out(x):\n    return [y * 2 for y in x if y]\n' * 4)
  path = root / 'config.py'
  path.write_text(
      CONFIG.format(data_dir=str(data_dir), max_bytes=CORPUS_BYTES, steps=STEPS,
                    held_out=str(held_out)))
  return path


def _train_command(config_file, workdir, *overrides) -> list[str]:
  return [
      sys.executable,
      str(REPO / 'train.py'), f'--config={config_file}', f'--workdir={workdir}', *overrides
  ]


def _run(command, n_devices: int = 1, cwd=None) -> subprocess.CompletedProcess:
  result = subprocess.run(command, env=subprocess_env(n_devices), cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
  assert result.returncode == 0, (f'{" ".join(command)} exited {result.returncode}\n'
                                  f'stdout:\n{result.stdout[-3000:]}\n'
                                  f'stderr:\n{result.stderr[-6000:]}')
  return result


def _train(config_file, workdir, *overrides, n_devices: int = 1):
  _run(_train_command(config_file, workdir, *overrides), n_devices, cwd=workdir.parent)
  return _metrics(workdir)


def _metrics(workdir) -> dict[int, dict]:
  """step -> every metric logged for it (train and eval lines merged)."""
  merged = {}
  for line in read_metrics(workdir):
    merged.setdefault(line['step'], {}).update(line)
  return merged


def assert_same_metrics(run: dict, reference: dict, steps, rtol: float = 1e-5):
  """loss, grad_norm, val_loss and the in-loop eval's bits per byte of `run` equal the
  reference's at each of `steps`."""
  assert set(steps) <= set(run), f'steps {sorted(run)} logged, expected {sorted(steps)}'
  for step in steps:
    for name in ('loss', 'grad_norm', 'val_loss', 'held_out/bpb'):
      if name in reference[step]:
        np.testing.assert_allclose(run[step][name], reference[step][name], rtol=rtol,
                                   err_msg=f'{name} at step {step}')


@pytest.fixture(scope='module')
def reference(config_file, tmp_path_factory):
  """One device, REFERENCE_STEPS steps straight."""
  workdir = tmp_path_factory.mktemp('single') / 'run'
  metrics = _train(config_file, workdir, f'--config.train.steps={REFERENCE_STEPS}')
  assert sorted(metrics) == list(range(1, REFERENCE_STEPS + 1))
  assert all('val_loss' in metrics[step] and 'held_out/bpb' in metrics[step]
             for step in range(2, REFERENCE_STEPS + 1, 2))
  return metrics


# data x fsdp x tensor = 2 x 2 x 2 on 8 devices: every kind of split at once, through train.py.
HYBRID_FLAGS = ('--config.sharding.mesh.data=2', '--config.sharding.mesh.fsdp=2',
                '--config.sharding.mesh.tensor=2')


@pytest.fixture(scope='module')
def hybrid_workdir(config_file, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('hybrid') / 'run'
  _train(config_file, workdir, *HYBRID_FLAGS, n_devices=N_DEVICES)
  return workdir


# ---------------------------------------------------------------------------------------------
# Many devices (every mesh of the matrix, in one process: tests/test_parallel.py)


@pytest.mark.slow
def test_hybrid_mesh_matches_single_device(hybrid_workdir, reference):
  assert_same_metrics(_metrics(hybrid_workdir), reference, range(1, STEPS + 1))


@pytest.mark.slow
def test_indivisible_batch_is_a_one_line_error(config_file, tmp_path):
  command = _train_command(config_file, tmp_path / 'run', '--config.train.batch_size=12')
  result = subprocess.run(command, env=subprocess_env(N_DEVICES), cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      'error: train.batch_size=12 must be divisible by the 8 devices it is split across')
  assert 'Traceback' not in result.stderr


# Restores the hybrid run's checkpoint onto the shardings the trainer builds for 8 devices from
# the config saved with it, and reports, per state leaf, its shape, its PartitionSpec and the
# shape of one device's shard.
PROBE = """
import contextlib, json, sys
import jax, ml_collections
from gptjax import checkpoint, trainer
from gptjax.model import param_paths
from gptjax.optim import make_optimizer

workdir = sys.argv[1]
config = ml_collections.ConfigDict(checkpoint.load_config(workdir))
run = trainer.setup(config)
abstract, _ = trainer.abstract_state(run, make_optimizer(config.optim, config.train.steps))
with contextlib.closing(checkpoint.manager(workdir)) as mngr:
  state = checkpoint.restore(mngr, mngr.latest_step(), abstract)
leaves = {path: [list(x.shape), [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]
                 + [None] * (x.ndim - len(x.sharding.spec)),
                 list(x.addressable_shards[0].data.shape)]
          for path, x in param_paths(state).items()}
print(json.dumps({'devices': jax.device_count(), 'leaves': leaves}))
"""


@pytest.mark.slow
def test_hybrid_mesh_shards_params_and_optimizer_state_by_name(hybrid_workdir):
  """Each weight is split by what its axes are, not by their sizes: the MLP's output projection
  [128, 32] over fsdp on its 32 (embed) axis, not its larger one; heads over tensor."""
  result = _run([sys.executable, '-c', PROBE, str(hybrid_workdir)], N_DEVICES,
                cwd=hybrid_workdir.parent)
  probe = json.loads(result.stdout.strip().splitlines()[-1])
  assert probe['devices'] == N_DEVICES
  leaves = probe['leaves']
  expected = {
      'wte/embedding': ([257, 32], [None, 'fsdp'], [257, 16]),  # 257 rows: not over tensor
      'blocks_0/attn/query/kernel': ([32, 2, 16], ['fsdp', 'tensor', None], [16, 1, 16]),
      'blocks_0/attn/out/kernel': ([2, 16, 32], ['tensor', None, 'fsdp'], [1, 16, 16]),
      'blocks_1/mlp/fc/kernel': ([32, 128], ['fsdp', 'tensor'], [16, 64]),
      'blocks_1/mlp/proj/kernel': ([128, 32], ['tensor', 'fsdp'], [64, 16]),
      'blocks_1/mlp/fc/bias': ([128], ['tensor'], [64]),
  }
  for name, want in expected.items():
    for prefix in ('params/', 'opt_state/1/0/mu/', 'opt_state/1/0/nu/'):
      assert tuple(leaves[prefix + name]) == want, (prefix + name, leaves[prefix + name])
  assert leaves['step'][2] == []  # the step counter is replicated


@pytest.mark.slow
def test_hybrid_checkpoint_resumes_on_one_device(config_file, hybrid_workdir, reference, tmp_path):
  """Written on a 2 x 2 x 2 mesh, resumed on 1 device: the next steps are the straight run's."""
  workdir = tmp_path / 'run'
  shutil.copytree(hybrid_workdir, workdir)
  metrics = _train(config_file, workdir, f'--config.train.steps={STEPS + 2}', n_devices=1)
  assert_same_metrics(metrics, reference, range(STEPS + 1, STEPS + 3))


# ---------------------------------------------------------------------------------------------
# Many processes


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _log_path(workdir, i: int) -> Path:
  return workdir.parent / f'process{i}.log'


@contextlib.contextmanager
def _processes(config_file, workdir, n_processes: int, *overrides):
  """Starts train.py as n_processes processes of one jax.distributed run on localhost, each
  writing its stdout and stderr to _log_path(workdir, i); yields the Popen objects and kills any
  still running on leaving."""
  port = _free_port()
  workdir.parent.mkdir(parents=True, exist_ok=True)
  procs = []
  try:
    for i in range(n_processes):
      command = _train_command(config_file, workdir, *overrides,
                               f'--coordinator_address=127.0.0.1:{port}',
                               f'--num_processes={n_processes}', f'--process_id={i}')
      with open(_log_path(workdir, i), 'w') as log:  # the child keeps its own descriptor
        procs.append(
            subprocess.Popen(command, env=subprocess_env(DEVICES_PER_PROCESS), cwd=workdir.parent,
                             stdout=log, stderr=subprocess.STDOUT))
    yield procs
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()


def _wait_all(procs, timeout_s: float) -> list:
  """Each process's exit code, or 'timeout' for one still running after timeout_s in all."""
  deadline = time.monotonic() + timeout_s
  codes = []
  for proc in procs:
    try:
      codes.append(proc.wait(timeout=max(0.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
      codes.append('timeout')
  return codes


def _output(workdir, i: int) -> str:
  """What process i printed (stdout and stderr)."""
  return _log_path(workdir, i).read_text(errors='replace')


def _processes_report(workdir, codes) -> str:
  return '\n'.join(f'--- process {i} (exit {code}):\n{_output(workdir, i)[-6000:]}'
                   for i, code in enumerate(codes))


STOP_TIMEOUT_S = 90  # from the signal to both exits: at most log_every steps and one save
LOG_EVERY = 2  # the two-process run's: its stop flags are exchanged at log steps only
# Hybrid sharded data parallelism across the processes' 2 devices each: data (outermost) spans
# the processes, fsdp the devices within one.
DEVICES_PER_PROCESS = 2
TWO_PROCESS_MESH = ('--config.sharding.mesh.data=2', '--config.sharding.mesh.fsdp=2')
LOOP_FLAGS = (f'--config.train.log_every={LOG_EVERY}', '--config.train.ckpt_every=100000')


def _wait_for_evaluated_step(procs, workdir, step: int):
  """Polls metrics.jsonl (process 0 writes it) until `step`'s val_loss and in-loop eval (which
  runs in the background, and is not waited for by an interrupted run) are logged."""
  deadline = time.monotonic() + TIMEOUT_S
  while True:
    try:
      lines = read_metrics(workdir)
      if all(
          any(line['step'] >= step and name in line for line in lines)
          for name in ('val_loss', 'held_out/bpb')):
        return
    except json.JSONDecodeError:  # caught the writer mid-line
      pass
    codes = [proc.poll() for proc in procs]
    if any(code is not None for code in codes) or time.monotonic() > deadline:
      pytest.fail(f'step {step} not evaluated (exit codes {codes})\n'
                  f'{_processes_report(workdir, codes)}')
    time.sleep(0.05)


def _checkpoint_steps(workdir) -> list[int]:
  directory = workdir / 'checkpoints'
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _stopped_lines(output: str) -> list[str]:
  """The 'stopped: ...' lines (progress bars redraw with '\\r', so split on that too)."""
  return [
      line.strip() for line in re.split(r'[\r\n]', output) if line.strip().startswith('stopped:')
  ]


@pytest.fixture(scope='module')
def two_processes(config_file, tmp_path_factory):
  """One run of two processes of two devices each on a data x fsdp mesh: the gradients are
  reduced across the processes (through gloo), the parameters gathered within each, and each
  process writes its part of the checkpoint. Once step STEPS is evaluated, SIGTERM reaches process
  0 only, as on a preempted host. Both tests below read this one run (starting the two processes
  takes about half a minute on 2 cores): (workdir, exit codes)."""
  workdir = tmp_path_factory.mktemp('two_processes') / 'run'
  with _processes(config_file, workdir, 2, *TWO_PROCESS_MESH, *LOOP_FLAGS,
                  '--config.train.steps=100000') as procs:
    _wait_for_evaluated_step(procs, workdir, STEPS)
    procs[0].send_signal(signal.SIGTERM)
    codes = _wait_all(procs, STOP_TIMEOUT_S)
  return workdir, codes


@pytest.fixture(scope='module')
def resumed(config_file, two_processes):
  """One process resumes a copy of the two-process run from its checkpoint and takes two more
  steps: (workdir, the step it resumed from)."""
  stopped, codes = two_processes
  saved = _checkpoint_steps(stopped)
  if not saved:
    pytest.fail(f'the two-process run saved no checkpoint\n{_processes_report(stopped, codes)}')
  step = saved[-1]
  if step + 2 > REFERENCE_STEPS:
    pytest.fail(f'the two-process run stopped at step {step}, too late to compare 2 resumed '
                f'steps with the {REFERENCE_STEPS}-step reference: raise REFERENCE_STEPS')
  workdir = Path(shutil.copytree(stopped, stopped.parent / 'resumed'))
  _train(config_file, workdir, *LOOP_FLAGS, f'--config.train.steps={step + 2}')
  return workdir, step


@pytest.mark.slow
def test_two_processes_match_one(two_processes, resumed, reference):
  """The two-process run's log steps up to STEPS (every LOG_EVERY-th: the stop test needs log
  steps that are not every step), and the step one process took after resuming from its
  checkpoint, equal the single-device run's: loss, gradient norm and validation loss. A wrong
  reduction in any step moves the parameters, and so the next log step's numbers."""
  workdir, _ = two_processes
  assert_same_metrics(_metrics(workdir), reference, range(LOG_EVERY, STEPS + 1, LOG_EVERY))
  # Only process 0 writes logs: each log step logged once.
  logged = [line['step'] for line in read_metrics(workdir) if 'loss' in line]
  assert logged == list(range(LOG_EVERY, logged[-1] + 1, LOG_EVERY)), logged
  evaluated = [line['step'] for line in read_metrics(workdir) if 'held_out/bpb' in line]
  assert evaluated and evaluated == sorted(set(evaluated)), evaluated  # by process 0 alone
  state_dir = workdir / 'checkpoints' / str(_checkpoint_steps(workdir)[-1]) / 'state'
  assert (state_dir / 'ocdbt.process_1').is_dir(), sorted(p.name for p in state_dir.iterdir())

  resumed_workdir, step = resumed
  assert_same_metrics(_metrics(resumed_workdir), reference, [step + 2])


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(two_processes, resumed):
  """A preempted host: SIGTERM reaches process 0 only. The processes exchange their signals at
  log steps, so both stop after the same step, take part in one collective checkpoint save and
  exit 143, SIGTERM's code. Were each to stop on its own flag, process 0 would start saving
  while process 1 ran the next step's collectives, and the run would hang or crash."""
  workdir, codes = two_processes
  report = f'exit codes {codes}\n{_processes_report(workdir, codes)}'
  assert codes == [143, 143], report
  outputs = [_output(workdir, i) for i in range(2)]
  assert not any('Traceback' in output for output in outputs), report
  stopped = [_stopped_lines(output) for output in outputs]
  assert [len(lines) for lines in stopped] == [1, 1], report
  own = re.fullmatch(r'stopped: SIGTERM at step (\d+): .*rerun the same command to resume',
                     stopped[0][0])
  other = re.fullmatch(
      r'stopped: stop requested by another process at step (\d+): .*rerun the '
      r'same command to resume', stopped[1][0])
  assert own and other, report
  step = int(own.group(1))
  assert int(other.group(1)) == step and step % LOG_EVERY == 0, report
  assert _checkpoint_steps(workdir) == [step], report
  assert (workdir / 'checkpoints' / str(step) / 'state' / 'ocdbt.process_1').is_dir()
  train_lines = [line for line in read_metrics(workdir) if 'loss' in line]
  assert [line['step'] for line in train_lines] == list(range(LOG_EVERY, step + 1, LOG_EVERY))

  # One process resumed from the two processes' checkpoint and took two more steps.
  resumed_workdir, resumed_from = resumed
  assert resumed_from == step
  train_lines = [line for line in read_metrics(resumed_workdir) if 'loss' in line]
  assert [line['step'] for line in train_lines] == list(range(LOG_EVERY, step + 3, LOG_EVERY))
  assert np.isfinite(train_lines[-1]['loss'])
  assert _checkpoint_steps(resumed_workdir) == [step, step + 2]
  # With log_every > 1 every logged step, the first after a (re)start included, timed at least
  # one step besides the compiling one: each line has the throughput.
  for line in train_lines:
    assert line['tokens_per_sec'] > 0 and line['mfu'] > 0, line
