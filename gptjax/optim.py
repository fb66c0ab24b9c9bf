"""Optimizer: learning-rate schedule, AdamW with a weight-decay mask, gradient accumulation.

Its settings are an `OptimConfig` (gptjax.config), validated before anything is built; the
functions here also take `config.optim` itself and type it on the way in.

Step counting has one meaning everywhere: one train step == one optimizer update, and the schedule
is a function of that count. Gradient accumulation therefore happens *inside* the jitted train step
(`accumulate_gradients` scans over micro-batches) rather than with `optax.MultiSteps`, whose inner
counter advances once per micro-batch and would make "step" mean two things.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from gptjax.config import ModelConfig, OptimConfig, is_int
from gptjax.model import param_path
from gptjax.parametrization import learning_rate_multipliers

# How weight decay treats a parameter, by its name (the last part of its path): matrices are
# decayed, vectors (offsets and gains rather than feature directions) never; embedding tables
# follow OptimConfig.decay_embeddings.
_MATRICES = ('kernel', 'lm_head')
_VECTORS = ('bias', 'scale')


def _resolved(optim: OptimConfig | Mapping[str, Any], total_steps: int | None) -> OptimConfig:
  """The typed config (built from `config.optim` if given that) with decay_steps resolved."""
  if not isinstance(optim, OptimConfig):
    optim = OptimConfig.from_config(optim)
  if optim.decay_steps is not None:
    return optim
  if total_steps is None:
    raise ValueError('optim.decay_steps=None means "decay over the whole run", '
                     'so total_steps must be given')
  try:
    return dataclasses.replace(optim, decay_steps=total_steps)  # validated again: >= warmup
  except ValueError as error:
    raise ValueError(
        f"{error} (optim.decay_steps=None means the run's {total_steps} steps)") from None


def learning_rate_schedule(optim: OptimConfig | Mapping[str, Any],
                           total_steps: int | None = None) -> optax.Schedule:
  """Step -> learning rate: linear warmup to `lr`, then cosine/linear decay, constant, or 'wsd'.

  Warmup follows nanoGPT: step s < warmup_steps gets lr * (s + 1) / warmup_steps, so the first
  update already moves the weights and step warmup_steps - 1 is at the peak. The decay runs from
  step decay_start (lr) to step decay_steps (lr * min_lr_ratio) and stays there afterwards;
  decay_start is warmup's end, or under 'wsd' (warmup-stable-decay) the end of the stable phase,
  decay_steps - round(decay_fraction * decay_steps), from which the decay is linear.
  """
  c = _resolved(optim, total_steps)
  peak, floor = c.lr, c.lr * c.min_lr_ratio
  decay_length = max(c.decay_steps - c.decay_start, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warmup = peak * (step + 1) / max(c.warmup_steps, 1)
    progress = jnp.clip((step - c.decay_start) / decay_length, 0.0, 1.0)
    if c.schedule == 'cosine':
      decayed = floor + (peak - floor) * 0.5 * (1 + jnp.cos(math.pi * progress))
    elif c.schedule in ('linear', 'wsd'):
      decayed = peak + (floor - peak) * progress
    else:
      decayed = jnp.full_like(step, peak)
    return jnp.where(step < c.warmup_steps, warmup, decayed)

  return schedule


def decay_mask(params: Any, decay_embeddings: bool = True) -> Any:
  """Pytree of bools, True where AdamW applies weight decay; decided by each parameter's name.

  Decayed: every matrix (Dense kernels, whatever their number of axes, and the untied lm_head).
  Never decayed: vectors (biases, norm scales and biases), which set offsets and gains rather
  than feature directions. Embedding tables (wte, wpe) follow `decay_embeddings`: True matches
  nanoGPT, which decays every 2-D parameter; with tied embeddings wte is also the LM head matrix.
  A parameter with another name is an error, not a guess.
  """
  def decayed(key_path, _) -> bool:
    path = param_path(key_path)
    name = path.rsplit('/', 1)[-1]
    if name == 'embedding':
      return decay_embeddings
    if name in _MATRICES:
      return True
    if name in _VECTORS:
      return False
    raise ValueError(f'no weight-decay rule for parameter {path!r}: its name must be one of '
                     f'{", ".join(("embedding", *_MATRICES, *_VECTORS))}')

  return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(optim: OptimConfig | Mapping[str, Any], total_steps: int | None = None,
                   model: ModelConfig | None = None) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (decoupled, masked weight decay) on the schedule, then the
  model's per-group learning rates (μP's lr / width multiplier for hidden matrices; nothing under
  SP or when `model` is None).

  The schedule is evaluated at the optimizer's update count, which is the train step count since
  gradient accumulation happens before the optimizer (see `accumulate_gradients`).
  """
  c = _resolved(optim, total_steps)
  clip = optax.clip_by_global_norm(c.grad_clip) if c.grad_clip else optax.identity()
  adamw = optax.adamw(learning_rate_schedule(c), b1=c.b1, b2=c.b2, eps=c.eps,
                      weight_decay=c.weight_decay,
                      mask=lambda params: decay_mask(params, c.decay_embeddings))
  if model is None or model.parametrization == 'sp':
    return optax.chain(clip, adamw)  # the state SP checkpoints have always had
  return optax.chain(clip, adamw, learning_rate_multipliers(model))


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
  if not is_int(n_micro) or n_micro < 1:
    raise ValueError(f'n_micro={n_micro!r} must be an integer >= 1')
  sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(sizes) != 1:
    raise ValueError(f'batch arrays disagree on the batch size (leading dims {sorted(sizes)})')
  (batch_size,) = sizes
  if batch_size % n_micro:
    raise ValueError(f'batch size {batch_size} is not divisible by n_micro={n_micro} '
                     '(grad_accum_steps must divide the batch size)')
  micro_batches = jax.tree.map(lambda x: x.reshape(n_micro, batch_size // n_micro, *x.shape[1:]),
                               batch)
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
      'update_param_ratio': update_norm / jnp.maximum(param_norm,
                                                      jnp.finfo(jnp.float32).tiny),
  }
