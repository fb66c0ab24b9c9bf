"""The `gptjax` model type of lm-evaluation-harness, against lm-eval's own `hf` model running the
same weights exported with to_hf: local task YAML over local JSONL (multiple choice, rolling
log-likelihood, generation), per-example log-likelihoods to 1e-4 and identical metrics; and
python -m gptjax.eval end to end, its failures one line each."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import assert_user_error, random_params
from gptjax import hf, loading
from gptjax.config import EvalConfig, ModelConfig, eval_config_dict
from gptjax.eval.inloop import InLoopEvals, Loglikelihood, MultipleChoice
from gptjax.eval.scoring import Scorer
from gptjax.model import GPT, init_params
from gptjax.tokenizer import get_tokenizer, gpt2_for_transformers

lm_eval = pytest.importorskip('lm_eval')
harness = pytest.importorskip('gptjax.eval.harness')

REPO = Path(__file__).resolve().parent.parent
# GPT-2's vocabulary and layout in small: the hf model reads it with GPT-2's own tokenizer.
GPT2_SHAPED = dict(vocab_size=50257, d_model=32, n_heads=4, n_layers=2, block_size=48)

MULTIPLE_CHOICE = [
    dict(ctx='The cat sat on the', endings=['mat.', 'moon.', 'dog.', 'idea.'], label=0),
    dict(ctx='Two plus two is', endings=['four.', 'five.', 'blue.'], label=0),
    dict(ctx='A man is cooking pasta in a kitchen. He',
         endings=['drains the water into the sink.', 'flies to the moon.',
                  'reads a book.'], label=0),
    # Longer than the model's 48 tokens with its endings: both models drop tokens on the left.
    dict(ctx=' '.join(['The story goes on and on.'] * 9), endings=['The end.', 'More.'], label=1),
    dict(ctx='Trailing space ', endings=['here', 'there'], label=1),
]
DOCUMENTS = [
    'Hello world, this is a test of rolling log-likelihood.',
    # Several windows of 48 tokens: each predicted once, the later ones with the earlier as context.
    ' '.join(f'Sentence number {i} of a long document about language models.' for i in range(15)),
    'def f(x):\n    return x * 2\n',
]
QUESTIONS = [
    dict(question='Q: What is two plus two?\nA:', answer='four'),
    dict(question='The capital of France is', answer='Paris'),
    dict(question='def add(a, b):\n', answer='return a + b')
]

TASKS = {
    'local_mc': ('mc.jsonl', MULTIPLE_CHOICE, """
output_type: multiple_choice
doc_to_text: "{{ctx}}"
doc_to_choice: "{{endings}}"
doc_to_target: "{{label}}"
metric_list: [{metric: acc}, {metric: acc_norm}]"""),
    'local_rolling': ('text.jsonl', DOCUMENTS, """
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list: [{metric: word_perplexity}, {metric: byte_perplexity}, {metric: bits_per_byte}]"""),
    'local_gen': ('gen.jsonl', QUESTIONS, """
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\\n", "."], max_gen_toks: 12, do_sample: false}
metric_list: [{metric: exact_match}]"""),
}


def write_tasks(directory: Path) -> Path:
  """lm-eval task YAML over local JSONL files: no download."""
  directory.mkdir(parents=True, exist_ok=True)
  for name, (data_file, rows, spec) in TASKS.items():
    with open(directory / data_file, 'w') as f:
      for row in rows:
        f.write(json.dumps(row if isinstance(row, dict) else {'text': row}) + '\n')
    (directory / f'{name}.yaml').write_text(
        f'task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n'
        f'    test: {directory / data_file}\ntest_split: test\n{spec.strip()}\n')
  return directory


@pytest.fixture(scope='module')
def model():
  cfg = ModelConfig(**GPT2_SHAPED)
  params = random_params(init_params(cfg, jax.random.key(0)))
  return loading.LoadedModel(cfg, params, get_tokenizer('gpt2'), 'GPT-2-shaped test model')


@pytest.fixture(scope='module')
def tasks(tmp_path_factory):
  return write_tasks(tmp_path_factory.mktemp('tasks'))


@pytest.fixture(scope='module')
def exported(model, tmp_path_factory):
  """The same weights as a transformers GPT-2 directory with its tokenizer."""
  directory = tmp_path_factory.mktemp('exported')
  hf.to_hf(model.cfg, model.params, directory)
  gpt2_for_transformers().save_pretrained(directory)
  return directory


@pytest.fixture(autouse=True)
def offline(monkeypatch):
  monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')


def evaluate(lm, tasks_dir, names):
  from lm_eval.tasks import TaskManager
  return lm_eval.simple_evaluate(model=lm, tasks=names, log_samples=True, bootstrap_iters=0,
                                 task_manager=TaskManager(include_path=str(tasks_dir)))


def responses(results, task):
  return [sample['filtered_resps'] for sample in results['samples'][task]]


def loglikelihoods(results, task) -> list[float]:
  """Every request's log-likelihood, example by example (a multiple-choice example has one per
  ending, as (log-likelihood, is_greedy))."""
  return [
      response[0] if isinstance(response, tuple) else response
      for example in responses(results, task) for response in example
  ]


def test_loglikelihood_is_the_sum_of_log_softmax_of_the_logits(model):
  """The adapter through lm-eval's request path (tokenization, empty contexts) against the model's
  logits computed directly."""
  from lm_eval.api.instance import Instance
  lm = harness.GptjaxLM(loaded=model, batch_size=2)
  tokenizer = model.tokenizer
  pairs = [('The cat sat on the', ' mat'), ('', 'An empty context'), ('Hi ', 'there')]
  requests = [Instance('loglikelihood', {}, pair, i) for i, pair in enumerate(pairs)]
  for (context, continuation), (logprob, _) in zip(pairs, lm.loglikelihood(requests)):
    context_tokens = ([tokenizer.eot_token] if not context else tokenizer.encode(context.rstrip()))
    whole = tokenizer.encode(context.rstrip() + context[len(context.rstrip()):] + continuation)
    tokens = [tokenizer.eot_token] + whole if not context else whole
    logits = np.asarray(
        GPT(model.cfg).apply({'params': model.params}, np.array([tokens[:-1]])), np.float64)[0]
    logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    n = len(tokens) - len(context_tokens)
    expected = sum(logprobs[t - 1, tokens[t]] for t in range(len(tokens) - n, len(tokens)))
    np.testing.assert_allclose(logprob, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # lm-eval twice, transformers included
def test_local_tasks_give_what_lm_evals_hf_model_gives_on_the_exported_weights(
    model, tasks, exported):
  names = ['local_mc', 'local_rolling', 'local_gen']
  ours = evaluate(harness.GptjaxLM(loaded=model, batch_size=4), tasks, names)
  theirs = evaluate(
      lm_eval.api.registry.get_model('hf')(pretrained=str(exported), dtype='float32', batch_size=4,
                                           device='cpu'), tasks, names)
  for task in ('local_mc', 'local_rolling'):
    np.testing.assert_allclose(loglikelihoods(ours, task), loglikelihoods(theirs, task), rtol=1e-5,
                               atol=1e-4)
  for task, metrics in ours['results'].items():
    for metric, value in metrics.items():
      if metric.startswith(('acc', 'exact_match')):
        assert value == theirs['results'][task][metric], (task, metric)
      elif isinstance(value, float) and 'stderr' not in metric:
        np.testing.assert_allclose(value, theirs['results'][task][metric], rtol=1e-5)
  assert responses(ours, 'local_gen') == responses(theirs, 'local_gen')

  # The training loop's evals over the same files give lm-eval's numbers too.
  scorer = Scorer(model.cfg, model.params, valid_vocab_size=model.tokenizer.n_vocab)
  choices = MultipleChoice('mc', EvalConfig(path=str(tasks / 'mc.jsonl')), model.tokenizer)(scorer)
  assert choices == {k: theirs['results']['local_mc'][f'{k},none'] for k in ('acc', 'acc_norm')}
  text = Loglikelihood('text', EvalConfig(type='loglikelihood', path=str(tasks / 'text.jsonl')),
                       model.tokenizer)(scorer)
  np.testing.assert_allclose(text['bpb'], theirs['results']['local_rolling']['bits_per_byte,none'],
                             rtol=1e-6)


@pytest.mark.slow  # lm-eval twice
def test_an_lm_eval_task_in_the_training_loop_gives_the_commands_numbers(model, tasks):
  """type='lm_eval' in config.evals runs the task through the adapter on the snapshot."""
  evals = InLoopEvals({'mc': eval_config_dict(type='lm_eval', task=str(tasks / 'local_mc.yaml'))},
                      model.cfg, model.tokenizer, eval_every=1, enabled=True)
  evals.start(1, model.params, evals.due(1, 1))
  (step, metrics), = evals.finished(wait=True)
  direct = evaluate(harness.GptjaxLM(loaded=model), tasks, ['local_mc'])['results']['local_mc']
  assert step == 1 and metrics == {
      'mc/acc': direct['acc,none'], 'mc/acc_norm': direct['acc_norm,none']
  }


@pytest.mark.slow  # transformers' generate on several prompts
def test_generation_stops_where_the_hf_model_stops(model, exported):
  """Stop sequences taken from the middle of each prompt's own greedy continuation, so that they
  do occur; one request runs past a 16-token check of the loop."""
  from lm_eval.api.instance import Instance
  ours = harness.GptjaxLM(loaded=model, batch_size=2)
  theirs = lm_eval.api.registry.get_model('hf')(pretrained=str(exported), dtype='float32',
                                                batch_size=2, device='cpu')
  prompts = ['Once upon a time', 'def main():\n', 'The results show that', 'Q: why?\nA:']
  free = ours.generate_until([
      Instance('generate_until', {}, (p, {'until': [], 'max_gen_toks': 30}), i)
      for i, p in enumerate(prompts)
  ])
  requests = [
      Instance('generate_until', {}, (p, {'until': [text[20:23] or 'zzz'], 'max_gen_toks': 30}), i)
      for i, (p, text) in enumerate(zip(prompts, free))
  ]
  assert ours.generate_until(requests) == theirs.generate_until(requests)
  assert any(len(text) < len(whole) for text, whole in zip(ours.generate_until(requests), free))


def test_model_args_name_the_three_sources_and_bad_ones_are_refused(tmp_path):
  lm = lm_eval.api.registry.get_model('gptjax').create_from_arg_string(
      f'config={REPO}/configs/tiny.py,max_length=8', {'batch_size': '2', 'device': 'cpu'})
  assert (lm.batch_size, lm.max_length, lm.prefix_token_id) == (2, 8, 50256)
  with pytest.raises(ValueError, match='batch_size=auto: give a number'):
    harness.GptjaxLM(config=f'{REPO}/configs/tiny.py', batch_size='auto')
  with pytest.raises(ValueError, match='max_gen_toks=0 must be an integer >= 1'):
    harness.GptjaxLM(config=f'{REPO}/configs/tiny.py', max_gen_toks=0)
  with pytest.raises(ValueError, match='no model given'):
    harness.GptjaxLM()
  with pytest.raises(ValueError, match='no such directory'):
    harness.GptjaxLM(hf=str(tmp_path / 'nothing'))


# ---------------------------------------------------------------------------------------------
# python -m gptjax.eval


def run_eval(*args, cwd=REPO, env=None):
  return subprocess.run([sys.executable, '-m', 'gptjax.eval', *map(str, args)], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'HF_DATASETS_OFFLINE': '1', **(env or {})})


@pytest.mark.slow  # a subprocess that imports lm-eval and compiles
def test_the_command_prints_the_table_and_writes_json_into_the_run(tasks, tmp_path):
  result = run_eval(f'--config={REPO}/configs/tiny.py',
                    f'--tasks={tasks}/local_mc.yaml,local_rolling', f'--include_path={tasks}',
                    '--limit=3', '--batch_size=2', f'--output_dir={tmp_path}/out')
  assert result.returncode == 0, result.stderr
  assert '|local_mc' in result.stdout and 'acc_norm' in result.stdout
  assert 'bits_per_byte' in result.stdout
  written, = (tmp_path / 'out').glob('lm_eval_*.json')
  saved = json.loads(written.read_text())
  assert set(saved['results']) == {'local_mc', 'local_rolling'}
  assert saved['config']['model_source'].startswith('random init')
  assert '100%' in result.stderr  # the progress bars ran to the end


@pytest.mark.slow  # a subprocess per mistake
def test_a_wrong_task_no_data_or_bad_flags_are_one_line(tasks, tmp_path):
  assert_user_error(run_eval(f'--config={REPO}/configs/tiny.py', '--tasks=hellaswgg'),
                    "unknown lm-eval task 'hellaswgg'", 'did you mean hellaswag')
  assert_user_error(run_eval(f'--config={REPO}/configs/tiny.py', '--tasks=hellaswag'),
                    'task hellaswag needs its data from the Hugging Face Hub', '--include_path')
  assert_user_error(run_eval('--tasks=local_mc', f'--include_path={tasks}', cwd=tmp_path),
                    'no run with a checkpoint under runs/', 'python -m gptjax.eval again')
  assert_user_error(run_eval(f'--config={REPO}/configs/tiny.py'), '--tasks is required')
  assert_user_error(run_eval(f'--config={REPO}/configs/tiny.py', '--tasks=x', '--limit=2.5'),
                    '--limit=2.5 must be a whole number')
  assert_user_error(run_eval(f'--config={REPO}/configs/tiny.py', f'--tasks={tmp_path}/no.yaml'),
                    f'cannot read {tmp_path}/no.yaml')
