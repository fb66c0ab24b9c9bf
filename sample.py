"""Generate text with a gptjax model.

  python sample.py --config=configs/tiny.py --prompt="Hello, I am"

The model is built from the config and initialised at random (--config.seed), so the
continuation is gibberish: it shows the whole path (tokenize -> forward -> KV-cache decoding ->
detokenize) and what it costs, before any training.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_string('prompt', 'Hello, I am', 'Text to continue.')
flags.DEFINE_integer('max_new_tokens', 32, 'Tokens to generate.')
flags.DEFINE_float('temperature', 0.0, 'Sampling temperature; 0 means greedy.')
flags.DEFINE_integer('top_k', None, 'Sample only among the k most likely tokens.')
flags.DEFINE_float('top_p', None, 'Sample only among the smallest set of tokens with mass >= p.')
config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Model config file.',
                                lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that --help and flag errors answer without loading JAX.
  import jax

  from gptjax import flops
  from gptjax.config import ModelConfig
  from gptjax.model import GPT, init_params
  from gptjax.sampling import generate
  from gptjax.tokenizer import get_tokenizer

  config = FLAGS.config
  try:
    cfg = ModelConfig.from_config(config.model)
  except ValueError as e:
    sys.exit(f'error: bad model config: {e}')
  tokenizer = get_tokenizer(config.data.tokenizer)
  if cfg.vocab_size < tokenizer.n_vocab:
    sys.exit(f'error: model.vocab_size={cfg.vocab_size} is smaller than the {config.data.tokenizer} '
             f'tokenizer\'s {tokenizer.n_vocab} tokens')
  prompt = tokenizer.encode(FLAGS.prompt)
  if not prompt:
    sys.exit('error: --prompt is empty; give some text to continue')

  params = init_params(cfg, jax.random.key(config.seed))
  print(f'model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, '
        f'{flops.count_params(params):,} parameters (random init, seed {config.seed})')

  logits = GPT(cfg).apply({'params': params}, jax.numpy.asarray([prompt]))
  print(f'forward pass: {len(prompt)} prompt tokens -> logits {tuple(logits.shape)}')

  try:
    new_tokens = generate(cfg, params, prompt, max_new_tokens=FLAGS.max_new_tokens,
                          temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                          seed=config.seed, eot_token=tokenizer.eot_token,
                          valid_vocab_size=tokenizer.n_vocab)
  except ValueError as e:
    sys.exit(f'error: {e}')
  print(f'{FLAGS.prompt}{tokenizer.decode(new_tokens)}')


if __name__ == '__main__':
  app.run(main)
