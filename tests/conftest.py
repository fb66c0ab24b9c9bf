"""Shared fixtures: a tiny config and O(1) random weights for the model tests; one XLA
compilation cache for every entry point the tests run in a subprocess."""

import os

import jax
import numpy as np
import pytest

from gptjax.config import ModelConfig

# Small enough that every compile takes about a second on a 2-core CPU; 61 is prime, so no
# shape coincides with another by accident (vocab_pad_multiple=64 really pads).
TINY = dict(vocab_size=61, d_model=32, n_heads=4, n_layers=2, block_size=16)


@pytest.fixture
def tiny_config():
  """tiny_config(**overrides) -> ModelConfig."""
  return lambda **overrides: ModelConfig(**{**TINY, **overrides})


def random_params(params, seed=0):
  """Same tree and shapes, O(1)-scaled random values (numpy float32).

  The 0.02-std initialisation makes attention nearly uniform and every position's logits nearly
  equal, so a test comparing two computations could pass with a wrong position or a wrong mask;
  these weights give peaked attention and logits of order one. Kernels are N(0, 1/fan_in), norm
  scales 1 + N(0, 0.2^2), biases N(0, 0.2^2), embeddings and the LM head N(0, 1).
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    normal = rng.standard_normal(leaf.shape)
    if name == 'scale':
      value = 1.0 + 0.2 * normal
    elif name == 'bias':
      value = 0.2 * normal
    elif name == 'kernel':  # the attention output [H, D, C] sums over two axes
      fan_in = np.prod(leaf.shape[:-1]) if path[-2:-1] and path[-2].key == 'out' else leaf.shape[0]
      value = normal / np.sqrt(fan_in)
    else:
      value = normal
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, params)


@pytest.fixture(scope='session')
def randomize():
  """randomize(params, seed=0) -> the same tree filled with O(1) random weights."""
  return random_params


@pytest.fixture(scope='session', autouse=True)
def xla_cache_for_subprocesses(tmp_path_factory):
  """train.py and sample.py runs in subprocesses share XLA's persistent compilation cache, so a
  program one of them compiled is loaded by the next (about 2.5 s saved per run on 2 cores).
  Set in the environment only: this process imported jax already and keeps its own settings."""
  settings = {'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('xla_cache')),
              'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  previous = {name: os.environ.get(name) for name in settings}
  os.environ.update(settings)
  yield
  for name, value in previous.items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value
