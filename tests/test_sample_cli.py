"""sample.py end to end, as a user runs it: one tiny training run (two checkpoints) shared by most
tests, a tiny Hugging Face GPT-2 saved with save_pretrained, and the product card's commands
with no --workdir and no model flag (train.py into runs/, sample.py from there)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HF_CASES, assert_user_error, hf_model, hf_tokenizer
from gptjax.text import continuation
from gptjax.tokenizer import get_tokenizer

pytestmark = pytest.mark.slow  # every test here starts train.py or sample.py

REPO = Path(__file__).resolve().parent.parent
PROMPT = 'def '


def run(script, *args, input=None, cwd=REPO):
  # stdin is /dev/null unless a test pipes a prompt in, as a terminal-less user would.
  return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, input=input,
                        stdin=None if input is not None else subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=120)


def sample(*args, input=None, cwd=REPO):
  return run('sample.py', *args, input=input, cwd=cwd)


def ok(result) -> str:
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  return result.stdout


def tiny_training(data_dir) -> tuple[str, ...]:
  """Overrides of configs/small.py: a 1-layer byte-level model (learned positions) trained for 2
  steps, checkpointed after each."""
  return ('--config.train.steps=2', '--config.train.ckpt_every=1', '--config.train.batch_size=2',
          '--config.train.eval_batches=1', '--config.model.n_layers=1', '--config.model.d_model=32',
          '--config.model.n_heads=2', '--config.data.max_bytes=100000',
          f'--config.data.data_dir={data_dir}', '--config.optim.warmup_steps=1',
          '--config.model.position=learned')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp('sample_cli')
  workdir = root / 'run'
  ok(
      run('train.py', '--config=configs/small.py', f'--workdir={workdir}',
          *tiny_training(root / 'data')))
  return workdir


def samples(stdout: str, n: int) -> list[str]:
  parts = stdout.split('---------- sample ')[1:]
  assert [p.split(' ', 1)[0] for p in parts] == [str(i + 1) for i in range(n)]
  return [p.split('----------\n', 1)[1].removesuffix('\n') for p in parts]


# ---------------------------------------------------------------------------------------------
# Sampling from a training run


def test_greedy_sampling_is_deterministic_and_streams_what_a_batch_gets(workdir):
  args = (f'--workdir={workdir}', f'--prompt={PROMPT}', '--temperature=0', '--max_new_tokens=20')
  first = sample(*args)
  text = ok(first)
  assert text.startswith(PROMPT) and len(text) > len(PROMPT)
  assert 'step 2' in first.stderr  # the latest checkpoint
  assert ok(sample(*args)) == text
  # The streamed single sample is exactly each of a greedy batch's samples.
  assert samples(ok(sample(*args, '--num_samples=3')), 3) == [text.removesuffix('\n')] * 3


def test_same_seed_same_samples_other_seed_different(workdir):
  def batch(seed):
    return samples(
        ok(
            sample(f'--workdir={workdir}', f'--prompt={PROMPT}', '--temperature=1',
                   '--max_new_tokens=20', '--num_samples=3', f'--seed={seed}')), 3)

  first = batch(0)
  assert all(s.startswith(PROMPT) for s in first)
  assert len(set(first)) == 3  # the rows of a batch are independent samples
  assert batch(0) == first
  assert batch(1) != first


def test_step_picks_an_older_checkpoint(workdir):
  result = sample(f'--workdir={workdir}', '--step=1', f'--prompt={PROMPT}', '--max_new_tokens=5')
  assert ok(result).startswith(PROMPT)
  assert 'step 1' in result.stderr


def test_a_damaged_checkpoint_is_one_line_and_nothing_else(workdir, tmp_path):
  """Orbax reads through asyncio: a truncated file used to print its reads' "Event loop is
  closed" tracebacks around the error (only a process's real stderr shows them)."""
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  for path in (copy / 'checkpoints' / '2' / 'state' / 'd').iterdir():
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  assert_user_error(sample(f'--workdir={copy}', f'--prompt={PROMPT}', '--max_new_tokens=5'),
                    f'checkpoint {copy / "checkpoints" / "2"} is damaged', 'to use step 1')


def test_prompt_from_file_or_stdin_and_unconditional_samples(workdir, tmp_path):
  args = (f'--workdir={workdir}', '--temperature=0', '--max_new_tokens=10')
  expected = ok(sample(*args, f'--prompt={PROMPT}'))
  prompt_file = tmp_path / 'prompt.txt'
  prompt_file.write_text(PROMPT)
  assert ok(sample(*args, f'--prompt_file={prompt_file}')) == expected
  assert ok(sample(*args, input=PROMPT)) == expected
  unconditional = sample(*args)  # no prompt, stdin not piped: starts from end-of-text
  assert unconditional.returncode == 0 and 'Traceback' not in unconditional.stderr


def test_a_prompt_longer_than_learned_positions_is_left_truncated_with_a_warning(workdir):
  result = sample(f'--workdir={workdir}', '--prompt=' + 'x' * 200 + 'END',
                  '--max_new_tokens=10')  # block_size 128
  text = ok(result)
  assert text.startswith('x' * 116 + 'END') and not text.startswith('x' * 117)
  warnings = [line for line in result.stderr.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and 'keeping only its last 119 tokens' in warnings[0]


# ---------------------------------------------------------------------------------------------
# Mistakes: one line, no traceback, non-zero exit


@pytest.mark.parametrize('args, fragments', [
    (['--temperature=-0.5'], ['--temperature=-0.5', '>= 0']),
    (['--top_p=0'], ['--top_p=0', '(0, 1]']),
    (['--top_p=1.5'], ['--top_p=1.5']),
    (['--top_k=0'], ['--top_k=0', '>= 1']),
    (['--max_new_tokens=0'], ['--max_new_tokens=0']),
    (['--num_samples=0'], ['--num_samples=0']),
    (['--hf=gpt2'], ['workdir and hf both given', 'one model at a time']),
    (['--prompt='], ['--prompt is empty', 'leave the prompt out', '<|endoftext|>']),
    (['--step=7'], ['no checkpoint for step 7', 'available: 1, 2']),
])
def test_bad_input_is_one_clear_line(workdir, args, fragments):
  assert_user_error(sample(f'--workdir={workdir}', *args), *fragments)


@pytest.mark.parametrize('flag, fragment', [
    ('--max_len=1000', 'max_len=1000 is past block_size'),
    ('--temperature=inf', 'temperature=inf must be a finite number'),
])
def test_settings_the_model_refuses_are_said_before_the_prompt_is_printed(workdir, flag, fragment):
  result = sample(f'--workdir={workdir}', '--prompt=PROMPT SHOWN', flag)
  assert_user_error(result, fragment)
  assert result.stdout == ''


def test_an_empty_prompt_file_or_stdin_is_refused(workdir, tmp_path):
  empty = tmp_path / 'empty.txt'
  empty.write_text('')
  assert_user_error(sample(f'--workdir={workdir}', f'--prompt_file={empty}'), 'is empty',
                    'leave the prompt out')
  assert_user_error(sample(f'--workdir={workdir}', input=''), 'stdin is empty',
                    'leave the prompt out')


def test_a_prompt_that_is_not_utf8_is_refused_naming_where_it_came_from(workdir, tmp_path):
  latin1 = 'caf\xe9\n'.encode('latin-1')
  prompt_file = tmp_path / 'latin1.txt'
  prompt_file.write_bytes(latin1)
  assert_user_error(sample(f'--workdir={workdir}', f'--prompt_file={prompt_file}'),
                    f'--prompt_file={prompt_file} is not UTF-8 text (byte 0xe9 at offset 3)')
  piped = subprocess.run(
      [sys.executable, str(REPO / 'sample.py'), f'--workdir={workdir}'], cwd=REPO, input=latin1,
      capture_output=True, timeout=120)
  assert_user_error(
      subprocess.CompletedProcess(piped.args, piped.returncode, piped.stdout.decode(),
                                  piped.stderr.decode()),
      'the prompt on stdin is not UTF-8 text (byte 0xe9 at offset 3)')


def test_no_model_says_what_to_run_first(tmp_path):
  (tmp_path / 'runs' / 'empty').mkdir(parents=True)  # a run that never saved a checkpoint
  assert_user_error(sample('--prompt=hi', cwd=tmp_path), 'no run with a checkpoint under runs/',
                    'python train.py --config=configs/small.py')
  assert_user_error(sample(f'--workdir={tmp_path}', '--prompt=hi'),
                    f'python train.py --config=configs/small.py --workdir={tmp_path}')


def test_a_config_file_that_cannot_be_read_is_one_line():
  for script in ('sample.py', 'train.py'):
    assert_user_error(run(script, '--config=configs/nope.py'), '--config=configs/nope.py',
                      'no such file')
  assert_user_error(run('train.py', '--config=configs/ablation.py:norm=bogus'),
                    "variant norm='bogus' is not one of")


@pytest.mark.slow
@pytest.mark.parametrize('script', ['sample.py', 'train.py'])
def test_a_config_file_that_does_not_run_or_a_missing_section_is_one_line(script, tmp_path):
  (tmp_path / 'syntax.py').write_text('def get_config(:\n')
  (tmp_path / 'empty.py').write_text('x = 1\n')
  (tmp_path / 'directory.py').mkdir()
  (tmp_path / 'raises.py').write_text('def get_config():\n  return undefined\n')
  cases = [
      ([f'--config={tmp_path / "syntax.py"}'],
       ['syntax.py: cannot load it: syntax error at line 1']),
      ([f'--config={tmp_path / "empty.py"}'],
       ['empty.py: cannot load it: it defines no get_config()']),
      ([f'--config={tmp_path / "directory.py"}'], ['directory.py: cannot load it: not a file']),
      (['--config=configs/tiny.py', '--config.modle.n_layers=2'], [
          "--config.modle.n_layers=2: the config has no section or field 'modle'",
          'Did you mean "model"'
      ]),
      ([f'--config={tmp_path / "raises.py"}'],
       ["raises.py: cannot load it: NameError: name 'undefined' is not defined"]),
      (['--config=configs/tiny.py', '--config.optim.lrr=1'],
       ["--config.optim.lrr=1: the config has no section or field 'lrr'", 'Did you mean "lr"']),
      (['--config=configs/tiny.py', '--config.sharding.mesh.dta=2'],
       ["--config.sharding.mesh.dta=2: the config has no section or field 'dta'"]),
      # The first release's FSDP switch: the message says where it went.
      (['--config=configs/tiny.py', '--config.sharding.fsdp=True'],
       ["no section or field 'fsdp'; it is now sharding.mesh.fsdp=-1"]),
  ]
  for args, fragments in cases:
    assert_user_error(run(script, *args, f'--workdir={tmp_path / "run"}'), *fragments)
  assert not (tmp_path / 'run').exists()


def test_a_rope_prompt_must_fit_max_len():
  args = ('--config=configs/tiny.py', '--config.model.position=rope', '--config.model.n_layers=1',
          '--config.model.block_size=16', '--max_new_tokens=8')
  assert_user_error(sample(*args, '--prompt=' + 'hello ' * 12), '--max_len', 'rope')
  # past block_size, up to --max_len
  assert ok(sample(*args, '--prompt=' + 'hello ' * 12, '--max_len=32')).startswith('hello ')


def test_readme_quickstart_samples_from_a_random_model():
  result = sample('--config=configs/tiny.py', '--prompt=Hello, I am')
  assert ok(result).startswith('Hello, I am')
  assert 'random init' in result.stderr


# ---------------------------------------------------------------------------------------------
# Hugging Face weights


@pytest.fixture(scope='module')
def hf_gpt2(tmp_path_factory):
  model = hf_model('gpt2', n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=50257)
  directory = tmp_path_factory.mktemp('hf_gpt2')
  model.save_pretrained(directory)
  return model, directory


def test_hf_gpt2_greedy_matches_transformers(hf_gpt2):
  import torch

  model, directory = hf_gpt2
  prompt = 'Hello, I am'
  tokenizer = get_tokenizer('gpt2')
  ids = tokenizer.encode(prompt)
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12,
                         eos_token_id=tokenizer.eot_token, pad_token_id=tokenizer.eot_token)
  expected = prompt + continuation(tokenizer, ids, out[0, len(ids):].tolist())
  result = sample(f'--hf={directory}', f'--prompt={prompt}', '--temperature=0',
                  '--max_new_tokens=12')
  assert ok(result) == expected + '\n'
  assert 'gpt2 tokenizer' in result.stderr


@pytest.mark.slow  # a sample.py and an analysis subprocess per family
@pytest.mark.parametrize('name', ['qwen3-windows', 'llama3.2', 'gemma2', 'gpt-neox', 'olmo2'])
def test_sample_and_analysis_take_every_family_with_its_tokenizer(name, tmp_path):
  """sample.py --hf and python -m gptjax.analysis --hf on a saved model of each family (with
  its own tokenizer): sample.py's greedy text is transformers' greedy generate, decoded."""
  import torch
  model_type, fields = HF_CASES[name]
  model = hf_model(model_type, perturb=0.1, **{**fields, 'bos_token_id': 0, 'eos_token_id': 1})
  tokenizer = hf_tokenizer()
  model.save_pretrained(tmp_path)
  tokenizer.save_pretrained(tmp_path)
  prompt = 'the lazy fox'
  ids = tokenizer(prompt)['input_ids']
  with torch.no_grad():  # eos 1 may end it early; banned tokens past the tokenizer's never come
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=8, eos_token_id=1,
                         pad_token_id=1, suppress_tokens=list(range(len(tokenizer), 300)))
  new = [t for t in out[0, len(ids):].tolist() if t != 1]
  expected = prompt + tokenizer.decode(new)
  result = sample(f'--hf={tmp_path}', f'--prompt={prompt}', '--temperature=0', '--max_new_tokens=8')
  assert ok(result) == expected + '\n'
  analysis = subprocess.run([
      sys.executable, '-m', 'gptjax.analysis', 'next', f'--hf={tmp_path}', f'--prompt={prompt}',
      '--top_k=3'
  ], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert analysis.returncode == 0 and 'Traceback' not in analysis.stderr, analysis.stderr
  assert f'{model.config.num_hidden_layers} layers' in analysis.stderr


# ---------------------------------------------------------------------------------------------
# The product card's commands: train.py without --workdir, sample.py without a model flag


def test_train_goes_to_runs_by_default_and_sample_finds_the_run(tmp_path):
  train = ('train.py', f'--config={REPO / "configs/small.py"}', *tiny_training(tmp_path / 'data'))
  first = ok(run(*train, cwd=tmp_path))
  assert first.splitlines()[0].startswith(f'workdir: {os.path.join("runs", "small")} ')
  assert (tmp_path / 'runs' / 'small' / 'checkpoints' / '2').is_dir()
  result = sample(f'--prompt={PROMPT}', '--max_new_tokens=5', cwd=tmp_path)
  assert ok(result).startswith(PROMPT)
  assert f'using {os.path.join("runs", "small")} step 2, the newest checkpoint' in result.stderr
  again = ok(run(*train, cwd=tmp_path)).splitlines()  # resumes: nothing left to train
  assert again[0] == first.splitlines()[0] and again[-1].startswith('done: step 2 val_loss')
