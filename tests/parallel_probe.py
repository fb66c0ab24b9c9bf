"""Run by tests/test_parallel.py in a process with 8 CPU devices: one small model trained, its
gradients taken, checkpointed and sampled on several meshes of those devices, all in one process
(one interpreter start, one prepared corpus). Writes what the test compares to OUT_DIR:
results.json (per mesh: losses and gradient norms of each step, the PartitionSpec of every
parameter and Adam moment, the checkpoint and decoding checks) and grads_<mesh>.npz.

  python tests/parallel_probe.py DATA_DIR OUT_DIR
"""

import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

from gptjax import checkpoint, data, parallel, sampling, trainer
from gptjax.config import base_config
from gptjax.eval.scoring import Scorer
from gptjax.model import param_paths, place_params
from gptjax.optim import make_optimizer

# (data, fsdp, tensor) on the 8 devices; 'single' is one device, the reference.
MESHES = ('single', '8,1,1', '1,8,1', '2,2,2', '1,2,4', '2,1,4')
STEPS = 3
SAVED_ON, RESTORED_ON = '2,2,2', ('1,2,4', 'single')
DECODE_ON = '4,1,2'  # 2 kv heads over tensor=2: the cache is split by heads


def make_config(data_dir: str):
  # Every axis kind a rule can split: 4 query heads, 2 kv heads (GQA: over tensor=4 they do not
  # divide, and stay whole), a SwiGLU hidden width of 256, biases, an untied head over a padded
  # vocabulary. Dropout makes a sharding-dependent mask show in the losses.
  config = base_config(vocab_size=257, vocab_pad_multiple=64, n_layers=2, d_model=64, n_heads=4,
                       n_kv_heads=2, block_size=32, position='rope', mlp='swiglu', norm='rmsnorm',
                       tie_embeddings=False, use_bias=True, resid_dropout=0.1)
  config.data.update(corpus='stdlib', tokenizer='bytes', data_dir=data_dir, max_bytes=100_000)
  config.optim.update(lr=3e-3, warmup_steps=1, decay_steps=8)
  config.train.update(steps=8, batch_size=8)
  return config


def make_run(data_dir: str, mesh: str) -> trainer.Run:
  config = make_config(data_dir)
  if mesh != 'single':
    sizes = dict(zip(('data', 'fsdp', 'tensor'), map(int, mesh.split(','))))
    config.sharding.mesh.update(sizes)
  run = trainer.setup(config)
  if mesh == 'single':
    one = parallel.make_mesh({'data': 1}, jax.devices()[:1])
    run = dataclasses.replace(run, layout=parallel.Layout.of(one))
  return run


def train(run: trainer.Run, state, steps: int):
  """(state, [{'loss', 'grad_norm'} per step]) after `steps` steps from `state`."""
  optimizer = make_optimizer(run.optim, run.train.steps, run.cfg)
  _, shardings = trainer.abstract_state(run, optimizer)
  step_fn = trainer.make_train_step(run, optimizer, shardings)
  metrics = []
  for step in range(int(state['step']), int(state['step']) + steps):
    state, m = step_fn(state, trainer._train_batch(run, step))
    metrics.append({'loss': float(m['loss']), 'grad_norm': float(m['grad_norm'])})
  return state, metrics


def fresh_state(run: trainer.Run):
  optimizer = make_optimizer(run.optim, run.train.steps, run.cfg)
  abstract, shardings = trainer.abstract_state(run, optimizer)
  return trainer.initial_state(run, optimizer, shardings, abstract), abstract


def gradients(run: trainer.Run, params) -> dict[str, np.ndarray]:
  """The first batch's gradients (dropout on), as the sharded step takes them."""
  batch = trainer._train_batch(run, 0)
  rng = jax.random.key(7)

  def grad(params, batch):
    with parallel.activations(run.layout):
      loss = lambda p: trainer.training_loss(run.cfg, p, batch, rng, train=True)[0]
      return jax.grad(loss)(params)

  return {k: np.asarray(v) for k, v in param_paths(jax.jit(grad)(params, batch)).items()}


def specs(state) -> dict[str, list]:
  return {
      path: [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]
      for path, x in param_paths(state).items()
  }


def host(tree):
  return jax.tree.map(np.asarray, tree)


def same_bits(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(x, y), host(a), host(b))))


def checkpoint_across_meshes(data_dir: str, workdir: Path, saved_state) -> dict:
  """saved_state (trained on SAVED_ON) saved, restored on each of RESTORED_ON and trained 2 more
  steps there; the same 2 steps from the saved arrays put onto that mesh directly."""
  with contextlib.closing(checkpoint.manager(workdir)) as mngr:
    checkpoint.save(mngr, STEPS, saved_state, {'model': {}})
  results = {}
  for mesh in RESTORED_ON:
    run = make_run(data_dir, mesh)
    _, abstract = fresh_state(run)
    with contextlib.closing(checkpoint.manager(workdir)) as mngr:
      restored = checkpoint.restore(mngr, STEPS, abstract)
    direct = jax.device_put(host(saved_state), jax.tree.map(lambda a: a.sharding, abstract))
    on_mesh = all(
        x.sharding.is_equivalent_to(a.sharding, x.ndim)
        for x, a in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract)))
    restored_bits = same_bits(restored, saved_state)
    after_restore, metrics_restored = train(run, restored, 2)
    after_direct, metrics_direct = train(run, direct, 2)
    results[mesh] = {
        'on_mesh': on_mesh, 'restored_bits': restored_bits, 'metrics': metrics_restored,
        'continued_bits': same_bits(after_restore, after_direct)
        and metrics_restored == metrics_direct
    }
  return results


def decoding(data_dir: str) -> dict:
  """Greedy and sampled continuations and scores on one device and tensor-parallel, and the
  cache's spec."""
  run = make_run(data_dir, DECODE_ON)
  params = fresh_state(run)[0]['params']
  one = host(params)
  placed = place_params(run.cfg, one, run.layout)
  prompts = [[10, 20, 30, 40, 50], [60, 70]]
  out = {}
  for name, temperature in (('greedy', 0.0), ('sampled', 0.8)):
    kwargs = dict(max_new_tokens=12, temperature=temperature, seed=3)
    out[name] = {
        'single': sampling.generate(run.cfg, one, prompts, **kwargs),
        'tensor': sampling.generate(run.cfg, placed, prompts, layout=run.layout, **kwargs)
    }
  tokens = np.asarray([[1, 2, 10, 20], [0, 0, 60, 70]], np.int32)
  prefill = sampling._prefill_fn(run.cfg, sampling.gpt_forward, 16, run.layout)
  cache = prefill(placed, tokens, np.asarray([0, 2], np.int32))
  out['cache_spec'] = [
      list(a) if isinstance(a, tuple) else a for a in cache.layers[0].k.sharding.spec
  ]
  out['params_spec'] = specs(placed)
  # Log-likelihoods as evals take them: shared contexts (the KV cache) and whole pairs.
  pairs = [([10, 20, 30], [40, 50]), ([10, 20, 30], [41]), ([5] * 9, [6, 7, 8])]
  out['scores'] = {
      'single': Scorer(run.cfg, one, valid_vocab_size=257).score(pairs),
      'tensor': Scorer(run.cfg, placed, valid_vocab_size=257, layout=run.layout).score(pairs)
  }
  return out


def main(data_dir: str, out_dir: str):
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  data.prepare('stdlib', 'bytes', data_dir, max_bytes=100_000, progress=False)
  results = {'devices': jax.device_count(), 'meshes': {}}
  for mesh in MESHES:
    run = make_run(data_dir, mesh)
    state, _ = fresh_state(run)
    np.savez(out / f'grads_{mesh}.npz', **gradients(run, state['params']))
    state_specs = specs(state)
    state, metrics = train(run, state, STEPS)
    results['meshes'][mesh] = {
        'metrics': metrics, 'specs': state_specs, 'mesh_shape': dict(run.mesh.shape),
        'batch_shards': run.layout.batch_shards
    }
    if mesh == SAVED_ON:
      results['checkpoint'] = checkpoint_across_meshes(data_dir, out / 'ckpt', state)
  results['decoding'] = decoding(data_dir)
  (out / 'results.json').write_text(json.dumps(results))


if __name__ == '__main__':
  main(*sys.argv[1:])
