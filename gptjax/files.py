"""Small files that must never be seen half-written (status, metadata, reports), the names of
run directories, and the check for a file where a directory is to be created."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it over `path`: a reader (or
  a kill -9 mid-write) sees the old file or the new one, never a torn one."""
  path = Path(path)
  tmp = path.with_name(f'{path.name}.tmp{os.getpid()}')
  try:
    tmp.write_text(json.dumps(obj, indent=2) + '\n')
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


def read_json(path: str | os.PathLike) -> Any | None:
  """The JSON in `path`, or None where it is missing or not (yet) valid JSON."""
  try:
    return json.loads(Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def directory_name(text: str) -> str:
  """A variant string as a plain directory name: '=' becomes '-', ',' becomes '_', and so does
  any other character but letters, digits and '.+-' ('norm=rmsnorm,pos=rope' ->
  'norm-rmsnorm_pos-rope'): readable, and safe on every filesystem and in a shell."""
  return re.sub(r'[^A-Za-z0-9.+-]', '_', text.replace('=', '-').replace(',', '_'))


def file_in_the_way(path: str | os.PathLike) -> Path | None:
  """The file where a directory `path` should be: `path` itself or the nearest existing parent,
  if that is not a directory; None where the directory exists or can be created."""
  path = Path(path)
  existing = next((p for p in (path, *path.parents) if p.exists()), None)
  return existing if existing is not None and not existing.is_dir() else None
