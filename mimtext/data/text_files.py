"""Validated reading of one-example-per-line text corpora (`DIR/{train,valid,test}.txt`).

Every check raises `DataError` with the file name and the 1-based line number, and nothing is
written anywhere, so a bad corpus fails before any model or dataset is built.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from absl import logging
import numpy as np

BlankLinePolicy = Literal["skip", "error", "keep"]
SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")


class DataError(ValueError):
  """A corpus file or directory is missing or malformed."""


@dataclasses.dataclass
class TextLines:
  """The kept lines of a text file.

  Attributes:
    lines: n examples, each the line's whitespace tokens joined by single spaces.
    path: the file read.
    line_numbers: n 1-based source line numbers, one per kept line.
    num_blank_skipped: blank (whitespace-only) lines that were skipped.
  """

  lines: list[str]
  path: str
  line_numbers: list[int]
  num_blank_skipped: int = 0

  def __len__(self) -> int:
    return len(self.lines)


def split_path(directory: str | os.PathLike, split: str) -> str:
  """The file holding `split` in a corpus directory: `DIR/{split}.txt`."""
  return os.path.join(os.fspath(directory), f"{split}.txt")


def available_splits(directory: str | os.PathLike) -> list[str]:
  """Splits with a `{split}.txt` file in `directory`: train/valid/test first, then others sorted."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    return []
  names = {entry[:-len(".txt")] for entry in os.listdir(directory)
           if entry.endswith(".txt") and not entry.endswith(".labels.txt")
           and entry != "vocab.txt" and os.path.isfile(os.path.join(directory, entry))}
  return [s for s in SPLIT_NAMES if s in names] + sorted(names - set(SPLIT_NAMES))


def _decode_utf8(path: str, data: bytes) -> str:
  """Decodes `data` (a leading UTF-8 byte order mark is dropped), naming the line and byte offset
  of the first invalid byte on failure."""
  try:
    return data.decode("utf-8").removeprefix("\ufeff")
  except UnicodeDecodeError as e:
    line_number = data.count(b"\n", 0, e.start) + 1
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1)
    raise DataError(
        f"{path}:{line_number}: not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset "
        f"{column} of line {line_number} (offset {e.start} in the file)") from None


def _raw_lines(text: str) -> list[str]:
  """Splits on LF only (a trailing newline does not start a line); keeps other whitespace."""
  raw = text.split("\n")
  if raw and raw[-1] == "":
    raw.pop()
  return raw


def read_lines(path: str | os.PathLike, *, blank_lines: BlankLinePolicy = "skip") -> TextLines:
  """Reads a UTF-8 file with one whitespace-tokenised example per line.

  Args:
    path: the text file.
    blank_lines: "skip" drops whitespace-only lines (counted and logged once); "error" rejects them;
      "keep" returns them as "" (a file of sentences to encode, one result per line).

  Returns:
    The normalised non-blank lines with their source line numbers.

  Raises:
    DataError: the file is missing, is empty or holds only blank lines, has a blank line under
      `blank_lines="error"`, holds a NUL byte, or is not valid UTF-8. The message names the file
      and line. A leading byte order mark is not an error: it is dropped.
  """
  if blank_lines not in ("skip", "error", "keep"):
    raise ValueError(f"blank_lines must be 'skip', 'error' or 'keep', got {blank_lines!r}")
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: file does not exist")
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    raise DataError(f"{path}: file is empty (0 bytes)")
  lines, line_numbers, blank_numbers = [], [], []
  for line_number, raw in enumerate(_raw_lines(_decode_utf8(path, data)), start=1):
    if "\x00" in raw:
      raise DataError(f"{path}:{line_number}: NUL byte (\\x00) at column {raw.index(chr(0)) + 1}; "
                      "is this a binary file?")
    tokens = raw.split()
    if not tokens and blank_lines != "keep":
      if blank_lines == "error":
        raise DataError(f"{path}:{line_number}: blank line (use blank_lines='skip' to skip it)")
      blank_numbers.append(line_number)
      continue
    lines.append(" ".join(tokens))
    line_numbers.append(line_number)
  if not any(lines):
    total = len(line_numbers) + len(blank_numbers)
    raise DataError(f"{path}: file is empty (no non-blank line in {total} lines)")
  if blank_numbers:
    logging.warning("%s: skipped %d blank line(s), the first at line %d",
                    path, len(blank_numbers), blank_numbers[0])
  return TextLines(lines=lines, path=path, line_numbers=line_numbers,
                   num_blank_skipped=len(blank_numbers))


def check_split_file(directory: str | os.PathLike, split: str) -> str:
  """Returns `DIR/{split}.txt`, or raises DataError naming the splits that do exist."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DataError(f"data directory {directory} does not exist")
  path = split_path(directory, split)
  if not os.path.isfile(path):
    present = available_splits(directory)
    raise DataError(
        f"data directory {directory} has no '{split}' split ({path} is missing); "
        f"splits present: {', '.join(present) if present else 'none'}")
  return path


def read_split_dir(directory: str | os.PathLike, split: str, **kwargs) -> TextLines:
  """Reads `DIR/{split}.txt` with `read_lines(**kwargs)`.

  Raises:
    DataError: the directory or the split file is missing (the message lists the splits present),
      or the file is malformed (see `read_lines`).
  """
  return read_lines(check_split_file(directory, split), **kwargs)


def read_labels(path: str | os.PathLike, num_lines: int) -> np.ndarray:
  """Reads a `*.labels.txt` file: one integer class id per line.

  Args:
    path: the label file.
    num_lines: the number of lines of the text file it labels; the counts must match.

  Returns:
    int32 array [num_lines].

  Raises:
    DataError: missing file, invalid UTF-8, a line that is not one integer, or a count mismatch.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: file does not exist")
  with open(path, "rb") as f:
    raw_lines = _raw_lines(_decode_utf8(path, f.read()))
  labels = []
  for line_number, raw in enumerate(raw_lines, start=1):
    try:
      labels.append(int(raw.strip()))
    except ValueError:
      raise DataError(f"{path}:{line_number}: expected one integer label, got {raw!r}") from None
  if len(labels) != num_lines:
    raise DataError(f"{path}: {len(labels)} labels for {num_lines} text lines")
  return np.asarray(labels, dtype=np.int32)
