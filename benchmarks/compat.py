"""Does gptjax work with the jax, flax, optax and orbax installed here? The versions, then a tiny
run through every path that leans on their APIs, each checked against itself or a reference.

  python benchmarks/compat.py              # about a minute on a 2-core CPU
  python benchmarks/compat.py --out=DIR    # also DIR/compat.md and DIR/compat.json ($OUT if set)
  PYTHONPATH=. python benchmarks/compat.py # a checkout that is not pip-installed (a GPU image)

The checks (a 2-layer, d_model 32 byte-level model on 100 kB of the standard library):
- train: `python train.py` for 6 steps, checkpointing at 3 and 6, with dropout on; the loss falls.
- resume: a second run of 3 steps, then the same command with 6: it resumes from step 3 and its
  losses and final parameters equal the straight run's bit for bit.
- sample: `python sample.py` on the run prints text; greedy decoding with the KV cache gives the
  tokens decoding without it does.
- hf: the trained model exported with `to_hf` and imported with `from_hf` has the same parameters,
  and, where torch and transformers are installed, transformers' logits equal gptjax's to 1e-4.
- scan: the same weights as one nn.scan over stacked layers give the unrolled model's logits.
- mesh: with several devices (or XLA_FLAGS=--xla_force_host_platform_device_count=N), one step's
  loss on a data x tensor mesh equals one device's to 1e-5; skipped on one device.

Each check prints one row (ok / FAILED / skipped, with its numbers); the exit status is 1 if any
failed. Every check runs even when an earlier one fails, so one run reports them all.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptjax import checkpoint, data, parallel  # noqa: E402
from gptjax.config import ModelConfig, ShardingConfig  # noqa: E402
from gptjax.logs import read_metrics  # noqa: E402
from gptjax.model import GPT, abstract_params, place_params, with_layers_layout  # noqa: E402
from gptjax.sampling import generate  # noqa: E402
from gptjax.tables import markdown_table  # noqa: E402

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'ml-collections',
            'tiktoken', 'transformers', 'torch', 'lm-eval')
CORPUS_BYTES = 100_000
STEPS = 6
TINY = {
    'model.n_layers': 2, 'model.d_model': 32, 'model.n_heads': 2, 'model.block_size': 32,
    'model.resid_dropout': 0.1, 'optim.warmup_steps': 2, 'optim.decay_steps': STEPS,
    'train.batch_size': 4, 'train.log_every': 1, 'train.eval_every': 3, 'train.eval_batches': 1,
    'train.ckpt_every': 3
}


def versions() -> dict[str, str]:
  """Python, the platform, each package's installed version (or 'not installed'), the devices."""
  found = {'python': platform.python_version(), 'platform': platform.platform()}
  for name in PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = 'not installed'
  devices = jax.devices()
  found['devices'] = f'{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})'
  return found


def run_entry_point(script: str, *args: str) -> subprocess.CompletedProcess:
  """python <script> args, as a user runs it from the checkout; fails with its stderr's tail."""
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join(filter(None,
                                               [str(REPO), os.environ.get('PYTHONPATH')])))
  result = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  if result.returncode != 0:
    raise AssertionError(f'{script} exited {result.returncode}: {result.stderr[-2000:]}')
  return result


def train(workdir: Path, steps: int) -> subprocess.CompletedProcess:
  """python train.py on the tiny model, into workdir, on the corpus main() tokenized beside it."""
  flags = [f'--config.{key}={value}' for key, value in TINY.items()]
  return run_entry_point('train.py', '--config=configs/small.py', f'--workdir={workdir}', *flags,
                         f'--config.data.data_dir={workdir.parent / "data"}',
                         f'--config.train.steps={steps}')


def losses(workdir: Path) -> dict[int, float]:
  return {m['step']: m['loss'] for m in read_metrics(workdir) if 'loss' in m}


def restore(workdir: Path):
  """(ModelConfig, params, step) of a run's latest checkpoint."""
  cfg = ModelConfig.from_config(checkpoint.load_config(workdir)['model'])
  params, step = checkpoint.restore_params(workdir, abstract_params(cfg))
  return cfg, params, step


def max_difference(a, b) -> float:
  return max(
      float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def check_train(work: Path) -> str:
  train(work / 'straight', STEPS)
  curve = losses(work / 'straight')
  assert sorted(curve) == list(range(1, STEPS + 1)), curve
  assert curve[STEPS] < curve[1], curve
  return f'{STEPS} steps, loss {curve[1]:.3f} -> {curve[STEPS]:.3f}'


def check_resume(work: Path) -> str:
  train(work / 'resumed', STEPS // 2)
  result = train(work / 'resumed', STEPS)
  assert f'steps {STEPS // 2}..{STEPS}' in result.stdout, result.stdout[-2000:]  # it resumed
  straight, resumed = losses(work / 'straight'), losses(work / 'resumed')
  assert resumed == straight, (resumed, straight)
  logged = [m['step'] for m in read_metrics(work / 'resumed') if 'loss' in m]
  assert logged == list(range(1, STEPS + 1)), logged  # no step trained twice
  _, a, step_a = restore(work / 'straight')
  _, b, step_b = restore(work / 'resumed')
  assert step_a == step_b == STEPS and max_difference(a, b) == 0, max_difference(a, b)
  return f'steps {STEPS // 2 + 1}-{STEPS} resumed: losses and parameters bit for bit'


def check_sample(work: Path) -> str:
  result = run_entry_point('sample.py', f'--workdir={work / "straight"}', '--prompt=def ',
                           '--max_new_tokens=16', '--temperature=0')
  assert result.stdout.strip(), result.stderr[-2000:]
  cfg, params, _ = restore(work / 'straight')
  prompts = [[100, 101, 102], [40, 41]]
  cached = generate(cfg, params, prompts, max_new_tokens=12, temperature=0)
  uncached = generate(cfg, params, prompts, max_new_tokens=12, temperature=0, use_cache=False)
  assert cached == uncached, (cached, uncached)
  return f'sample.py printed {len(result.stdout)} characters; cached == uncached greedy'


def check_hf(work: Path) -> str:
  from gptjax.hf import from_hf, to_hf

  cfg, params, _ = restore(work / 'straight')
  to_hf(cfg, params, work / 'hf')
  cfg_back, params_back = from_hf(str(work / 'hf'))
  assert max_difference(params, params_back) == 0, max_difference(params, params_back)
  tokens = np.arange(24, dtype=np.int32)[None] % cfg.vocab_size
  ours = np.asarray(GPT(cfg_back).apply({'params': params_back}, tokens))[..., :cfg.vocab_size]
  try:
    import torch
    from transformers import AutoModelForCausalLM
  except ImportError:
    return 'export and import: parameters equal (no torch/transformers: logits not compared)'
  model = AutoModelForCausalLM.from_pretrained(work / 'hf', dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = model(torch.from_numpy(tokens).long()).logits.numpy()[..., :cfg.vocab_size]
  difference = float(np.max(np.abs(ours - theirs)))
  assert difference < 1e-4, difference
  return f'parameters equal after export + import; logits vs transformers: {difference:.1e}'


def check_scan(work: Path) -> str:
  cfg, params, _ = restore(work / 'straight')
  scan_cfg = cfg.replace(scan_layers=True)
  scan_params = with_layers_layout(params, cfg.n_layers, scanned=True)
  tokens = jnp.arange(32, dtype=jnp.int32)[None] % cfg.vocab_size
  unrolled = GPT(cfg).apply({'params': params}, tokens)
  scanned = GPT(scan_cfg).apply({'params': scan_params}, tokens)
  difference = float(jnp.max(jnp.abs(unrolled - scanned)))
  assert difference < 1e-5, difference
  return f'nn.scan logits vs unrolled: max abs difference {difference:.1e}'


def check_mesh(work: Path) -> str:
  n = jax.device_count()
  if n < 2:
    return 'skipped: one device (XLA_FLAGS=--xla_force_host_platform_device_count=4 gives four)'
  cfg, params, _ = restore(work / 'straight')
  tensor = 2 if cfg.n_heads % 2 == 0 else 1
  tokens = jnp.arange(4 * 32, dtype=jnp.int32).reshape(4, 32) % cfg.vocab_size

  def loss(p, x):
    logits = GPT(cfg).apply({'params': p}, x[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), x[:, 1:, None], -1))

  one = float(jax.jit(loss)(params, tokens))
  sharding = ShardingConfig(mesh={'data': -1, 'tensor': tensor})
  layout = parallel.Layout.of(parallel.make_mesh(sharding.mesh), sharding)
  placed = place_params(cfg, params, layout)
  sharded = float(jax.jit(loss)(placed, jax.device_put(tokens, parallel.batch_sharding(layout))))
  assert abs(sharded - one) < 1e-5, (sharded, one)
  return f'{n} devices, data x tensor {n // tensor} x {tensor}: loss {sharded:.6f} vs {one:.6f}'


CHECKS = (('train', check_train), ('resume', check_resume), ('sample', check_sample),
          ('hf', check_hf), ('scan', check_scan), ('mesh', check_mesh))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.environ.get('OUT'),
                      help='directory for compat.md and compat.json (default: $OUT, if set)')
  args = parser.parse_args()

  found = versions()
  versions_table = markdown_table(['package', 'version'], list(found.items()))
  print(versions_table, flush=True)
  rows, failed = [], False
  with tempfile.TemporaryDirectory(prefix='gptjax-compat-') as tmp:
    work = Path(tmp)
    data.prepare('stdlib', 'bytes', work / 'data', max_bytes=CORPUS_BYTES, progress=False)
    for name, check in CHECKS:
      start = time.perf_counter()
      try:
        detail = check(work)
        status = 'skipped' if detail.startswith('skipped') else 'ok'
      except Exception as e:  # a failed check is reported, and the next one runs
        status, failed = 'FAILED', True
        detail = ' '.join(f'{type(e).__name__}: {e}'.split())[:600]  # one table row
        traceback.print_exc()
      rows.append((name, status, f'{time.perf_counter() - start:.1f}', detail))
      print(f'{name}: {status}: {detail}', flush=True)
  table = markdown_table(['check', 'result', 'seconds', 'detail'], rows)
  print(table)
  if args.out:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'compat.md').write_text(f'{versions_table}\n\n{table}\n')
    (out / 'compat.json').write_text(
        json.dumps(
            {
                'versions': found,
                'checks': [dict(zip(('check', 'result', 'seconds', 'detail'), r)) for r in rows]
            }, indent=2))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
