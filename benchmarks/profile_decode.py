"""Where a decode step's time goes, per XLA operation, and what the LM head's formulation changes.

  python benchmarks/profile_decode.py               # batch 1 and 16, GPT-2 124M float32 (~5 min)
  python benchmarks/profile_decode.py --batch=1 --top=30

The jitted decode loop of gptjax.sampling (greedy, after a 16-token prompt) is traced with
jax.profiler and each XLA event matched to its instruction in the optimized HLO, as
benchmarks/profile_train.py does for the train step; times are per generated token. Then the
loop is compiled several more ways and the compilations take turns in every repetition, after
choosing the same tokens: the LM head written as [rows, C] @ [C, V] and as the matrix-vector
product [V, C] @ [C, rows] that GPT.head uses for a single row (model.MATRIX_VECTOR_HEAD_ROWS),
and gptjax's loop under XLA:CPU options (as benchmarks/xla_flags.py does for the train step).
A decode step at batch 1 reads every weight once: its speed limit is memory bandwidth
(benchmarks/machine.py).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# profile_train switches on XLA:CPU's per-operation trace events before JAX starts.
from profile_train import gptjax_rows, hlo_summaries, trace_events  # noqa: E402, I001

import argparse  # noqa: E402
import collections  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from unittest import mock  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import format_table, machine  # noqa: E402
from decode import GPT2_VOCAB, PROMPT_TOKENS, gpt124m_float32  # noqa: E402
from xla_flags import YNN, ynn  # noqa: E402

from gptjax import model, sampling  # noqa: E402

GREEDY = sampling.Strategy(greedy=True, top_k=None, use_top_p=False)
KNOBS = sampling.SamplingKnobs(temperature=jnp.float32(1), top_p=jnp.float32(1),
                               valid_vocab_size=jnp.int32(GPT2_VOCAB), eot_token=jnp.int32(-1))


def decode_args(cfg, params, batch: int, new_tokens: int) -> tuple:
  """The decode loop's arguments after a prefill of random PROMPT_TOKENS-token prompts."""
  prompts = np.random.default_rng(0).integers(0, GPT2_VOCAB, (batch, PROMPT_TOKENS), np.int32)
  cache_size = sampling._cache_size(cfg, PROMPT_TOKENS + new_tokens - 1, None)
  cache = sampling._prefill_fn(cfg, sampling.gpt_forward, cache_size)(params, prompts[:, :-1],
                                                                      np.zeros(batch, np.int32))
  state = sampling.initial_loop_state(cache, prompts[:, -1], KNOBS.eot_token, new_tokens)
  return params, state, jax.random.key(0), KNOBS, np.int32(new_tokens)


def compiled_loop(cfg, args: tuple, new_tokens: int, matrix_vector_rows: int | None = None,
                  options: dict | None = None):
  """The decode loop compiled for args, with XLA options; matrix_vector_rows overrides the
  head's threshold (model.MATRIX_VECTOR_HEAD_ROWS)."""
  rows = model.MATRIX_VECTOR_HEAD_ROWS if matrix_vector_rows is None else matrix_vector_rows
  with mock.patch.object(model, 'MATRIX_VECTOR_HEAD_ROWS', rows):
    sampling._cached_decode_fn.cache_clear()  # trace afresh under this threshold
    fn = sampling._cached_decode_fn(cfg, sampling.gpt_forward, GREEDY, None)
    return fn.lower(*args).compile(compiler_options=options)


BASE = 'head as [rows, C] @ [C, V]'


def variants(cfg, args: tuple, batch: int, new_tokens: int) -> dict:
  """Row label -> the decode loop compiled that way; the first is the comparison's base."""
  return {
      BASE: compiled_loop(cfg, args, new_tokens, matrix_vector_rows=0),
      'head as [V, C] @ [C, rows] (matrix-vector)': compiled_loop(cfg, args, new_tokens, batch),
      'gptjax + YNNPACK fusion dot': compiled_loop(cfg, args, new_tokens, options=ynn('dot')),
      'gptjax + YNNPACK off, no XNNPACK (Eigen dots)': compiled_loop(
          cfg, args, new_tokens, options={YNN: '', 'xla_cpu_use_xnnpack': False}),
      'gptjax + oneDNN': compiled_loop(cfg, args, new_tokens, options={'xla_cpu_use_onednn': True}),
  }


def profile_rows(compiled, args: tuple, new_tokens: int, top: int) -> tuple[float, list, list]:
  """(seconds per token, top-operation rows, rows of time per kind of operation)."""
  summaries = hlo_summaries(compiled.as_text())
  compiled(*args).out.block_until_ready()
  with tempfile.TemporaryDirectory() as directory:
    start = time.perf_counter()
    with jax.profiler.trace(directory):
      compiled(*args).out.block_until_ready()
    wall = (time.perf_counter() - start) / new_tokens
    events = trace_events(directory)
  kinds = collections.Counter()
  for name, seconds in events:
    if name in summaries:
      kinds[summaries[name].split(':')[0].split(' ')[0]] += seconds / new_tokens
  kind_rows = [(kind, f'{1000 * s:.2f}', f'{100 * s / wall:.1f}%')
               for kind, s in kinds.most_common()]
  return wall, gptjax_rows(events, summaries, new_tokens, wall, top), kind_rows


def comparison_rows(cfg, args: tuple, batch: int, new_tokens: int, repeats: int) -> list[tuple]:
  loops = variants(cfg, args, batch, new_tokens)
  tokens = {label: np.asarray(compiled(*args).out) for label, compiled in loops.items()}
  for label, out in tokens.items():
    assert np.array_equal(out, tokens[BASE]), f'{label}: other tokens than {BASE}'
  seconds = collections.defaultdict(list)
  for _ in range(repeats):
    for label, compiled in loops.items():
      start = time.perf_counter()
      compiled(*args).out.block_until_ready()
      seconds[label].append((time.perf_counter() - start) / new_tokens)
  base = np.median(seconds[BASE])
  return [(batch, label, f'{1000 * np.median(s):.1f}', f'{batch / np.median(s):.1f}',
           f'{base / np.median(s):.2f}x') for label, s in seconds.items()]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, action='append', help='rows (repeatable; 1 and 16)')
  parser.add_argument('--new_tokens', type=int, default=32, help='tokens generated per run')
  parser.add_argument('--top', type=int, default=12, help='operations shown')
  parser.add_argument('--repeats', type=int, default=5, help='timed repetitions, rows in turns')
  args = parser.parse_args()
  cfg = gpt124m_float32()
  params = model.init_params(cfg, jax.random.key(0))
  print(machine())
  comparison = []
  for batch in args.batch or [1, 16]:
    loop_args = decode_args(cfg, params, batch, args.new_tokens)
    wall, rows, kinds = profile_rows(compiled_loop(cfg, loop_args, args.new_tokens), loop_args,
                                     args.new_tokens, args.top)
    title = f'gptjax decode step, GPT-2 124M float32, batch {batch}: {1000 * wall:.1f} ms (traced)'
    print()
    print(
        format_table(('HLO instruction', 'what it computes', 'ms/step', 'of step'), rows,
                     title=title))
    print(format_table(('kind of operation', 'ms/step', 'of step'), kinds))
    comparison += comparison_rows(cfg, loop_args, batch, args.new_tokens, args.repeats)
  print()
  print(
      format_table(('batch', 'decode loop compiled with', 'ms/step', 'tokens/s', 'vs first row'),
                   comparison, title=('The LM head and XLA:CPU options, same tokens, medians of '
                                      f'{args.repeats} runs taking turns')))


if __name__ == '__main__':
  main()
