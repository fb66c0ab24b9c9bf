"""Parameter counts, training FLOPs per token, and model FLOPs utilisation (MFU).

The counts come from the model itself (`gptjax.model.abstract_params`), never from a
hand-written formula here, so they cannot drift from what `model.py` actually builds.
"""

from __future__ import annotations

import functools
import math
import re
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gptjax.config import ModelConfig, is_int
from gptjax.model import abstract_params, param_paths
from gptjax.tables import text_table


def count_params(params: Any) -> int:
  """Total number of scalars in a params pytree (works on arrays and ShapeDtypeStructs)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


def count_params_for_config(cfg: ModelConfig) -> int:
  """Parameters `init_params(cfg)` would create, without allocating or compiling them (the
  shapes are cached: MFU is recomputed at every logging step for the same config)."""
  return count_params(abstract_params(cfg))


# ---------------------------------------------------------------------------------------------
# FLOPs


def matmul_params(cfg: ModelConfig) -> int:
  """N of the 6N rule: the parameters that each token multiplies through.

  The learned position table is excluded: adding wpe[t] is a lookup, not a matmul. The input
  token embedding is a lookup too, so an untied model excludes it; a tied model keeps it,
  because the same [V, C] matrix is then the LM head, a real [C] x [C, V] matmul per token.
  (Either way exactly one V*C matrix is counted, so tying does not change FLOPs/token.)
  nanoGPT's `get_num_params(non_embedding=True)` subtracts only wpe, which is the same number
  for its tied GPT-2. Biases and norm scales are kept, as nanoGPT keeps them: they are a
  rounding error next to the matrices. The vocabulary is the true one, not the padded
  `padded_vocab_size`: padding is speed, not model work, and must not inflate MFU.
  """
  n = count_params_for_config(cfg)
  if cfg.position == 'learned':
    n -= cfg.block_size * cfg.d_model
  if not cfg.tie_embeddings:
    n -= cfg.vocab_size * cfg.d_model
  return n


def attended_keys(cfg: ModelConfig, seq_len: int | None = None) -> float:
  """T of the attention term: the sequence length, capped by each layer's sliding window and
  averaged over the layers (all equal unless window_pattern mixes windows)."""
  t = cfg.block_size if seq_len is None else seq_len
  if not is_int(t) or t <= 0:
    raise ValueError(f'seq_len={seq_len!r} must be a positive integer')
  if cfg.position == 'learned' and t > cfg.block_size:
    raise ValueError(f'seq_len={t} is longer than block_size={cfg.block_size}, the last '
                     'position with a learned embedding')
  # Each query sees at most `window` keys.
  keys = [t if window is None else min(t, window) for window in cfg.layer_windows]
  return sum(keys) / len(keys)


def flops_breakdown(cfg: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
  """Training FLOPs per token (forward + backward), split as in PaLM (appendix B) / nanoGPT.

  'matmul': 6N. Each parameter is one multiply-add (2 FLOPs) forward and two backward
    (gradient w.r.t. the input and w.r.t. the weight): 2 + 4 = 6.
  'attention': 12 * L * H * Q * T. Per layer and query head, q.k scores and the probs.v sum
    are 2 * Q * T FLOPs each forward, so 4QT forward and 12QT with the backward. H counts
    query heads, so GQA/MQA save nothing here (they shrink the kv projections, already in N).
    Like PaLM, this ignores causal masking (a full T per query rather than ~T/2 on average),
    so numbers compare with published MFU; with a sliding window T is capped at the window.
  Neither counts remat's recomputation: MFU measures useful model work, not hardware work.
  """
  matmul = 6.0 * matmul_params(cfg)
  t = attended_keys(cfg, seq_len)
  attention = 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * t
  return {'matmul': matmul, 'attention': attention, 'total': matmul + attention}


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
  """Training FLOPs per token: 6N + 12*L*H*Q*T (see `flops_breakdown`). T defaults to block_size."""
  return flops_breakdown(cfg, seq_len)['total']


def forward_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
  """Forward-only FLOPs per token (inference, evaluation): the backward is twice the forward."""
  return flops_per_token(cfg, seq_len) / 3.0


def mfu(tokens_per_second: float, cfg: ModelConfig, peak_flops: float,
        seq_len: int | None = None) -> float:
  """Model FLOPs utilisation: achieved training FLOPs/s as a fraction of the hardware peak.

  peak_flops: the accelerator's dense peak for the compute dtype, in FLOPs/s (summed over all
  devices when tokens_per_second is the global rate), e.g. 989e12 for an H100 SXM in bf16.
  """
  if not peak_flops > 0:
    raise ValueError(f'peak_flops={peak_flops!r} must be > 0')
  return flops_per_token(cfg, seq_len) * tokens_per_second / peak_flops


# ---------------------------------------------------------------------------------------------
# Parameter table


class ParamRow(NamedTuple):
  """One module's parameters. shapes: ((path inside the module, shape), ...)."""
  module: str
  count: int
  shapes: tuple[tuple[str, tuple[int, ...]], ...]


_MODULE_NAMES = {
    'wte': 'token embedding (wte)', 'wpe': 'position embedding (wpe)',
    'norm_f': 'final norm (norm_f)', 'lm_head': 'LM head (lm_head)'
}
# Sort keys: embeddings, then blocks, then the final norm and the head; anything unknown last.
_TOP_RANK = {'wte': (0, 0), 'wpe': (0, 1), 'norm_f': (2, 0), 'lm_head': (2, 1)}
_BLOCK_PART_RANK = {'attn': 0, 'mlp': 1, 'norms': 2}


def _row_of(path: tuple[str, ...]) -> tuple[tuple, str, str]:
  """(sort key, row name, name inside the row) of one parameter; a block's two norms share a row.

  Blocks sort by their number, since a string sort puts blocks_10 before blocks_2.
  """
  top, inner = path[0], path[1:]
  block = re.fullmatch(r'blocks_(\d+)', top)
  if block and inner:
    part = 'norms' if inner[0] in ('attn_norm', 'mlp_norm') else inner[0]
    name = '.'.join(inner if part == 'norms' else inner[1:])
    key = (1, int(block.group(1)), _BLOCK_PART_RANK.get(part, 3), part)
    return key, f'{top}.{part}', name
  return (*_TOP_RANK.get(top, (3, 0)), 0, top), _MODULE_NAMES.get(top, top), '.'.join(inner)


def param_table(params: Any) -> list[ParamRow]:
  """Parameters grouped per module: wte, wpe, each block's attn / mlp / norms, norm_f, lm_head.

  A parameter outside the known layout still gets a row (named by its top-level key), so the
  rows always sum to `count_params(params)`.
  """
  groups: dict[tuple, tuple[str, list]] = {}
  for path, leaf in param_paths(params).items():
    key, module, name = _row_of(tuple(path.split('/')))
    groups.setdefault(key, (module, []))[1].append((name, tuple(leaf.shape)))
  return [
      ParamRow(module, sum(math.prod(shape) for _, shape in shapes), tuple(shapes))
      for module, shapes in (groups[key] for key in sorted(groups))
  ]


def format_param_table(params: Any, cfg: ModelConfig | None = None) -> str:
  """An aligned plain-text table of `param_table(params)` with a total line.

  Given cfg (which must have built params), it adds the non-embedding total (without wte and
  wpe), the matmul N used for FLOPs, and training FLOPs/token at block_size, split.
  """
  rows = param_table(params)
  total = sum(row.count for row in rows)
  lines = [(row.module, f'{row.count:,}', ', '.join(f'{name} {list(shape)}'.strip()
                                                    for name, shape in row.shapes)) for row in rows]
  summary = [('total', f'{total:,}', '')]
  if cfg is not None:
    expected = count_params_for_config(cfg)
    if expected != total:
      raise ValueError(f'params hold {total:,} parameters but this config builds {expected:,}: '
                       'they come from a different config')
    embeddings = sum(row.count for row in rows
                     if row.module in (_MODULE_NAMES['wte'], _MODULE_NAMES['wpe']))
    split = flops_breakdown(cfg)
    summary += [
        ('non-embedding (without wte/wpe)', f'{total - embeddings:,}', ''),
        ('matmul params N (6N rule)', f'{matmul_params(cfg):,}',
         'tied wte counted as LM head' if cfg.tie_embeddings else 'lm_head counted, wte not'),
        ('FLOPs/token, matmul (6N)', f'{split["matmul"]:,.0f}', ''),
        ('FLOPs/token, attention (12LHQT)', f'{split["attention"]:,.0f}',
         f'T={attended_keys(cfg):g}'),
        ('FLOPs/token, training total', f'{split["total"]:,.0f}',
         f'forward only: {split["total"] / 3:,.0f}'),
    ]
  # The rule spans module and count: the shapes (or notes) trail each line as free text.
  table = text_table(('module', 'params'), [line[:2] for line in lines], 'lr',
                     footer=[line[:2] for line in summary]).split('\n')
  notes = ['shapes', None, *(line[2] for line in lines), None, *(line[2] for line in summary)]
  return '\n'.join(row if note is None else f'{row.ljust(len(table[1]))}  {note}'.rstrip()
                   for row, note in zip(table, notes))


# Dense bf16 peaks from the vendors' datasheets (no sparsity), by jax's device_kind.
ACCELERATOR_PEAK_FLOPS = {
    'NVIDIA H200': 989e12,
    'NVIDIA H100 80GB HBM3': 989e12,
    'NVIDIA H100 PCIe': 756e12,
    'NVIDIA A100-SXM4-80GB': 312e12,
    'NVIDIA A100-SXM4-40GB': 312e12,
    'NVIDIA A100 80GB PCIe': 312e12,
    'NVIDIA L4': 121e12,
    'NVIDIA A10G': 125e12,
    'Tesla V100-SXM2-16GB': 125e12,
    'TPU v4': 275e12,
    'TPU v5 lite': 197e12,
    'TPU v5e': 197e12,
    'TPU v5p': 459e12,
    'TPU v6 lite': 918e12,
}


def measure_matmul_peak(n: int = 1024, repeats: int = 10) -> float:
  """FLOP/s of a float32 n x n matmul on the default device: the practical peak of a CPU,
  whose datasheet number depends on clock, vector units and core count we cannot see."""
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  timings = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    timings.append(time.perf_counter() - start)
  return 2 * n**3 / sorted(timings)[len(timings) // 2]


@functools.lru_cache(maxsize=None)
def device_peak_flops() -> tuple[float, str]:
  """(peak FLOP/s of all devices together, where the number comes from)."""
  device = jax.devices()[0]
  kind = device.device_kind
  if kind in ACCELERATOR_PEAK_FLOPS:
    return ACCELERATOR_PEAK_FLOPS[kind] * jax.device_count(), f'{kind} datasheet bf16'
  if device.platform == 'cpu':
    return measure_matmul_peak(), 'measured f32 matmul'
  # An accelerator missing from the table: MFU is still useful relative to itself.
  return measure_matmul_peak(4096) * jax.device_count(), f'{kind} measured f32 matmul'
