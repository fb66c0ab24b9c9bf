"""XLA:CPU options that make gptjax's train step faster than this jaxlib's defaults.

They are given to the train and eval steps' compilations only (`jax.jit(...,
compiler_options=...)`), only when JAX's backend is the CPU, and only where the user has not named
the option in XLA_FLAGS: `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot`
restores jaxlib's choice. Nothing else a program compiles is touched.

Measured by benchmarks/xla_flags.py (README, "Training speed on CPU").
"""

from __future__ import annotations

import importlib.metadata
import os

import jax

# XLA:CPU hands matmuls to YNNPACK (XNNPACK's successor). By default, 'individual_dot', it gets
# each dot alone and XLA's own loop fusions run the elementwise work around it; with 'dot'
# YNNPACK takes a dot together with its neighbouring elementwise ops, one kernel instead of a dot
# and a pass over its output. Interleaved in one process (benchmarks/xla_flags.py) at nanoGPT's
# quickstart shape: 1.15-1.23x the train step; at the GPT-2 shape, where the 50304-wide LM head's
# matmuls dominate, 0.91-1.00x. 'dot,reduce' and 'dot,eltwise,reduce' were no better.
YNN_FUSION = 'xla_cpu_experimental_ynn_fusion_type'
CPU_OPTIONS = {YNN_FUSION: 'LIBRARY_FUSION_TYPE_DOT'}

# The jaxlib versions whose XLA has these options (pyproject's range; docs/versions.md): XLA
# refuses an option it does not know, so a jaxlib outside the range compiles with its defaults.
JAXLIB_VERSIONS = ('0.10.', '0.11.', '0.12.')


def cpu_compiler_options(environ=os.environ) -> dict[str, str]:
  """CPU_OPTIONS less those the user set in XLA_FLAGS; {} off the CPU or on another jaxlib."""
  if jax.default_backend() != 'cpu':
    return {}
  try:
    if not importlib.metadata.version('jaxlib').startswith(JAXLIB_VERSIONS):
      return {}
  except importlib.metadata.PackageNotFoundError:
    return {}
  named = {flag.split('=', 1)[0].lstrip('-') for flag in environ.get('XLA_FLAGS', '').split()}
  return {name: value for name, value in CPU_OPTIONS.items() if name not in named}
