"""The one dense layer every projection is made of.

Kernels keep their semantic axes apart instead of flattening them: a query projection is
[C, H, D], not [C, H*D], and the attention output [H, D, C]. A tensor-parallel mesh can then
split heads (or the MLP's hidden width) without cutting through one head's dimensions. Each
kernel axis carries a logical name from AXIS_NAMES (flax's logical partitioning metadata), which
config.sharding.rules maps onto the mesh (`gptjax.model.param_axes` reads them back), and so does
the output: [batch, sequence, *the output axes' names], constrained to the same rules when a
sharded step is traced (gptjax.parallel.constrain).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax import parallel
from gptjax.config import AXIS_NAMES, ModelConfig
from gptjax.parametrization import hidden_init_std

__all__ = ['AXIS_NAMES', 'Dense', 'Embed', 'dense', 'normal_init', 'residual_std']


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
    if y.ndim == 2 + len(self.features):  # [B, T, *features]: a layer's activations
      y = parallel.constrain(y, ('batch', 'sequence', *self.axes[self.n_contract:]))
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


class Embed(nn.Embed):
  """nn.Embed whose table is gathered along its width before the lookup, as FSDP gathers every
  weight where it is used: XLA cannot turn a row gather from a table split along its width into
  batch-split rows without first replicating the table everywhere (it warns of an 'involuntary
  full rematerialization'). row_axis: the logical name of the table's rows ('vocab', or None)."""
  row_axis: str | None = None

  def __call__(self, inputs: jax.Array) -> jax.Array:
    table = parallel.constrain(self.embedding, (self.row_axis, None))
    return jnp.take(table.astype(self.dtype), inputs, axis=0)
