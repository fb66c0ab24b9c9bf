"""The two training shapes the CPU benchmarks compare gptjax and its peers at."""

from __future__ import annotations

from typing import NamedTuple


class Shape(NamedTuple):
  model: dict  # gptjax ModelConfig fields
  batch_size: int
  what: str

  def describe(self) -> str:
    m = self.model
    return (f'{self.what}: {m["n_layers"]} layers x d_model {m["d_model"]}, context '
            f'{m["block_size"]}, vocab {m["vocab_size"]}, batch {self.batch_size}')


SHAPES = {
    # nanoGPT README's CPU quickstart (shakespeare_char with --device=cpu --block_size=64
    # --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --dropout=0.0; bias=False).
    'quickstart': Shape(
        dict(vocab_size=65, block_size=64, n_layers=4, n_heads=4, d_model=128, use_bias=False), 12,
        "nanoGPT's CPU quickstart"),
    # GPT-2 shaped, small enough for a CPU: GPT-2's vocabulary (padded to 50304, as nanoGPT does).
    'gpt2': Shape(dict(vocab_size=50304, block_size=256, n_layers=6, n_heads=6, d_model=384), 8,
                  'GPT-2 shaped'),
}
