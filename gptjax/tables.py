"""Tables and numbers for people to read: aligned plain text for terminals, Markdown for reports.

Every table gptjax prints or writes goes through here, so the analysis tools, the FLOPs table,
sweep reports and benchmarks line up the same way.
"""

from __future__ import annotations

from typing import Sequence


def _cells(header: Sequence, rows: Sequence[Sequence]) -> tuple[list[list[str]], list[int]]:
  cells = [[str(c) for c in row] for row in [header, *rows]]
  for row in cells[1:]:
    if len(row) != len(header):
      raise ValueError(f'a table row has {len(row)} cells for {len(header)} columns: {row}')
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  return cells, widths


def text_table(header: Sequence, rows: Sequence[Sequence], align: str | None = None,
               footer: Sequence[Sequence] = ()) -> str:
  """Aligned columns under a rule; align holds one 'l' or 'r' per column (default: numbers
  right, text left). Footer rows (totals) come after a second rule, aligned with the rest."""
  cells, widths = _cells(header, [*rows, *footer])
  align = align or _default_align(cells[:len(cells) - len(footer)])
  rule = '-' * (sum(widths) + 2 * (len(widths) - 1))

  def line(row):
    return '  '.join(c.ljust(w) if a == 'l' else c.rjust(w)
                     for c, w, a in zip(row, widths, align)).rstrip()

  body = [line(row) for row in cells[1:]]
  if footer:
    body.insert(len(rows), rule)
  return '\n'.join([line(cells[0]), rule, *body])


def markdown_table(header: Sequence, rows: Sequence[Sequence], align: str | None = None) -> str:
  """A GitHub-flavoured Markdown table; align as in `text_table` (default: numbers right)."""
  cells, widths = _cells(header, rows)
  align = align or _default_align(cells)

  def line(row):
    return '| ' + ' | '.join(
        c.rjust(w) if a == 'r' else c.ljust(w) for c, w, a in zip(row, widths, align)) + ' |'

  rule = '|' + '|'.join(
      ('-' * (w + 1) + ':') if a == 'r' else ('-' * (w + 2)) for w, a in zip(widths, align)) + '|'
  return '\n'.join([line(cells[0]), rule, *map(line, cells[1:])])


def _default_align(cells: list[list[str]]) -> str:
  body = cells[1:]
  return ''.join('r' if body and all(is_number(row[i]) for row in body) else 'l'
                 for i in range(len(cells[0])))


def is_number(text: str) -> bool:
  """Does a cell read as a number ('1,234', '51.2%', '1.07x', '-0.36'; blank and '—' too)?"""
  text = text.strip()
  if text in ('', '—'):
    return True
  text = text.replace(',', '').removesuffix('%').removesuffix('x')
  try:
    float(text)
    return True
  except ValueError:
    return False


def format_bytes(n: float) -> str:
  """1536 -> '1.50 KiB'; whole bytes below 1 KiB."""
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if abs(n) < 1024 or unit == 'GiB':
      return f'{n:,.0f} {unit}' if unit == 'B' else f'{n:,.2f} {unit}'
    n /= 1024
  raise AssertionError('unreachable')


def format_si(value: float) -> str:
  """5_740_000 -> '5.74M': three significant digits and a k/M/G/T/P/E suffix."""
  for unit, scale in (('E', 1e18), ('P', 1e15), ('T', 1e12), ('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(value) >= scale:
      return f'{value / scale:.3g}{unit}'
  return f'{value:.3g}'


def duration(seconds: float) -> str:
  """A time span for people: '250 ms', '3m05s', '2h07m', '41d06h'."""
  if seconds < 1:
    return f'{seconds * 1000:.0f} ms'
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  days, hours = divmod(hours, 24)
  if days:
    return f'{days}d{hours:02d}h'
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{secs:02d}s'
