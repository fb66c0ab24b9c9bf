"""The background batch thread: order, bounds, errors and shutdown."""

import threading
import time

import pytest

from gptjax.prefetch import Prefetcher


def test_batches_come_in_step_order_from_a_bounded_queue():
  made, consumed = [], []

  def make(step):
    made.append(step)
    return {'step': step}

  with Prefetcher(make, range(3, 12), depth=2) as batches:
    for step, batch in batches:
      time.sleep(0.01)  # a slow step: the thread gets ahead as far as it may
      # At most `depth` batches wait in the queue, and one more is being made.
      assert max(made) - step <= 3, (made, step)
      assert batch == {'step': step}
      consumed.append(step)
  assert consumed == made == list(range(3, 12))


def test_an_error_making_a_batch_is_raised_at_its_step():
  def make(step):
    if step == 2:
      raise OSError('disk gone')
    return step

  seen = []
  with pytest.raises(OSError, match='disk gone'):
    with Prefetcher(make, range(5), depth=2) as batches:
      for step, _ in batches:
        seen.append(step)
  assert seen == [0, 1]


def test_leaving_early_stops_the_thread_even_with_a_full_queue():
  with Prefetcher(lambda step: step, range(1000), depth=1) as batches:
    for step, _ in batches:
      if step == 2:
        break
    time.sleep(0.05)  # the thread fills the queue and waits for room
  assert not any(t.name == 'batch-prefetch' and t.is_alive() for t in threading.enumerate())


def test_depth_must_be_positive():
  with pytest.raises(ValueError, match='depth=0 must be >= 1'):
    Prefetcher(lambda step: step, range(3), depth=0)
