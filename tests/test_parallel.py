"""Sharding by names: the rules, the mesh, and 8 devices computing what one device computes.

The unit tests need no devices (an AbstractMesh has only a shape). The mesh matrix runs
tests/parallel_probe.py once, in a subprocess with 8 CPU devices, and checks what it wrote.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec as P

from conftest import once_per_session, subprocess_env
from gptjax import parallel
from gptjax.config import ShardingConfig
from gptjax.model import abstract_params, param_axes, param_paths

REPO = Path(__file__).resolve().parents[1]
ORDER = parallel.DEVICE_ORDER


def layout(data=1, fsdp=1, tensor=1, expert=1, **rules) -> parallel.Layout:
  sizes = dict(data=data, fsdp=fsdp, tensor=tensor, expert=expert)
  # Auto axes, as parallel.make_mesh's Mesh has (AbstractMesh defaults to Explicit from jax 0.11.1).
  mesh = AbstractMesh(tuple(sizes[a] for a in ORDER), ORDER,
                      axis_types=(AxisType.Auto,) * len(ORDER))
  return parallel.Layout.of(mesh, ShardingConfig.from_config({'rules': rules}))


@pytest.mark.parametrize('sizes, n, resolved', [
    ({'data': -1}, 8, (8, 1, 1, 1)),
    ({'data': 2, 'fsdp': -1}, 8, (2, 4, 1, 1)),
    ({'data': -1, 'tensor': 4}, 8, (2, 1, 4, 1)),
    ({'data': 2, 'fsdp': 2, 'tensor': 2}, 8, (2, 2, 2, 1)),
    ({'expert': -1, 'data': 1}, 4, (1, 1, 1, 4)),
])
def test_mesh_sizes_resolve_the_rest(sizes, n, resolved):
  assert tuple(parallel.resolve_mesh_sizes(sizes, n).values()) == resolved


@pytest.mark.parametrize('sizes, n, message', [
    ({'data': -1, 'tensor': 3}, 8, 'data=-1 x tensor=3: the fixed axes take 3 devices, which does '
     'not divide the 8'),
    ({'data': 2, 'fsdp': 2}, 8, r'data=2 x fsdp=2 takes 4 devices, but there are 8 \(set one axis '
     'to -1'),
])
def test_mesh_sizes_that_do_not_fit_name_the_axes(sizes, n, message):
  with pytest.raises(ValueError, match=message):
    parallel.resolve_mesh_sizes(sizes, n)


def test_tensor_axis_stays_within_a_host():
  class Device:  # what make_mesh reads of a device
    def __init__(self, i):
      self.id, self.process_index = i, i // 2

  with pytest.raises(ValueError, match='tensor=4 does not divide the 2 devices of a host'):
    parallel.make_mesh({'data': -1, 'tensor': 4}, [Device(i) for i in range(8)])


@pytest.mark.parametrize(
    'mesh, names, shape, spec',
    [
        # Megatron: column-parallel in, row-parallel out; FSDP on the embed axis.
        ({'fsdp': 2, 'tensor': 4}, ('embed', 'heads', 'head_dim'),
         (64, 8, 16), P('fsdp', 'tensor')),
        ({'fsdp': 2, 'tensor': 4}, ('heads', 'head_dim', 'embed'),
         (8, 16, 64), P('tensor', None, 'fsdp')),
        ({'tensor': 4}, ('mlp', 'embed'), (256, 64), P('tensor')),
        # An axis that its rule's mesh axes do not divide stays whole on them.
        ({'tensor': 4}, ('embed', 'kv_heads', 'head_dim'), (64, 2, 16), P()),
        ({'fsdp': 8}, ('vocab', 'embed'), (257, 64), P(None, 'fsdp')),
        # The batch over data x fsdp (x expert); a mesh axis serves one dimension only: the
        # activations' embed axis is not split over the fsdp axis the batch already uses.
        ({'data': 2, 'fsdp': 4}, ('batch', 'sequence', 'embed'), (16, 32, 64), P(('data', 'fsdp'))),
        # ... and a batch that the product does not divide keeps the leading axes that do.
        ({'data': 2, 'fsdp': 4}, ('batch', 'sequence'), (2, 32), P('data')),
        # Size-1 mesh axes are left out of the spec.
        ({'data': 8}, ('embed', 'heads', 'head_dim'), (64, 8, 16), P()),
    ])
def test_layout_spec_follows_the_rules(mesh, names, shape, spec):
  assert layout(**mesh).spec(names, shape) == spec


def test_rules_are_configurable():
  sequence_parallel = layout(tensor=4, sequence='tensor')
  assert sequence_parallel.spec(('batch', 'sequence', 'embed'), (8, 32, 64)) == P(None, 'tensor')
  no_tp_mlp = layout(tensor=4, mlp='')
  assert no_tp_mlp.spec(('embed', 'mlp'), (64, 256)) == P()


def test_batch_shards_and_their_check():
  hybrid = layout(data=2, fsdp=2, tensor=2)
  assert hybrid.batch_shards == 4
  parallel.check_batch_divides(12, hybrid)
  with pytest.raises(
      ValueError, match=r'batch_size=6 must be divisible by the 4 ways it is split '
      r'\(sharding.rules.batch over sharding.mesh\)'):
    parallel.check_batch_divides(6, hybrid)
  with pytest.raises(ValueError, match='batch_size=12 must be divisible by the 8 devices'):
    parallel.check_batch_divides(12, layout(data=8))


def test_state_shardings_place_adam_moments_as_their_params():
  from gptjax.config import ModelConfig
  import optax
  cfg = ModelConfig(vocab_size=256, n_layers=1, d_model=64, n_heads=4, block_size=16)
  params = abstract_params(cfg)
  state = {'params': params, 'opt_state': jax.eval_shape(optax.adamw(1e-3).init, params)}
  shardings = parallel.state_shardings(state, layout(fsdp=2, tensor=4), param_axes(cfg))
  specs = {path: s.spec for path, s in param_paths(shardings).items()}
  query = P('fsdp', 'tensor')
  assert specs['params/blocks_0/attn/query/kernel'] == query
  assert specs['opt_state/0/mu/blocks_0/attn/query/kernel'] == query
  assert specs['opt_state/0/nu/blocks_0/attn/query/kernel'] == query
  assert specs['opt_state/0/count'] == P()  # no parameter's path: replicated
  assert specs['params/wte/embedding'] == P('tensor', 'fsdp')  # 256 rows divide


# ---------------------------------------------------------------------------------------------
# The mesh matrix on 8 CPU devices (tests/parallel_probe.py)


@pytest.fixture(scope='module')
def probe(tmp_path_factory):
  """(directory, results.json) of one run of tests/parallel_probe.py for the whole session."""
  def run_probe(out):
    command = [sys.executable, str(REPO / 'tests' / 'parallel_probe.py'), str(out / 'data'), out]
    result = subprocess.run(command, env=subprocess_env(8), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    assert 'rematerialization' not in result.stderr, result.stderr[-6000:]  # XLA's inefficiency

  out = once_per_session(tmp_path_factory, 'parallel_probe', run_probe)
  return out, json.loads((out / 'results.json').read_text())


@pytest.mark.slow
def test_every_mesh_gives_the_single_device_losses_and_gradients(probe):
  """Losses and gradient norms of 3 steps (dropout on), and every gradient of the first batch.

  Tolerance: the meshes sum the same float32 terms in another order (a gradient reduced across
  8 devices, a matmul split by heads), which moves a sum of n terms by about n * 6e-8 of its
  magnitude; an element that is a small difference of large terms can be far off in relative
  terms, so each leaf is compared relative to its largest element (measured: under 1e-6). A
  wrong reduction (a missing all-reduce, a doubled one) is off by a factor of 2 to 8."""
  out, results = probe
  meshes = results['meshes']
  reference = meshes['single']
  assert results['devices'] == 8 and set(meshes) == {'single', *parallel_probe_meshes()}
  grads_ref = np.load(out / 'grads_single.npz')
  for mesh in parallel_probe_meshes():
    data, fsdp, tensor = map(int, mesh.split(','))
    assert meshes[mesh]['mesh_shape'] == {'data': data, 'fsdp': fsdp, 'expert': 1, 'tensor': tensor}
    for step, (got, want) in enumerate(zip(meshes[mesh]['metrics'], reference['metrics'])):
      for name in ('loss', 'grad_norm'):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5,
                                   err_msg=f'{name} of step {step} on mesh {mesh}')
    grads = np.load(out / f'grads_{mesh}.npz')
    assert set(grads.files) == set(grads_ref.files)
    for name in grads_ref.files:
      scale = np.abs(grads_ref[name]).max()
      np.testing.assert_allclose(grads[name], grads_ref[name], rtol=0, atol=1e-5 * scale,
                                 err_msg=f'gradient of {name} on mesh {mesh}')


def parallel_probe_meshes():
  return ('8,1,1', '1,8,1', '2,2,2', '1,2,4', '2,1,4')


@pytest.mark.slow
def test_meshes_place_params_and_adam_moments_by_their_names(probe):
  _, results = probe
  meshes = results['meshes']
  query, out = 'blocks_0/attn/query/kernel', 'blocks_0/attn/out/kernel'
  for prefix in ('params/', 'opt_state/1/0/mu/'):
    assert meshes['2,2,2']['specs'][prefix + query] == ['fsdp', 'tensor']
    assert meshes['2,2,2']['specs'][prefix + out] == ['tensor', None, 'fsdp']
    assert meshes['8,1,1']['specs'][prefix + query] == []  # data parallel: replicated
    assert meshes['1,8,1']['specs'][prefix + query] == ['fsdp']
    # 2 kv heads do not divide over tensor=4: whole there, still split over fsdp.
    assert meshes['1,2,4']['specs'][prefix + 'blocks_0/attn/key/kernel'] == ['fsdp']
    assert meshes['2,2,2']['specs'][prefix + 'blocks_0/mlp/down/kernel'] == ['tensor', 'fsdp']
  assert meshes['2,1,4']['batch_shards'] == 2 and meshes['1,8,1']['batch_shards'] == 8


@pytest.mark.slow
def test_checkpoint_written_on_one_mesh_continues_bit_exactly_on_another(probe):
  """Saved on (2,2,2), restored on (1,2,4) and on one device: the arrays restored are the ones
  saved, placed on the new mesh, and the next 2 steps there are bit for bit those taken from the
  saved arrays put onto that mesh directly."""
  _, results = probe
  for mesh, check in results['checkpoint'].items():
    assert check['on_mesh'] and check['restored_bits'] and check['continued_bits'], (mesh, check)
  a, b = (results['checkpoint'][m]['metrics'] for m in ('1,2,4', 'single'))
  for got, want in zip(a, b):  # and the two meshes agree with each other as any two do
    np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-5)


@pytest.mark.slow
def test_tensor_parallel_cached_decoding_gives_the_single_device_tokens(probe):
  _, results = probe
  decoding = results['decoding']
  for name in ('greedy', 'sampled'):
    assert decoding[name]['tensor'] == decoding[name]['single'], name
  assert decoding['cache_spec'][:2] == [None, 'tensor']  # [B, K, S, D]: kv heads split
  assert decoding['params_spec']['blocks_0/attn/key/kernel'] == [None, 'tensor']
  scores = decoding['scores']
  for (got, got_greedy), (want, want_greedy) in zip(scores['tensor'], scores['single']):
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got_greedy == want_greedy


@pytest.mark.slow
def test_sample_py_runs_tensor_parallel_on_several_devices(tmp_path):
  """sample.py on 8 devices with --mesh=tensor=4 writes the one-device text."""
  args = [
      sys.executable,
      str(REPO / 'sample.py'), '--config',
      str(REPO / 'configs' / 'tiny.py'), '--prompt=Hello, I am', '--max_new_tokens=12', '--seed=3'
  ]
  one = subprocess.run(args, env=subprocess_env(1), cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
  many = subprocess.run([*args, '--mesh=tensor=4'], env=subprocess_env(8), cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert one.returncode == 0 and many.returncode == 0, (one.stderr[-3000:], many.stderr[-3000:])
  assert many.stdout == one.stdout and one.stdout.startswith('Hello, I am')
  assert 'on 8 devices (data 2, tensor 4)' in many.stderr, many.stderr[-3000:]
  bad = subprocess.run([*args, '--mesh=tensor=3'], env=subprocess_env(8), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1] == (
      'error: sharding.mesh data=-1 x tensor=3: the fixed axes take 3 devices, which does not '
      'divide the 8 there are')


@pytest.mark.parametrize(
    'text, sizes',
    [
        ('tensor=4', {'data': -1, 'fsdp': 1, 'tensor': 4, 'expert': 1}),
        ('data=2, fsdp=-1', {'data': 2, 'fsdp': -1, 'tensor': 1, 'expert': 1}),
        ('tensor=-1', {'data': 1, 'fsdp': 1, 'tensor': -1, 'expert': 1
                       }),  # the rest: to tensor only
    ])
def test_mesh_flag_parses_to_the_configs_sizes(text, sizes):
  from gptjax.loading import parse_mesh
  assert parse_mesh(text) == sizes


@pytest.mark.parametrize('text, message', [
    ('tensor', r"--mesh=tensor: 'tensor' is not AXIS=SIZE"),
    ('tensr=2', "--mesh=tensr=2: unknown sharding.mesh axis 'tensr'; did you mean 'tensor'"),
    ('tensor=0', '--mesh=tensor=0: sharding.mesh.tensor=0 must be a positive number'),
    ('data=-1,tensor=-1', 'data and tensor are both -1'),
])
def test_a_bad_mesh_flag_names_what_is_wrong(text, message):
  from gptjax.loading import parse_mesh
  with pytest.raises(ValueError, match=message):
    parse_mesh(text)
