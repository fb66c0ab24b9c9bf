"""This machine's limits: the float32 matmul peak and the memory bandwidth, measured.

  python benchmarks/machine.py

A CPU's datasheet peak depends on clocks, vector units and the cores a VM really gets, none of
which we can see, so MFU on CPU is measured against the fastest float32 matmul any library
reaches here: XLA (what gptjax runs on), NumPy's BLAS and PyTorch's, at several sizes. Batch-1
decoding reads every weight once per token, so its limit is the memory bandwidth: measured as
the read rate of a sum over an array far larger than the caches, and the rate of a copy.
The other benchmarks import these functions and measure them in their own run.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, machine, median_seconds, torch_threads  # noqa: E402

MATMUL_SIZES = (1024, 2048, 4096)
BANDWIDTH_BYTES = 1 << 30  # 1 GiB: 32x the L3 cache of the machines we have seen


def _xla_matmul(n: int) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  return median_seconds(lambda: matmul(a, b).block_until_ready(), repeats=_repeats(n))


def _numpy_matmul(n: int) -> float:
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
  return median_seconds(lambda: a @ b, repeats=_repeats(n))


def _torch_matmul(n: int) -> float:
  import torch
  torch.set_num_threads(torch_threads())
  a, b = torch.randn(n, n), torch.randn(n, n)
  return median_seconds(lambda: a @ b, repeats=_repeats(n))


def _repeats(n: int) -> int:
  return 3 if n >= 4096 else 7


MATMULS = {'XLA (jax.jit)': _xla_matmul, 'NumPy BLAS': _numpy_matmul, 'PyTorch': _torch_matmul}


def matmul_peaks(sizes=MATMUL_SIZES) -> dict[tuple[str, int], float]:
  """{(library, n): FLOP/s of an n x n x n float32 matmul}, for the libraries installed."""
  results = {}
  for library, measure in MATMULS.items():
    for n in sizes:
      try:
        results[(library, n)] = 2 * n**3 / measure(n)
      except ImportError:
        break
  return results


def matmul_peak(sizes=MATMUL_SIZES) -> tuple[float, str]:
  """(the fastest float32 matmul FLOP/s measured here, which library and size reached it)."""
  peaks = matmul_peaks(sizes)
  (library, n), best = max(peaks.items(), key=lambda item: item[1])
  return best, f'{library}, n={n}'


def read_bandwidth(nbytes: int = BANDWIDTH_BYTES) -> tuple[float, str]:
  """(bytes/s read by the fastest full-array sum we have, which one): the rate at which
  batch-1 decoding can stream its weights."""
  import jax
  import jax.numpy as jnp
  results = {}
  x = jnp.ones((nbytes // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  results['XLA sum'] = nbytes / median_seconds(lambda: total(x).block_until_ready(), repeats=7)
  x = None  # the 1 GiB goes before torch allocates its own
  try:
    import torch
    torch.set_num_threads(torch_threads())
    t = torch.ones(nbytes // 4)
    results['PyTorch sum'] = nbytes / median_seconds(lambda: t.sum().item(), repeats=7)
  except ImportError:
    pass
  a = np.ones(nbytes // 4, np.float32)
  results['NumPy sum'] = nbytes / median_seconds(lambda: a.sum(), repeats=7)
  name = max(results, key=results.get)
  return results[name], name


def copy_bandwidth(nbytes: int = BANDWIDTH_BYTES) -> float:
  """Bytes/s moved by a large copy, counting the read and the write (STREAM's 'copy')."""
  src = np.ones(nbytes // 4, np.float32)
  dst = np.empty_like(src)
  return 2 * nbytes / median_seconds(lambda: np.copyto(dst, src), repeats=7)


def main():
  peaks = matmul_peaks()
  best = max(peaks.values())
  rows = [(f'float32 matmul, {library}', f'n={n}', f'{flops / 1e9:,.1f} GFLOP/s',
           '<- peak' if flops == best else '') for (library, n), flops in peaks.items()]
  read, read_name = read_bandwidth()
  rows.append((f'memory read ({read_name} of 1 GiB)', '', f'{read / 1e9:,.1f} GB/s', ''))
  rows.append(('memory copy (NumPy, read + write)', '', f'{copy_bandwidth() / 1e9:,.1f} GB/s', ''))
  print(
      format_table(('measurement', 'size', 'rate', ''), rows,
                   title=f'Machine limits ({machine()})'))


if __name__ == '__main__':
  main()
