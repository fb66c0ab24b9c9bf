"""The three places a model comes from, for sample.py and gptjax.analysis alike.

  load_model(workdir='runs/small')          # a training run's latest checkpoint
  load_model(workdir='runs/small', step=250)
  load_model(hf='gpt2')                     # Hugging Face GPT-2 / Llama-family weights
  load_model(config=config)                 # a config's model, randomly initialised

Each gives the model with the tokenizer its vocabulary belongs to, and one line saying what it is.
`latest_checkpoint` finds the run whose checkpoint was written last, for commands that need no
workdir to be named.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax

from gptjax import checkpoint, parallel
from gptjax.config import DEFAULT_MESH, ModelConfig, ShardingConfig
from gptjax.flops import count_params
from gptjax.model import abstract_params, init_params, place_params, unrolled
from gptjax.tokenizer import HFTokenizer, Tokenizer, get_tokenizer


class LoadedModel(NamedTuple):
  """A model ready to run, with the tokenizer its vocabulary belongs to."""
  cfg: ModelConfig
  params: Any
  tokenizer: Tokenizer
  description: str  # where the weights come from, for the user
  workdir: Path | None = None  # the training run it comes from, if any
  sharding: dict | None = None  # the config.sharding it was trained or configured with
  layout: parallel.Layout | None = None  # where `on_devices` placed params; None: one device


def load_model(workdir=None, step: int | None = None, hf: str | None = None,
               config=None) -> LoadedModel:
  """The one model that exactly one of workdir (a training run, at `step` or its latest
  checkpoint), hf (Hugging Face weights) or config (a config's model, randomly initialised)
  names; the arguments mirror the command lines' flags."""
  if step is not None and workdir is None:
    raise ValueError(f'step={step} picks a checkpoint of a training run: give its workdir too')
  given = [
      name for name, value in (('workdir', workdir), ('hf', hf), ('config', config))
      if value is not None
  ]
  if not given:
    raise ValueError('no model given: name a training run (workdir), Hugging Face weights (hf) '
                     'or a config to initialise randomly (config)')
  if len(given) > 1:
    both = 'both' if len(given) == 2 else 'all'
    raise ValueError(f'{" and ".join(given)} {both} given: load one model at a time')
  if workdir is not None:
    return load_workdir(workdir, step)
  if hf is not None:
    return load_hf(hf)
  return init_random(config)


def load_named_or_newest(command: str, runs_dir, workdir=None, step: int | None = None,
                         hf: str | None = None, config=None) -> LoadedModel:
  """The model a command's --workdir/--step/--hf/--config flags name; with none of them, the
  newest checkpoint under runs_dir (where train.py puts a run that has no --workdir), said on
  stderr. command ('sample.py', 'python -m gptjax.eval') is named in the errors' advice."""
  if workdir is not None and checkpoint.latest_step(workdir) is None:
    raise ValueError(f'no checkpoint in {workdir}: train one first (python train.py '
                     f'--config=configs/small.py --workdir={workdir}) or pick another --workdir')
  if all(value is None for value in (workdir, step, hf, config)):
    latest = latest_checkpoint(runs_dir)
    if latest is None:
      raise ValueError(
          f'no model: no run with a checkpoint under {runs_dir}/; train a model first (python '
          f'train.py --config=configs/small.py) and run {command} again; or use --workdir=DIR (a '
          'training run elsewhere), --hf=PATH_OR_NAME (Hugging Face weights) or '
          '--config=configs/tiny.py (an untrained model)')
    workdir, step = latest
    print(
        f'no --workdir, --hf or --config: using {workdir} step {step}, the newest checkpoint '
        f'under {runs_dir}/', file=sys.stderr)
  return load_model(workdir, step, hf, config)


def load_workdir(workdir, step: int | None = None) -> LoadedModel:
  """The checkpoint of a training run (the latest one unless `step` is given), rebuilt from the
  config saved with it."""
  saved = checkpoint.load_config(workdir, step)
  cfg = ModelConfig.from_config(saved['model'])
  params, step = checkpoint.restore_params(workdir, abstract_params(cfg), step)
  loaded = _loaded(cfg, params, get_tokenizer(saved['data']['tokenizer']), f'{workdir} step {step}')
  return loaded._replace(workdir=Path(workdir), sharding=saved.get('sharding'))


def load_hf(path_or_name: str) -> LoadedModel:
  """Hugging Face GPT-2 or Llama-family weights. GPT-2 checkpoints share one vocabulary, our
  offline 'gpt2' tokenizer; the others bring their own, loaded with transformers."""
  from gptjax.hf import from_hf

  path = os.path.expanduser(path_or_name)
  if (os.path.isabs(path) or path.startswith('.')) and not os.path.isdir(path):
    # Meant as a directory, not a Hub name: say so rather than ask the Hub for it.
    raise ValueError(f'Hugging Face model {path_or_name}: no such directory (a model saved '
                     'with save_pretrained, or a Hub name such as gpt2)')
  try:
    cfg, params = from_hf(path)
    tokenizer = (get_tokenizer('gpt2')
                 if _hf_model_type(path) == 'gpt2' else HFTokenizer.from_pretrained(path))
  except (OSError, ImportError) as e:  # a missing file, no network, no transformers
    raise ValueError(f'cannot load Hugging Face model {path_or_name}: {e}') from None
  return _loaded(cfg, params, tokenizer, f'{path_or_name} (Hugging Face)')


def init_random(config) -> LoadedModel:
  """An untrained model from a config's model section (weights from config.seed)."""
  cfg = ModelConfig.from_config(config.model)
  params = init_params(cfg, jax.random.key(config.seed))
  loaded = _loaded(cfg, params, get_tokenizer(config.data.tokenizer),
                   f'random init (seed {config.seed})')
  sharding = config.get('sharding')
  return loaded._replace(sharding=None if sharding is None else sharding.to_dict())


def parse_mesh(text: str) -> dict[str, int]:
  """A --mesh flag ('tensor=4' or 'data=2,fsdp=-1,tensor=2') -> config.sharding.mesh's sizes:
  the axes it names over the default (data=-1, the rest 1), checked as the config's are."""
  given = {}
  for part in filter(None, (p.strip() for p in text.split(','))):
    axis, equals, size = part.partition('=')
    if not equals or not size.strip().lstrip('-').isdigit():
      raise ValueError(f'--mesh={text}: {part!r} is not AXIS=SIZE (e.g. --mesh=tensor=4)')
    given[axis.strip()] = int(size)
  # 'tensor=-1' gives the rest to tensor: data then takes 1, not also "the rest".
  data = {'data': 1} if -1 in given.values() else {}
  sizes = {**DEFAULT_MESH, **data, **given}
  try:
    ShardingConfig.from_config({'mesh': sizes})
  except ValueError as e:
    raise ValueError(f'--mesh={text}: {e}') from None
  return sizes


def on_devices(loaded: LoadedModel, mesh: str | None = None) -> LoadedModel:
  """The model placed on every device, when there is more than one: on the mesh `mesh` names
  (a --mesh flag), else on the one it was trained on where these devices make it, else data
  parallel; its config.sharding.rules place the parameters (and the activations and cache of
  the functions given the returned layout). One device: unchanged."""
  if jax.device_count() == 1 and mesh is None:
    return loaded
  saved = ShardingConfig.from_saved(loaded.sharding)
  if mesh is not None:
    sizes = parse_mesh(mesh)
  else:
    sizes = saved.mesh
    try:
      parallel.resolve_mesh_sizes(sizes, jax.device_count())
    except ValueError:  # trained on another number of devices
      sizes = dict(DEFAULT_MESH)
  layout = parallel.Layout.of(parallel.make_mesh(sizes), saved)
  shape = ', '.join(f'{axis} {size}' for axis, size in layout.mesh.shape.items() if size > 1)
  return loaded._replace(
      params=place_params(loaded.cfg, loaded.params, layout), layout=layout,
      description=f'{loaded.description}, on {layout.mesh.size} devices '
      f'({shape or "one"})')


def latest_checkpoint(runs_dir) -> tuple[Path, int] | None:
  """(workdir, step) of the newest checkpoint of any run in runs_dir (runs_dir/*/), by the time
  its step directory was written; None when there is none."""
  newest = None
  for workdir in sorted(Path(runs_dir).glob('*/')):
    step = checkpoint.latest_step(workdir)
    if step is None:
      continue
    written = (workdir / checkpoint.CHECKPOINT_DIR / str(step)).stat().st_mtime
    if newest is None or written > newest[0]:
      newest = (written, workdir, step)
  return None if newest is None else newest[1:]


def _loaded(cfg: ModelConfig, params, tokenizer: Tokenizer, source: str) -> LoadedModel:
  cfg, params = unrolled(cfg, params)  # decoding and the analysis tools run each layer apart
  if tokenizer.n_vocab > cfg.vocab_size:
    raise ValueError(f'{source} has vocab_size={cfg.vocab_size}, smaller than the '
                     f"{tokenizer.name} tokenizer's {tokenizer.n_vocab} tokens")
  description = (f'{source}: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, '
                 f'{cfg.position} positions, {count_params(params):,} parameters, '
                 f'{tokenizer.name} tokenizer')
  return LoadedModel(cfg, params, tokenizer, description)


def _hf_model_type(path_or_name: str) -> str:
  if os.path.isdir(path_or_name):
    config_file = os.path.join(path_or_name, 'config.json')
  else:  # a Hub name: from_hf has just downloaded it, so this reads the local cache
    from huggingface_hub import hf_hub_download
    config_file = hf_hub_download(path_or_name, 'config.json')
  with open(config_file) as f:
    return json.load(f).get('model_type')
