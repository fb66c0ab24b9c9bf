"""Orbax checkpoints of a training run: state (params, optimizer state, step) plus the config.

The config travels with every checkpoint so that a workdir alone is enough to rebuild the model
(sample.py, evaluation, fine-tuning) and so that restoring into a different model fails with the
name of the field that differs instead of a shape trace. Orbax writes each step into a temporary
directory and renames it when complete, so a save killed half-way leaves the previous checkpoint
as the latest one; the trainer's saves are asynchronous (written while training goes on).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
import tensorstore as ts

from gptjax.model import param_paths

CHECKPOINT_DIR = 'checkpoints'


class CheckpointError(ValueError):
  """A checkpoint that is missing or does not fit the current run."""


def _checkpoint_dir(workdir) -> Path:
  return Path(workdir).absolute() / CHECKPOINT_DIR


@contextlib.contextmanager
def _reading(workdir, step: int):
  """A checkpoint that exists but cannot be read (a truncated or overwritten file, a removed
  item) as one CheckpointError naming it and the way on. It is never deleted here: moving it
  away is the user's call, and the message says which step that resumes from."""
  try:
    yield
  except CheckpointError:
    raise
  except Exception as e:  # orbax and tensorstore raise many types, some plain Exception
    directory = _checkpoint_dir(workdir)
    earlier = [s for s in sorted(ocp.utils.checkpoint_steps(directory)) if s < step]
    way_on = (f'move it away (mv {directory / str(step)} {directory}/bad-{step}) to use step '
              f'{earlier[-1]}' if earlier else 'it is the only checkpoint: train into another '
              'workdir, or move it away to start again')
    detail = ' '.join(str(e).split())[:200]
    raise CheckpointError(f'checkpoint {directory / str(step)} is damaged ({type(e).__name__}: '
                          f'{detail}); {way_on}') from None


def _check_readable(state_dir: Path, prefix: str = '') -> None:
  """Reads every stored value (of the arrays whose names start with `prefix`) once, plainly.

  Orbax reads a checkpoint through asyncio; when a file is truncated or overwritten, its restore
  fails part-way and the reads still in flight print "Event loop is closed" tracebacks around
  the one-line error. Read synchronously first, the same damage raises one ValueError here
  (which _reading words), at the cost of reading the files twice (the second time from the
  page cache)."""
  if not (state_dir / 'manifest.ocdbt').is_file():
    return  # not orbax's OCDBT layout: orbax's own error says what is wrong
  store = ts.KvStore.open({'driver': 'ocdbt', 'base': f'file://{state_dir}/'}).result()
  for key in store.list().result():
    if key.decode().startswith(prefix):
      store.read(key).result()


def manager(workdir, keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(_checkpoint_dir(workdir), options=options,
                               item_names=('state', 'config'))


# Orbax's files (metadata, the OCDBT index) beside the arrays' bytes: ~5% on the small config.
SAVE_OVERHEAD = 1.1
SAVE_SLACK_BYTES = 1 << 20


def save(mngr: ocp.CheckpointManager, step: int, state, config_dict: dict[str, Any],
         wait: bool = True) -> None:
  """Saves a checkpoint; with wait=False only until the arrays are copied off the devices, while
  a background thread writes them (orbax's async checkpointing: training goes on meanwhile). The
  next save, `finish` and `writing`'s exit wait for it. Either way a step's checkpoint becomes
  the latest only once complete: orbax writes into a temporary directory and renames it on
  commit, so a process killed mid-save leaves the previous checkpoint as the latest.

  A disk without room for it is refused before orbax starts writing (a full disk half-way
  through a save prints pages of orbax's thread errors); the earlier checkpoints stay as they
  are, and the message says where the run resumes from."""
  directory = Path(mngr.directory)
  needed = SAVE_OVERHEAD * _bytes_written_here(state) + SAVE_SLACK_BYTES
  free = shutil.disk_usage(directory).free
  if free < needed:
    finish(mngr)  # the save under way may be the one that resumes
    raise _no_space(directory, step, f'it needs about {_mib(needed)}, {_mib(free)} is free')
  with _disk_full_said(directory, step):
    mngr.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      config=ocp.args.JsonSave(config_dict)), force=True)
    if wait:
      mngr.wait_until_finished()


def finish(mngr: ocp.CheckpointManager) -> None:
  """Waits until the checkpoint being written in the background (if any) is committed."""
  with _disk_full_said(Path(mngr.directory), None):
    mngr.wait_until_finished()


@contextlib.contextmanager
def writing(workdir, keep: int = 3):
  """A checkpoint manager that, however the block ends (its end, an error, Ctrl-C), waits for
  the checkpoint being written to commit before it closes."""
  mngr = manager(workdir, keep)
  try:
    yield mngr
  finally:
    try:
      finish(mngr)
    finally:
      mngr.close()


@contextlib.contextmanager
def _disk_full_said(directory: Path, step: int | None):
  """A disk that filled during a save (another writer) as one CheckpointError."""
  try:
    yield
  except Exception as e:
    if 'No space left on device' not in str(e):
      raise
    raise _no_space(directory, step, 'the disk filled up while it was written') from None


def _bytes_written_here(state) -> int:
  """Bytes of the arrays this process writes: one copy of each shard it holds."""
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(state)
             for shard in getattr(leaf, 'addressable_shards', ()) if shard.replica_id == 0)


def _mib(n: float) -> str:
  return f'{n / (1 << 20):,.1f} MiB'


def _no_space(directory: Path, step: int | None, detail: str) -> CheckpointError:
  latest = latest_step(directory.parent)
  resume = 'starts again (no checkpoint yet)' if latest is None else f'resumes from step {latest}'
  which = 'the checkpoint' if step is None else f'the checkpoint of step {step}'
  return CheckpointError(f'no room on the disk for {which} in '
                         f'{directory}: {detail}; free some space (or lower '
                         f'train.keep_checkpoints) and rerun the same command, which {resume}')


def latest_step(workdir) -> int | None:
  directory = _checkpoint_dir(workdir)
  if not directory.is_dir():
    return None
  steps = ocp.utils.checkpoint_steps(directory)
  return max(steps) if steps else None


def load_config(workdir, step: int | None = None) -> dict[str, Any]:
  """The config saved with a checkpoint (the latest one by default), as a plain dict."""
  step = existing_step(workdir, step)
  # 'metadata' is the file name orbax's JsonSave writes; the item directory also holds orbax's
  # commit_success.txt, so the file must be named rather than globbed.
  path = _checkpoint_dir(workdir) / str(step) / 'config' / 'metadata'
  if not path.parent.parent.joinpath('state').is_dir() and not path.parent.is_dir():
    raise CheckpointError(f'{path.parent.parent} is not a gptjax checkpoint (no state/ or '
                          'config/ in it)')
  with _reading(workdir, step):
    return json.loads(path.read_text())


def existing_step(workdir, step: int | None) -> int:
  """`step` (None: the latest) if the workdir has a checkpoint for it; else a CheckpointError."""
  steps = []
  directory = _checkpoint_dir(workdir)
  if directory.is_dir():
    steps = sorted(ocp.utils.checkpoint_steps(directory))
  if not steps:
    raise CheckpointError(f'no checkpoint in {directory}: nothing has been trained into '
                          f'{workdir} yet')
  if step is None:
    return steps[-1]
  if step not in steps:
    raise CheckpointError(f'no checkpoint for step {step} in {directory}; '
                          f'available: {", ".join(map(str, steps))}')
  return step


def check_same_model(saved_model: dict[str, Any], model: dict[str, Any], source: str) -> None:
  """Raises, naming every field that differs, if a checkpoint holds another architecture."""
  keys = sorted(set(saved_model) | set(model))
  differ = [
      f'{k}: checkpoint {saved_model.get(k)!r} vs config {model.get(k)!r}' for k in keys
      if saved_model.get(k) != model.get(k)
  ]
  if differ:
    raise CheckpointError(f'{source} was written with a different model config '
                          f'({"; ".join(differ)}); train into another workdir or keep the '
                          'model config')


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores a state onto the shardings of `abstract_state` (any device count)."""
  with _reading(mngr.directory.parent, step):
    _check_readable(Path(mngr.directory) / str(step) / 'state')
    restored = mngr.restore(step,
                            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return restored['state']


def restore_params(workdir, abstract_params, step: int | None = None):
  """Only the parameters of a run's checkpoint (for sampling, evaluation, fine-tuning).

  `abstract_params`: the expected tree of jax.ShapeDtypeStruct (e.g. gptjax.model.abstract_params
  of the run's ModelConfig); a leaf without a sharding is restored onto this process's first
  device. Returns (params, step).
  """
  step = existing_step(workdir, step)
  with _reading(workdir, step):
    return _restore_params(_checkpoint_dir(workdir) / str(step) / 'state', abstract_params), step


def restore_state(workdir, abstract_state, step: int | None = None):
  """The whole training state (params, optimizer state, step) of a run's checkpoint, onto the
  shapes and shardings of `abstract_state`: another run continues from it (a branch, such as a
  warmup-stable-decay cooldown). Its optimizer state must have the expected structure."""
  step = existing_step(workdir, step)
  with _reading(workdir, step):
    path = _checkpoint_dir(workdir) / str(step) / 'state'
    _check_readable(path)
    _check_shapes(path, abstract_state, 'training state')
    return _restore(path, abstract_state, partial=False)


def _restore_params(path: Path, abstract_params):
  _check_readable(path, prefix='params.')
  _check_shapes(path, abstract_params, 'parameters', only='params')
  # partial_restore: read the params and skip the optimizer state (twice their size).
  return _restore(path, {'params': abstract_params}, partial=True)['params']


def _restore(path: Path, abstract, partial: bool):
  """A leaf without a sharding is restored onto this process's first device."""
  # make_single_device_sharding: the SingleDeviceSharding class is deprecated from jax 0.12.1.
  default = jax.sharding.make_single_device_sharding(jax.local_devices()[0])
  item = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None) or
                                     default), abstract)
  with ocp.PyTreeCheckpointer() as checkpointer:
    return checkpointer.restore(
        path,
        args=ocp.args.PyTreeRestore(item=item, partial_restore=partial,
                                    restore_args=ocp.checkpoint_utils.construct_restore_args(item)))


def _check_shapes(path: Path, abstract, what: str, only: str | None = None) -> None:
  """Raises, naming the leaves that differ, unless the stored tree (its `only` item) has the
  expected names and shapes: a readable message instead of a failure deep inside orbax's
  restore."""
  def shapes(tree) -> dict[str, tuple[int, ...]]:
    return {name: tuple(leaf.shape) for name, leaf in param_paths(tree).items()}

  handler = ocp.PyTreeCheckpointHandler()
  try:
    stored_tree = handler.metadata(path)
  finally:
    handler.close()
  stored_tree = getattr(stored_tree, 'tree', stored_tree)
  stored = shapes(stored_tree[only] if only else stored_tree)
  expected = shapes(abstract)
  differ = [
      f'{k}: checkpoint {stored.get(k)} vs expected {expected.get(k)}'
      for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k)
  ]
  if differ:
    # A few names locate the difference; all of them (every layer's) would bury it.
    more = f'; and {len(differ) - 3} more' if len(differ) > 3 else ''
    raise CheckpointError(f'checkpoint {path.parent} holds other {what} than expected '
                          f'({"; ".join(differ[:3])}{more})')
