"""The next training batches, gathered and put on the devices by a background thread while the
current step runs.

Each batch is still made by a pure function of its step number (the trainer's
`(data.seed, step) -> batch`), only earlier and on another thread; the queue hands them over in
step order, so what a step trains on, and so resuming, is unchanged. The queue is bounded:
at most `depth` batches wait on the devices at any time.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

_DONE = object()  # the producer's last item: every step was made, or it failed


class Prefetcher:
  """Iterates over (step, make(step)) for each step of `steps`, made `depth` steps ahead.

  An exception in make() is raised by the iteration, at the step it was made for. Leave it
  (close(), or the with-block) to stop the thread: it finishes the batch it is making.
  """
  def __init__(self, make: Callable[[int], Any], steps: range, depth: int = 2):
    if depth < 1:
      raise ValueError(f'depth={depth} must be >= 1')
    self._make, self._steps = make, steps
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce, name='batch-prefetch', daemon=True)
    self._thread.start()

  def _produce(self) -> None:
    try:
      for step in self._steps:
        item = (step, self._make(step))
        while not self._stop.is_set():  # wait for room, but not past close()
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
    except BaseException as error:  # raised by the consumer, at this step
      self._put_last(error)
      return
    self._put_last(_DONE)

  def _put_last(self, item) -> None:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def __iter__(self) -> Iterator[tuple[int, Any]]:
    while True:
      item = self._queue.get()
      if item is _DONE:
        return
      if isinstance(item, BaseException):
        raise item
      yield item

  def close(self) -> None:
    self._stop.set()
    self._thread.join()

  def __enter__(self) -> 'Prefetcher':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
