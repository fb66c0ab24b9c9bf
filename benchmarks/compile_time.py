"""Compile time of the train step against depth: the blocks unrolled vs one nn.scan.

  python benchmarks/compile_time.py                # 6, 12, 24, 48 layers; minutes on 2 cores
  python benchmarks/compile_time.py --layers=6,12

Each row compiles the real training step (AdamW, clipping, donated state; trace, lower and XLA
compile, nothing allocated) of a GPT-2-shaped model at that depth, d_model 256 (compile time
hardly depends on width; the parameter count does), context 256, batch 8, once unrolled and once
with model.scan_layers, the two taking turns. Unrolled, XLA compiles every block's ops again;
scanned, one loop body whatever the depth.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compile_seconds, format_table, machine  # noqa: E402

from gptjax.config import base_config  # noqa: E402


def config(n_layers: int, scan_layers: bool):
  config = base_config(n_layers=n_layers, d_model=256, n_heads=4, block_size=256,
                       vocab_pad_multiple=64, scan_layers=scan_layers)
  config.train.batch_size = 8
  config.optim.warmup_steps = 10
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--layers', default='6,12,24,48', help='depths, comma-separated')
  args = parser.parse_args()
  rows = []
  for n_layers in map(int, args.layers.split(',')):
    unrolled = compile_seconds(config(n_layers, False))
    scanned = compile_seconds(config(n_layers, True))
    rows.append((n_layers, f'{unrolled:.1f}', f'{scanned:.1f}', f'{unrolled / scanned:.1f}x'))
    print(f'{n_layers} layers: unrolled {unrolled:.1f} s, scanned {scanned:.1f} s', flush=True)
  print(
      format_table(
          ('layers', 'unrolled (s)', 'scan_layers (s)', 'unrolled / scanned'), rows,
          title=f'Train step compile time, d_model 256, context 256, batch 8; {machine()}'))


if __name__ == '__main__':
  main()
