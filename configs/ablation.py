"""Architecture ablations at CPU scale: one small byte-level GPT (4 layers, d_model 128, 4 heads,
context 128, the embedded standard-library corpus) whose norm type, norm position, positions,
attention and MLP are chosen by a variant string, and the sweep grids that compare them.

Run one variant (keys in any order, all optional; an empty string is the baseline):
  python train.py --config=configs/ablation.py:norm=rmsnorm,pos=rope,attn=gqa2 --workdir=runs/one
Run a grid from SWEEPS below, each arm at the learning rates TUNE lists for it, then write the
report (--parallel=2 trains two runs at once, one per core):
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/ablation            # default
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/stability --sweep=stability
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/zoo --sweep=zoo --parallel=2 \
      --config.train.log_attention_logits=true
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/ablation --report_only

Variant keys:
  norm=layernorm|rmsnorm      pos=learned|rope|none|alibi
  norm_position (or np)=pre|post|sandwich|output   (sandwich: Gemma 2; output: OLMo 2)
  parallel=true|false         (attention and MLP side by side, GPT-NeoX; pre-norm only)
  attn=mha|mqa|gqaN           (N key/value heads shared by the 4 query heads; mqa is gqa1)
  qk_norm=none|head|projection (RMSNorm of each query/key head before rotary, as Qwen3; or of
                              the whole projection, as OLMo 2)
  softcap=X|none  final_softcap=X|none   (cap * tanh(logit / cap) of attention / output logits)
  z_loss=X                    (PaLM's z-loss coefficient, e.g. 1e-4; 0 = off)
  mlp=gelu|gelu_exact|relu2|swiglu|geglu (tanh GELU, erf GELU, ReLU², gated SiLU, gated GELU)
  seed=N                      (init and dropout only: the data order stays fixed)
  lr=X  warmup=N  clip=X      (optim.lr, optim.warmup_steps, optim.grad_clip; 0 = no clipping)
  match_params=true|false     (default true) choose d_ff so that the variant multiplies each token
                              through as many parameters as the baseline does (the N of 6N, so
                              FLOPs/token match too); false keeps the variant's own default d_ff

Fairness: every run of a sweep, whatever its variant or seed, trains on the same TOKEN_BUDGET
tokens in the same order (the batches come from config.data.seed, which no variant changes) and
evaluates on the same validation windows. So the spread over seeds is the spread due to
initialisation and dropout alone, and a difference between variants is not a difference in data.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Mapping

import ml_collections

from gptjax.config import (MLPS, NORM_POSITIONS, NORMS, POSITIONS, QK_NORMS, ModelConfig,
                           base_config, closest_key, update_config)

STEPS = 300
BATCH_SIZE = 16
BLOCK_SIZE = 128
TOKEN_BUDGET = STEPS * BATCH_SIZE * BLOCK_SIZE  # 614,400 tokens: about 3 minutes on 2 CPU cores
D_FF_MULTIPLE = 8  # matched d_ff is rounded to this, so the matmuls keep friendly shapes

# key -> (aliases, what it takes). The order is the canonical order of a variant's name.
KEYS = {
    'norm': ((), ' | '.join(NORMS)),
    'norm_position': (('np',), ' | '.join(NORM_POSITIONS)),
    'parallel': ((), 'true | false'),
    'pos': ((), ' | '.join(POSITIONS)),
    'attn': ((), 'mha | mqa | gqaN'),
    'qk_norm': ((), ' | '.join(QK_NORMS)),
    'softcap': ((), 'a number > 0 | none'),
    'final_softcap': ((), 'a number > 0 | none'),
    'z_loss': ((), 'a number >= 0'),
    'mlp': ((), ' | '.join(MLPS)),
    'lr': ((), 'a number > 0'),
    'warmup': ((), 'an integer >= 0'),
    'clip': ((), 'a number >= 0'),
    'match_params': ((), 'true | false'),
    'seed': ((), 'an integer >= 0'),
}
ALIASES = {alias: key for key, (aliases, _) in KEYS.items() for alias in aliases}
# Variant key -> the config field it sets (attn sets model.n_kv_heads, match_params model.d_ff).
FIELDS = {
    'norm': 'model.norm', 'norm_position': 'model.norm_position', 'pos': 'model.position',
    'parallel': 'model.parallel_block', 'qk_norm': 'model.qk_norm',
    'softcap': 'model.attn_logit_softcap', 'final_softcap': 'model.final_logit_softcap',
    'z_loss': 'train.z_loss', 'mlp': 'model.mlp', 'lr': 'optim.lr', 'warmup': 'optim.warmup_steps',
    'clip': 'optim.grad_clip', 'seed': 'seed'
}
CHOICES = {
    'norm': NORMS, 'norm_position': NORM_POSITIONS, 'pos': POSITIONS, 'mlp': MLPS,
    'qk_norm': QK_NORMS
}

SEEDS = (0, 1, 2)


def _seeded(variants, seeds=SEEDS) -> list[str]:
  return [f'{v},seed={s}' if v else f'seed={s}' for v in variants for s in seeds]


SWEEPS = {
    # One factor at a time around the GPT-2 recipe (pre-norm LayerNorm, learned positions, MHA,
    # GELU): 7 variants x 3 seeds, each at its own best learning rate (TUNE below).
    'default': _seeded([
        '', 'norm=rmsnorm', 'norm_position=post', 'pos=rope', 'attn=gqa2', 'attn=mqa', 'mlp=swiglu'
    ]),
    # The full factorial of norm position x norm x positions x attention: 24 variants x 2 seeds.
    'full': _seeded([
        f'norm_position={p},norm={n},pos={q},attn={a}'
        for p, n, q, a in itertools.product(('pre', 'post'), NORMS, ('learned',
                                                                     'rope'), ('mha', 'gqa2',
                                                                               'mqa'))
    ], seeds=(0, 1)),
    # Xiong et al. 2020: without warmup, post-norm needs a small learning rate; pre-norm does not.
    # Both arms tuned over learning rates from 1e-4 to 10x the baseline's (TUNE below).
    'stability': _seeded(['norm_position=pre,warmup=0', 'norm_position=post,warmup=0']),
    # The modern variants, one at a time against the baseline: 9 arms x 5 lrs x 2 seeds. Run with
    # --config.train.log_attention_logits=true: the lr=0.03 runs of the baseline, qk_norm and
    # softcap arms are the stability result (their largest attention logit over training).
    'zoo': _seeded([
        '', 'qk_norm=head', 'softcap=10', 'z_loss=1e-4', 'pos=alibi', 'parallel=true',
        'norm_position=sandwich', 'norm_position=output', 'mlp=relu2'
    ], seeds=(0, 1)),
}

# The field each named sweep tunes per arm (as --tune=KEY=LO:HI:N would): every arm is trained at
# each value and reported at its own best, so that no arm loses for its learning rate alone.
TUNE = {
    # 1e-3 to 3e-2 in 5 log steps, and one step below (post-norm's best was 1e-3, the edge):
    # 126 runs, about 2 hours on a 2-core CPU with --parallel=2.
    'default': 'optim.lr=0.000427,0.001,0.00234,0.00548,0.0128,0.03',
    'stability': 'optim.lr=1e-4:3e-2:6',  # 36 runs: about 55 minutes
    # The high end is the point (the stability result); 0.001 below the baseline's best.
    'zoo': 'optim.lr=0.001,0.00234,0.00548,0.0128,0.03',  # 90 runs: about 90 minutes
}


def _fail(key: str, value: str, message: str) -> ValueError:
  return ValueError(f'variant {key}={value!r} {message}')


def _parse_value(key: str, value: str) -> Any:
  text = value.strip().lower()
  if key in CHOICES:
    if text not in CHOICES[key]:
      raise _fail(key, value, f'is not one of {", ".join(CHOICES[key])}')
    return text
  if key == 'attn':
    if text in ('mha', 'mqa') or re.fullmatch(r'gqa[1-9]\d*', text):
      return text
    raise _fail(key, value, 'is not one of mha, mqa, gqaN (N >= 1 key/value heads)')
  if key in ('match_params', 'parallel'):
    if text in ('true', 'false'):
      return text == 'true'
    raise _fail(key, value, 'is not one of true, false')
  if key in ('seed', 'warmup'):
    if re.fullmatch(r'\d+', text):
      return int(text)
    raise _fail(key, value, 'must be an integer >= 0')
  if key in ('softcap', 'final_softcap') and text == 'none':
    return None
  try:  # lr, clip, z_loss, softcaps
    number = float(text)
  except ValueError:
    number = float('nan')
  if number > 0 or number >= 0 and key in ('clip', 'z_loss'):
    return number
  raise _fail(key, value, f'must be {KEYS[key][1]}')


def _allowed_keys() -> str:
  return ', '.join(f'{k} ({", ".join(a)})' if a else k for k, (a, _) in KEYS.items())


def parse_variant(arg: str | None) -> dict[str, Any]:
  """'norm=rmsnorm,np=post' -> {'norm': 'rmsnorm', 'norm_position': 'post'}: only the keys given,
  aliases resolved, values checked. Raises ValueError naming the bad key or value."""
  variant: dict[str, Any] = {}
  for item in (arg or '').split(','):
    if not item.strip():
      continue
    key, sep, value = (part.strip() for part in item.partition('='))
    if not sep:
      raise ValueError(f'variant item {item.strip()!r} is not KEY=VALUE; keys: {_allowed_keys()}')
    key = ALIASES.get(key.lower(), key.lower())
    if key not in KEYS:
      close = closest_key(key, [*KEYS, *ALIASES])
      hint = f'did you mean {close!r}? ' if close else ''
      raise ValueError(f'unknown variant key {key!r}; {hint}keys: {_allowed_keys()}')
    if key in variant:
      raise ValueError(f'variant key {key!r} is given twice in {arg!r}')
    variant[key] = _parse_value(key, value)
  return variant


def _format(value: Any) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    return f'{value:g}'
  return str(value)


def variant_label(arg: str | None) -> str:
  """The variant's name without its seed, canonical: keys in KEYS order, aliases resolved, so
  that 'np=post,norm=rmsnorm' and 'norm=rmsnorm,norm_position=post' name the same thing.
  'baseline' when only the seed (or nothing) is given."""
  variant = parse_variant(arg)
  parts = [f'{k}={_format(variant[k])}' for k in KEYS if k in variant and k != 'seed']
  return ','.join(parts) or 'baseline'


def base() -> ml_collections.ConfigDict:
  """The baseline: GPT-2's recipe (pre-norm LayerNorm, learned positions, MHA, GELU) at CPU size."""
  config = base_config(vocab_size=257, vocab_pad_multiple=64, block_size=BLOCK_SIZE, n_layers=4,
                       d_model=128, n_heads=4)
  config.data.corpus = 'stdlib'
  config.data.tokenizer = 'bytes'
  config.optim.lr = 3e-3
  config.optim.warmup_steps = 30
  config.optim.weight_decay = 0.1
  config.train.steps = STEPS
  config.train.batch_size = BATCH_SIZE
  config.train.log_every = 10
  config.train.eval_every = 30
  config.train.eval_batches = 16
  config.train.ckpt_every = 100
  config.train.keep_checkpoints = 1
  return config


def _n_kv_heads(attn: str, n_heads: int) -> int:
  n_kv = {'mha': n_heads, 'mqa': 1}.get(attn) or int(attn[3:])
  if n_kv > n_heads or n_heads % n_kv:
    raise ValueError(f'variant attn={attn!r}: {n_kv} key/value heads must divide the '
                     f'n_heads={n_heads} query heads (mha, mqa, or gqaN with N dividing {n_heads})')
  return n_kv


def _attn_name(n_kv_heads: int, n_heads: int) -> str:
  """attn's value back from the head counts: gqa4 with 4 query heads is mha, gqa1 is mqa."""
  return 'mha' if n_kv_heads == n_heads else 'mqa' if n_kv_heads == 1 else f'gqa{n_kv_heads}'


def factors(config) -> dict[str, Any]:
  """What gptjax.sweep reports per run and plots the final loss by: every ablated knob's value,
  the baseline's included, so that any two runs that differ in one knob line up."""
  cfg = ModelConfig.from_config(config.model)
  return {
      'norm_position': cfg.norm_position, 'norm': cfg.norm, 'pos': cfg.position,
      'parallel': cfg.parallel_block, 'attn': _attn_name(cfg.n_kv_heads,
                                                         cfg.n_heads), 'qk_norm': cfg.qk_norm,
      'softcap': cfg.attn_logit_softcap, 'final_softcap': cfg.final_logit_softcap,
      'z_loss': config.train.z_loss, 'mlp': cfg.mlp, 'lr': config.optim.lr,
      'warmup': config.optim.warmup_steps, 'grad_clip': config.optim.grad_clip
  }


def matched_d_ff(cfg: ModelConfig, target: int) -> int:
  """The d_ff (a multiple of D_FF_MULTIPLE, or cfg's own) whose matmul parameter count N is
  closest to `target`; ties keep cfg's own d_ff.

  N (flops.matmul_params) counts every parameter a token is multiplied through: all of them but
  the learned position table, a lookup. So rotary positions, which drop that table, are not given
  a bigger MLP for it, while SwiGLU's third matrix and GQA's smaller k/v projections are
  compensated, and the matched variant costs the baseline's FLOPs/token.
  """
  from gptjax.flops import matmul_params  # here: the config module loads without tracing a model

  step = D_FF_MULTIPLE
  n_own = matmul_params(cfg)
  # N is linear in d_ff (each hidden unit brings the same weights and bias), so two counts give
  # it for every d_ff; each count traces the model, which is what a sweep's planning waits on.
  per_step = matmul_params(cfg.replace(d_ff=cfg.d_ff + step)) - n_own
  assert per_step % step == 0, 'matmul parameters per hidden unit must be a whole number'
  n_at = lambda d_ff: n_own + (d_ff - cfg.d_ff) * (per_step // step)
  ideal = cfg.d_ff + (target - n_own) / (per_step / step)
  below = max(step, int(ideal // step) * step)
  candidates = [cfg.d_ff, below, below + step]
  return min(candidates, key=lambda d: (abs(n_at(d) - target), d != cfg.d_ff))


def get_config(arg: str | None = None, overrides: Mapping[str, Any] | None = None):
  """The config of one variant. `overrides` ({'train.steps': 50, ...}) change the base before
  the variant is applied, so a sweep can shrink or lengthen every run alike and matched d_ff is
  computed against the baseline at the overridden size."""
  variant = parse_variant(arg)
  config = base()
  update_config(config, overrides or {})
  baseline = ModelConfig.from_config(config.model)

  settings = {FIELDS[key]: value for key, value in variant.items() if key in FIELDS}
  if 'attn' in variant:
    settings['model.n_kv_heads'] = _n_kv_heads(variant['attn'], config.model.n_heads)
  update_config(config, settings)

  cfg = ModelConfig.from_config(config.model)
  if variant.get('match_params', True) and cfg != baseline:
    from gptjax.flops import matmul_params
    config.model.d_ff = matched_d_ff(cfg, matmul_params(baseline))
  return config
