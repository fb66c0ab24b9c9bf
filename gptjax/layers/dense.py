"""The one dense layer every projection is made of.

Kernels keep their semantic axes apart instead of flattening them: a query projection is
[C, H, D], not [C, H*D], and the attention output [H, D, C]. A tensor-parallel mesh can then
split heads (or the MLP's hidden width) without cutting through one head's dimensions. Each
kernel axis carries a logical name from AXIS_NAMES (flax's logical partitioning metadata), so a
rules table can later map names to mesh axes; `gptjax.model.param_axes` reads them back.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import ModelConfig
from gptjax.parametrization import hidden_init_std

# The vocabulary of logical axis names; None marks an axis no rule will ever shard.
AXIS_NAMES = ('batch', 'sequence', 'embed', 'heads', 'kv_heads', 'head_dim', 'mlp', 'vocab',
              'expert', 'layers')


def residual_std(cfg: ModelConfig) -> float:
  """GPT-2's init for projections that write into the residual stream: std / sqrt(2 * depth),
  so the stream's variance does not grow with the number of blocks (and, as every hidden
  matrix, scaled down with width under μP)."""
  return hidden_init_std(cfg) / (2.0 * cfg.n_layers)**0.5


def normal_init(std: float, axes: Sequence[str | None]):
  """N(0, std) initializer that also records the parameter's logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.normal(std), tuple(axes))


class Dense(nn.Module):
  """x [..., *contracted] -> [..., *features] through a kernel [*contracted, *features].

  features: the output axes' sizes. axes: logical names of the kernel's axes, contracted ones
  first; the bias [*features] takes the output names. n_contract: how many trailing axes of x
  are summed over (2 for the attention output [B, T, H, D] @ [H, D, C]).
  """
  features: tuple[int, ...]
  axes: tuple[str | None, ...]
  std: float
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  n_contract: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    contracted = x.shape[-self.n_contract:]
    if len(self.axes) != self.n_contract + len(self.features):
      raise ValueError(f'{self.name}: {len(self.axes)} axis names {self.axes} for a kernel of '
                       f'{self.n_contract + len(self.features)} axes')
    kernel = self.param('kernel', normal_init(self.std, self.axes), (*contracted, *self.features),
                        self.param_dtype)
    x_axes = tuple(range(x.ndim - self.n_contract, x.ndim))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                            ((x_axes, tuple(range(self.n_contract))), ((), ())))
    if self.use_bias:
      bias = self.param(
          'bias', nn.with_logical_partitioning(nn.initializers.zeros, self.axes[self.n_contract:]),
          self.features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def dense(cfg: ModelConfig, name: str, features: int | tuple[int, ...], axes: tuple[str | None,
                                                                                    ...], *,
          std: float | None = None, use_bias: bool | None = None, n_contract: int = 1) -> Dense:
  """A Dense with the model's dtypes, init std (default: a hidden matrix's, cfg.init_std under
  SP) and biases (default cfg.use_bias): the arguments every projection shares, written once."""
  features = (features,) if isinstance(features, int) else tuple(features)
  return Dense(features=features, axes=axes, n_contract=n_contract,
               std=hidden_init_std(cfg) if std is None else std,
               use_bias=cfg.use_bias if use_bias is None else use_bias, dtype=cfg.compute_dtype,
               param_dtype=cfg.params_dtype, name=name)
