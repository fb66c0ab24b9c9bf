"""Normalisation layers. Statistics are computed in float32 whatever the compute dtype: bf16
means and variances of activations with a large mean lose most of their precision."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import ModelConfig


def _gain(module: nn.Module, name: str, init, shape: tuple[int, ...]) -> jax.Array:
  return module.param(name, nn.with_logical_partitioning(init, module.axes), shape,
                      module.param_dtype)


def _statistics_axes(module: nn.Module) -> tuple[int, ...]:
  return tuple(range(-len(module.axes), 0))


class LayerNorm(nn.Module):
  """(x - mean) / sqrt(var + eps) * scale (+ bias), as in Ba et al. and GPT-2; affine=False: no
  scale and no bias (OLMo 1's non-parametric norm)."""
  eps: float
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  axes: tuple[str, ...] = ('embed',)  # logical names of the normalised (trailing) axes
  affine: bool = True

  @nn.compact
  def __call__(self, x):
    over = _statistics_axes(self)
    x32 = x.astype(jnp.float32)
    mean = x32.mean(over, keepdims=True)
    var = jnp.square(x32 - mean).mean(over, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    if self.affine:
      y = y * _gain(self, 'scale', nn.initializers.ones, x.shape[-len(self.axes):])
      if self.use_bias:
        y = y + _gain(self, 'bias', nn.initializers.zeros, x.shape[-len(self.axes):])
    return y.astype(self.dtype)


class RMSNorm(nn.Module):
  """x / sqrt(mean(x^2) + eps) * scale (Zhang & Sennrich; Llama): no mean, no bias; affine=False:
  no scale either."""
  eps: float
  use_bias: bool  # unused: RMSNorm has no bias by definition (kept for one norm signature)
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  axes: tuple[str, ...] = ('embed',)  # logical names of the normalised (trailing) axes
  affine: bool = True

  @nn.compact
  def __call__(self, x):
    over = _statistics_axes(self)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(over, keepdims=True) + self.eps)
    if self.affine:
      y = y * _gain(self, 'scale', nn.initializers.ones, x.shape[-len(self.axes):])
    return y.astype(self.dtype)


NORMS = {'layernorm': LayerNorm, 'rmsnorm': RMSNorm}


def make_norm(cfg: ModelConfig, name: str | None) -> nn.Module:
  return NORMS[cfg.norm](eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=cfg.compute_dtype,
                         param_dtype=cfg.params_dtype, affine=cfg.norm_affine, name=name)


def make_qk_norm(cfg: ModelConfig, name: str, heads_axis: str) -> nn.Module:
  """QK-norm, an RMSNorm whatever cfg.norm is (as in Qwen3, Gemma 3 and OLMo 2, which all use
  RMSNorm for it). qk_norm='head': over each head's D, one scale [D] shared by the heads;
  'projection' (OLMo 2): over all heads' H*D (or K*D) at once, a scale [H, D] per element."""
  axes = ('head_dim',) if cfg.qk_norm == 'head' else (heads_axis, 'head_dim')
  return RMSNorm(eps=cfg.norm_eps, use_bias=False, dtype=cfg.compute_dtype,
                 param_dtype=cfg.params_dtype, axes=axes, name=name)
