"""How the model's init, attention, logits and learning rates scale with its width.

'sp' is GPT-2's standard parametrization: every weight N(0, init_std) (residual projections
init_std / sqrt(2 * n_layers)), attention logits q.k / sqrt(head_dim), one learning rate. Under it
the best learning rate shrinks as the model widens, so a sweep at a small width says little
about a large run.

'mup' is the maximal-update parametrization (Yang et al. 2021, "Tensor Programs V: Tuning Large
Neural Networks via Zero-Shot Hyperparameter Transfer"), in the form with an output multiplier
(their Table 8 / the `mup` package's MuReadout). With m = d_model / mup_base_width:

  hidden matrices (every Dense kernel: both of its widths grow with d_model)
      init std init_std / sqrt(m) (variance ~ 1 / fan_in), Adam learning rate lr / m;
  embeddings and the LM head (one width grows, the vocabulary does not), biases, norm gains
      init and learning rate unchanged;
  output logits multiplied by α / m, which is what lets the head keep an unscaled init and lr
      (α, mup_output_multiplier, is 1 unless tuned at the base width like the learning rate);
  attention logits q.k * sqrt(base_head_dim) / head_dim: 1 / head_dim as the paper derives
      (q and k become correlated as they train, so their dot product grows like head_dim, not
      its square root), with the constant chosen so that it equals 1 / sqrt(head_dim) at the
      base width. The base model has the same n_heads, so base_head_dim = head_dim / m, unless
      mup_base_head_dim names it (models that widen by adding heads of one size: then the
      attention is SP's at every width).

At d_model == mup_base_width every rule is the identity, so a μP model at its base width is the
SP model, weight for weight and logit for logit (tested); the widths grow from there with the
hyperparameters found at the base. Weight decay rides on the learning rate (optax's AdamW decays
by lr * weight_decay), so it scales with it, as in the `mup` package's MuAdamW.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import optax

from gptjax.config import ModelConfig


def width_multiplier(cfg: ModelConfig) -> float:
  """m = d_model / mup_base_width under μP; 1 under SP."""
  return cfg.d_model / cfg.mup_base_width if cfg.parametrization == 'mup' else 1.0


def hidden_init_std(cfg: ModelConfig) -> float:
  """The init std of a hidden matrix (every Dense kernel that does not write the residual)."""
  return cfg.init_std / math.sqrt(width_multiplier(cfg))


def attention_scale(cfg: ModelConfig) -> float | None:
  """What q.k is multiplied by; None for SP's 1 / sqrt(head_dim), which the kernels compute as
  they always have (a division), so SP models keep their numbers to the last bit;
  1 / sqrt(attention_scale_dim) where that is set (Gemma 2's query_pre_attn_scalar)."""
  if cfg.parametrization == 'sp':
    return None if cfg.attention_scale_dim is None else cfg.attention_scale_dim**-0.5
  base_head_dim = cfg.mup_base_head_dim or cfg.head_dim / width_multiplier(cfg)
  return math.sqrt(base_head_dim) / cfg.head_dim


def output_multiplier(cfg: ModelConfig) -> float:
  """What the LM head's logits are multiplied by: α / m under μP (α = mup_output_multiplier, a
  constant tuned at the base width), 1 under SP."""
  if cfg.parametrization == 'sp':
    return 1.0
  return cfg.mup_output_multiplier / width_multiplier(cfg)


def is_hidden_matrix(name: str) -> bool:
  """Whether a parameter named `name` (the last part of its path, 'kernel' for
  'blocks_0/mlp/fc/kernel') is a hidden matrix, whose Adam learning rate μP divides by m. Dense
  kernels are; embeddings, the untied lm_head (a readout: its fan-out is the vocabulary) and
  vectors are not."""
  return name == 'kernel'


def learning_rate_multipliers(cfg: ModelConfig) -> optax.GradientTransformation:
  """Scales the optimizer's updates per parameter group, as per-group learning rates would:
  hidden matrices by 1 / m, the rest by 1. Chained after AdamW, whose update is
  lr * (adam direction + weight_decay * param), this is AdamW with lr / m for the hidden group.
  Under SP: the identity (and no extra optimizer state, so SP checkpoints are unchanged)."""
  if cfg.parametrization == 'sp':
    return optax.identity()

  def label(key_path, _) -> str:
    return 'hidden' if is_hidden_matrix(str(getattr(key_path[-1], 'key', ''))) else 'unscaled'

  def labels(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(label, params)

  return optax.multi_transform(
      {'hidden': optax.scale(1.0 / width_multiplier(cfg)), 'unscaled': optax.identity()}, labels)
