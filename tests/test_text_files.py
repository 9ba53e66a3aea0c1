"""Tests for mimtext.data.text_files."""

import os

import numpy as np
import pytest

from mimtext.data import text_files
from mimtext.data.text_files import DataError


def _write(path, data: bytes):
  path.write_bytes(data)
  return path


def test_read_lines_normalises_whitespace_and_numbers_lines(tmp_path):
  path = _write(tmp_path / "a.txt", b" the  cat \n\tsat\r\n")
  read = text_files.read_lines(path)
  assert read.lines == ["the cat", "sat"]
  assert read.line_numbers == [1, 2]
  assert read.num_blank_skipped == 0
  assert read.path == os.fspath(path)


def test_blank_lines_skip_counts_and_error_names_line(tmp_path):
  path = _write(tmp_path / "a.txt", b"a b\n  \nc\n\nd")
  read = text_files.read_lines(path, blank_lines="skip")
  assert read.lines == ["a b", "c", "d"]
  assert read.line_numbers == [1, 3, 5]
  assert read.num_blank_skipped == 2
  with pytest.raises(DataError, match=r"a\.txt:2: blank line"):
    text_files.read_lines(path, blank_lines="error")


@pytest.mark.parametrize("data", [b"", b"\n \n\t\n"])
def test_empty_files_are_errors(tmp_path, data):
  path = _write(tmp_path / "empty.txt", data)
  with pytest.raises(DataError, match=r"empty\.txt.*empty"):
    text_files.read_lines(path)


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    text_files.read_lines(tmp_path / "missing.txt")


def test_invalid_utf8_names_line_and_byte_offset(tmp_path):
  path = _write(tmp_path / "bad.txt", b"fine line\nok \xe9t\xe9\n")
  with pytest.raises(DataError, match=r"bad\.txt:2: not valid UTF-8: byte 0xe9 at byte offset 3"):
    text_files.read_lines(path)
  assert path.read_bytes() == b"fine line\nok \xe9t\xe9\n"  # nothing modified


def test_read_split_dir_errors_list_present_splits(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    text_files.read_split_dir(tmp_path / "nowhere", "train")
  _write(tmp_path / "valid.txt", b"a\n")
  _write(tmp_path / "test.txt", b"b\n")
  _write(tmp_path / "test.labels.txt", b"1\n")
  with pytest.raises(DataError, match="no 'train' split.*splits present: valid, test$"):
    text_files.read_split_dir(tmp_path, "train")
  assert text_files.read_split_dir(tmp_path, "valid").lines == ["a"]


def test_read_labels(tmp_path):
  path = _write(tmp_path / "valid.labels.txt", b"3\n0\n12\n")
  labels = text_files.read_labels(path, 3)
  assert labels.dtype == np.int32 and labels.tolist() == [3, 0, 12]
  with pytest.raises(DataError, match="3 labels for 4 text lines"):
    text_files.read_labels(path, 4)
  bad = _write(tmp_path / "bad.labels.txt", b"1\nx\n")
  with pytest.raises(DataError, match=r"bad\.labels\.txt:2"):
    text_files.read_labels(bad, 2)


def test_shared_ptb_valid_matches_published_counts(shared_data):
  read = text_files.read_split_dir(shared_data / "ptb", "valid", blank_lines="error")
  assert len(read.lines) == 3370
  assert sum(len(line.split()) for line in read.lines) == 70390


def test_shared_labels_align(shared_data):
  read = text_files.read_split_dir(shared_data / "yahoo_topic", "valid")
  labels = text_files.read_labels(shared_data / "yahoo_topic" / "valid.labels.txt", len(read))
  assert np.bincount(labels).tolist() == [1000] * 10
