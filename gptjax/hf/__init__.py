"""Hugging Face `transformers` checkpoints in and out: GPT-2, the Llama family (Llama 1-3,
Mistral, Qwen2, Qwen3, OLMo 2), Gemma 2 and GPT-NeoX / Pythia.

`from_hf` turns a transformers model object, a directory saved with `save_pretrained`, or a Hub
name into `(ModelConfig, params)`; `to_hf` writes params as a directory that
`AutoModelForCausalLM.from_pretrained` loads. The point of both is logit parity with the
reference implementation (the tests compare logits with transformers'), so a checkpoint whose
architecture gptjax cannot reproduce exactly is refused with the field that differs, never
approximated.

Each family is a module (gpt2, llama, gemma2, neox) with one `Family` entry per model_type: its
config reader and a table listing, for every HF tensor, the leaves of our params tree it is made
of; import and export both read the same table. transformers, torch and huggingface_hub are
imported only inside the functions that need them.
"""

from __future__ import annotations

import glob
import importlib
import json
import math
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gptjax.config import ModelConfig
from gptjax.hf import gemma2, gpt2, llama, neox
from gptjax.hf.families import HEAD, Family, Weight
from gptjax.model import abstract_params, param_paths, unrolled

# In order of preference on export: the first family that reproduces a config is written.
FAMILIES: dict[str,
               Family] = {**gpt2.FAMILIES, **llama.FAMILIES, **gemma2.FAMILIES, **neox.FAMILIES}


def _package(module: str, pip_name: str, purpose: str):
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f'{purpose} needs {pip_name}: pip install {pip_name}') from None


def _family(hf_config: Mapping) -> Family:
  model_type = hf_config.get('model_type')
  if model_type not in FAMILIES:
    raise ValueError(f'model_type={model_type!r} is not supported by gptjax.hf; supported: '
                     f'{", ".join(map(repr, FAMILIES))}')
  return FAMILIES[model_type]


# ---------------------------------------------------------------------------------------------
# Params trees


def _check_params(cfg: ModelConfig, params: Mapping) -> None:
  """Raises ValueError naming the first path where params is not the tree `init_params` makes."""
  expected = param_paths(abstract_params(cfg))
  got = param_paths(params)
  for path in sorted(expected.keys() | got.keys()):
    want = expected[path].shape if path in expected else 'absent'
    have = tuple(np.shape(got[path])) if path in got else 'absent'
    if want != have:
      raise ValueError(f'params do not match the model config at {path}: '
                       f'shape {have} where the config needs {want}')


def _to_ours(w: Weight, tensor: np.ndarray, shapes: Mapping[str, tuple]) -> dict[str, np.ndarray]:
  """One HF tensor -> our leaves: transposed to [in, out], split along out, reshaped."""
  matrix = tensor.T if w.transpose else tensor
  sizes = [math.prod(shapes[path][w.in_axes:]) for path in w.ours]
  if matrix.shape[-1] != sum(sizes):
    raise ValueError(f'checkpoint tensor {w.hf_name!r} has shape {tuple(tensor.shape)}, which '
                     f'does not make {", ".join(w.ours)} of the config')
  if w.per_head:  # [..., H * parts * D] -> parts of [..., H, D]
    heads, d = shapes[w.ours[0]][w.in_axes:]
    grouped = matrix.reshape(*matrix.shape[:-1], heads, len(w.ours), d)
    parts = [grouped[..., j, :] for j in range(len(w.ours))]
  else:
    parts = np.split(matrix, np.cumsum(sizes)[:-1], axis=-1)
  return {path: part.reshape(shapes[path]) + w.offset for path, part in zip(w.ours, parts)}


def _to_hf(w: Weight, leaves: list[np.ndarray]) -> np.ndarray:
  """Our leaves -> one HF tensor: flattened to [in, out] (or [out]), joined, transposed."""
  matrices = [
      (leaf.reshape(math.prod(leaf.shape[:w.in_axes]), -1) if w.in_axes else leaf.reshape(-1))
      - w.offset for leaf in leaves
  ]
  if w.per_head:  # parts of [..., H, D] -> [..., H * parts * D]
    heads, d = leaves[0].shape[w.in_axes:]
    grouped = np.stack([m.reshape(*m.shape[:-1], heads, d) for m in matrices], axis=-2)
    matrix = grouped.reshape(*grouped.shape[:-3], -1)
  else:
    matrix = np.concatenate(matrices, axis=-1) if len(matrices) > 1 else matrices[0]
  return np.ascontiguousarray(matrix.T if w.transpose else matrix)


# ---------------------------------------------------------------------------------------------
# Import


def _read_config(directory: str) -> dict:
  path = os.path.join(directory, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory} has no config.json: not a save_pretrained directory')
  with open(path) as f:
    return json.load(f)


def _read_tensors(directory: str) -> dict:
  """All tensors of a save_pretrained directory: (sharded) safetensors, else pytorch_model.bin."""
  index = os.path.join(directory, 'model.safetensors.index.json')
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted({os.path.join(directory, v) for v in json.load(f)['weight_map'].values()})
  else:
    files = sorted(glob.glob(os.path.join(directory, '*.safetensors')))
  if files:
    safe_open = _package('safetensors', 'safetensors', 'reading safetensors').safe_open
    tensors = {}
    for file in files:
      # framework 'flax' rather than safetensors.numpy: numpy has no bfloat16, the dtype in which
      # most Llama-family checkpoints are stored.
      with safe_open(file, framework='flax') as f:
        tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors
  bins = sorted(glob.glob(os.path.join(directory, 'pytorch_model*.bin')))
  if not bins:
    raise FileNotFoundError(f'{directory} has no *.safetensors or pytorch_model*.bin weights')
  torch = _package('torch', 'torch', 'reading pytorch_model.bin')
  tensors = {}
  for file in bins:
    state = torch.load(file, map_location='cpu', weights_only=True)
    tensors.update({k: v.float().numpy() for k, v in state.items()})
  return tensors


def _download(name: str) -> str:
  hub = _package('huggingface_hub', 'huggingface_hub', f'downloading {name!r} from the Hub')
  try:
    directory = hub.snapshot_download(name, allow_patterns=['*.json', '*.safetensors'])
    if not glob.glob(os.path.join(directory, '*.safetensors')):
      directory = hub.snapshot_download(name, allow_patterns=['*.json', 'pytorch_model*.bin'])
  except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
    raise OSError(f'could not download {name!r} from the Hugging Face Hub '
                  f'({type(e).__name__}): a Hub name needs a network connection; otherwise '
                  'pass a local directory saved with save_pretrained') from None
  return directory


def from_hf(model_or_path) -> tuple[ModelConfig, dict]:
  """(ModelConfig, float32 params) from a transformers model, a save_pretrained directory or a
  Hub name. Raises ValueError naming the config field when the architecture is not one gptjax
  reproduces exactly."""
  if isinstance(model_or_path, (str, os.PathLike)):
    path = os.fspath(model_or_path)
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f'{path} is a file; from_hf wants a directory saved with save_pretrained')
    directory = path if os.path.isdir(path) else _download(path)
    hf_config = _read_config(directory)
    family = _family(hf_config)
    cfg = family.config(hf_config)  # validated before any weight is read
    tensors = _read_tensors(directory)
  elif hasattr(model_or_path, 'config') and hasattr(model_or_path, 'state_dict'):
    hf_config = model_or_path.config.to_dict()
    family = _family(hf_config)
    cfg = family.config(hf_config)
    tensors = {k: v.detach().float().cpu().numpy() for k, v in model_or_path.state_dict().items()}
  else:
    raise TypeError(f'from_hf takes a transformers model, a directory or a Hub name, '
                    f'not {type(model_or_path).__name__}')

  tensors = {k.removeprefix(family.prefix): v for k, v in tensors.items()}
  for old, new in family.renamed:
    if old in tensors:
      tensors[new] = tensors.pop(old)
  shapes = {path: leaf.shape for path, leaf in param_paths(abstract_params(cfg)).items()}
  flat, used = {}, set()
  for w in family.weights(cfg):
    if w.hf_name not in tensors:
      raise ValueError(f'checkpoint has no tensor {w.hf_name!r} (for {", ".join(w.ours)})')
    tensor = np.asarray(jnp.asarray(tensors[w.hf_name], jnp.float32))
    flat.update(_to_ours(w, tensor, shapes))
    used.add(w.hf_name)
  ignored = family.ignored + ((HEAD,) if cfg.tie_embeddings else ())
  unused = sorted(k for k in tensors if k not in used and not k.endswith(ignored))
  if unused:
    raise ValueError(f'checkpoint tensors {unused[:3]} have no place in the gptjax model of its '
                     'config (weights and config.json disagree?)')
  params = jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat, sep='/'))
  _check_params(cfg, params)
  return cfg, params


# ---------------------------------------------------------------------------------------------
# Export


def _misfits(cfg: ModelConfig, needs: Mapping) -> list[str]:
  """What in cfg a family's export_needs do not allow; a tuple of needs means any of them."""
  wrong = []
  for key, value in needs.items():
    have = getattr(cfg, key)
    if have not in value if isinstance(value, tuple) and not isinstance(have, tuple) else (
        have != value):
      wrong.append(f'{key}{" in " if isinstance(value, tuple) else "="}{value!r} (have {have!r})')
  return wrong


def _export_target(cfg: ModelConfig) -> str:
  """The HF model_type that reproduces cfg exactly, else ValueError naming, for the families
  that come closest, what does not fit."""
  misfits = {}
  for model_type, family in FAMILIES.items():
    wrong = _misfits(cfg, family.export_needs(cfg))
    if not wrong:
      return model_type
    misfits[model_type] = wrong
  closest = sorted(misfits.items(), key=lambda item: len(item[1]))[:3]
  reasons = '; '.join(f'{kind} needs {", ".join(wrong)}' for kind, wrong in closest)
  raise ValueError(f'config cannot be exported to Hugging Face exactly: {reasons}')


def _write_config(model_type: str, fields: dict, out_dir: str) -> None:
  fields = {**fields, 'architectures': [FAMILIES[model_type].architecture], 'dtype': 'float32'}
  try:
    from transformers import AutoConfig
  except ImportError:  # the essentials by hand; transformers fills every other default on load
    theta = fields.get('rope_parameters', {}).get('rope_theta')
    extra = {} if theta is None else {'rope_theta': theta}  # where transformers 4.x looks
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
      json.dump({'model_type': model_type, **fields, **extra}, f, indent=2)
    return
  AutoConfig.for_model(model_type, **fields).save_pretrained(out_dir)


def to_hf(cfg: ModelConfig, params: Mapping, out_dir: str | os.PathLike) -> str:
  """Writes config.json + model.safetensors that AutoModelForCausalLM.from_pretrained loads.

  Raises ValueError listing the fields that keep the closest supported HF families from
  reproducing cfg exactly. A scanned model (scan_layers) is written layer by layer."""
  cfg, params = unrolled(cfg, params)
  model_type = _export_target(cfg)
  _check_params(cfg, params)
  family = FAMILIES[model_type]
  # Weights as the HF architecture has them: GPT-2 and GPT-NeoX always have every bias, and
  # Llama's attention_bias (set by use_bias) includes q/k/v; the ones we lack are written as zeros.
  hf_cfg = cfg.replace(qkv_bias=True) if cfg.use_bias else cfg
  ours = param_paths(params)
  every_bias = param_paths(abstract_params(cfg.replace(use_bias=True, qkv_bias=True)))
  tensors = {}
  for w in family.weights(hf_cfg):
    # A bias our config leaves out is zeros of the shape the HF architecture has for it.
    leaves = [
        np.asarray(ours[p], np.float32) if p in ours else np.zeros(every_bias[p].shape, np.float32)
        for p in w.ours
    ]
    full_name = w.hf_name if w.hf_name == HEAD else family.prefix + w.hf_name
    tensors[full_name] = _to_hf(w, leaves)
  # Tied models store the embedding once, without the head, as save_pretrained does.
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  save_file = _package('safetensors.numpy', 'safetensors', 'to_hf').save_file
  save_file(tensors, os.path.join(out_dir, 'model.safetensors'), metadata={'format': 'pt'})
  _write_config(model_type, family.export_fields(cfg), out_dir)
  return out_dir
