"""Generate text with a gptjax model: a training run's checkpoint, Hugging Face weights, or an
untrained model straight from a config.

  python sample.py --prompt="def "                                # the newest run under runs/
  python sample.py --workdir=runs/small --prompt="def "           # latest checkpoint of a run
  python sample.py --workdir=runs/small --step=250 --num_samples=3
  python sample.py --hf=gpt2 --prompt="The meaning of life is" --temperature=0.8 --top_k=40
  python sample.py --config=configs/tiny.py --prompt="Hello, I am"  # random weights: gibberish
  echo "Once upon a time" | python sample.py --workdir=runs/small

With no --workdir, --hf or --config the model is the newest checkpoint of any run under runs/
(where train.py puts a run by default); stderr says which. The prompt comes from --prompt,
--prompt_file or stdin; with none the samples start from end-of-text (unconditional). One sample
streams as it is generated; several are generated as one batch and printed one after another.
"""

import os
import signal
import stat
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gptjax import cli

flags.DEFINE_string(
    'workdir', None, 'Training run to sample from (its latest checkpoint; '
    'default: the newest checkpoint under runs/).')
flags.DEFINE_integer('step', None, 'With --workdir: the checkpoint step to sample from.')
flags.DEFINE_string(
    'hf', None, 'Hugging Face GPT-2/Llama-family model: a directory saved with '
    'save_pretrained, or a Hub name (needs a network).')
config_flags.DEFINE_config_file(
    'config', None, 'Config file: sample from its model, randomly '
    'initialised (to look at an untrained model).', lock_config=True)
flags.DEFINE_string('prompt', None, 'Text to continue (default: stdin if piped, else start from '
                    'end-of-text).')
flags.DEFINE_string('prompt_file', None, 'File whose text to continue.')
flags.DEFINE_integer('num_samples', 1, 'Samples to generate (as one batch).')
flags.DEFINE_integer('max_new_tokens', 100, 'Tokens to generate per sample at most.')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature; 0 means greedy.')
flags.DEFINE_integer('top_k', None, 'Sample only among the k most likely tokens.')
flags.DEFINE_float('top_p', None, 'Sample only among the smallest set of tokens with mass >= p.')
flags.DEFINE_integer('seed', 0, 'Sampling seed: the same seed gives the same text.')
flags.DEFINE_string(
    'mesh', None, 'With several devices: the mesh to run on, e.g. tensor=4 (tensor parallel) '
    "or data=2,tensor=4 (default: the training run's config.sharding.mesh where it fits the "
    'devices, else data parallel).')
flags.DEFINE_integer(
    'max_len', None, 'KV cache size in tokens, prompt included (default: '
    'block_size). Rope models may go past block_size.')
FLAGS = flags.FLAGS

EMPTY_PROMPT = ("{} is empty: to sample from end-of-text (unconditionally), leave the prompt out "
                "or pass --prompt='<|endoftext|>'")


def check_flags() -> None:
  """Every mistake in the sampling flags, before JAX is even imported (the model's flags are
  checked where the model is loaded, gptjax.loading.load_model)."""
  cli.config_flag()  # a config file that cannot be read, in one line
  if FLAGS.prompt is not None and FLAGS.prompt_file is not None:
    raise ValueError('--prompt and --prompt_file both given: use one')
  if not FLAGS.temperature >= 0:
    raise ValueError(f'--temperature={FLAGS.temperature} must be >= 0 (0: greedy)')
  if FLAGS.top_p is not None and not 0 < FLAGS.top_p <= 1:
    raise ValueError(f'--top_p={FLAGS.top_p} must be in (0, 1]')
  for name in ('top_k', 'max_new_tokens', 'num_samples', 'max_len'):
    if FLAGS[name].value is not None and FLAGS[name].value < 1:
      raise ValueError(f'--{name}={FLAGS[name].value} must be >= 1')


def read_prompt() -> str | None:
  """The prompt text, or None for none at all (then samples start from end-of-text)."""
  if FLAGS.prompt is not None:
    text, source = FLAGS.prompt, '--prompt'
  elif FLAGS.prompt_file is not None:
    source = f'--prompt_file={FLAGS.prompt_file}'
    try:
      with open(FLAGS.prompt_file, 'rb') as f:
        text = _utf8_text(f.read(), source)
    except OSError as e:
      raise ValueError(f'{source}: {e.strerror}') from None
  elif _stdin_is_piped():
    source = 'the prompt on stdin'
    text = _utf8_text(sys.stdin.buffer.read(), source)
  else:
    return None
  if not text:
    raise ValueError(EMPTY_PROMPT.format(source))
  return text


def _utf8_text(raw: bytes, source: str) -> str:
  """The prompt's text; bytes that are not UTF-8 are refused, not replaced unseen. Newlines as
  text mode reads them (\r\n -> \n)."""
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ValueError(f'{source} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); '
                     'convert it, e.g. iconv -f latin1 -t utf-8') from None
  return text.replace('\r\n', '\n').replace('\r', '\n')


def _stdin_is_piped() -> bool:
  # A pipe or a redirected file, not a terminal and not /dev/null (as under nohup, cron or CI).
  mode = os.fstat(sys.stdin.fileno()).st_mode
  return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])} (the prompt goes in '
                     '--prompt="...", --prompt_file or stdin)')
  # Generation runs on device inside one call, which Python's Ctrl-C handler would only see when
  # it returns; a sampler has nothing to save, so Ctrl-C stops it at once.
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  check_flags()
  prompt_text = read_prompt()
  absl_logging.set_verbosity(absl_logging.ERROR)  # keep orbax's restore chatter off the screen
  # Imported after the checks so that mistakes and --help answer without loading JAX.
  from gptjax import sampling, text

  model = load_model()
  tokenizer = model.tokenizer
  settings = dict(max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                  top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed,
                  eot_token=tokenizer.eot_token, max_len=FLAGS.max_len,
                  valid_vocab_size=tokenizer.n_vocab)
  sampling.check_settings(model.cfg, **settings)  # a mistake is said before the prompt is shown
  prompt = text.encode_prompt(prompt_text, tokenizer)
  kept, warning = fit_prompt(model.cfg, prompt)
  print(model.description, file=sys.stderr)
  if warning:
    print(f'warning: {warning}', file=sys.stderr)
  shown = '' if prompt_text is None else prompt_text if kept == prompt else tokenizer.decode(kept)
  # Output piped into a reader that closes early (| head) ends the sampler quietly, as it would
  # `cat`. Only from here: while orbax restores, a broken internal pipe of its event loop would
  # kill the process silently instead of letting a damaged checkpoint be reported.
  if hasattr(signal, 'SIGPIPE'):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

  def generate(prompts, on_token=None):
    return sampling.generate(model.cfg, model.params, prompts, on_token=on_token,
                             layout=model.layout, **settings)

  if FLAGS.num_samples == 1:
    stream = text.TextStream(tokenizer, kept)
    write(shown)
    generate(kept, on_token=lambda tokens: write(stream.push(tokens[0])))
    write(stream.flush() + '\n')
  else:
    rows = generate([kept] * FLAGS.num_samples)
    for i, row in enumerate(rows):
      print(f'---------- sample {i + 1} of {len(rows)} ----------')
      print(shown + text.continuation(tokenizer, kept, row))


def load_model():
  """The model the flags name; with none, the newest checkpoint under runs/."""
  from gptjax import loading

  model = loading.load_named_or_newest('sample.py', cli.RUNS_DIR, FLAGS.workdir, FLAGS.step,
                                       FLAGS.hf, cli.config_flag())
  return loading.on_devices(model, FLAGS.mesh)


def fit_prompt(cfg, prompt: list[int]) -> tuple[list[int], str | None]:
  """(prompt, warning): learned positions end at block_size, so a longer prompt loses its
  beginning, with a warning. Other models read as far as the cache goes, --max_len, which here
  defaults to block_size: a prompt past it is an error that says how to go further."""
  from gptjax import sampling

  if cfg.position == 'learned':
    return sampling.fit_prompt(cfg, prompt, FLAGS.max_new_tokens, FLAGS.max_len, truncate=True)
  try:
    return sampling.fit_prompt(cfg, prompt, FLAGS.max_new_tokens, FLAGS.max_len or cfg.block_size)
  except ValueError as e:
    raise ValueError(f'{e}; a model with {cfg.position} positions can go past block_size: '
                     f'raise --max_len (default: block_size={cfg.block_size})') from None


def write(text: str) -> None:
  sys.stdout.write(text)
  sys.stdout.flush()


if __name__ == '__main__':
  cli.run(main)
