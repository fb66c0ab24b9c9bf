"""config.evals: downstream evals inside the training loop. Their metrics land in metrics.jsonl at
their own cadence and equal the same eval run afterwards on the checkpoint of that step; a bad
entry or a missing file stops the run before anything compiles, naming evals.<name>.<field>.
(That multiple_choice and loglikelihood equal lm-eval's acc, acc_norm and bits_per_byte is
tests/test_eval_harness.py's.)"""

import json
import math

import jax
import numpy as np
import pytest

from conftest import TINY, random_params
from gptjax import data, loading, trainer
from gptjax.config import EvalConfig, ModelConfig, base_config, eval_config_dict
from gptjax.eval.inloop import InLoopEvals, Loglikelihood, MultipleChoice, check_evals
from gptjax.eval.scoring import Scorer
from gptjax.logs import read_metrics
from gptjax.model import init_params
from gptjax.tokenizer import get_tokenizer

pytestmark = pytest.mark.usefixtures('fast_compiles')

QUESTIONS = [
    dict(ctx='def add(a, b):\n    return', endings=['a + b', 'while', ')))'], label=0),
    dict(ctx='import', endings=['os', '= 3', '.,.'], label='0'),  # the Hub's HellaSwag: a string
    dict(ctx='for i in range(10):\n   ', endings=[' print(i)', 'else:'], label=0),
    dict(ctx='class Foo', endings=['(object):', ' = = ='], label=0),
]
TEXT = 'def main():\n    print("hello")\n\nif __name__ == "__main__":\n    main()\n' * 3


@pytest.fixture
def files(tmp_path):
  (tmp_path / 'mc.jsonl').write_text(''.join(json.dumps(q) + '\n' for q in QUESTIONS))
  (tmp_path / 'text.txt').write_text(TEXT)
  (tmp_path / 'docs.jsonl').write_text(''.join(
      json.dumps({'text': t}) + '\n' for t in [TEXT[:50], TEXT[50:]]))
  return tmp_path


def test_metrics_are_the_numpy_definitions(files):
  """acc / acc_norm from the ending log-likelihoods (an ending after a space, normalised by its
  characters), bpb from the documents' log-likelihoods: computed here from the scorer's own
  numbers, which test_eval_scoring checks against the model's logits."""
  tokenizer = get_tokenizer('bytes')
  cfg = ModelConfig(**{**TINY, 'vocab_size': 257})
  scorer = Scorer(cfg, random_params(init_params(cfg, jax.random.key(0))), valid_vocab_size=257)
  spec = EvalConfig(type='multiple_choice', path=str(files / 'mc.jsonl'))
  metrics = MultipleChoice('mc', spec, tokenizer)(scorer)
  correct = correct_norm = 0
  for q in QUESTIONS:
    context = list(q['ctx'].rstrip().encode())
    lls = np.array([
        scorer.score([(context, list(
            (q['ctx'][len(q['ctx'].rstrip()):] + ' ' + e).encode()))])[0][0] for e in q['endings']
    ])
    correct += np.argmax(lls) == int(q['label'])
    correct_norm += np.argmax(lls / [len(e) for e in q['endings']]) == int(q['label'])
  assert metrics == {'acc': correct / 4, 'acc_norm': correct_norm / 4}

  for path, texts in [('text.txt', [TEXT]), ('docs.jsonl', [TEXT[:50], TEXT[50:]])]:
    spec = EvalConfig(type='loglikelihood', path=str(files / path))
    bpb = Loglikelihood('text', spec, tokenizer)(scorer)['bpb']
    nats = 0.0
    for text in texts:
      tokens = list(text.encode())
      for start in range(0, len(tokens), 16):  # block_size 16: disjoint windows
        context = [256] if start == 0 else tokens[max(0, start - 16):start]
        nats -= scorer.score([(context, tokens[start:start + 16])])[0][0]
    assert bpb == pytest.approx(nats / math.log(2) / sum(len(t) for t in texts), rel=1e-6)


def test_limit_keeps_the_first_questions(files):
  spec = EvalConfig(type='multiple_choice', path=str(files / 'mc.jsonl'), limit=2)
  assert len(MultipleChoice('mc', spec, get_tokenizer('bytes')).questions) == 2


@pytest.mark.parametrize('entry, message', [
    (dict(type='multiple_choice'), "evals.x.path='' is needed by type='multiple_choice'"),
    (dict(type='lm_eval'), "evals.x.task='' is needed by type='lm_eval'"),
    (dict(type='choices', path='a'), "evals.x.type='choices' is not one of 'multiple_choice'"),
    (dict(path='a', evry=3), "unknown evals.x config field 'evry'; did you mean 'every'?"),
    (dict(path='a', every=0), 'evals.x.every=0 must be None (train.eval_every)'),
    (dict(path='a', limit=-1), 'evals.x.limit=-1 must be None (all)'),
])
def test_bad_entries_name_the_field(entry, message):
  with pytest.raises(ValueError) as error:
    check_evals({'x': entry})
  assert message in str(error.value)


def test_bad_files_are_one_line_before_training(files):
  tokenizer, cfg = get_tokenizer('bytes'), ModelConfig(**{**TINY, 'vocab_size': 257})
  (files / 'bad.jsonl').write_text('{"ctx": "a", "endings": ["b"], "label": 3}\n')
  (files / 'torn.jsonl').write_text('{"ctx": "a", "endi\n')
  for path, type_, message in [
      ('missing.jsonl', 'multiple_choice', "evals.x.path='.*missing.jsonl': no such file"),
      ('bad.jsonl', 'multiple_choice', 'line 1 is not a question of the form'),
      ('torn.jsonl', 'multiple_choice', 'line 1 is not JSON'),
      ('mc.jsonl', 'loglikelihood', 'every line of'),
      ('missing.txt', 'loglikelihood', 'no such file'),
  ]:
    evals = {'x': eval_config_dict(type=type_, path=str(files / path))}
    with pytest.raises(ValueError, match=message):
      InLoopEvals(evals, cfg, tokenizer, eval_every=10, enabled=True)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('data')
  data.prepare('stdlib', 'bytes', directory, max_bytes=100_000, progress=False)
  return directory


def tiny_config(data_dir, files):
  config = base_config(vocab_size=257, n_layers=1, d_model=32, n_heads=2, block_size=32)
  config.data.tokenizer = 'bytes'
  config.data.data_dir = str(data_dir)
  config.data.max_bytes = 100_000
  config.train.update(steps=6, batch_size=4, log_every=1, eval_every=3, eval_batches=1,
                      ckpt_every=2, keep_checkpoints=5)
  config.optim.warmup_steps = 1
  config.evals.choices = eval_config_dict(type='multiple_choice', path=str(files / 'mc.jsonl'),
                                          every=2)
  config.evals.text = eval_config_dict(type='loglikelihood', path=str(files / 'text.txt'))
  return config


@pytest.mark.slow  # a training run and a recomputation per checkpoint
def test_training_logs_each_eval_at_its_cadence_with_the_checkpoints_numbers(
    data_dir, files, tmp_path):
  workdir = tmp_path / 'run'
  last = trainer.train_and_evaluate(tiny_config(data_dir, files), workdir)
  logged = {}
  for line in read_metrics(workdir):
    for key, value in line.items():
      if '/' in key:
        logged[(line['step'], key)] = value
  choices = sorted(step for step, key in logged if key == 'choices/acc')
  assert choices == [2, 4, 6]  # every=2
  assert sorted(step for step, key in logged if key == 'text/bpb') == [3, 6]  # eval_every=3
  assert last['choices/acc_norm'] == logged[(6, 'choices/acc_norm')]

  tokenizer = get_tokenizer('bytes')
  for step in (2, 4, 6):
    model = loading.load_workdir(workdir, step)
    scorer = Scorer(model.cfg, model.params, valid_vocab_size=257)
    spec = EvalConfig(path=str(files / 'mc.jsonl'))
    expected = MultipleChoice('choices', spec, tokenizer)(scorer)
    assert logged[(step, 'choices/acc')] == expected['acc']
    assert logged[(step, 'choices/acc_norm')] == expected['acc_norm']
  spec = EvalConfig(type='loglikelihood', path=str(files / 'text.txt'))
  bpb = Loglikelihood('text', spec, tokenizer)(Scorer(model.cfg, model.params,
                                                      valid_vocab_size=257))['bpb']
  assert logged[(6, 'text/bpb')] == pytest.approx(bpb, rel=1e-6)


def test_a_missing_eval_file_stops_the_run_before_training(data_dir, files, tmp_path):
  config = tiny_config(data_dir, files)
  config.evals.text.path = str(files / 'nope.txt')
  with pytest.raises(ValueError, match="evals.text.path='.*nope.txt': no such file"):
    trainer.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run' / 'checkpoints').exists()
