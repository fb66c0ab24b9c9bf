"""GPT-2 124M training throughput on one GPU: batch sizes, cuDNN vs XLA attention, remat, scanned
vs unrolled layers; tokens/s and MFU against the device's datasheet peak.

  python benchmarks/gpu.py                       # on a GPU: about 6 minutes, compilation included
  python benchmarks/gpu.py --tiny                # a tiny shape, anywhere (the tests run it on CPU)
  python benchmarks/gpu.py --budget_s=300        # stop adding rows past 300 s

One prepared script for a lent GPU (a few minutes of device time): each row compiles the real
train step (AdamW, clipping, donated state) of configs/gpt124m.py in bfloat16 (float32 params),
context 1024, one micro-batch of the row's size, times STEPS steps on a fixed batch already on
the device (median of REPEATS), and reads the device's peak memory. MFU counts gptjax's 6N +
12LHQT FLOPs per token (what the trainer logs) against the datasheet bf16 peak
(gptjax.flops.ACCELERATOR_PEAK_FLOPS). Rows are written as they finish, to stdout and, where $OUT
is set, to $OUT/gpu.md and $OUT/gpu.json, so a run cut short keeps what it measured; a row that
fails (out of memory, a kernel that does not apply) is recorded with its error and the next one
runs. Rows that would start after --budget_s are skipped and listed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_config, make_run  # noqa: E402

from gptjax import flops, parallel, trainer  # noqa: E402
from gptjax.config import base_config  # noqa: E402
from gptjax.optim import make_optimizer  # noqa: E402
from gptjax.tables import markdown_table  # noqa: E402

STEPS, REPEATS = 10, 3
TINY_STEPS, TINY_REPEATS = 2, 1  # the tiny shape only checks that every row runs


@dataclasses.dataclass(frozen=True)
class Row:
  batch_size: int
  attention_impl: str = 'cudnn'
  remat: str = 'none'
  scan_layers: bool = False

  def label(self) -> str:
    return (f'batch {self.batch_size}, {self.attention_impl} attention, remat {self.remat}, '
            f'{"scanned" if self.scan_layers else "unrolled"}')


# The GPU rows: batch sizes first (the headline), then one knob changed at a time at batch 16.
ROWS = (Row(8), Row(16), Row(32), Row(16, attention_impl='xla'), Row(16, remat='full'),
        Row(16, scan_layers=True), Row(64, remat='full'), Row(32, remat='dots_saveable'))
TINY_ROWS = (Row(2, attention_impl='xla'), Row(4, attention_impl='xla'),
             Row(2, attention_impl='cudnn'), Row(2, attention_impl='xla', remat='full'),
             Row(2, attention_impl='xla', scan_layers=True))


def gpt124m_config(row: Row):
  config = load_config('gpt124m')
  config.model.update(attention_impl=row.attention_impl, remat=row.remat,
                      scan_layers=row.scan_layers)
  config.train.batch_size = row.batch_size
  config.optim.grad_accum_steps = 1
  return config


def tiny_config(row: Row):
  config = base_config(vocab_size=257, vocab_pad_multiple=64, n_layers=2, d_model=64, n_heads=4,
                       block_size=64, dtype='bfloat16', attention_impl=row.attention_impl,
                       remat=row.remat, scan_layers=row.scan_layers)
  config.train.batch_size = row.batch_size
  config.optim.warmup_steps = 10
  return config


def measure(config, steps: int = STEPS, repeats: int = REPEATS) -> dict:
  """Compile time, median step time, tokens/s, MFU and peak memory of one config's step."""
  run = make_run(config)
  optimizer = make_optimizer(run.optim, run.train.steps, run.cfg)
  abstract, shardings = trainer.abstract_state(run, optimizer)
  step_fn = trainer.make_train_step(run, optimizer, shardings, grad_accum_steps=1)
  shape = (run.train.batch_size, run.seq_len)
  tokens = np.random.default_rng(0).integers(0, run.cfg.vocab_size, (shape[0], shape[1] + 1))
  batch = jax.device_put(
      {'inputs': tokens[:, :-1].astype(np.int32), 'targets': tokens[:, 1:].astype(np.int32)},
      parallel.batch_sharding(run.layout))
  start = time.perf_counter()
  compiled = step_fn.lower(abstract, batch).compile()
  compile_s = time.perf_counter() - start
  state = trainer.initial_state(run, optimizer, shardings, abstract)
  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - start) / steps)
  step_s = statistics.median(times)
  tokens_per_s = shape[0] * shape[1] / step_s
  peak, peak_source = flops.device_peak_flops()
  stats = jax.devices()[0].memory_stats() or {}
  return {
      'compile_s': compile_s, 'ms_per_step': step_s * 1000, 'tokens_per_s': tokens_per_s,
      'mfu': flops.flops_per_token(run.cfg, run.seq_len) * tokens_per_s / peak, 'peak': peak,
      'peak_source': peak_source, 'loss': float(metrics['loss']),
      'attention': trainer_attention(run), 'peak_memory_gib': stats['peak_bytes_in_use']
      / 2**30 if 'peak_bytes_in_use' in stats else None
  }


def trainer_attention(run) -> str:
  """The kernel the step actually ran (a cuDNN request falls back to XLA where it cannot run)."""
  from gptjax.layers import resolve_attention_impl
  return resolve_attention_impl(run.cfg)


def _gib(value: float | None) -> str:
  return '—' if value is None else f'{value:.1f}'  # no peak memory on a CPU


def write(results: list[dict], skipped: list[str], out: Path | None, title: str) -> str:
  header = ('row', 'attention ran', 'ms/step', 'tokens/s', 'MFU', 'peak GiB', 'compile s')
  rows = []
  for r in results:
    if 'error' in r:
      rows.append((r['row'], '—', '—', '—', '—', '—', f'failed: {r["error"]}'))
    else:
      rows.append((r['row'], r['attention'], f'{r["ms_per_step"]:.1f}', f'{r["tokens_per_s"]:,.0f}',
                   f'{r["mfu"]:.1%}', _gib(r['peak_memory_gib']), f'{r["compile_s"]:.1f}'))
  text = f'{title}\n\n{markdown_table(header, rows)}'
  if skipped:
    text += f'\n\nskipped (past --budget_s): {"; ".join(skipped)}'
  if out is not None:
    out.mkdir(parents=True, exist_ok=True)
    (out / 'gpu.md').write_text(text + '\n')
    (out / 'gpu.json').write_text(
        json.dumps({'title': title, 'rows': results, 'skipped': skipped}, indent=1))
  return text


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tiny', action='store_true', help='a 2-layer model: runs anywhere')
  parser.add_argument('--budget_s', type=float, default=420.0,
                      help='start no row after this many seconds')
  parser.add_argument('--out', default=os.environ.get('OUT'), help='where gpu.md/.json go')
  args = parser.parse_args()
  out = Path(args.out) if args.out else None
  device = jax.devices()[0]
  peak, peak_source = flops.device_peak_flops()
  title = (f'{"tiny model" if args.tiny else "GPT-2 124M"}, bf16 compute, context '
           f'{64 if args.tiny else 1024}, one {device.device_kind} ({device.platform}), peak '
           f'{peak / 1e12:.3g} TFLOP/s ({peak_source}); jax {jax.__version__}')
  print(title, flush=True)
  started = time.perf_counter()
  results, skipped = [], []
  for row in TINY_ROWS if args.tiny else ROWS:
    if time.perf_counter() - started > args.budget_s:
      skipped.append(row.label())
      continue
    try:
      if args.tiny:
        result = measure(tiny_config(row), TINY_STEPS, TINY_REPEATS)
      else:
        result = measure(gpt124m_config(row))
      result['row'] = row.label()
    except Exception as e:  # noqa: BLE001 - a failed row is reported, and the next one runs
      traceback.print_exc()
      result = {'row': row.label(), 'error': f'{type(e).__name__}: {str(e).splitlines()[0][:120]}'}
    results.append(result)
    print(json.dumps(result), flush=True)
    write(results, skipped, out, title)
  print(write(results, skipped, out, title))


if __name__ == '__main__':
  main()
