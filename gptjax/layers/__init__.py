"""The pieces of a transformer block, one module per concern.

  dense.py      the one dense layer: explicit input/output axes, init, dtypes, logical axis names
  norms.py      LayerNorm, RMSNorm, QK-norm               NORMS[cfg.norm]
  positions.py  learned table, rotary, ALiBi, none        POSITIONS[cfg.position]
                rope scalings (linear, llama3, yarn)      ROPE_SCALINGS[cfg.rope_scaling]
  attention.py  q/k/v/out projections, masks, soft-caps,  KERNELS[attention kernel]
                the cache (a ring in window layers)
  mlp.py        GELU (tanh, erf), ReLU², SwiGLU, GeGLU    MLPS[cfg.mlp]
  residual.py   store_gradient: where XLA:CPU keeps the residual stream's gradient

A variant is a function (or module) in one of these tables, keyed by its config string: adding
one means one function, one table entry and the string in `gptjax.config`'s tuple of allowed
values (a test checks that the tables and the tuples agree). Shapes in comments: B batch, T query
length, S key length, H query heads, K kv heads, D head dim, C d_model, F MLP hidden width.
"""

from gptjax.layers.attention import (KERNELS, Attention, LayerCache, attention_mask,
                                     attention_weights, cached_attention, resolve_attention_impl)
from gptjax.layers.dense import AXIS_NAMES, Dense, dense, residual_std
from gptjax.layers.mlp import MLP, MLPS
from gptjax.layers.norms import NORMS, LayerNorm, RMSNorm, make_norm
from gptjax.layers.positions import POSITIONS, Position, apply_rope, rope_frequencies
from gptjax.layers.residual import store_gradient

__all__ = [
    'AXIS_NAMES',
    'Attention',
    'Dense',
    'KERNELS',
    'LayerCache',
    'LayerNorm',
    'MLP',
    'MLPS',
    'NORMS',
    'POSITIONS',
    'Position',
    'RMSNorm',
    'apply_rope',
    'attention_mask',
    'attention_weights',
    'cached_attention',
    'dense',
    'make_norm',
    'residual_std',
    'resolve_attention_impl',
    'rope_frequencies',
    'store_gradient',
]
