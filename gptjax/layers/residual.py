"""The residual stream's gradient, written to memory once per sublayer instead of recomputed.

XLA:CPU's fusion pass counts adds and multiplies as free to duplicate. In the backward pass the
residual stream's gradient is such a chain: the sum of every later sublayer's contribution, each
through its norm's backward. Left alone, XLA recomputes the whole chain inside every fusion that
reads it (the transposed copies feeding the weight-gradient matmuls, the norms' reductions), so
the backward's cost grows with the square of the depth: one fusion of nanoGPT's 4-layer CPU
quickstart read 78 arrays and redid 64 multiplies per element, and forward + backward took
19 / 34 / 90 / 242 ms at 1 / 2 / 4 / 8 layers. `store_gradient` marks the points where the
gradient should be stored. `jax.lax.optimization_barrier` would say so, but XLA:CPU removes
barriers before it fuses; an in-place update of one element (a dynamic-update-slice, which
needs its operand in memory) survives, costs one element and changes no value.

GPU and TPU compilers fuse differently, so elsewhere `store_gradient` is the identity.
"""

from __future__ import annotations

import jax


def store_gradient(x: jax.Array) -> jax.Array:
  """x unchanged; on CPU its gradient is materialised once rather than recomputed per use."""
  if jax.default_backend() != 'cpu':
    return x
  return _stored_gradient(x)


@jax.custom_vjp
def _stored_gradient(x):
  return x


def _forward(x):
  return x, None


def _backward(_, gradient):
  first = (0,) * gradient.ndim
  return (gradient.at[first].set(gradient[first], mode='promise_in_bounds'),)


_stored_gradient.defvjp(_forward, _backward)
