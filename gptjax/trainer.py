"""The training loop: `train_and_evaluate(config, workdir)`, and `evaluate` for eval-only runs.

State is a plain dict {'params', 'opt_state', 'step'}; the step function is
`train_step(state, batch) -> (state, metrics)`, jitted once with the state's buffers donated. The
batch of step s is a pure function of (data.seed, s) and its dropout noise of (seed, s), so a
checkpoint of the state is all that resume needs, and resuming is bit-exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from gptjax import checkpoint, cli, data, flops, memory, parallel, tables, workdir_lock
from gptjax.config import DataConfig, ModelConfig, OptimConfig, ShardingConfig, TrainConfig
from gptjax.eval.inloop import InLoopEvals, check_evals
from gptjax.logs import MetricWriter
from gptjax.model import (GPT, abstract_params, init_params, max_attention_logits, param_axes,
                          with_layers_layout)
from gptjax.xla_flags import cpu_compiler_options
from gptjax.tokenizer import get_tokenizer, get_tokenizer_class
from gptjax.prefetch import Prefetcher
from gptjax.optim import (accumulate_gradients, learning_rate_schedule, make_optimizer,
                          optimizer_metrics)

# Fields that only change how a model runs, not what it is: a fine-tuning config may set them.
# (vocab_pad_multiple pads only the head's matmul; the parameters are the same.)
# (scan_layers stores the same parameters stacked; checkpoints convert between the layouts.)
RUNTIME_FIELDS = ('embd_dropout', 'attn_dropout', 'resid_dropout', 'dtype', 'param_dtype',
                  'attention_impl', 'remat', 'vocab_pad_multiple', 'scan_layers')


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


class TrainingInterrupted(cli.Interrupted):
  """Ctrl-C or SIGTERM: the state was checkpointed and the run can be resumed."""


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything derived once from the config that the loop needs."""
  cfg: ModelConfig
  config: ml_collections.ConfigDict
  layout: parallel.Layout  # the device mesh and the rules that place arrays on it
  seq_len: int
  train_tokens: np.ndarray
  val_tokens: np.ndarray
  bytes_per_token: float

  # The config's sections, typed, built on first use (setup() has already checked them).
  @functools.cached_property
  def optim(self) -> OptimConfig:
    return OptimConfig.from_config(self.config.optim)

  @functools.cached_property
  def train(self) -> TrainConfig:
    return TrainConfig.from_config(self.config.train)

  @functools.cached_property
  def data(self) -> DataConfig:
    return DataConfig.from_config(self.config.data)

  @property
  def mesh(self) -> jax.sharding.Mesh:
    return self.layout.mesh


# ---------------------------------------------------------------------------------------------
# Setup


def model_config(model: ml_collections.ConfigDict, init_from: str,
                 init_step: int | None = None) -> ModelConfig:
  """The run's ModelConfig; when fine-tuning, the architecture comes from the source."""
  cfg = ModelConfig.from_config(model)
  source = source_model_config(init_from, init_step)
  if source is None:
    return cfg
  # A field the config leaves at its default defers to the source; one it sets must agree.
  defaults = ModelConfig()
  conflicts = [
      f'{k}={getattr(cfg, k)!r} (source has {getattr(source, k)!r})' for k in cfg.to_dict()
      if k not in RUNTIME_FIELDS and getattr(cfg, k) not in (getattr(source, k),
                                                             getattr(defaults, k))
  ]
  if conflicts:
    raise ValueError(f'config.model contradicts the model of init_from={init_from}: '
                     f'{", ".join(conflicts)}; drop those overrides')
  return source.replace(**{k: getattr(cfg, k) for k in RUNTIME_FIELDS})


@functools.lru_cache(maxsize=1)
def _load_hf(path_or_name: str):
  """(ModelConfig, params) of a Hugging Face model, read once for both the config and params."""
  from gptjax.hf import from_hf
  return from_hf(path_or_name)


def source_model_config(init_from: str, init_step: int | None = None) -> ModelConfig | None:
  if init_from == 'scratch':
    return None
  if init_from.startswith('hf:'):
    return _load_hf(init_from[3:])[0]
  return ModelConfig.from_config(checkpoint.load_config(init_from, init_step)['model'])


def _check_vocab(cfg: ModelConfig, tokenizer: str, n_vocab: int) -> None:
  if n_vocab > cfg.vocab_size:
    raise ValueError(f'model.vocab_size={cfg.vocab_size} is smaller than the '
                     f"{tokenizer} tokenizer's {n_vocab} tokens")


def make_layout(config: ml_collections.ConfigDict) -> parallel.Layout:
  """config.sharding's mesh over every device of every process, and its rules."""
  sharding_config = ShardingConfig.from_config(config.sharding)
  return parallel.Layout.of(parallel.make_mesh(sharding_config.mesh), sharding_config)


def check_config(config: ml_collections.ConfigDict,
                 layout: parallel.Layout | None = None) -> ModelConfig:
  """Every section and their combinations checked, without touching data or compiling: a bad
  config is a ValueError naming the field (a sweep checks every run's config before the first
  starts; layout: the run's, else the config's on this process's devices). Returns the run's
  ModelConfig."""
  optim, train = OptimConfig.from_config(config.optim), TrainConfig.from_config(config.train)
  data_config = DataConfig.from_config(config.data)
  layout = layout or make_layout(config)
  cfg = model_config(config.model, train.init_from, train.init_step)
  _check_vocab(cfg, data_config.tokenizer, get_tokenizer_class(data_config.tokenizer).n_vocab)
  seq_len = train.seq_len or cfg.block_size
  if seq_len > cfg.block_size and cfg.position == 'learned':
    raise ValueError(f'train.seq_len={seq_len} is longer than model.block_size='
                     f'{cfg.block_size}, the last learned position')
  learning_rate_schedule(optim, train.steps)  # decay_steps resolved: the schedule is checked whole
  if train.init_state == 'full':
    branch_step = checkpoint.existing_step(train.init_from, train.init_step)
    if branch_step >= train.steps:
      raise ValueError(f'train.init_from={train.init_from} at step {branch_step} is already at or '
                       f'past train.steps={train.steps}: nothing to train')
  check_evals(config.get('evals'))
  parallel.check_batch_divides(train.batch_size, layout)
  if optim.grad_accum_steps != memory.AUTO and train.batch_size % optim.grad_accum_steps:
    raise ValueError(f'train.batch_size={train.batch_size} must be divisible by '
                     f'optim.grad_accum_steps={optim.grad_accum_steps}')
  return cfg


def setup(config: ml_collections.ConfigDict) -> Run:
  """Checks the config (check_config), then prepares the data: a bad config fails here, before
  any data is tokenized or anything compiled."""
  layout = make_layout(config)
  cfg = check_config(config, layout)
  train, data_config = TrainConfig.from_config(config.train), DataConfig.from_config(config.data)
  seq_len = train.seq_len or cfg.block_size
  prepared = data.prepare(data_config.corpus, data_config.tokenizer, data_config.data_dir,
                          val_percent=data_config.val_percent, max_bytes=data_config.max_bytes,
                          progress=jax.process_index() == 0)
  _check_vocab(cfg, data_config.tokenizer, data.read_meta(prepared)['n_vocab'])  # as prepared
  return Run(cfg, config, layout, seq_len, data.load_split(prepared, 'train'),
             data.load_split(prepared, 'val'), data.bytes_per_token(prepared, 'val'))


# ---------------------------------------------------------------------------------------------
# The step functions


def cross_entropy(cfg: ModelConfig, params, batch, rng=None, train: bool = False):
  """Mean next-token cross-entropy in float32."""
  return training_loss(cfg, params, batch, rng, train)[1]['loss']


def training_loss(cfg: ModelConfig, params, batch, rng=None, train: bool = False,
                  z_loss: float = 0.0):
  """(what the gradient is taken of, {'loss': mean cross-entropy, 'z_loss': its penalty}).

  z_loss > 0 adds PaLM's auxiliary z_loss * log(Z)^2 (Z the softmax normaliser of each
  position's logits), which keeps the output logits from drifting (Chowdhery et al. 2022, 1e-4).
  It is reported apart, so that 'loss' means cross-entropy in every run.
  """
  rngs = {'dropout': rng} if train and rng is not None else None
  logits = GPT(cfg).apply({'params': params}, batch['inputs'], train=train, rngs=rngs)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets']).mean()
  if not z_loss:
    return loss, {'loss': loss}
  penalty = z_loss * jnp.square(jax.nn.logsumexp(logits, axis=-1)).mean()
  return loss + penalty, {'loss': loss, 'z_loss': penalty}


def make_train_step(run: Run, optimizer: optax.GradientTransformation, state_sharding, *,
                    grad_accum_steps: int | None = None, remat: bool | None = None):
  """The jitted step; grad_accum_steps and remat default to the config's (the memory fit
  compiles the alternatives with others)."""
  # remat on/off from the memory fit; 'on' keeps the config's own policy where it has one.
  cfg = run.cfg if remat in (None, run.cfg.remat != 'none') else run.cfg.replace(remat=remat)
  n_micro = run.optim.grad_accum_steps if grad_accum_steps is None else grad_accum_steps
  schedule = learning_rate_schedule(run.optim, run.train.steps)
  dropout_key = jax.random.key(run.config.seed)

  def loss_fn(params, batch, rng):
    return training_loss(cfg, params, batch, rng, train=True, z_loss=run.train.z_loss)

  def train_step(state, batch):
    step = state['step']
    rng = jax.random.fold_in(dropout_key, step)
    with parallel.activations(run.layout):
      _, losses, grads = accumulate_gradients(loss_fn, state['params'], batch, n_micro, rng)
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {**losses, 'lr': schedule(step), **optimizer_metrics(grads, updates, state['params'])}
    return {'params': params, 'opt_state': opt_state, 'step': step + 1}, metrics

  return jax.jit(train_step, donate_argnums=0,
                 out_shardings=(state_sharding, run.layout.replicated),
                 compiler_options=cpu_compiler_options())


def make_eval_step(cfg: ModelConfig, n_micro: int = 1, layout: parallel.Layout | None = None):
  """Mean loss of a batch, computed n_micro rows-slices at a time (the training step's
  micro-batches): a whole batch's logits at once may not fit where its micro-batches do.
  layout: the run's, whose rules place the activations."""
  def eval_step(params, batch):
    micro_batches = jax.tree.map(lambda x: x.reshape(n_micro, x.shape[0] // n_micro, *x.shape[1:]),
                                 batch)
    with parallel.activations(layout):
      return jax.lax.map(lambda micro: cross_entropy(cfg, params, micro), micro_batches).mean()

  return jax.jit(eval_step, compiler_options=cpu_compiler_options())


def compile_train_step(run: Run, optimizer: optax.GradientTransformation, abstract,
                       state_sharding) -> memory.Fitted:
  """The train step compiled ahead of the first step, once it is known to fit in memory (with
  optim.grad_accum_steps='auto', the fewest micro-batches that do); memory.DoesNotFit says what
  would fit otherwise. The loop calls the compiled step itself: a jitted function would compile
  again on its first call."""
  batch = _abstract(_train_batch(run, 0))

  def compile_step(grad_accum_steps: int, remat: bool):
    step = make_train_step(run, optimizer, state_sharding, grad_accum_steps=grad_accum_steps,
                           remat=remat)
    return step.lower(abstract, batch).compile()

  return memory.fit_step(compile_step, grad_accum_steps=run.optim.grad_accum_steps,
                         remat=run.cfg.remat != 'none', batch_size=run.train.batch_size,
                         n_devices=run.mesh.size, say=_say)


def _say(message: str) -> None:
  """A line for the user before the MetricWriter is open (process 0 speaks for all)."""
  if jax.process_index() == 0:
    tqdm.write(message)


def _eval_batches(run: Run) -> list:
  return data.eval_batches(run.val_tokens, batch_size=run.train.batch_size // jax.process_count(),
                           seq_len=run.seq_len, n_batches=run.train.eval_batches,
                           process_index=jax.process_index(), process_count=jax.process_count())


def evaluate_loss(run: Run, eval_step, params) -> float:
  losses = [eval_step(params, _device_batch(run, batch)) for batch in _eval_batches(run)]
  return float(jnp.mean(jnp.stack(losses)))


def max_attention_logit(run: Run, params) -> float:
  """The largest attention logit of any layer on the first validation batch."""
  inputs = _device_batch(run, _eval_batches(run)[0])['inputs']
  return float(_max_attention_logit_fn(run.cfg)(params, inputs))


@functools.lru_cache(maxsize=None)
def _max_attention_logit_fn(cfg: ModelConfig):
  return jax.jit(lambda params, tokens: max_attention_logits(cfg, params, tokens).max())


def _abstract(tree):
  """The shapes, dtypes and shardings of a pytree of arrays: what a step is compiled for."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _device_batch(run: Run, batch) -> dict:
  inputs, targets = batch
  return parallel.global_batch({'inputs': inputs, 'targets': targets}, run.layout)


@contextlib.contextmanager
def _batches(run: Run, steps: range):
  """(step, its batch on the devices) for each step: made train.prefetch steps ahead on a
  background thread, or in the loop when that is 0."""
  if not run.train.prefetch:
    yield ((step, _train_batch(run, step)) for step in steps)
    return
  with Prefetcher(functools.partial(_train_batch, run), steps, run.train.prefetch) as batches:
    yield batches


def _train_batch(run: Run, step: int) -> dict:
  batch = data.get_batch(run.train_tokens, seed=run.data.seed, step=step,
                         batch_size=run.train.batch_size // jax.process_count(),
                         seq_len=run.seq_len, process_index=jax.process_index(),
                         process_count=jax.process_count())
  return _device_batch(run, batch)


# ---------------------------------------------------------------------------------------------
# State: fresh, resumed or fine-tuned


def _initial_params(run: Run, rng, shardings=None):
  """The params fine-tuning starts from (onto `shardings`, the run's params shardings, when
  read from a checkpoint: no device holds more than its shards)."""
  init_from = run.train.init_from
  if init_from == 'scratch':
    return init_params(run.cfg, rng)
  if init_from.startswith('hf:'):
    params = _load_hf(init_from[3:])[1]
    _load_hf.cache_clear()  # the run owns the params from here; do not keep a second copy
    return with_layers_layout(params, run.cfg.n_layers, run.cfg.scan_layers)

  def restore(r: Run):
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract_params(r.cfg), param_shardings(r))
    return checkpoint.restore_params(init_from, abstract, run.train.init_step)[0]

  source = source_model_config(init_from, run.train.init_step)
  return _in_run_layout(run, source.scan_layers, restore, shardings or param_shardings(run))


def _in_run_layout(run: Run, saved_scan_layers: bool, restore, shardings):
  """restore(r) reads a checkpoint onto the shapes and shardings Run r expects. One written in
  the other layers layout (model.scan_layers) is read in its own and converted, onto
  `shardings` (the run's)."""
  if saved_scan_layers == run.cfg.scan_layers:
    return restore(run)
  theirs = dataclasses.replace(run, cfg=run.cfg.replace(scan_layers=saved_scan_layers))
  converted = with_layers_layout(restore(theirs), run.cfg.n_layers, run.cfg.scan_layers)
  return jax.device_put(converted, shardings)


def initial_state(run: Run, optimizer, state_sharding, abstract=None):
  """The state training starts from: fresh, fine-tuned from init_from's params, or (init_state
  'full') init_from's whole state at init_step, onto `abstract`'s shapes and shardings."""
  def make(params):
    return {'params': params, 'opt_state': optimizer.init(params), 'step': jnp.zeros((), jnp.int32)}

  if run.train.init_state == 'full':
    source = source_model_config(run.train.init_from, run.train.init_step)
    return _in_run_layout(
        run, source.scan_layers,
        lambda r: checkpoint.restore_state(run.train.init_from,
                                           abstract_state(r, optimizer)[0], run.train.init_step),
        state_sharding)
  rng = jax.random.key(run.config.seed)
  if run.train.init_from == 'scratch':
    # Initialised inside one jit with the target shardings, so under FSDP no device ever holds
    # the whole model.
    return jax.jit(lambda key: make(init_params(run.cfg, key)), out_shardings=state_sharding)(rng)
  return jax.jit(make, out_shardings=state_sharding)(_initial_params(run, rng,
                                                                     state_sharding['params']))


def param_shardings(run: Run):
  """Each parameter's NamedSharding: its logical axes placed by the run's rules."""
  return parallel.state_shardings(abstract_params(run.cfg), run.layout, param_axes(run.cfg))


def abstract_state(run: Run, optimizer):
  """The state's shapes and shardings, without allocating it: the target of a restore and of
  the jitted initialisation."""
  params = abstract_params(run.cfg)
  shapes = {
      'params': params, 'opt_state': jax.eval_shape(optimizer.init, params),
      'step': jax.ShapeDtypeStruct((), jnp.int32)
  }
  shardings = parallel.state_shardings(shapes, run.layout, param_axes(run.cfg))
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                          shardings)
  return abstract, shardings


# ---------------------------------------------------------------------------------------------
# The loop


class _Throughput:
  """Tokens/s over the training steps since the last restart, excluding compilation, evaluation
  and checkpointing (the loop restarts it after each)."""
  def __init__(self, tokens_per_step: int):
    self.tokens_per_step = tokens_per_step
    self.restart()

  def restart(self):
    self.start, self.steps = time.perf_counter(), 0

  def count_step(self):
    self.steps += 1

  def tokens_per_sec(self) -> float | None:
    """None when no step was timed since the restart (e.g. only the compiling step ran)."""
    if not self.steps:
      return None
    return self.steps * self.tokens_per_step / (time.perf_counter() - self.start)


def _step_cost(run: Run, fitted: memory.Fitted, seconds_at_peak: float, steps_left: int) -> str:
  """What a step takes: its micro-batches, its memory, and a lower bound on its time (on a CPU
  a big model's first step can be minutes away, and nobody should wait blind)."""
  k = fitted.grad_accum_steps
  auto = ' (auto)' if run.optim.grad_accum_steps == memory.AUTO else ''
  parts = [
      f'{k} micro-batch{"es" if k > 1 else ""} of {run.train.batch_size // k} '
      f'sequences{auto}'
  ]
  if fitted.needed is not None:
    free = '' if fitted.free is None else f' of {fitted.free / memory.GiB:.2f} {fitted.free_what}'
    parts.append(f'{fitted.needed / memory.GiB:.2f} GiB{free} per device')
  bound = f'at least {tables.duration(seconds_at_peak)} at peak'
  if steps_left > 1:
    bound += f' ({tables.duration(seconds_at_peak * steps_left)} for {steps_left:,} steps)'
  return f'step: {", ".join(parts)}, {bound}'


def _agreed_stop(stop: cli.StopSignals, log_now: bool) -> tuple[str, str] | None:
  """(reason, signal name) to stop after this step, if any, agreed by every process.

  All processes must take part in the same collective checkpoint save, so with several
  processes the signals are exchanged at log steps (host syncs anyway) and all stop there, with
  the exit code of the signal that one of them received.
  """
  if jax.process_count() == 1:
    return (stop.signal_name, stop.signal_name) if stop.signal_name else None
  if not log_now:
    return None
  from jax.experimental import multihost_utils
  own = signal.Signals[stop.signal_name] if stop.signal_name else 0
  received = multihost_utils.process_allgather(np.int32(own))
  if not received.any():
    return None
  name = signal.Signals(int(received.max())).name
  return stop.signal_name or 'stop requested by another process', name


def _check_finite(pending: list[tuple[int, dict]]) -> None:
  """`pending`: (step, metrics) with steps numbered as in metrics.jsonl and the checkpoints.

  The gradient norm is checked too: a finite loss with non-finite gradients has already put
  NaN into the parameters that step returns.
  """
  for step, metrics in pending:
    for name in ('loss', 'grad_norm'):
      value = float(metrics[name])
      if not math.isfinite(value):
        raise TrainingDiverged(
            f'{name} is {value} at step {step}; the last good checkpoint is kept (lower '
            'optim.lr, raise optim.warmup_steps, or set optim.grad_clip)')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
  """Trains (resuming from the workdir's latest checkpoint if any); returns the last metrics."""
  # One run per workdir: process 0 speaks for a multi-process run (its processes share it).
  lock = workdir_lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with cli.STOP.watching() as stop, lock:
    return _train_and_evaluate(config, Path(workdir), stop)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: Path,
                        stop: cli.StopSignals) -> dict[str, float]:
  run = setup(config)
  config_dict = config.to_dict()
  config_dict['model'] = run.cfg.to_dict()  # the resolved architecture, for sample.py and resume
  optimizer = make_optimizer(run.optim, run.train.steps, run.cfg)
  # The evals' data is read now: a missing file stops the run before anything compiles.
  evals = InLoopEvals(config.get('evals'), run.cfg, get_tokenizer(run.data.tokenizer),
                      run.train.eval_every, enabled=jax.process_index() == 0)
  abstract, state_sharding = abstract_state(run, optimizer)
  # Before any state is allocated: what is free now is what the step can have.
  fitted = compile_train_step(run, optimizer, abstract, state_sharding)
  train_step = fitted.compiled
  eval_step = make_eval_step(run.cfg, fitted.grad_accum_steps, run.layout)
  train_cfg = run.train

  # From here a signal only sets a flag that the loop reads after each step (cli.StopSignals).
  with checkpoint.writing(workdir, train_cfg.keep_checkpoints) as mngr, \
       MetricWriter(workdir, enabled=jax.process_index() == 0) as writer, \
       stop.deferring():
    state, start = _starting_state(run, mngr, workdir, optimizer, abstract, state_sharding,
                                   config_dict['model'])
    if stop.signal_name:  # it came before the handlers could defer it, and was lost
      raise TrainingInterrupted(
          f'{stop.signal_name} before step {start + 1}: nothing new to '
          'save; rerun the same command to resume', stop.signal_name)
    if start >= train_cfg.steps:
      return {'step': start, 'val_loss': evaluate_loss(run, eval_step, state['params'])}

    mfu_per_token_per_sec = _announce(writer, run, fitted, state['params'], start)
    pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet checked on the host
    last = {}
    meter = _Throughput(train_cfg.batch_size * run.seq_len)
    # A context manager, so that an error message is not printed onto the bar's line.
    with writer.progress(total=train_cfg.steps, initial=start) as progress, \
         _batches(run, range(start, train_cfg.steps)) as batches:
      for step, batch in batches:
        state, metrics = train_step(state, batch)
        done = step + 1
        pending.append((done, metrics))
        if step == start:  # this step compiled the program: keep that out of tokens/s
          jax.block_until_ready(metrics)
          meter.restart()
        else:
          meter.count_step()
        log_now = done % train_cfg.log_every == 0 or done == train_cfg.steps
        if log_now:
          _check_finite(pending)
          pending.clear()
          last = _log_train_metrics(writer, progress, meter, metrics, done, mfu_per_token_per_sec)
        if done % train_cfg.eval_every == 0 or done == train_cfg.steps:
          evaluated = _validation_metrics(run, eval_step, state['params'])
          last.update(evaluated)
          writer.write(done, evaluated)
          meter.restart()
        evals.start(done, state['params'], evals.due(done, train_cfg.steps))
        _log_evals(writer, evals.finished())
        progress.update(1)
        stop_reason = _agreed_stop(stop, log_now)
        if done % train_cfg.ckpt_every == 0 or done == train_cfg.steps or stop_reason:
          _check_finite(pending)  # a NaN state must never become the latest checkpoint
          pending.clear()
          # Written in the background; the manager's exit waits for it (Ctrl-C, SIGTERM, the end).
          checkpoint.save(mngr, done, state, config_dict, wait=False)
          meter.restart()
        if stop_reason:
          reason, signal_name = stop_reason
          dropped = evals.abandon()
          if dropped:
            writer.info(f'not waiting for the evals of step(s) {dropped}: they are not logged')
          raise TrainingInterrupted(
              f'{reason} at step {done}: checkpoint saved in {workdir}; '
              'rerun the same command to resume', signal_name)
    last.update(_log_evals(writer, evals.finished(wait=True)))
  return last


def _starting_state(run: Run, mngr, workdir: Path, optimizer, abstract, state_sharding,
                    model: dict):
  """(state, its step): the workdir's latest checkpoint, restored onto the run's shardings and
  layers layout; else the fresh or fine-tuned initial state."""
  start = mngr.latest_step()
  if start is None:
    state = initial_state(run, optimizer, state_sharding, abstract)
    return state, int(state['step'])
  # Read through ModelConfig, so that a value the first release spelled otherwise (remat=False
  # for 'none') is the same value; the layers layout is converted on reading.
  saved = ModelConfig.from_config(checkpoint.load_config(workdir, start)['model'])
  checkpoint.check_same_model(
      saved.replace(scan_layers=run.cfg.scan_layers).to_dict(), model,
      f'the checkpoint in {workdir}')
  state = _in_run_layout(run, saved.scan_layers,
                         lambda r: checkpoint.restore(mngr, start,
                                                      abstract_state(r, optimizer)[0]),
                         state_sharding)
  logging.info('resumed from step %d of %s', start, workdir)
  return state, start


def _announce(writer: MetricWriter, run: Run, fitted: memory.Fitted, params, start: int) -> float:
  """Writes what the run is about to do and what a step costs -> the MFU of one token per
  second (the model's FLOPs per token over the devices' peak)."""
  tokens_per_step = run.train.batch_size * run.seq_len
  flops_per_token = flops.flops_per_token(run.cfg, run.seq_len)
  peak, peak_source = flops.device_peak_flops()
  writer.info(f'{flops.count_params(params):,} params, {flops_per_token:.3g} FLOPs/token, peak '
              f'{peak:.3g} FLOP/s ({peak_source}), {jax.device_count()} devices, steps '
              f'{start}..{run.train.steps}')
  writer.info(
      _step_cost(run, fitted, flops_per_token * tokens_per_step / peak, run.train.steps - start))
  return flops_per_token / peak


def _log_train_metrics(writer: MetricWriter, progress, meter: _Throughput, metrics, done: int,
                       mfu_per_token_per_sec: float) -> dict[str, float]:
  """Writes a log step's training metrics, with tokens/s and MFU since the meter's restart."""
  last = {k: float(v) for k, v in metrics.items()}
  last.update(step=done, tokens=done * meter.tokens_per_step)
  tokens_per_sec = meter.tokens_per_sec()
  if tokens_per_sec is not None:
    last.update(tokens_per_sec=tokens_per_sec, mfu=mfu_per_token_per_sec * tokens_per_sec)
    progress.set_postfix(loss=f'{last["loss"]:.3f}', tok_s=f'{tokens_per_sec:,.0f}')
  writer.write(done, last)
  meter.restart()
  return last


def _validation_metrics(run: Run, eval_step, params) -> dict[str, float]:
  """The validation loss (nats per token and bits per byte), and the largest attention logit
  where train.log_attention_logits asks for it."""
  loss = evaluate_loss(run, eval_step, params)
  metrics = {'val_loss': loss, 'val_bpb': bits_per_byte(loss, run.bytes_per_token)}
  if run.train.log_attention_logits:
    metrics['max_attn_logit'] = max_attention_logit(run, params)
  return metrics


def _log_evals(writer: MetricWriter, results: list[tuple[int, dict]]) -> dict[str, float]:
  """Writes each finished eval's metrics at the step it evaluated -> the last ones written."""
  latest = {}
  for step, metrics in results:
    writer.write(step, metrics)
    writer.info(f'step {step}: ' + ', '.join(f'{k} {v:.4g}' for k, v in metrics.items()))
    latest.update(metrics)
  return latest


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
  """Nats per token as bits per byte of the text: comparable across tokenizers, which nats per
  token are not (a token of a BPE holds several bytes, one of 'bytes' one)."""
  return loss / math.log(2) / bytes_per_token


def perplexity(loss: float) -> float:
  """exp(loss), inf where that overflows a float (a loss past ~709 nats: an untrained or broken
  model is still reported, not an OverflowError)."""
  try:
    return math.exp(loss)
  except OverflowError:
    return math.inf


def evaluate(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
  """Loss, perplexity and bits-per-byte on the val split, with no training step taken.

  The model is the workdir's latest checkpoint, or else config.train.init_from (a workdir or
  'hf:PATH_OR_NAME').
  """
  if checkpoint.latest_step(workdir) is not None:
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.update(init_from=str(workdir), init_step=None, init_state='params')
  elif config.train.init_from == 'scratch':
    raise checkpoint.CheckpointError(f'nothing to evaluate: {workdir} has no checkpoint and '
                                     'train.init_from is scratch (set it to a workdir or hf:PATH)')
  run = setup(config)
  params = jax.device_put(_initial_params(run, jax.random.key(0)), param_shardings(run))
  n_micro = run.optim.grad_accum_steps
  if n_micro == memory.AUTO:
    first_batch = _device_batch(run, next(iter(_eval_batches(run))))
    n_micro = memory.fit_step(
        lambda k, _: make_eval_step(run.cfg, k, run.layout).lower(params, _abstract(
            first_batch)).compile(), grad_accum_steps=memory.AUTO, remat=run.cfg.remat != 'none',
        batch_size=run.train.batch_size, n_devices=run.mesh.size).grad_accum_steps
  loss = evaluate_loss(run, make_eval_step(run.cfg, n_micro, run.layout), params)
  return {
      'val_loss': loss, 'perplexity': perplexity(loss),
      'bits_per_byte': bits_per_byte(loss, run.bytes_per_token)
  }
