"""Optimizer: learning-rate schedule, AdamW with a weight-decay mask, gradient accumulation.

Step counting has one meaning everywhere: one train step == one optimizer update, and the schedule
is a function of that count. Gradient accumulation therefore happens *inside* the jitted train step
(`accumulate_gradients` scans over micro-batches) rather than with `optax.MultiSteps`, whose inner
counter advances once per micro-batch and would make "step" mean two things.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ('cosine', 'linear', 'constant')


def default_optim_config() -> ml_collections.ConfigDict:
  """nanoGPT's GPT-2 (124M) recipe. Small configs override warmup_steps and decay_steps."""
  config = ml_collections.ConfigDict()
  config.lr = 6e-4  # peak learning rate, reached at the end of warmup
  config.min_lr_ratio = 0.1  # the schedule decays to lr * min_lr_ratio
  config.warmup_steps = 2000
  # Step at which the decay reaches min lr (counted from step 0, warmup included); None: the run's
  # total number of steps.
  config.decay_steps = ml_collections.config_dict.placeholder(int)
  config.schedule = 'cosine'
  config.b1 = 0.9
  config.b2 = 0.95
  config.eps = 1e-8
  config.weight_decay = 0.1
  # nanoGPT decays every matrix, the embedding tables included (wte is also the tied LM head).
  config.decay_embeddings = True
  config.grad_clip = 1.0  # max global gradient norm; 0 or None: no clipping
  config.grad_accum_steps = 1  # micro-batches per optimizer step
  return config


_FIELDS = tuple(default_optim_config().keys())


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def validate_optim_config(config: Any) -> None:
  """Raises ValueError naming the first bad field of `config.optim`."""
  as_dict = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  for key in as_dict:
    if key not in _FIELDS:
      close = difflib.get_close_matches(key, _FIELDS, n=1)
      hint = f'; did you mean {close[0]!r}?' if close else f'; known fields: {", ".join(_FIELDS)}'
      raise ValueError(f'unknown optim config field {key!r}{hint}')
  c = {**default_optim_config().to_dict(), **as_dict}
  checks = [
      ('lr', _number(c['lr']) and c['lr'] > 0, 'must be > 0'),
      ('min_lr_ratio', _number(c['min_lr_ratio']) and 0 <= c['min_lr_ratio'] <= 1,
       'must be in [0, 1]'),
      ('warmup_steps', _int(c['warmup_steps']) and c['warmup_steps'] >= 0,
       'must be an integer >= 0'),
      ('decay_steps', c['decay_steps'] is None or (_int(c['decay_steps']) and c['decay_steps'] > 0),
       'must be None or a positive integer'),
      ('schedule', c['schedule'] in SCHEDULES, f'is not one of {", ".join(map(repr, SCHEDULES))}'),
      ('b1', _number(c['b1']) and 0 <= c['b1'] < 1, 'must be in [0, 1)'),
      ('b2', _number(c['b2']) and 0 <= c['b2'] < 1, 'must be in [0, 1)'),
      ('eps', _number(c['eps']) and c['eps'] > 0, 'must be > 0'),
      ('weight_decay', _number(c['weight_decay']) and c['weight_decay'] >= 0, 'must be >= 0'),
      ('decay_embeddings', isinstance(c['decay_embeddings'], bool), 'must be True or False'),
      ('grad_clip', c['grad_clip'] is None or (_number(c['grad_clip']) and c['grad_clip'] >= 0),
       'must be None or >= 0 (0 and None disable clipping)'),
      ('grad_accum_steps', _int(c['grad_accum_steps']) and c['grad_accum_steps'] >= 1,
       'must be an integer >= 1'),
  ]
  for field, ok, requirement in checks:
    if not ok:
      raise ValueError(f'optim.{field}={c[field]!r} {requirement}')


def _resolved(config: Any, total_steps: int | None) -> ml_collections.ConfigDict:
  """The validated config with defaults filled in and decay_steps resolved."""
  validate_optim_config(config)
  c = default_optim_config()
  c.update(config.to_dict() if hasattr(config, 'to_dict') else dict(config))
  if c.decay_steps is None:
    if total_steps is None:
      raise ValueError('optim.decay_steps=None means "decay over the whole run", '
                       'so total_steps must be given')
    c.decay_steps = total_steps
  if c.schedule != 'constant' and c.decay_steps < c.warmup_steps:
    raise ValueError(f'optim.decay_steps={c.decay_steps} must be >= '
                     f'optim.warmup_steps={c.warmup_steps} (decay starts when warmup ends)')
  return c


def learning_rate_schedule(config: Any, total_steps: int | None = None) -> optax.Schedule:
  """Step -> learning rate: linear warmup to `lr`, then cosine/linear decay or constant.

  Warmup follows nanoGPT: step s < warmup_steps gets lr * (s + 1) / warmup_steps, so the first
  update already moves the weights and step warmup_steps - 1 is at the peak. The decay runs from
  step warmup_steps (lr) to step decay_steps (lr * min_lr_ratio) and stays there afterwards.
  """
  c = _resolved(config, total_steps)
  peak, floor = c.lr, c.lr * c.min_lr_ratio
  decay_length = max(c.decay_steps - c.warmup_steps, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warmup = peak * (step + 1) / max(c.warmup_steps, 1)
    progress = jnp.clip((step - c.warmup_steps) / decay_length, 0.0, 1.0)
    if c.schedule == 'cosine':
      decayed = floor + (peak - floor) * 0.5 * (1 + jnp.cos(math.pi * progress))
    elif c.schedule == 'linear':
      decayed = peak + (floor - peak) * progress
    else:
      decayed = jnp.full_like(step, peak)
    return jnp.where(step < c.warmup_steps, warmup, decayed)

  return schedule


def decay_mask(params: Any, decay_embeddings: bool = True) -> Any:
  """Pytree of bools, True where AdamW applies weight decay.

  Decayed: every matrix (Dense kernels, the untied lm_head). Never decayed: vectors (biases, norm
  scales and biases), which set offsets and gains rather than feature directions. Embedding tables
  (wte, wpe) follow `decay_embeddings`: True matches nanoGPT, which decays every 2-D parameter;
  with tied embeddings wte is also the LM head matrix.
  """

  def decayed(path, leaf):
    if getattr(path[-1], 'key', None) == 'embedding':
      return decay_embeddings
    return leaf.ndim >= 2

  return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(config: Any, total_steps: int | None = None) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (decoupled, masked weight decay) on the schedule.

  The schedule is evaluated at the optimizer's update count, which is the train step count since
  gradient accumulation happens before the optimizer (see `accumulate_gradients`).
  """
  c = _resolved(config, total_steps)
  clip = optax.clip_by_global_norm(c.grad_clip) if c.grad_clip else optax.identity()
  adamw = optax.adamw(learning_rate_schedule(c), b1=c.b1, b2=c.b2, eps=c.eps,
                      weight_decay=c.weight_decay,
                      mask=lambda params: decay_mask(params, c.decay_embeddings))
  return optax.chain(clip, adamw)


def accumulate_gradients(loss_fn: Callable, params: Any, batch: Any, n_micro: int,
                         rng: jax.Array) -> tuple[jax.Array, Any, Any]:
  """Mean loss, aux and gradients over `n_micro` equal slices of `batch`, one at a time.

  loss_fn(params, micro_batch, rng) -> (loss, aux). Every array in `batch` has leading dim B; it
  is split into [n_micro, B / n_micro, ...] and lax.scan computes one micro-batch's gradients at a
  time, so peak activation memory is that of B / n_micro rows. Micro-batch i gets
  fold_in(rng, i). When loss_fn returns the mean over equally weighted rows, the mean over
  micro-batches is the loss of the whole batch, so k slices of B / k equal one batch of B up to
  float rounding. aux is averaged over micro-batches. n_micro must be static under jit.
  """
  if not _int(n_micro) or n_micro < 1:
    raise ValueError(f'n_micro={n_micro!r} must be an integer >= 1')
  sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(sizes) != 1:
    raise ValueError(f'batch arrays disagree on the batch size (leading dims {sorted(sizes)})')
  (batch_size,) = sizes
  if batch_size % n_micro:
    raise ValueError(f'batch size {batch_size} is not divisible by n_micro={n_micro} '
                     '(grad_accum_steps must divide the batch size)')
  micro_batches = jax.tree.map(
      lambda x: x.reshape(n_micro, batch_size // n_micro, *x.shape[1:]), batch)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one_micro_batch(grad_sum, inputs):
    i, micro_batch = inputs
    (loss, aux), grads = grad_fn(params, micro_batch, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, grad_sum, grads), (loss, aux)

  zeros = jax.tree.map(jnp.zeros_like, params)
  grad_sum, (losses, auxes) = jax.lax.scan(one_micro_batch, zeros,
                                           (jnp.arange(n_micro), micro_batches))
  grads = jax.tree.map(lambda g: g / n_micro, grad_sum)
  return losses.mean(), jax.tree.map(lambda a: a.mean(axis=0), auxes), grads


def _global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def optimizer_metrics(grads: Any, updates: Any, params: Any) -> dict[str, jax.Array]:
  """Norms for the training log (float32 scalars). `params`: the values the updates apply to.

  grad_norm is before clipping; update_param_ratio (~1e-3 is typical for AdamW) shows whether the
  learning rate is too large or too small for the weights' scale.
  """
  update_norm, param_norm = _global_norm(updates), _global_norm(params)
  return {
      'grad_norm': _global_norm(grads),
      'update_norm': update_norm,
      'param_norm': param_norm,
      'update_param_ratio': update_norm / jnp.maximum(param_norm, jnp.finfo(jnp.float32).tiny),
  }
