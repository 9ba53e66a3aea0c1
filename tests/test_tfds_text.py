"""Tests for mimtext.data.tfds_text: the TF-free TFDS array_record builder."""

import importlib.util
import logging
import os
import sys
import time

from absl import logging as absl_logging
import pytest

from mimtext.data import text_files
from mimtext.data import tfds_text
from mimtext.data.text_files import DataError


@pytest.fixture(scope="module")
def ptb_tfds_dir(shared_data, tmp_path_factory):
  """A tfds_dir where the shared PTB directory is prepared once for this module."""
  tfds_dir = tmp_path_factory.mktemp("tfds")
  tfds_text.load_text_split(shared_data / "ptb", "valid", tfds_dir=tfds_dir)
  return tfds_dir


def _prepared_configs(tfds_dir) -> list[str]:
  root = os.path.join(tfds_dir, tfds_text.TextLines.name)
  return sorted(os.listdir(root)) if os.path.isdir(root) else []


def _write_corpus(directory, **splits) -> str:
  os.makedirs(directory, exist_ok=True)
  for split, text in splits.items():
    with open(os.path.join(directory, f"{split}.txt"), "w", encoding="utf-8") as f:
      f.write(text)
  return os.fspath(directory)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_ptb_split_equals_read_lines(shared_data, ptb_tfds_dir, split):
  source = tfds_text.load_text_split(shared_data / "ptb", split, tfds_dir=ptb_tfds_dir)
  expected = text_files.read_split_dir(shared_data / "ptb", split)
  assert len(source) == len(expected.lines)
  assert list(source) == expected.lines
  read = source.read_all()
  assert read.lines == expected.lines and read.line_numbers == expected.line_numbers
  # Random access: ints, negative ints, slices.
  assert source[0] == expected.lines[0] and source[-1] == expected.lines[-1]
  assert source[10:13] == expected.lines[10:13]
  with pytest.raises(IndexError):
    source[len(source)]


def test_second_load_reuses_prepared_dataset(shared_data, ptb_tfds_dir, monkeypatch):
  before = _prepared_configs(ptb_tfds_dir)
  assert len(before) == 1 and before[0].startswith("ptb-")

  def fail(*args, **kwargs):
    raise AssertionError("the prepared dataset should have been reused")

  monkeypatch.setattr(tfds_text.TextLines, "download_and_prepare", fail)
  tfds_text.clear_cache()  # as a new process would: reused from the folder, not from memory
  assert len(tfds_text.load_text_split(shared_data / "ptb", "test", tfds_dir=ptb_tfds_dir)) == 3761
  assert _prepared_configs(ptb_tfds_dir) == before


def _count_calls(monkeypatch, module, name) -> list:
  """Replaces `module.name` by a wrapper recording each call's args; returns the record."""
  calls, original = [], getattr(module, name)

  def counted(*args, **kwargs):
    calls.append(args)
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, counted)
  return calls


def test_all_splits_of_a_run_are_listed_hashed_and_prepared_once(tmp_path, monkeypatch, caplog):
  from mimtext.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  directory = _write_corpus(tmp_path / "run", train="a b c\nd e\n", valid="a b\n", test="c\n")
  tfds_dir = tmp_path / "tfds"
  configs = _count_calls(monkeypatch, tfds_text, "make_config")
  hashes = _count_calls(monkeypatch, tfds_text, "_file_sha256")
  preparations = _count_calls(monkeypatch, tfds_text, "_prepare_quietly")
  saved = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  caplog.set_level(logging.INFO)
  try:
    corpus = corpus_lib.load_corpus(directory, tfds_dir=tfds_dir)
    # A second load in the same run (launch.evaluate's suite loads its test split again).
    again = corpus_lib.load_corpus(directory, tfds_dir=tfds_dir, vocab=corpus.vocab)
  finally:
    absl_logging.set_verbosity(saved)
  assert {s: len(c) for s, c in corpus.splits.items()} == {"train": 2, "valid": 1, "test": 1}
  assert again["train"].lines == corpus["train"].lines
  assert len(configs) == 1 and len(preparations) == 1
  assert len(hashes) == 3  # each split file once
  ours = [r.getMessage() for r in caplog.records if "TFDS text dataset of" in r.getMessage()]
  assert len(ours) == 1, ours
  assert "train 2, valid 1, test 1" in ours[0] and "prepared in" in ours[0]
  assert f"cached in {tfds_dir}" in ours[0] and directory in ours[0]


def test_other_content_gets_its_own_dataset(tmp_path):
  tfds_dir = tmp_path / "tfds"
  first = _write_corpus(tmp_path / "one" / "corpus", train="a b\nc\n", valid="a\n")
  second = _write_corpus(tmp_path / "two" / "corpus", train="x y z\n", valid="y\n")
  assert list(tfds_text.load_text_split(first, "train", tfds_dir=tfds_dir)) == ["a b", "c"]
  assert list(tfds_text.load_text_split(second, "train", tfds_dir=tfds_dir)) == ["x y z"]
  configs = _prepared_configs(tfds_dir)
  assert len(configs) == 2 and all(c.startswith("corpus-") for c in configs)
  # Editing a file in place changes the fingerprint too: the old dataset is not reused.
  _write_corpus(first, valid="a c\n")
  assert list(tfds_text.load_text_split(first, "valid", tfds_dir=tfds_dir)) == ["a c"]
  assert len(_prepared_configs(tfds_dir)) == 3


def test_blank_lines_policy_matches_read_lines(tmp_path):
  directory = _write_corpus(tmp_path / "blank", train="a b\n\n c \n")
  source = tfds_text.load_text_split(directory, "train", tfds_dir=tmp_path / "tfds")
  assert list(source) == ["a b", "c"] and source.read_all().line_numbers == [1, 3]
  with pytest.raises(DataError) as expected:
    text_files.read_lines(os.path.join(directory, "train.txt"), blank_lines="error")
  with pytest.raises(DataError) as raised:
    tfds_text.load_text_split(directory, "train", tfds_dir=tmp_path / "tfds2", blank_lines="error")
  assert str(raised.value) == str(expected.value)
  assert _prepared_configs(tmp_path / "tfds2") == []  # nothing half-prepared is left behind


def test_invalid_utf8_and_missing_split_errors(tmp_path):
  directory = _write_corpus(tmp_path / "bad", train="ok\n")
  with open(os.path.join(directory, "valid.txt"), "wb") as f:
    f.write(b"fine\nbad \xff\n")
  with pytest.raises(DataError, match=r"valid\.txt:2: not valid UTF-8"):
    tfds_text.load_text_split(directory, "train", tfds_dir=tmp_path / "tfds")
  with pytest.raises(DataError, match="no 'test' split.*splits present: train, valid"):
    tfds_text.load_text_split(directory, "test", tfds_dir=tmp_path / "tfds")
  with pytest.raises(DataError, match="does not exist"):
    tfds_text.load_text_split(tmp_path / "absent", "train", tfds_dir=tmp_path / "tfds")


def test_runs_without_tensorflow(tmp_path):
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here; this checks the TF-free path")
  directory = _write_corpus(tmp_path / "c", train="a\n")
  assert list(tfds_text.load_text_split(directory, "train", tfds_dir=tmp_path / "tfds")) == ["a"]
  assert "tensorflow" not in sys.modules


def test_default_tfds_dir(monkeypatch):
  monkeypatch.setenv("MIMTEXT_TFDS_DIR", "/some/where")
  assert tfds_text.default_tfds_dir() == "/some/where"
  monkeypatch.delenv("MIMTEXT_TFDS_DIR")
  assert tfds_text.default_tfds_dir() == os.path.expanduser("~/.cache/mimtext/tfds")


def test_a_killed_preparation_leaves_nothing_behind_after_the_next_start(tmp_path):
  """TFDS writes into an "incomplete.*" folder and renames it when done: one left by a killed
  process is removed when the corpus is next prepared or opened; a recent one (a preparation
  running beside us) stays."""
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  (corpus / "train.txt").write_text("a b c\nd e\n")
  tfds_dir = tmp_path / "tfds"
  tfds_text.load_text_split(str(corpus), "train", tfds_dir=str(tfds_dir))
  versions = [p for p in tfds_dir.rglob("*") if p.is_dir() and p.name[:1].isdigit()]
  config_dir = str(versions[0].parent)  # .../NAME/CONFIG/VERSION: TFDS's folders go in CONFIG
  abandoned = os.path.join(config_dir, "incomplete.ABC123_1.0.0")
  running = os.path.join(config_dir, "incomplete.XYZ789_1.0.0")
  for path in (abandoned, running):
    os.makedirs(os.path.join(path, "sub"))
  old = time.time() - 2 * tfds_text.ABANDONED_AFTER_S
  os.utime(abandoned, (old, old))
  tfds_text.clear_cache()
  tfds_text.load_text_split(str(corpus), "train", tfds_dir=str(tfds_dir))
  assert not os.path.exists(abandoned) and os.path.exists(running)
