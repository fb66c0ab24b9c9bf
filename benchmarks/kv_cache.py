"""KV-cache memory by attention variant: the formula, and what allocating the cache really takes.

  python benchmarks/kv_cache.py             # a few seconds
  python benchmarks/kv_cache.py --batch=16

GPT-2 124M's shape (12 layers, 12 query heads of 64 dims) at context 1024, with n_kv_heads
from 12 (MHA) through the GQA groupings to 1 (MQA). 'computed' is 2 (k, v) x layers x kv heads
x head_dim x batch x context x bytes; 'allocated' is the bytes of the arrays `init_cache` returns;
'measured' is what a fresh process gains by allocating them (resident memory on CPU, the device
allocator's bytes in use on a GPU): one process per variant, so that no memory freed by another
variant is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, machine  # noqa: E402
from decode import gpt124m_float32  # noqa: E402

from gptjax.analysis import kv_cache_variants  # noqa: E402
from gptjax.model import init_cache  # noqa: E402

CONTEXT = 1024


def memory_in_use() -> int:
  """Bytes held: the accelerator allocator's, or else this process's resident set."""
  stats = jax.devices()[0].memory_stats()
  if stats and 'bytes_in_use' in stats:
    return stats['bytes_in_use']
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def allocate(cfg, batch: int, context: int) -> dict[str, int]:
  """Allocates one cache in this process: {'allocated': its arrays' bytes, 'gained': memory the
  process gained}. A tiny cache first compiles and allocates everything but the cache itself."""
  jax.block_until_ready(init_cache(cfg, 1, 1))
  before = memory_in_use()
  cache = init_cache(cfg, batch, context)
  leaves = [x for x in jax.tree.leaves(cache) if x.ndim == 4]  # k and v of every layer
  jax.block_until_ready(leaves)
  return {'allocated': sum(x.nbytes for x in leaves), 'gained': memory_in_use() - before}


def measure_in_fresh_process(n_kv_heads: int, batch: int, dtype: str) -> dict[str, int]:
  command = [
      sys.executable,
      os.path.abspath(__file__), f'--batch={batch}', f'--dtype={dtype}',
      f'--allocate_only={n_kv_heads}'
  ]
  result = subprocess.run(command, capture_output=True, text=True, check=True)
  return json.loads(result.stdout.splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--allocate_only', type=int, help=argparse.SUPPRESS)  # n_kv_heads
  args = parser.parse_args()

  cfg = gpt124m_float32().replace(dtype=args.dtype)
  if args.allocate_only:
    print(json.dumps(allocate(cfg.replace(n_kv_heads=args.allocate_only), args.batch, CONTEXT)))
    return
  rows = []
  for variant in kv_cache_variants(cfg, args.batch, CONTEXT):
    computed = variant.bytes  # gptjax.model.kv_cache_bytes, the formula above
    measured = measure_in_fresh_process(variant.n_kv_heads, args.batch, args.dtype)
    allocated, gained = measured['allocated'], measured['gained']
    assert computed == allocated, (variant, computed, allocated)
    name = variant.variant if variant.variant != 'GQA' else f'GQA ({variant.n_kv_heads} kv heads)'
    rows.append((name, variant.n_kv_heads, f'{computed / 2**20:,.1f}', f'{allocated / 2**20:,.1f}',
                 f'{gained / 2**20:,.1f}', f'{cfg.n_heads / variant.n_kv_heads:g}x'))
  print(
      format_table(
          ('attention', 'n_kv_heads', 'computed MiB', 'allocated MiB', 'measured MiB',
           'smaller than MHA'), rows,
          title=(f'KV cache, GPT-2 124M shape, context {CONTEXT}, batch {args.batch}, {args.dtype} '
                 f'({machine()})')))


if __name__ == '__main__':
  main()
