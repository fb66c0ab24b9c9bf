"""metrics.jsonl after a kill mid-write: the torn last line is skipped with a warning by readers
and dropped by the next writer, so neither a report nor a resumed run is blocked by it."""

import json
import logging
import math

import pytest

from gptjax import trainer
from gptjax.logs import METRICS_FILE, MetricWriter, read_metrics

RECORDS = [{'step': 1, 'loss': 2.5}, {'step': 2, 'loss': 2.25}]


def write_torn(workdir):
  text = ''.join(json.dumps(r) + '\n' for r in RECORDS) + '{"step": 3, "lo'  # no newline
  (workdir / METRICS_FILE).write_text(text)


def test_a_torn_last_line_is_skipped_with_a_warning_naming_the_file(tmp_path, caplog):
  write_torn(tmp_path)
  with caplog.at_level(logging.WARNING):
    assert read_metrics(tmp_path) == RECORDS
  assert str(tmp_path / METRICS_FILE) in caplog.text and 'unfinished last line' in caplog.text


def test_a_damaged_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
  lines = [json.dumps(RECORDS[0]), 'garbage', json.dumps(RECORDS[1])]
  (tmp_path / METRICS_FILE).write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError, match=rf'{METRICS_FILE}, line 2, is not JSON'):
    read_metrics(tmp_path)


def test_the_next_writer_drops_the_torn_line_instead_of_gluing_onto_it(tmp_path):
  write_torn(tmp_path)
  with MetricWriter(tmp_path) as writer:
    writer.write(3, {'loss': 2.0})
  steps = [(r['step'], r['loss']) for r in read_metrics(tmp_path)]
  assert steps == [(1, 2.5), (2, 2.25), (3, 2.0)]


def test_perplexity_of_a_huge_loss_is_inf_not_an_overflow():
  assert trainer.perplexity(2.0) == pytest.approx(math.exp(2.0))
  assert trainer.perplexity(1e4) == math.inf
