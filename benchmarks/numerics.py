"""What changes in gptjax's numbers from one jax version to another, on fixed inputs.

Two versions of jax cannot share a process, so each environment saves its values and one compares:

  python benchmarks/numerics.py --save=DIR                    # DIR/jax-<version>.npz (5 s)
  python benchmarks/numerics.py --compare DIR/jax-A.npz DIR/jax-B.npz

The values: the elementwise ops gptjax's layers use (on 100,000 fixed float32 inputs), softmax and
its gradient, float32 and bfloat16 matmuls, and gptjax itself: a tiny model's initial weights
from seed 0 (flax's normal initialiser, so jax.random.normal), its logits, and its loss gradient.
The table gives, per value, how many elements differ and by how much (absolute, and relative to
the largest magnitude among the value's elements). docs/versions.md quotes it for jax 0.10.2
against 0.12.1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gptjax.config import ModelConfig  # noqa: E402
from gptjax.model import GPT, init_params  # noqa: E402
from gptjax.tables import markdown_table  # noqa: E402

MODEL = ModelConfig(vocab_size=61, d_model=32, n_heads=4, n_layers=2, block_size=16,
                    mlp='gelu_exact', norm='rmsnorm', position='rope')


def values() -> dict[str, np.ndarray]:
  x = jnp.asarray(np.random.RandomState(0).randn(100_000).astype(np.float32))
  a = jnp.asarray(np.random.RandomState(1).randn(256, 256).astype(np.float32))
  weights = jnp.arange(1000, dtype=jnp.float32)
  rows = x.reshape(100, 1000)
  tokens = jnp.asarray(np.random.RandomState(2).randint(0, MODEL.vocab_size, (2, 16)), jnp.int32)
  params = init_params(MODEL, jax.random.key(0))

  def loss(p):
    logits = GPT(MODEL).apply({'params': p}, tokens[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

  found = {
      'log': jnp.log(jnp.abs(x) + 1e-3),
      'rsqrt': jax.lax.rsqrt(jnp.abs(x) + 1e-3),
      'exp': jnp.exp(x),
      'tanh': jnp.tanh(x),
      'gelu (tanh)': jax.nn.gelu(x),
      'gelu (exact)': jax.nn.gelu(x, approximate=False),
      'softmax': jax.nn.softmax(rows),
      'softmax gradient': jax.grad(lambda r: (jax.nn.softmax(r) * weights).sum())(rows),
      'random.normal': jax.random.normal(jax.random.key(0), (100_000,)),
      'random.uniform': jax.random.uniform(jax.random.key(0), (100_000,)),
      'matmul float32': jax.jit(lambda m: m @ m)(a),
      'matmul bfloat16': jax.jit(lambda m: (m.astype(jnp.bfloat16) @ m.astype(jnp.bfloat16)))(a),
      'gptjax: initial weights (seed 0)': params,
      'gptjax: logits': jax.jit(GPT(MODEL).apply)({'params': params}, tokens),
      'gptjax: loss gradient': jax.jit(jax.grad(loss))(params),
  }
  return {name: flat(value) for name, value in found.items()}


def flat(tree) -> np.ndarray:
  return np.concatenate([np.asarray(leaf, np.float32).ravel() for leaf in jax.tree.leaves(tree)])


def compare(a: dict, b: dict) -> list[tuple]:
  rows = []
  for name in a:
    x, y = a[name], b[name]
    difference = np.abs(x.astype(np.float64) - y)
    rows.append((name, f'{int((x != y).sum()):,} of {x.size:,}', f'{difference.max():.1e}',
                 f'{difference.max() / np.abs(x).max():.1e}'))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--save', help="directory to save this jax version's values in")
  parser.add_argument('--compare', nargs=2, metavar='NPZ', help='two saved files to compare')
  args = parser.parse_args()
  if args.save:
    path = Path(args.save) / f'jax-{jax.__version__}.npz'
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **values())
    print(f'saved {path}')
  if args.compare:
    a, b = (dict(np.load(p)) for p in args.compare)
    names = [Path(p).stem for p in args.compare]
    print(f'{names[0]} vs {names[1]}, on the CPU:\n')
    print(
        markdown_table(
            ['value', 'elements that differ', 'max abs difference', 'relative to the largest'],
            compare(a, b)))


if __name__ == '__main__':
  main()
