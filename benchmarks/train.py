"""Training throughput: gptjax against nanoGPT's step and Hugging Face transformers.

  python benchmarks/train.py                       # the README table, about 8 minutes on 2 cores
  python benchmarks/train.py --shape=quickstart    # one shape (benchmarks/shapes.py)

Two shapes: nanoGPT's CPU quickstart (4 layers, d_model 128, context 64, batch 12, vocab 65, no
biases) and a GPT-2 shaped model (6 layers, d_model 384, context 256, batch 8, vocab 50304).
gptjax runs its real training step (`trainer.make_train_step`: AdamW with the decay mask,
global-norm clipping, jitted, state donated). The peers: nanoGPT's model and training step in
torch eager (benchmarks/nanogpt_peer.py), and, where the model has biases,
`transformers.GPT2LMHeadModel` (SDPA attention) with torch's AdamW on the same groups and
`clip_grad_norm_`. All start from the same weights; before timing, the script checks that their
losses before and after one update agree (so all do the same work). Tokens/s is the median of
repetitions of a few steps each, the implementations taking turns; MFU counts 6N + 12LHQT FLOPs
per token against this machine's measured float32 matmul peak (benchmarks/machine.py). Then it
times compilation of the first step for configs/small.py and configs/gpt124m.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    compile_seconds, format_table, load_config, machine, make_run, transformers_gpt2)
from machine import matmul_peak  # noqa: E402
from nanogpt_peer import NanoGPTTrainer  # noqa: E402
from shapes import SHAPES, Shape  # noqa: E402

from gptjax import parallel, trainer  # noqa: E402
from gptjax.config import ModelConfig, base_config  # noqa: E402
from gptjax.flops import flops_per_token  # noqa: E402
from gptjax.optim import make_optimizer  # noqa: E402
from gptjax.xla_flags import cpu_compiler_options  # noqa: E402

LR = 6e-4
NANOGPT = 'nanoGPT'
TRANSFORMERS = 'transformers'
LABELS = {
    'gptjax': 'gptjax (jitted step, AdamW + decay mask + clipping, donated state)',
    NANOGPT: "nanoGPT's model and step (torch eager, its AdamW groups, clip_grad_norm_)",
    TRANSFORMERS: 'transformers GPT2LMHeadModel + torch AdamW + clip_grad_norm_',
}
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


def random_batch(cfg: ModelConfig, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  tokens = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch_size, cfg.block_size + 1),
                                                np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}


class GptjaxTrainer:
  """gptjax's own train step on a fixed batch."""
  def __init__(self, config):
    self.run = make_run(config)
    self.optimizer = make_optimizer(config.optim, config.train.steps, self.run.cfg)
    _, self.shardings = trainer.abstract_state(self.run, self.optimizer)
    self.step_fn = trainer.make_train_step(self.run, self.optimizer, self.shardings)
    self.state = trainer.initial_state(self.run, self.optimizer, self.shardings)

  def set_batch(self, batch):
    self.batch = parallel.global_batch(batch, self.run.layout)

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


def check_same_losses(ours: GptjaxTrainer, peers: dict) -> list[tuple[float, ...]]:
  """The loss before any update and after one, gptjax's and each peer's: equal, or the
  comparison is meaningless."""
  rows = []
  for _ in range(2):
    row = (ours.steps(1), *(peer.steps(1) for peer in peers.values()))
    for name, loss in zip(peers, row[1:]):
      if abs(row[0] - loss) > LOSS_TOLERANCE * abs(loss):
        raise AssertionError(f'gptjax loss {row[0]:.6f} != {name} loss {loss:.6f} on the same '
                             'weights and batch: the two do not compute the same thing')
    rows.append(row)
  return rows


def interleaved_medians(impls: dict, steps: int, repeats: int) -> dict[str, float]:
  """Median seconds per step of each implementation, the repetitions taken in turns (A B C A B
  C ...) so that a slow minute of a shared machine falls on all of them alike."""
  for impl in impls.values():
    impl.steps(1)
  timings = {name: [] for name in impls}
  for _ in range(repeats):
    for name, impl in impls.items():
      start = time.perf_counter()
      impl.steps(steps)
      timings[name].append((time.perf_counter() - start) / steps)
  return {name: statistics.median(times) for name, times in timings.items()}


def shape_rows(shape: Shape, args, peak: float) -> tuple[list[tuple], str]:
  """The table rows of one shape (gptjax and its peers) and the line about their losses."""
  config = train_config(shape.model, shape.batch_size, steps=1000)
  ours = GptjaxTrainer(config)
  cfg = ours.run.cfg
  params = jax.device_get(ours.state['params'])
  peers = {NANOGPT: NanoGPTTrainer(cfg, params, config.optim)}
  if cfg.use_bias:  # GPT2LMHeadModel always has biases
    peers[TRANSFORMERS] = TorchTrainer(cfg, params)
  batch = random_batch(cfg, shape.batch_size)
  for impl in (ours, *peers.values()):
    impl.set_batch(batch)
  losses = check_same_losses(ours, peers)
  names = ' / '.join(('gptjax', *peers))
  loss_line = (f'{shape.what}: losses before and after the first update '
               + ', '.join(' / '.join(f'{loss:.5f}' for loss in row)
                           for row in losses) + f' ({names})')
  seconds = interleaved_medians({'gptjax': ours, **peers}, args.steps, args.repeats)
  tokens = shape.batch_size * cfg.block_size
  flops = flops_per_token(cfg)
  rows = []
  for name, step in seconds.items():
    speed = tokens / step
    rows.append((shape.what, LABELS.get(name, name), f'{speed:,.0f}', f'{1000 * step:,.0f}',
                 f'{100 * flops * speed / peak:.1f}%', f'{seconds[NANOGPT] / step:.2f}x',
                 f'{compile_seconds(config):.1f}' if name == 'gptjax' else '—'))
  return rows, loss_line


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape', choices=sorted(SHAPES), action='append',
                      help='a shape to measure (repeatable; default: all)')
  parser.add_argument('--repeats', type=int, default=5, help='timed repetitions (median)')
  parser.add_argument('--steps', type=int, default=3, help='training steps per repetition')
  args = parser.parse_args()

  peak, peak_source = matmul_peak()
  rows, loss_lines = [], []
  for name in args.shape or SHAPES:
    shape_table, loss_line = shape_rows(SHAPES[name], args, peak)
    rows += shape_table
    loss_lines.append(loss_line)
  for name in ('small', 'gpt124m'):
    rows.append(('—', f'gptjax, configs/{name}.py', '—', '—', '—', '—',
                 f'{compile_seconds(load_config(name)):.1f}'))
  print('\n'.join(loss_lines) + '\n')
  print(
      format_table((
          'shape', 'training step', 'tokens/s', 'ms/step', 'MFU', 'vs nanoGPT', 'compile s'
      ), rows, title=(
          f"Training, float32 ({machine()}; gptjax's XLA:CPU options "
          f'{cpu_compiler_options() or "none"}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}). '
          f'MFU against the measured matmul peak {peak / 1e9:,.1f} GFLOP/s '
          f'({peak_source}). Medians of {args.repeats} interleaved x {args.steps} steps. '
          'compile s: trace + lower + XLA compile of the train step')))


if __name__ == '__main__':
  main()
