"""A tiny GPT-2-style model (4 layers, d_model 128, context 128, GPT-2 tokenizer) that runs
anywhere in seconds: the quickstart's model.

Run:
  python sample.py --config=configs/tiny.py --prompt="Hello, I am"
"""

from gptjax.config import model_config_dict


def get_config():
  import ml_collections

  config = ml_collections.ConfigDict()
  config.model = model_config_dict(
      vocab_size=50257, vocab_pad_multiple=64, block_size=128, n_layers=4, d_model=128,
      n_heads=4)
  config.tokenizer = 'gpt2'
  config.seed = 0
  return config
