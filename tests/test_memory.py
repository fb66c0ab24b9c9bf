"""The memory fit: XLA's analysis of a step against the free memory (gptjax.memory).

Steps are stand-ins whose memory_analysis reports a chosen size, so the search and its messages
are tested without compiling; tests/test_train.py runs the real thing end to end.
"""

from types import SimpleNamespace

import pytest

from gptjax import memory

GiB = memory.GiB


class FakeCompiled:
  def __init__(self, needed: int):
    self.needed = needed

  def memory_analysis(self):
    # 2 GiB of state in and out (donated, so counted once) plus the temporaries.
    return SimpleNamespace(argument_size_in_bytes=2 * GiB, output_size_in_bytes=2 * GiB,
                           alias_size_in_bytes=2 * GiB, temp_size_in_bytes=self.needed - 2 * GiB,
                           generated_code_size_in_bytes=0)


def activations_step(per_row: float, batch_size: int, remat_factor: float = 0.25):
  """compile_step whose memory is 2 GiB of state plus per_row GiB per micro-batch row; remat
  keeps remat_factor of the activations. Records what was compiled."""
  compiled = []

  def compile_step(k, remat):
    compiled.append((k, remat))
    rows = batch_size // k
    return FakeCompiled(int((2 + per_row * rows * (remat_factor if remat else 1)) * GiB))

  return compile_step, compiled


def fit(compile_step, free_gib, **kwargs):
  settings = dict(grad_accum_steps=1, remat=False, batch_size=64, n_devices=1)
  settings.update(kwargs)
  return memory.fit_step(compile_step, free=(int(free_gib * GiB), 'test RAM'), **settings)


def test_grad_accum_choices_split_the_batch_evenly_over_the_devices():
  assert memory.grad_accum_choices(12, 1) == [1, 2, 3, 4, 6, 12]
  assert memory.grad_accum_choices(12, 2) == [1, 2, 3, 6]  # 12 / 4 = 3 rows do not split over 2
  assert memory.grad_accum_choices(8, 8) == [1]


def test_needed_bytes_counts_donated_state_once():
  assert memory.needed_bytes(FakeCompiled(7 * GiB)) == 7 * GiB
  assert memory.needed_bytes(SimpleNamespace(memory_analysis=lambda: None)) is None


def test_a_setting_that_fits_is_compiled_once_and_kept():
  compile_step, compiled = activations_step(per_row=0.1, batch_size=64)
  fitted = fit(compile_step, free_gib=16, grad_accum_steps=2)
  assert (fitted.grad_accum_steps, fitted.remat, compiled) == (2, False, [(2, False)])
  assert fitted.needed == int(5.2 * GiB) and fitted.free == 16 * GiB


def test_auto_picks_the_fewest_micro_batches_that_fit_with_headroom():
  # 2 + 0.5 * 64 / k GiB; budget 0.9 * 10 = 9 GiB -> 64 / k <= 14 -> k = 8 (k = 4 needs 10 GiB,
  # which would fit without the headroom).
  compile_step, compiled = activations_step(per_row=0.5, batch_size=64)
  fitted = fit(compile_step, free_gib=10, grad_accum_steps='auto')
  assert fitted.grad_accum_steps == 8 and not fitted.remat
  assert len(compiled) <= 4  # bisection over 1, 2, 4, ..., 64, not every choice


def test_auto_without_a_memory_figure_takes_one_micro_batch():
  compile_step, _ = activations_step(per_row=0.5, batch_size=64)
  fitted = memory.fit_step(compile_step, grad_accum_steps='auto', remat=False, batch_size=64,
                           n_devices=1, free=(None, 'memory'))
  assert fitted.grad_accum_steps == 1


def test_a_fixed_setting_that_does_not_fit_names_the_one_that_does():
  compile_step, _ = activations_step(per_row=0.5, batch_size=64)
  with pytest.raises(memory.DoesNotFit) as error:
    fit(compile_step, free_gib=10, grad_accum_steps=2)
  message = str(error.value)
  assert 'needs 18.0 GiB per device with optim.grad_accum_steps=2' in message
  assert '10.0 GiB of test RAM is free' in message
  assert 'set optim.grad_accum_steps=8 (micro-batches of 8 sequences, 6.0 GiB)' in message
  assert '\n' not in message


def test_when_no_micro_batch_fits_remat_is_advised():
  # One row needs 2 + 10 = 12 GiB; with remat 2 + 2.5 per row: 2 rows (7 GiB) fit in 0.9 * 8.
  compile_step, _ = activations_step(per_row=10, batch_size=64)
  with pytest.raises(
      memory.DoesNotFit, match=r'set model\.remat=True and '
      r'optim\.grad_accum_steps=32 \(micro-batches of 2 sequences'):
    fit(compile_step, free_gib=8, grad_accum_steps=1)
  with pytest.raises(memory.DoesNotFit, match=r'set model\.remat=True \(then auto picks 32'):
    fit(compile_step, free_gib=8, grad_accum_steps='auto')


def test_when_nothing_fits_the_other_levers_are_named():
  compile_step, _ = activations_step(per_row=100, batch_size=64)
  with pytest.raises(memory.DoesNotFit, match='shorten train.seq_len.*sharding.mesh.fsdp=-1'):
    fit(compile_step, free_gib=8, grad_accum_steps=4)


def test_host_memory_is_mem_available_capped_by_the_cgroup(tmp_path):
  meminfo = tmp_path / 'meminfo'
  meminfo.write_text('MemTotal:  32000000 kB\nMemAvailable:  20000000 kB\n')
  cgroup = tmp_path / 'cgroup'
  cgroup.mkdir()
  assert memory.host_available_bytes(meminfo, cgroup) == 20000000 * 1024
  (cgroup / 'memory.max').write_text('max\n')
  assert memory.host_available_bytes(meminfo, cgroup) == 20000000 * 1024
  (cgroup / 'memory.max').write_text(f'{8 * GiB}\n')
  (cgroup / 'memory.stat').write_text(f'anon {3 * GiB}\nfile {4 * GiB}\n')
  assert memory.host_available_bytes(meminfo, cgroup) == 5 * GiB  # page cache is reclaimable
  assert memory.host_available_bytes(tmp_path / 'none', tmp_path / 'none') is None
