"""Tests for mimtext.data.corpus: the single entry point used by the launch scripts."""

import os

import numpy as np
import pytest

from mimtext.data import corpus as corpus_lib
from mimtext.data import grammar as grammar_lib
from mimtext.data.text_files import DataError
from mimtext.data.vocab import EOS_ID, SOS_ID, UNK_ID, Vocabulary


@pytest.fixture(scope="module")
def ptb(shared_data):
  return corpus_lib.load_corpus(shared_data / "ptb", use_tfds=False)


def _write_corpus(directory, **splits) -> str:
  os.makedirs(directory, exist_ok=True)
  for split, data in splits.items():
    with open(os.path.join(directory, f"{split}.txt"), "wb") as f:
      f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
  return os.fspath(directory)


def test_ptb_vocabulary_and_counts(ptb):
  # PTB train has 9,999 distinct whitespace tokens, one of them `<unk>`, which is the special
  # UNK id rather than a word: 9,998 words + <pad>, <sos>, <eos>, <unk> = 10,002 ids. (The
  # published "10k vocabulary" is the 9,999 tokens plus <eos>.)
  assert ptb.vocab.size == 10_002
  assert ptb.name == "ptb"
  assert {split: len(s) for split, s in ptb.splits.items()} == {
      "train": 42_068, "valid": 3_370, "test": 3_761}
  train = ptb["train"]
  assert train.num_tokens(include_eos=False) == 887_521
  assert train.num_tokens(include_eos=True) == 929_589
  assert train.num_dropped == train.num_truncated == 0 and train.log_probs is None
  assert max(len(ids) for ids in train.ids) == 82 + 2
  assert all(ids[0] == SOS_ID and ids[-1] == EOS_ID for ids in train.ids[:100])


@pytest.mark.parametrize("split", ["valid", "test"])
def test_ptb_valid_test_have_no_oov(ptb, split):
  data = ptb[split]
  for line, ids in zip(data.lines, data.ids):
    words = line.split()
    unk_positions = [i for i, w in enumerate(words) if w == "<unk>"]
    assert np.flatnonzero(ids[1:-1] == UNK_ID).tolist() == unk_positions


def test_tfds_and_plain_files_agree(shared_data, ptb, tmp_path_factory):
  via_tfds = corpus_lib.load_corpus(shared_data / "ptb", use_tfds=True,
                                    tfds_dir=tmp_path_factory.mktemp("tfds"))
  assert via_tfds.vocab == ptb.vocab
  for split, expected in ptb.splits.items():
    got = via_tfds[split]
    assert got.lines == expected.lines
    assert all(np.array_equal(a, b) for a, b in zip(got.ids, expected.ids))


def test_max_len_drop_and_truncate(shared_data, ptb):
  dropped = corpus_lib.load_corpus(shared_data / "ptb", use_tfds=False, vocab=ptb.vocab,
                                   max_len=30, overflow="drop")
  valid = dropped["valid"]
  assert valid.num_dropped > 0 and len(valid) + valid.num_dropped == 3_370
  assert all(len(ids) <= 32 for ids in valid.ids)
  assert all(len(line.split()) == len(ids) - 2 for line, ids in zip(valid.lines, valid.ids))
  truncated = corpus_lib.load_corpus(shared_data / "ptb", use_tfds=False, vocab=ptb.vocab,
                                     max_len=30, overflow="truncate")
  assert len(truncated["valid"]) == 3_370 and truncated["valid"].num_truncated == valid.num_dropped


def test_vocab_from_valid_split_and_labels(shared_data):
  topic = corpus_lib.load_corpus(shared_data / "yahoo_topic", use_tfds=False, vocab_split="valid")
  assert topic.name == "yahoo_topic"
  assert set(topic.splits) == {"valid", "test"}
  assert np.bincount(topic["valid"].labels).tolist() == [1_000] * 10
  assert np.bincount(topic["test"].labels).tolist() == [1_000] * 10
  assert topic.vocab.id("_UNK") == UNK_ID and "_UNK" not in topic.vocab.tokens


def test_builtin_corpus():
  sizes = {"train": 300, "valid": 100, "test": 100}
  corpus = corpus_lib.load_corpus(None, builtin_sizes=sizes, builtin_seed=3)
  assert corpus.name == "builtin" and corpus.data_dir is None
  raw = grammar_lib.builtin_corpus(3, sizes)
  grammar = grammar_lib.TopicGrammar.default()
  assert set(grammar.words) <= set(corpus.vocab.tokens)  # no <unk>: log-probs stay exact
  for split, size in sizes.items():
    data = corpus[split]
    assert len(data) == size and data.lines == raw[split].lines
    np.testing.assert_array_equal(data.log_probs, raw[split].log_probs)
    np.testing.assert_array_equal(data.labels, raw[split].topics)
    assert all(corpus.vocab.decode(ids) == line.split() for line, ids in zip(data.lines, data.ids))
  short = corpus_lib.load_corpus(None, builtin_sizes=sizes, builtin_seed=3, max_len=6)
  kept = short["valid"]
  assert kept.num_dropped > 0 and len(kept) + kept.num_dropped == 100
  for line, log_prob in zip(kept.lines, kept.log_probs):
    assert grammar.log_prob(line) == pytest.approx(log_prob)


def test_default_builtin_sizes():
  corpus = corpus_lib.load_corpus(None)
  assert {s: len(d) for s, d in corpus.splits.items()} == {"train": 10_000, "valid": 1_000,
                                                            "test": 1_000}


def test_missing_directory_and_split_errors(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    corpus_lib.load_corpus(tmp_path / "absent", use_tfds=False)
  directory = _write_corpus(tmp_path / "c", valid="a b\n", test="b\n")
  with pytest.raises(DataError, match=r"has no 'train' split.*splits present: valid, test"):
    corpus_lib.load_corpus(directory, use_tfds=False)
  corpus = corpus_lib.load_corpus(directory, use_tfds=False, vocab_split="valid")
  assert corpus.vocab.tokens[4:] == ("a", "b") and set(corpus.splits) == {"valid", "test"}
  given = Vocabulary.build(["b"])
  assert corpus_lib.load_corpus(directory, use_tfds=False, vocab=given).vocab is given


@pytest.mark.parametrize("use_tfds", [False, True])
def test_bad_file_errors(tmp_path, use_tfds):
  kwargs = dict(use_tfds=use_tfds, tfds_dir=tmp_path / "tfds")
  empty = _write_corpus(tmp_path / "empty", train="")
  with pytest.raises(DataError, match=r"train\.txt: file is empty"):
    corpus_lib.load_corpus(empty, **kwargs)
  blank = _write_corpus(tmp_path / "blank", train="a b\n\nc\n")
  skipped = corpus_lib.load_corpus(blank, blank_lines="skip", **kwargs)
  assert skipped["train"].lines == ["a b", "c"]
  with pytest.raises(DataError, match=r"train\.txt:2: blank line"):
    corpus_lib.load_corpus(blank, blank_lines="error", **kwargs)
  invalid = _write_corpus(tmp_path / "invalid", train=b"a\nb \xc3(\n")
  with pytest.raises(DataError, match=r"train\.txt:2: not valid UTF-8.*byte offset 2"):
    corpus_lib.load_corpus(invalid, **kwargs)


def test_labels_follow_kept_lines(tmp_path):
  directory = _write_corpus(tmp_path / "lab", train="a\n\nb\nc\n")
  with open(os.path.join(directory, "train.labels.txt"), "w") as f:
    f.write("5\n6\n7\n8\n")
  corpus = corpus_lib.load_corpus(directory, use_tfds=False)
  assert corpus["train"].labels.tolist() == [5, 7, 8]


def test_resolve_data_dir(tmp_path, monkeypatch):
  monkeypatch.delenv("MIMTEXT_DATA", raising=False)
  parent = tmp_path / "data"
  ptb = _write_corpus(parent / "ptb", train="a\n")
  _write_corpus(parent / "yahoo", valid="a\n")
  assert corpus_lib.resolve_data_dir(None) is None
  assert corpus_lib.resolve_data_dir(ptb) == ptb
  assert corpus_lib.resolve_data_dir(str(parent)) == ptb
  assert corpus_lib.resolve_data_dir(str(parent), "yahoo") == str(parent / "yahoo")
  assert corpus_lib.resolve_data_dir("builtin") is None
  with pytest.raises(DataError, match="does not exist"):
    corpus_lib.resolve_data_dir(str(tmp_path / "absent"))
  with pytest.raises(DataError, match="no 'dbpedia' corpus directory"):
    corpus_lib.resolve_data_dir(str(parent), "dbpedia")
  monkeypatch.setenv("MIMTEXT_DATA", str(parent))
  assert corpus_lib.resolve_data_dir(None) == ptb
  assert corpus_lib.resolve_data_dir("") == ptb
  assert corpus_lib.resolve_data_dir(str(parent / "yahoo")) == str(parent / "yahoo")
  assert corpus_lib.resolve_data_dir("builtin") is None


@pytest.mark.parametrize("use_tfds", [False, True])
def test_control_tokens_in_a_corpus_are_read_as_unknown_and_reported(tmp_path, use_tfds, caplog):
  data = tmp_path / "data"
  data.mkdir()
  (data / "train.txt").write_text("the cat sat\nthe <pad> cat  <eos> sat\n<sos> a dog\n")
  (data / "valid.txt").write_text("the cat sat\n")
  with caplog.at_level("WARNING"):
    corpus = corpus_lib.load_corpus(str(data), use_tfds=use_tfds, tfds_dir=str(tmp_path / "t"))
  vocab, ids = corpus.vocab, corpus.splits["train"].ids
  assert ids[1].tolist() == [SOS_ID, vocab.id("the"), UNK_ID, vocab.id("cat"), UNK_ID,
                             vocab.id("sat"), EOS_ID]
  assert ids[2].tolist()[:2] == [SOS_ID, UNK_ID]
  for row in ids:  # control ids only where the encoder put them
    assert row[0] == SOS_ID and row[-1] == EOS_ID
    assert not set(row[1:-1].tolist()) & {0, SOS_ID, EOS_ID}
  warning = [r.getMessage() for r in caplog.records if "control-token" in r.getMessage()]
  assert len(warning) == 1 and "3 control-token string(s)" in warning[0]
  assert f"'<pad>' at {data / 'train.txt'}:2:5" in warning[0]
