"""Where a training step's time goes, per XLA operation, beside torch.profiler on nanoGPT's step.

  python benchmarks/profile_train.py                      # both shapes, top 15 ops of each
  python benchmarks/profile_train.py --shape=quickstart --top=30

gptjax's step is traced with jax.profiler (XLA:CPU's per-thunk trace events switched on with
--xla_cpu_enable_xprof_traceme) and each event is matched to its instruction in the optimized
HLO, so that a fusion is shown with what it computes (its ops and shape), not only its name.
The nanoGPT peer (benchmarks/nanogpt_peer.py) is profiled with torch.profiler at the same shape,
from the same weights. Times are per step, summed over the threads that ran them (so a share
above 100% of the wall time means the op ran on both cores at once).
"""

from __future__ import annotations

import os

if 'xla_cpu_enable_xprof_traceme' not in os.environ.get('XLA_FLAGS', ''):
  # Without it XLA:CPU records no per-operation events. Set before JAX starts its backend.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_cpu_enable_xprof_traceme=true').strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, machine  # noqa: E402
from shapes import SHAPES, Shape  # noqa: E402
from train import GptjaxTrainer, random_batch, train_config  # noqa: E402


def hlo_summaries(hlo_text: str) -> dict[str, str]:
  """instruction name -> what it computes: for a fusion, the distinct ops of its fused
  computation (dot, reduce, exponential, ...) and its output shape; else its opcode and shape."""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if header:
      current = computations.setdefault(header.group(1), [])
      continue
    if current is not None:
      current.append(line)
  summaries = {}
  for lines in computations.values():
    for line in lines:
      match = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\(', line)
      if not match:
        continue
      name, shape, opcode = match.groups()
      text = f'{opcode} {shape}'
      called = re.search(r'calls=%?([\w.\-]+)', line)
      if called and called.group(1) in computations:
        ops = collections.Counter(
            m.group(1) for body in computations[called.group(1)]
            for m in [re.search(r'= \S+ ([\w\-]+)\(', body)]
            if m and m.group(1) not in ('parameter', 'constant', 'broadcast', 'bitcast', 'reshape',
                                        'convert'))
        kind = re.search(r'kind=(\w+)', line)
        text = (f'{opcode}{"(" + kind.group(1) + ")" if kind else ""} {shape}: '
                + ' '.join(f'{op}' + (f'x{n}' if n > 1 else '') for op, n in ops.most_common(6)))
      summaries[name] = text
  return summaries


def trace_events(directory: str) -> list[tuple[str, float]]:
  """(name, seconds) of every XLA operation event in a jax.profiler trace directory."""
  files = glob.glob(os.path.join(directory, '**', '*.xplane.pb'), recursive=True)
  data = jax.profiler.ProfileData.from_file(files[0])
  events = []
  for plane in data.planes:
    if not plane.name.startswith('/host:CPU'):
      continue
    for line in plane.lines:
      for event in line.events:
        events.append((event.name, event.duration_ns / 1e9))
  return events


def profile_gptjax(shape: Shape, steps: int) -> tuple[float, list[tuple[str, float]], dict]:
  config = train_config(shape.model, shape.batch_size, steps=1000)
  ours = GptjaxTrainer(config)
  ours.set_batch(random_batch(ours.run.cfg, shape.batch_size))
  ours.steps(3)  # compile and warm up
  hlo = ours.step_fn.lower(ours.state, ours.batch).compile().as_text()
  with tempfile.TemporaryDirectory() as directory:
    start = time.perf_counter()
    with jax.profiler.trace(directory):
      ours.steps(steps)
    wall = (time.perf_counter() - start) / steps
    events = trace_events(directory)
  return wall, events, hlo_summaries(hlo)


def gptjax_rows(events, summaries, steps: int, wall: float, top: int) -> list[tuple]:
  known = {name for name in summaries}
  totals = collections.Counter()
  for name, seconds in events:
    if name in known:
      totals[name] += seconds / steps
  rows = [(name, summaries[name][:90], f'{1000 * s:.2f}', f'{100 * s / wall:.1f}%')
          for name, s in totals.most_common(top)]
  covered = sum(totals.values())
  rows.append(('all XLA ops', f'{len(totals)} ops', f'{1000 * covered:.2f}',
               f'{100 * covered / wall:.1f}%'))
  return rows


def profile_peer(shape: Shape, steps: int, top: int) -> tuple[float, list[tuple]]:
  from torch.profiler import ProfilerActivity, profile

  from nanogpt_peer import NanoGPTTrainer

  config = train_config(shape.model, shape.batch_size, steps=1000)
  ours = GptjaxTrainer(config)
  peer = NanoGPTTrainer(ours.run.cfg, jax.device_get(ours.state['params']), config.optim)
  peer.set_batch(random_batch(ours.run.cfg, shape.batch_size))
  peer.steps(3)
  start = time.perf_counter()
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    peer.steps(steps)
  wall = (time.perf_counter() - start) / steps
  averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
  rows = [(e.key, f'{e.count // steps} calls', f'{e.self_cpu_time_total / 1000 / steps:.2f}',
           f'{100 * e.self_cpu_time_total / 1e6 / steps / wall:.1f}%') for e in averages[:top]]
  return wall, rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape', choices=sorted(SHAPES), action='append',
                      help='shape(s) to profile (default: all)')
  parser.add_argument('--steps', type=int, default=5, help='profiled steps')
  parser.add_argument('--top', type=int, default=15, help='operations shown')
  args = parser.parse_args()
  print(machine())
  for name in args.shape or sorted(SHAPES):
    shape = SHAPES[name]
    wall, events, summaries = profile_gptjax(shape, args.steps)
    print()
    print(
        format_table(('HLO instruction', 'what it computes', 'ms/step', 'of step'),
                     gptjax_rows(events, summaries, args.steps, wall, args.top),
                     title=f'gptjax, {shape.describe()}: {1000 * wall:.1f} ms/step (traced)'))
    peer_wall, peer_rows = profile_peer(shape, args.steps, args.top)
    print()
    print(
        format_table(('torch op', 'calls/step', 'self ms/step', 'of step'), peer_rows,
                     title=f'nanoGPT peer, {shape.describe()}: {1000 * peer_wall:.1f} ms/step '
                     '(profiled)'))


if __name__ == '__main__':
  main()
