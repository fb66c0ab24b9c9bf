"""Training throughput: gptjax against Hugging Face transformers on the same model and batch.

  python benchmarks/train.py                 # the table below, about 5 minutes on 2 CPU cores
  python benchmarks/train.py --repeats=3     # quicker, noisier

The model is GPT-2 shaped (6 layers, 6 heads, d_model 384, context 256, vocab 50304, tied
embeddings, biases, no dropout), the batch 8 sequences. gptjax runs its real training step
(`trainer.make_train_step`: AdamW with the decay mask, global-norm clipping, jitted, state
donated); the peer is `transformers.GPT2LMHeadModel` (SDPA attention) with torch's AdamW on the
same parameter groups and `clip_grad_norm_`, i.e. what a PyTorch user would write. Both start
from the same weights; before timing, the script checks that their first two losses agree (so
both do the same work). Tokens/s is the median over repeats of a few steps each; MFU counts
6N + 12LHQT FLOPs per token against this machine's measured float32 matmul peak
(benchmarks/machine.py). Then it times compilation of the first step for configs/small.py and
configs/gpt124m.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    format_table, load_config, machine, median_seconds, transformers_gpt2)
from machine import matmul_peak  # noqa: E402

from gptjax import sharding, trainer  # noqa: E402
from gptjax.config import ModelConfig, base_config  # noqa: E402
from gptjax.flops import flops_per_token  # noqa: E402
from gptjax.optim import make_optimizer  # noqa: E402

MODEL = dict(vocab_size=50304, block_size=256, n_layers=6, n_heads=6, d_model=384)
BATCH_SIZE = 8
LR = 6e-4
# Losses of the two implementations after 0 and 1 optimizer steps must agree this closely
# (float32, different summation orders); a wrong optimizer or model is off by far more.
LOSS_TOLERANCE = 2e-4


def train_config(model: dict, batch_size: int, steps: int):
  """A training config at a constant learning rate (a schedule the peer needs no code for)."""
  config = base_config(**model)
  config.optim.lr = LR
  config.optim.warmup_steps = 0
  config.optim.schedule = 'constant'
  config.train.batch_size = batch_size
  config.train.steps = steps
  return config


def make_run(config) -> trainer.Run:
  """trainer.Run without a corpus: the benchmark feeds its own batch."""
  cfg = ModelConfig.from_config(config.model)
  empty = np.zeros((0,), np.uint16)
  return trainer.Run(cfg, config, sharding.make_mesh(), cfg.block_size, empty, empty, 1.0)


def random_batch(cfg: ModelConfig, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  tokens = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch_size, cfg.block_size + 1),
                                                np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}


class GptjaxTrainer:
  """gptjax's own train step on a fixed batch."""
  def __init__(self, config):
    self.run = make_run(config)
    self.optimizer = make_optimizer(config.optim, config.train.steps)
    _, self.shardings = trainer.abstract_state(self.run, self.optimizer)
    self.step_fn = trainer.make_train_step(self.run, self.optimizer, self.shardings)
    self.state = trainer.initial_state(self.run, self.optimizer, self.shardings)

  def set_batch(self, batch):
    self.batch = sharding.global_batch(batch, self.run.mesh)

  def steps(self, n: int) -> float:
    """n steps; returns the last step's loss (which waits for the work to finish)."""
    for _ in range(n):
      self.state, metrics = self.step_fn(self.state, self.batch)
    return float(metrics['loss'])


class TorchTrainer:
  """transformers GPT2LMHeadModel + torch AdamW + clipping, from gptjax's weights."""
  def __init__(self, cfg: ModelConfig, params):
    import torch

    self.model = transformers_gpt2(cfg, params)
    self.model.train()
    # nanoGPT's groups, as gptjax's decay mask: weight decay on matrices, not biases or norms.
    matrices = [p for p in self.model.parameters() if p.dim() >= 2]
    vectors = [p for p in self.model.parameters() if p.dim() < 2]
    self.optimizer = torch.optim.AdamW(
        [{'params': matrices, 'weight_decay': 0.1}, {'params': vectors, 'weight_decay': 0.0}],
        lr=LR, betas=(0.9, 0.95), eps=1e-8, fused=True)
    self.torch = torch

  def set_batch(self, batch):
    self.inputs = self.torch.from_numpy(np.asarray(batch['inputs'], np.int64))
    self.targets = self.torch.from_numpy(np.asarray(batch['targets'], np.int64))

  def steps(self, n: int) -> float:
    torch = self.torch
    for _ in range(n):
      logits = self.model(self.inputs).logits
      loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), self.targets.flatten())
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
      self.optimizer.step()
    return loss.item()


def check_same_losses(ours: GptjaxTrainer, peer: TorchTrainer) -> list[tuple[float, float]]:
  """The loss before any update and after one: equal, or the comparison is meaningless."""
  pairs = []
  for _ in range(2):
    pair = (ours.steps(1), peer.steps(1))
    if abs(pair[0] - pair[1]) > LOSS_TOLERANCE * abs(pair[1]):
      raise AssertionError(f'gptjax loss {pair[0]:.6f} != transformers loss {pair[1]:.6f} on the '
                           'same weights and batch: the two do not compute the same thing')
    pairs.append(pair)
  return pairs


def compile_seconds(config) -> float:
  """Seconds from nothing to a compiled train step of `config` (trace, lower, XLA compile),
  without allocating the state: what a run waits before its first step."""
  run = make_run(config)
  optimizer = make_optimizer(config.optim, config.train.steps)
  start = time.perf_counter()
  abstract, shardings = trainer.abstract_state(run, optimizer)
  step_fn = trainer.make_train_step(run, optimizer, shardings)
  batch_sharding = sharding.batch_sharding(run.mesh)
  shape = (config.train.batch_size, run.seq_len)
  batch = {
      name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding)
      for name in ('inputs', 'targets')
  }
  step_fn.lower(abstract, batch).compile()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5, help='timed repetitions (median)')
  parser.add_argument('--steps', type=int, default=3, help='training steps per repetition')
  args = parser.parse_args()

  config = train_config(MODEL, BATCH_SIZE, steps=1000)
  ours = GptjaxTrainer(config)
  cfg = ours.run.cfg
  peer = TorchTrainer(cfg, jax.device_get(ours.state['params']))
  batch = random_batch(cfg, BATCH_SIZE)
  ours.set_batch(batch)
  peer.set_batch(batch)
  losses = check_same_losses(ours, peer)
  print(f'same weights, same batch: losses {losses[0][0]:.5f} / {losses[0][1]:.5f} (step 1), '
        f'{losses[1][0]:.5f} / {losses[1][1]:.5f} (step 2), gptjax / transformers')

  peak, peak_source = matmul_peak()
  tokens = args.steps * BATCH_SIZE * cfg.block_size
  flops = flops_per_token(cfg)
  peer_name = 'transformers + torch AdamW'
  speeds = {
      name: tokens / median_seconds(lambda: impl.steps(args.steps), repeats=args.repeats)
      for name, impl in (('gptjax', ours), (peer_name, peer))
  }
  rows = [(name, f'{speed:,.0f}', f'{1000 * BATCH_SIZE * cfg.block_size / speed:,.0f}',
           f'{100 * flops * speed / peak:.1f}%', f'{speed / speeds[peer_name]:.2f}x', '—')
          for name, speed in speeds.items()]
  rows[0] = (*rows[0][:-1], f'{compile_seconds(config):.1f}')
  for name in ('small', 'gpt124m'):
    rows.append((f'gptjax, configs/{name}.py', '—', '—', '—', '—',
                 f'{compile_seconds(load_config(name)):.1f}'))
  print(
      format_table(
          ('training step', 'tokens/s', 'ms/step', 'MFU', 'vs transformers', 'compile s'), rows,
          title=(f'Training, 6 layers x d_model 384, context 256, vocab 50304, batch 8, float32 '
                 f'({machine()}). MFU: {flops / 1e6:,.0f} MFLOP/token against the measured matmul '
                 f'peak {peak / 1e9:,.1f} GFLOP/s ({peak_source}). Medians of {args.repeats} x '
                 f'{args.steps} steps. compile s: trace + lower + XLA compile of the train step')))


if __name__ == '__main__':
  main()
