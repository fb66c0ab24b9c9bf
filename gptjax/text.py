"""Between text and token ids: the prompt's tokens, and generated tokens back to text.

Decoding a sample is not `decode(new_tokens)`: a character can span several byte-level tokens,
and some tokenizers decode a token differently after another (SentencePiece's leading space), so
new text is always read off the decoding of everything so far, context included (`TextStream`).
"""

from __future__ import annotations

from typing import Sequence

from gptjax.tokenizer import Tokenizer

# What decoding shows for bytes that do not (yet) form a whole UTF-8 character.
REPLACEMENT_CHAR = '\ufffd'


def encode_prompt(text: str | None, tokenizer: Tokenizer) -> list[int]:
  """The prompt's tokens; no prompt (None) starts from end-of-text: an unconditional sample.

  A tokenizer that opens every text with a start token (Llama's BOS) starts from that instead.
  """
  if text == '':
    raise ValueError('the prompt is empty: give some text (or None: start from end-of-text)')
  tokens = tokenizer.encode('' if text is None else text)
  if text is None and not tokens:
    if tokenizer.eot_token is None:
      raise ValueError(f'the {tokenizer.name} tokenizer has no end-of-text token to start an '
                       'unconditional sample from; give a prompt')
    tokens = [tokenizer.eot_token]
  if not tokens:
    raise ValueError('the prompt encodes to no tokens')
  return tokens


def cut_after_eot(tokens: list[int], eot_token: int | None) -> list[int]:
  """A row of generated tokens up to and including its first end-of-text: the loop pads rows
  that finished early with it."""
  if eot_token is not None and eot_token in tokens:
    return tokens[:tokens.index(eot_token) + 1]
  return tokens


class TextStream:
  """The text of tokens arriving one at a time, released in whole characters.

  One character can span several tokens (its UTF-8 bytes split between byte-level tokens): until
  the last byte arrives the decoded text ends in U+FFFD. So each push decodes everything so far,
  the context included, and returns what is new, holding back trailing U+FFFD. The first
  eot_token ends the stream (it is not part of the text).
  """
  def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()):
    self._tokenizer = tokenizer
    self._tokens = list(context)
    self._released = len(tokenizer.decode(self._tokens).rstrip(REPLACEMENT_CHAR))
    self.done = False

  def push(self, token: int) -> str:
    if self.done or token == self._tokenizer.eot_token:
      self.done = True
      return ''
    self._tokens.append(int(token))
    return self._release(self._tokenizer.decode(self._tokens).rstrip(REPLACEMENT_CHAR))

  def flush(self) -> str:
    """The rest, U+FFFD included: the tokens ended in the middle of a character."""
    return self._release(self._tokenizer.decode(self._tokens))

  def _release(self, text: str) -> str:
    new = text[self._released:]
    self._released = max(self._released, len(text))
    return new


def continuation(tokenizer: Tokenizer, prompt: Sequence[int], new_tokens: Sequence[int]) -> str:
  """The text that new_tokens add after the prompt (up to the first end-of-text)."""
  stream = TextStream(tokenizer, prompt)
  return ''.join(stream.push(t) for t in new_tokens) + stream.flush()
