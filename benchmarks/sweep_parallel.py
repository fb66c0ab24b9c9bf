"""A sweep's runs one after another (each on every core) vs --parallel=N (each on its share of the
cores): wall-clock time for the same runs, and how far their losses differ.

  python benchmarks/sweep_parallel.py               # configs/ablation.py's baseline, 4 seeds
  python benchmarks/sweep_parallel.py --steps=300 --seeds=6

Small models keep few cores busy: XLA:CPU splits each op across the cores, and at d_model 128 the
ops are too small for that to pay, so N runs side by side finish sooner than N runs in turn. The
losses are not bit-identical between the two (a reduction split over 2 threads adds in another
order than over 1); the script prints the largest difference so that no one mistakes it for a bug.
Each mode runs in a fresh sweep directory, in turns (sequential, parallel, sequential, ...) so that
a slow spell of a shared machine hits both; the table gives each mode's median.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONFIGS, format_table, machine  # noqa: E402

flags.DEFINE_integer('steps', 150, 'Training steps of each run.')
flags.DEFINE_integer('seeds', 4, 'Runs in each sweep (seeds of the baseline).')
flags.DEFINE_integer('parallel', 2, 'Runs at once in the parallel mode.')
flags.DEFINE_integer('repeats', 2, 'Sweeps per mode, in turns.')
FLAGS = flags.FLAGS


def sweep_seconds(workdir: Path, parallel: int) -> float:
  command = [
      sys.executable, '-m', 'gptjax.sweep', f'--config={CONFIGS / "ablation.py"}',
      f'--workdir={workdir}', f'--seeds={FLAGS.seeds}', f'--parallel={parallel}',
      '--variant=seed=0', f'--config.train.steps={FLAGS.steps}', '--config.train.eval_every=50',
      '--config.train.ckpt_every=1000'
  ]
  start = time.perf_counter()
  subprocess.run(command, check=True, capture_output=True)
  return time.perf_counter() - start


def final_losses(workdir: Path) -> dict[str, float]:
  out = {}
  for run_dir in sorted(p for p in workdir.iterdir() if (p / 'metrics.jsonl').exists()):
    lines = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    out[run_dir.name] = [m['val_loss'] for m in lines if 'val_loss' in m][-1]
  return out


def main(argv):
  del argv
  timings = {1: [], FLAGS.parallel: []}
  losses = {}
  with tempfile.TemporaryDirectory() as root:
    for repeat in range(FLAGS.repeats):
      for parallel in timings:
        workdir = Path(root) / f'{parallel}-{repeat}'
        timings[parallel].append(sweep_seconds(workdir, parallel))
        losses[parallel] = final_losses(workdir)
  one, many = (statistics.median(timings[p]) for p in timings)
  difference = max(abs(losses[1][k] - losses[FLAGS.parallel][k]) for k in losses[1])
  rows = [
      [
          'in turn (each run on every core)', f'{one:.1f}', f'{FLAGS.seeds * 3600 / one:.0f}',
          '1.00x'
      ],
      [
          f'--parallel={FLAGS.parallel}', f'{many:.1f}', f'{FLAGS.seeds * 3600 / many:.0f}',
          f'{one / many:.2f}x'
      ],
  ]
  title = (f"{FLAGS.seeds} runs of configs/ablation.py's baseline, {FLAGS.steps} steps each "
           f'(median of {FLAGS.repeats} sweeps per mode); {machine()}')
  print(format_table(['mode', 'sweep wall time (s)', 'runs/hour', 'speed-up'], rows, title))
  print(f'\nlargest |difference| of a final val loss between the modes: {difference:.2e} nats')


if __name__ == '__main__':
  app.run(main)
