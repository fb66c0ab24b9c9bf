"""A scaling ladder for configs/ablation.py's variants: the same byte-level GPT at five widths
(d_model 32 to 128, 2 layers, context 64), each trained on 20 tokens per parameter, so that the
report fits L(C) = a·C^-b + e per variant and states its compute multiplier against the baseline.

The widths are μP models (model.parametrization='mup') with the smallest rung as their base, so
the learning rate tuned at that cheap rung holds at every rung (README: μP). Two steps:

1. Tune each arm's learning rate at the base rung (40 runs, 6 minutes on 2 cores):
  python -m gptjax.sweep --config=configs/ladder.py --workdir=runs/ladder_tune --sweep=tune \\
      --parallel=2
2. The ladder, each arm at the learning rate step 1 found for it (the lr= items of SWEEPS['ladder']
   below; 40 runs, about an hour):
  python -m gptjax.sweep --config=configs/ladder.py --workdir=runs/ladder --sweep=ladder \\
      --ladder=model.d_model=32,48,64,96,128 --ladder=model.n_heads=2,3,4,6,8 --parallel=2

Variant strings are configs/ablation.py's (norm=, pos=, mlp=, attn=, lr=, ...), with its
matched parameters: at every width, a variant gets the d_ff that gives it the baseline's matmul
parameters there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from gptjax.config import load_config_module

_ABLATION = load_config_module(Path(__file__).with_name('ablation.py'))

# What the ladder changes in configs/ablation.py's base, before a variant or a rung is applied.
BASE = {
    'model.n_layers': 2,
    'model.d_model': 32,
    'model.n_heads': 2,  # head_dim 16 at every rung
    'model.block_size': 64,
    'model.parametrization': 'mup',
    'model.mup_base_width': 32,
    'model.mup_base_head_dim': 16,  # wider rungs add heads of 16: attention stays SP's
    'train.batch_size': 32,
    'train.steps': 329,  # the base rung's 20 tokens per parameter; --ladder sets each rung's
    'train.log_every': 25,
    'train.eval_every': 250,
    'train.eval_batches': 16,
    'train.ckpt_every': 100_000,  # the end of the run only: a rung is short
}

ARMS = ['', 'pos=rope', 'norm=rmsnorm', 'mlp=swiglu']
# Each arm's learning rate: its best in the 'tune' sweep (docs/ladder_tune/results.md).
TUNED = ['lr=0.01', 'pos=rope,lr=0.0224', 'norm=rmsnorm,lr=0.01', 'mlp=swiglu,lr=0.00447']

SWEEPS = {
    'tune': [f'{arm},seed={seed}' if arm else f'seed={seed}' for arm in ARMS for seed in (0, 1)],
    # Two seeds: their spread is the noise that the fits' intervals are drawn from.
    'ladder': [f'{arm},seed={seed}' for arm in TUNED for seed in (0, 1)],
}
TUNE = {'tune': 'optim.lr=2e-3:5e-2:5'}

variant_label = _ABLATION.variant_label
factors = _ABLATION.factors


def get_config(arg: str | None = None, overrides: Mapping[str, Any] | None = None):
  """configs/ablation.py's variant `arg` on the ladder's base (overrides applied after BASE)."""
  return _ABLATION.get_config(arg, overrides={**BASE, **(overrides or {})})
