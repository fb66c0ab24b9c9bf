"""The typed config sections (ModelConfig, OptimConfig, TrainConfig, DataConfig, ShardingConfig):
every invalid value fails early with a message naming the field; defaults resolve."""

import dataclasses
import re

import ml_collections
import pytest

from gptjax import config as config_lib
from gptjax.config import ModelConfig

POSITIVE_INT_FIELDS = ('vocab_size', 'vocab_pad_multiple', 'block_size', 'n_layers', 'd_model',
                       'n_heads', 'n_kv_heads', 'head_dim', 'd_ff')
CHOICE_FIELDS = {
    'mlp': config_lib.MLPS,
    'norm': config_lib.NORMS,
    'qk_norm': config_lib.QK_NORMS,
    'rope_scaling': config_lib.ROPE_SCALINGS,
    'norm_position': config_lib.NORM_POSITIONS,
    'position': config_lib.POSITIONS,
    'attention_impl': config_lib.ATTENTION_IMPLS,
    'dtype': config_lib.DTYPES,
    'param_dtype': config_lib.DTYPES,
}
DROPOUT_FIELDS = ('embd_dropout', 'attn_dropout', 'resid_dropout')
BOOL_FIELDS = ('tie_embeddings', 'use_bias', 'qkv_bias', 'scale_embeddings', 'norm_affine',
               'parallel_block')


def test_choice_lists_are_what_the_model_implements():
  assert config_lib.MLPS == ('gelu', 'gelu_exact', 'relu2', 'swiglu', 'geglu')
  assert config_lib.NORMS == ('layernorm', 'rmsnorm')
  assert config_lib.NORM_POSITIONS == ('pre', 'post', 'sandwich', 'output')
  assert config_lib.POSITIONS == ('learned', 'rope', 'none', 'alibi')
  assert config_lib.QK_NORMS == ('none', 'head', 'projection')
  assert config_lib.ROPE_SCALINGS == ('none', 'linear', 'llama3', 'yarn')


def test_defaults_are_gpt2_small():
  cfg = ModelConfig()
  assert (cfg.vocab_size, cfg.block_size, cfg.n_layers, cfg.d_model, cfg.n_heads) == (50257, 1024,
                                                                                      12, 768, 12)
  assert (cfg.n_kv_heads, cfg.d_ff, cfg.head_dim) == (12, 3072, 64)
  assert (cfg.mlp, cfg.norm, cfg.norm_position, cfg.position) == ('gelu', 'layernorm', 'pre',
                                                                  'learned')
  assert cfg.tie_embeddings and cfg.use_bias and cfg.qkv_bias and cfg.remat == 'none'
  assert cfg.padded_vocab_size == 50257


@pytest.mark.parametrize('field', POSITIVE_INT_FIELDS)
@pytest.mark.parametrize('value', [0, -3, 2.0, '8', True])
def test_positive_int_fields(field, value):
  with pytest.raises(ValueError, match=rf'^{field}=.*positive integer'):
    ModelConfig(**{field: value})


@pytest.mark.parametrize('field', sorted(CHOICE_FIELDS))
@pytest.mark.parametrize('value', ['bogus', 'LayerNorm', 'Pre', '', None])
def test_unknown_enum_strings(field, value):
  with pytest.raises(ValueError, match=rf'^{field}=') as excinfo:
    ModelConfig(**{field: value})
  for allowed in CHOICE_FIELDS[field]:  # the message lists what would have been accepted
    assert repr(allowed) in str(excinfo.value)


@pytest.mark.parametrize('field', sorted(CHOICE_FIELDS))
def test_every_listed_choice_is_accepted(field):
  needs = {'rope_scaling': dict(position='rope')}.get(field, {})
  for allowed in CHOICE_FIELDS[field]:
    assert getattr(ModelConfig(**{field: allowed}, **needs), field) == allowed


def test_d_model_divisible_by_n_heads():
  with pytest.raises(ValueError, match=r'd_model=30 .*n_heads=4'):
    ModelConfig(d_model=30, n_heads=4)


@pytest.mark.parametrize('n_kv_heads', [3, 5, 8])
def test_n_heads_divisible_by_n_kv_heads(n_kv_heads):
  with pytest.raises(ValueError, match=rf'n_heads=4 .*n_kv_heads={n_kv_heads}'):
    ModelConfig(d_model=32, n_heads=4, n_kv_heads=n_kv_heads)


@pytest.mark.parametrize('n_kv_heads', [1, 2, 4])
def test_valid_kv_head_counts(n_kv_heads):
  assert ModelConfig(d_model=32, n_heads=4, n_kv_heads=n_kv_heads).n_kv_heads == n_kv_heads


def test_head_dim_may_differ_from_d_model_over_n_heads():
  cfg = ModelConfig(d_model=30, n_heads=4, head_dim=16, position='rope')
  assert (cfg.head_dim, cfg.rotary_dims) == (16, 16)
  assert ModelConfig(d_model=30, n_heads=4, head_dim=16).replace(d_model=32).head_dim == 16
  assert ModelConfig(d_model=32, n_heads=4).replace(n_heads=2).head_dim == 16  # re-derived


@pytest.mark.parametrize('fraction, rotary_dims', [(1.0, 16), (0.25, 4), (0.5, 8)])
def test_rotary_fraction(fraction, rotary_dims):
  cfg = ModelConfig(d_model=64, n_heads=4, position='rope', rotary_fraction=fraction)
  assert cfg.rotary_dims == rotary_dims


@pytest.mark.parametrize('changes, named', [
    (dict(position='rope', rotary_fraction=0.0), r'^rotary_fraction=0.0 must be in \(0, 1\]'),
    (dict(position='rope', rotary_fraction=1.5), r'^rotary_fraction='),
    (dict(position='rope', n_heads=48,
          rotary_fraction=0.1), r'position=rope rotates pairs.*= 1 must be even'),
    (dict(rotary_fraction=0.5), r'^rotary_fraction=0.5 needs position=rope'),
    (dict(rope_scaling='yarn'), r"^rope_scaling='yarn' needs position=rope"),
    (dict(rope_local_theta=1e4), r'^rope_local_theta=10000.0 needs position=rope'),
    (dict(position='rope', rope_scaling='llama3', rope_low_freq_factor=4.0),
     r'^rope_high_freq_factor=4.0 must be > rope_low_freq_factor=4.0'),
    (dict(rope_scaling_factor=0), r'^rope_scaling_factor='),
    (dict(attn_logit_softcap=0.0), r'^attn_logit_softcap='),
    (dict(final_logit_softcap=-30.0), r'^final_logit_softcap='),
    (dict(attention_scale_dim=0), r'^attention_scale_dim='),
    (dict(parametrization='mup', mup_base_width=64,
          attention_scale_dim=64), r'attention_scale_dim is an SP attention scale'),
    (dict(parallel_block=True, norm_position='post'), r'^parallel_block=True needs norm_position'),
    (dict(window_pattern='local,global'), r"has 'local' layers: set attention_window"),
    (dict(window_pattern='local,wide', attention_window=4), r"entry 'wide' is not one of"),
    (dict(window_pattern=''), r"^window_pattern='' must be comma-separated"),
    (dict(window_pattern='0'), r"entry '0' is not one of"),
])
def test_new_variant_fields_are_checked(changes, named):
  with pytest.raises(ValueError, match=named):
    ModelConfig(**changes)


def test_window_pattern_repeats_over_the_layers():
  cfg = ModelConfig(n_layers=5, attention_window=4, window_pattern='local, global')
  assert cfg.layer_windows == (4, None, 4, None, 4)
  assert ModelConfig(n_layers=3, window_pattern='8,global,2').layer_windows == (8, None, 2)
  assert ModelConfig(n_layers=2, attention_window=3).layer_windows == (3, 3)
  local_theta = ModelConfig(n_layers=2, attention_window=3, window_pattern='local,global',
                            position='rope', rope_local_theta=10.0, rope_scaling='linear')
  assert [local_theta.layer_rope_theta(i) for i in range(2)] == [10.0, 10000.0]
  assert [local_theta.layer_rope_scaling(i) for i in range(2)] == ['none', 'linear']


def test_odd_head_dim_with_rope():
  with pytest.raises(ValueError, match=r'position=rope.*head_dim'):
    ModelConfig(d_model=12, n_heads=4, position='rope')  # head_dim 3
  for position in ('learned', 'none'):  # rotary pairs dimensions; the others do not care
    assert ModelConfig(d_model=12, n_heads=4, position=position).head_dim == 3


@pytest.mark.parametrize('block_size', [0, -1, -1024])
def test_block_size_must_be_positive(block_size):
  with pytest.raises(ValueError, match=r'^block_size='):
    ModelConfig(block_size=block_size)


@pytest.mark.parametrize('window', [0, -2, 2.5, True, '3'])
def test_attention_window(window):
  with pytest.raises(ValueError, match=r'^attention_window='):
    ModelConfig(attention_window=window)
  assert ModelConfig(attention_window=1).attention_window == 1


@pytest.mark.parametrize('field', ['norm_eps', 'rope_theta', 'init_std'])
@pytest.mark.parametrize('value', [0, 0.0, -1e-5, float('nan')])
def test_positive_floats(field, value):
  with pytest.raises(ValueError, match=rf'^{field}='):
    ModelConfig(**{field: value})


@pytest.mark.parametrize('field', DROPOUT_FIELDS)
@pytest.mark.parametrize('value', [-0.1, 1.0, 1.5, '0.1', None])
def test_dropout_rates(field, value):
  with pytest.raises(ValueError, match=rf'^{field}=.*dropout rate'):
    ModelConfig(**{field: value})


@pytest.mark.parametrize('field', DROPOUT_FIELDS)
def test_valid_dropout_rates(field):
  for value in (0, 0.0, 0.1, 0.999):
    assert getattr(ModelConfig(**{field: value}), field) == value


@pytest.mark.parametrize('field', BOOL_FIELDS)
@pytest.mark.parametrize('value', [1, 0, 'yes', 'False', 1.0])
def test_flags_must_be_bool(field, value):
  with pytest.raises(ValueError, match=rf'^{field}=.*True or False'):
    ModelConfig(**{field: value})


def test_remat_is_a_policy_name_or_the_first_releases_bool():
  # qkv_bias=None means "follow use_bias"; remat has no such meaning.
  for value in (None, 1, 'yes'):
    with pytest.raises(ValueError, match=r'^remat=.* is not one of'):
      ModelConfig(remat=value)


def test_from_config_unknown_field_suggests_the_close_one():
  with pytest.raises(ValueError,
                     match=r"unknown model config field 'n_head'; did you mean 'n_heads'\?"):
    ModelConfig.from_config({'n_head': 4})
  with pytest.raises(ValueError, match=r"'n_kv_head'.*did you mean 'n_kv_heads'"):
    ModelConfig.from_config(ml_collections.ConfigDict({'d_model': 64, 'n_kv_head': 2}))


def test_from_config_unknown_field_without_a_close_one_lists_all():
  with pytest.raises(ValueError, match=r"unknown model config field 'zzz'; known fields: ") as e:
    ModelConfig.from_config({'zzz': 1})
  for field in dataclasses.fields(ModelConfig):
    assert field.name in str(e.value)


def test_from_config_validates_values_too():
  with pytest.raises(ValueError, match=r'^norm='):
    ModelConfig.from_config(ml_collections.ConfigDict({'norm': 'batchnorm'}))


def test_n_kv_heads_defaults_to_n_heads():
  assert ModelConfig(d_model=64, n_heads=8).n_kv_heads == 8
  assert ModelConfig(d_model=64, n_heads=8, n_kv_heads=2).n_kv_heads == 2


@pytest.mark.parametrize('use_bias', [True, False])
def test_qkv_bias_follows_use_bias(use_bias):
  assert ModelConfig(use_bias=use_bias).qkv_bias is use_bias
  assert ModelConfig(use_bias=use_bias, qkv_bias=not use_bias).qkv_bias is (not use_bias)


@pytest.mark.parametrize('d_model, d_ff', [(768, 3072), (32, 128), (4096, 16384)])
def test_gelu_d_ff_is_4x(d_model, d_ff):
  assert ModelConfig(d_model=d_model, n_heads=4, mlp='gelu').d_ff == d_ff


@pytest.mark.parametrize(
    'd_model, d_ff',
    [
        (4096, 11008),  # Llama-1/2 7B
        (5120, 13824),  # Llama 13B
        (768, 2048),  # 2/3 * 3072 = 2048 exactly: no rounding
        (32, 256),  # 85 rounded up to a multiple of 256
    ])
def test_swiglu_d_ff_is_llama_rule(d_model, d_ff):
  assert ModelConfig(d_model=d_model, n_heads=4, mlp='swiglu').d_ff == d_ff
  assert config_lib.swiglu_hidden_size(d_model) == d_ff


def test_explicit_d_ff_is_kept():
  assert ModelConfig(mlp='swiglu', d_ff=100).d_ff == 100


def test_from_config_accepts_configdict():
  model = ml_collections.ConfigDict()
  model.d_model = 64
  model.n_heads = 4
  model.n_kv_heads = 2
  model.position = 'rope'
  model.mlp = 'swiglu'
  model.attention_window = 8
  cfg = ModelConfig.from_config(model)
  assert cfg == ModelConfig(d_model=64, n_heads=4, n_kv_heads=2, position='rope', mlp='swiglu',
                            attention_window=8)
  assert cfg.d_ff == 256
  frozen = ml_collections.FrozenConfigDict(model)
  assert ModelConfig.from_config(frozen) == cfg


def test_to_dict_round_trips():
  cfg = ModelConfig(vocab_size=61, d_model=32, n_heads=4, n_kv_heads=1, position='rope',
                    norm='rmsnorm', mlp='swiglu', attention_window=3, use_bias=False,
                    tie_embeddings=False, vocab_pad_multiple=64, dtype='bfloat16', remat=True)
  as_dict = cfg.to_dict()
  assert set(as_dict) == {f.name for f in dataclasses.fields(ModelConfig)}
  assert as_dict['n_kv_heads'] == 1 and as_dict['qkv_bias'] is False  # resolved values
  assert ModelConfig.from_config(as_dict) == cfg
  assert ModelConfig.from_config(ml_collections.ConfigDict(as_dict)) == cfg
  assert ModelConfig(**ModelConfig().to_dict()) == ModelConfig()


@pytest.mark.parametrize('field', ['norm_eps', 'rope_theta', 'init_std'])
@pytest.mark.parametrize('value', ['1e-5', None])
def test_non_numeric_floats_raise_value_error(field, value):
  # A string from a command-line override must give the one-line ValueError, not a TypeError
  # from comparing str with int.
  with pytest.raises(ValueError, match=rf'^{field}='):
    ModelConfig(**{field: value})


def test_frozen_and_hashable():
  cfg = ModelConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.n_layers = 2
  assert hash(cfg) == hash(ModelConfig())  # usable as a static jit argument


def test_replace_validates():
  with pytest.raises(ValueError, match=r'd_model=.*n_heads=5'):
    ModelConfig().replace(n_heads=5)


def test_replace_re_resolves_defaulted_fields():
  # Sweeps derive points from a base config; a field the user left to its default must follow
  # the new values, or an ablation silently changes two things (swiglu with GELU's 4x d_ff).
  base = ModelConfig()
  assert base.replace(mlp='swiglu').d_ff == ModelConfig(mlp='swiglu').d_ff == 2048
  assert base.replace(d_model=1024, n_heads=16).n_kv_heads == 16
  assert base.replace(d_model=1024, n_heads=16).d_ff == 4096
  assert base.replace(use_bias=False).qkv_bias is False
  # Fields that were set explicitly stay as set.
  explicit = ModelConfig(d_ff=100, n_kv_heads=4, qkv_bias=True)
  changed = explicit.replace(mlp='swiglu', use_bias=False)
  assert (changed.d_ff, changed.n_kv_heads, changed.qkv_bias) == (100, 4, True)


def test_derived_properties():
  cfg = ModelConfig(vocab_size=50257, vocab_pad_multiple=64, d_model=768, n_heads=12,
                    dtype='bfloat16')
  assert cfg.padded_vocab_size == 50304
  assert ModelConfig(vocab_size=128, vocab_pad_multiple=64).padded_vocab_size == 128
  assert cfg.head_dim == 64
  assert str(cfg.compute_dtype) == 'bfloat16' and str(cfg.params_dtype) == 'float32'


def test_error_messages_are_single_line():
  for kwargs in ({'norm': 'bogus'}, {'d_model': 30, 'n_heads': 4}, {'embd_dropout': 2.0}):
    with pytest.raises(ValueError) as e:
      ModelConfig(**kwargs)
    assert not re.search(r'\n', str(e.value))


# ---------------------------------------------------------------------------------------------
# model_config_dict: the `config.model` that config files start from


def test_model_config_dict_has_every_field_and_the_defaults():
  model = config_lib.model_config_dict()
  assert set(model.keys()) == {f.name for f in dataclasses.fields(ModelConfig)}
  assert ModelConfig.from_config(model) == ModelConfig()


def test_model_config_dict_overrides():
  model = config_lib.model_config_dict(d_model=64, n_heads=4, n_kv_heads=2, mlp='swiglu')
  cfg = ModelConfig.from_config(model)
  assert (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.mlp, cfg.d_ff) == (64, 4, 2, 'swiglu', 256)


def test_model_config_dict_unknown_override_names_it():
  with pytest.raises(ValueError, match=r"'n_head'; did you mean 'n_heads'"):
    config_lib.model_config_dict(n_head=4)


def test_model_config_dict_none_default_fields_are_typed():
  # What --config.model.n_kv_heads=2 does: assign into a field whose default is None.
  model = config_lib.model_config_dict(d_model=64, n_heads=4)
  model.n_kv_heads = 2
  model.d_ff = 96
  model.attention_window = 8
  model.qkv_bias = False
  cfg = ModelConfig.from_config(model)
  assert (cfg.n_kv_heads, cfg.d_ff, cfg.attention_window, cfg.qkv_bias) == (2, 96, 8, False)
  with pytest.raises(TypeError):
    model.n_kv_heads = 'two'


# ---------------------------------------------------------------------------------------------
# The training sections: config.optim, config.train, config.data, config.sharding

SECTIONS = {
    'optim': (config_lib.OptimConfig, config_lib.optim_config_dict),
    'train': (config_lib.TrainConfig, config_lib.train_config_dict),
    'data': (config_lib.DataConfig, config_lib.data_config_dict),
    'sharding': (config_lib.ShardingConfig, config_lib.sharding_config_dict),
}


def test_base_config_is_every_sections_defaults():
  config = config_lib.base_config(d_model=64, n_heads=4)
  assert set(config.keys()) == {'seed', 'model', 'evals', *SECTIONS}
  assert config.evals.to_dict() == {}  # downstream evals are named by the config that wants them
  assert ModelConfig.from_config(config.model) == ModelConfig(d_model=64, n_heads=4)
  for name, (section, _) in SECTIONS.items():
    assert section.from_config(config[name]) == section()


def test_an_eval_entry_has_every_field_typed_for_the_command_line():
  entry = config_lib.eval_config_dict(path='a.jsonl')
  assert set(entry.keys()) == {f.name for f in dataclasses.fields(config_lib.EvalConfig)}
  entry.limit = 5  # a None default is still an int field: --config.evals.NAME.limit=5 parses
  assert config_lib.EvalConfig.from_config(entry) == config_lib.EvalConfig(path='a.jsonl', limit=5)


@pytest.mark.parametrize('name', sorted(SECTIONS))
def test_section_config_dict_has_every_field_and_the_defaults(name):
  section, config_dict = SECTIONS[name]
  as_config = config_dict()
  assert set(as_config.keys()) == {f.name for f in dataclasses.fields(section)}
  assert section.from_config(as_config) == section()
  assert section.from_config(section().to_dict()) == section()


@pytest.mark.parametrize('name', sorted(SECTIONS))
def test_section_unknown_field_suggests_the_close_one(name):
  section, config_dict = SECTIONS[name]
  field = dataclasses.fields(section)[0].name
  with pytest.raises(
      ValueError, match=rf"^unknown {name} config field '{field}x'; did you mean "
      rf"'{field}'\?$"):
    section.from_config({f'{field}x': 1})
  with pytest.raises(ValueError, match=rf"^unknown {name} config field '{field}x'"):
    config_dict(**{f'{field}x': 1})


def test_section_unknown_field_without_a_close_one_lists_all():
  with pytest.raises(ValueError, match=r"^unknown train config field 'zzz'; known fields: ") as e:
    config_lib.TrainConfig.from_config({'zzz': 1})
  for field in dataclasses.fields(config_lib.TrainConfig):
    assert field.name in str(e.value)


def test_section_config_dict_overrides_and_none_default_fields_are_typed():
  assert config_lib.train_config_dict(steps=7).steps == 7
  # What --config.train.seq_len=64 and friends do: assign into a field whose default is None.
  optim, train, data = (config_lib.optim_config_dict(), config_lib.train_config_dict(),
                        config_lib.data_config_dict())
  optim.decay_steps, train.seq_len, data.max_bytes = 3000, 64, 10_000
  assert config_lib.OptimConfig.from_config(optim).decay_steps == 3000
  assert config_lib.TrainConfig.from_config(train).seq_len == 64
  assert config_lib.DataConfig.from_config(data).max_bytes == 10_000
  with pytest.raises(TypeError):
    train.seq_len = 'long'
  # None where None means nothing is refused when the section is built, not by the builder.
  with pytest.raises(ValueError, match=r'^train\.steps=None must be a positive integer$'):
    config_lib.TrainConfig.from_config(config_lib.train_config_dict(steps=None))


POSITIVE = 'must be a positive integer'
INIT_FROM = "must be 'scratch', a workdir or 'hf:PATH_OR_NAME'"
CORPUS = "must be 'stdlib', 'shakespeare', a local path or 'hf:NAME[:CONFIG]'"


@pytest.mark.parametrize('section, field, value, requirement', [
    ('train', 'steps', 0, POSITIVE),
    ('train', 'batch_size', True, POSITIVE),
    ('train', 'log_every', 2.0, POSITIVE),
    ('train', 'eval_every', -1, POSITIVE),
    ('train', 'eval_batches', '8', POSITIVE),
    ('train', 'ckpt_every', None, POSITIVE),
    ('train', 'keep_checkpoints', 0, POSITIVE),
    ('train', 'seq_len', 0, 'must be None (model.block_size) or a positive integer'),
    ('train', 'init_from', '', INIT_FROM),
    ('train', 'init_from', None, INIT_FROM),
    ('data', 'corpus', '', CORPUS),
    ('data', 'tokenizer', 'gpt-2', "is not one of 'gpt2', 'bytes'"),
    ('data', 'data_dir', '', 'must be a directory path'),
    ('data', 'val_percent', 0, 'must be an integer in 1..99'),
    ('data', 'val_percent', 100, 'must be an integer in 1..99'),
    ('data', 'val_percent', 5.0, 'must be an integer in 1..99'),
    ('data', 'max_bytes', 0, 'must be None or a positive integer'),
    ('data', 'seed', -1, 'must be an integer >= 0'),
    ('data', 'seed', True, 'must be an integer >= 0'),
    ('optim', 'lr', '3e-4', 'must be > 0'),
    ('optim', 'warmup_steps', 1.5, 'must be an integer >= 0'),
])
def test_section_errors_name_section_field_value_and_requirement(section, field, value,
                                                                 requirement):
  with pytest.raises(ValueError) as e:
    SECTIONS[section][0].from_config({field: value})
  assert str(e.value) == f'{section}.{field}={value!r} {requirement}'


def test_every_allowed_tokenizer_exists():
  from gptjax.tokenizer import get_tokenizer
  for name in config_lib.TOKENIZER_NAMES:
    assert config_lib.DataConfig(tokenizer=name).tokenizer == get_tokenizer(name).name == name


def test_decay_ending_before_warmup_fails_when_the_config_is_built():
  with pytest.raises(
      ValueError, match=r'^optim\.decay_steps=5 must be >= optim\.warmup_steps=10 '
      r'\(decay starts when warmup ends\)$'):
    config_lib.OptimConfig(warmup_steps=10, decay_steps=5)
  # A constant schedule has no decay to start; None is resolved from the run's length later.
  assert config_lib.OptimConfig(warmup_steps=10, decay_steps=5, schedule='constant')
  assert config_lib.OptimConfig(warmup_steps=10).decay_steps is None


@pytest.mark.parametrize('name', sorted(SECTIONS))
def test_sections_are_frozen_and_hashable(name):
  section = SECTIONS[name][0]
  field = dataclasses.fields(section)[0].name
  with pytest.raises(dataclasses.FrozenInstanceError):
    setattr(section(), field, None)
  assert hash(section()) == hash(section())


@pytest.mark.parametrize('sharding, message', [
    ({'mesh': {'data': 0}}, 'sharding.mesh.data=0 must be a positive number of devices, or -1'),
    ({'mesh': {'tensor': 2.0}}, 'sharding.mesh.tensor=2.0 must be a positive number of devices'),
    ({'mesh': {'data': -1, 'fsdp': -1}}, 'sharding.mesh: data and fsdp are both -1'),
    ({'mesh': {'tensr': 2}}, "unknown sharding.mesh axis 'tensr'; did you mean 'tensor'?"),
    ({'rules': {'head': 'tensor'}}, "unknown sharding.rules axis 'head'; did you mean 'heads'?"),
    ({'rules': {'mlp': 'model'}}, "sharding.rules.mlp='model' must name distinct mesh axes"),
    ({'rules': {'batch': 'data,data'}}, "sharding.rules.batch='data,data' must name distinct"),
    ({'rules': {'batch': ('data',)}}, r"sharding.rules.batch=\('data',\) must name distinct"),
    ({'fsdp': True}, 'sharding.fsdp is now a mesh axis: sharding.mesh.fsdp=-1'),
])
def test_sharding_config_errors_name_the_field(sharding, message):
  with pytest.raises(ValueError, match=message):
    config_lib.ShardingConfig.from_config(sharding)


def test_sharding_rules_parse_to_mesh_axes_with_defaults_for_the_rest():
  rules = config_lib.ShardingConfig.from_config({'rules': {'mlp': 'tensor, expert', 'heads': ''}})
  axes = rules.rule_axes()
  assert axes['mlp'] == ('tensor', 'expert') and axes['heads'] == ()
  assert axes['batch'] == ('data', 'fsdp', 'expert') and axes['embed'] == ('fsdp',)
  assert set(axes) == set(config_lib.AXIS_NAMES)


def test_a_checkpoints_saved_sharding_of_the_first_release_reads_as_its_mesh():
  fsdp = config_lib.ShardingConfig.from_saved({'fsdp': True})
  assert fsdp.mesh == {'data': 1, 'fsdp': -1} and fsdp.rule_axes()['embed'] == ('fsdp',)
  assert config_lib.ShardingConfig.from_saved({'fsdp': False}).mesh == config_lib.DEFAULT_MESH
  assert config_lib.ShardingConfig.from_saved(None) == config_lib.ShardingConfig()
