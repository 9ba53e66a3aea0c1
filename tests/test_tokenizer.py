"""`data.tokenizer`: one `vocab.tokenize(text, mode)` used by the corpus, the vocabulary, the API,
the command lines and the QA evaluation; "whitespace" (the default) is the behaviour from before the
option, and the tokenizer is part of a run (stored in config.json, checked on resume)."""

import collections
import os
import types

import ml_collections
import numpy as np
import pytest

from mimtext import api
from mimtext import config as config_lib
from mimtext import experiment
from mimtext.data import corpus as corpus_lib
from mimtext.data import pipeline
from mimtext.data import vocab as vocab_lib
from mimtext.data.vocab import TOKENIZERS, UNK_ID, Vocabulary, tokenize
from mimtext.evaluation import qa


# ------------------------------------------------------------------------------ the function


@pytest.mark.parametrize("text,mode,tokens", [
    ("  The\u00a0Cat\tSAT \r\n", "whitespace", ["The", "Cat", "SAT"]),
    ("  The\u00a0Cat\tSAT \r\n", "lower", ["the", "cat", "sat"]),
    ("  The\u00a0Cat\tSAT \r\n", "lower_punct", ["the", "cat", "sat"]),
    ("Hello, World!", "whitespace", ["Hello,", "World!"]),
    ("Hello, World!", "lower", ["hello,", "world!"]),
    ("Hello, World!", "lower_punct", ["hello", ",", "world", "!"]),
    ("Hello, World! It's 3.5 km.", "lower_punct",
     ["hello", ",", "world", "!", "it's", "3", ".", "5", "km", "."]),
    ("state-of-the-art, don't U.S.", "lower_punct",
     ["state-of-the-art", ",", "don't", "u", ".", "s", "."]),
    ("(Café) naïve--x 'quoted'", "lower_punct",
     ["(", "café", ")", "naïve", "-", "-", "x", "'", "quoted", "'"]),
    ("the _UNK is <unk> , N", "lower", ["the", "_UNK", "is", "<unk>", ",", "n"]),
    ("The _UNK <unk>, <eos>", "lower_punct", ["the", "_UNK", "<", "unk", ">", ",", "<eos>"]),
    ("", "whitespace", []), ("", "lower", []), ("  \t ", "lower_punct", []),
])
def test_the_three_modes(text, mode, tokens):
  assert tokenize(text, mode) == tokens


def test_default_is_whitespace_and_unknown_modes_are_refused():
  assert TOKENIZERS == ("whitespace", "lower", "lower_punct")
  assert tokenize("A b,") == "A b,".split()
  for call in (lambda: tokenize("a", "LOWER"), lambda: Vocabulary.build(["a"], tokenizer="x"),
               lambda: api.tokenize(["a"], Vocabulary.build(["a"]), "nope")):
    with pytest.raises(ValueError, match="unknown tokenizer"):
      call()


@pytest.mark.parametrize("mode", TOKENIZERS)
def test_tokenize_is_idempotent_and_tokens_hold_no_whitespace(mode):
  texts = ["Hello, World! It's 3.5 km.", "(Café) naïve--x 'quoted' ??", "The _UNK <unk>, <eos> N"]
  for text in texts:
    tokens = tokenize(text, mode)
    assert all(t and len(t.split()) == 1 for t in tokens)
    assert tokenize(" ".join(tokens), mode) == tokens
    assert vocab_lib.normalize_line(text, mode) == " ".join(tokens)


def test_vocabulary_encode_and_encode_lines_take_the_tokenizer():
  vocab = Vocabulary.build(["Hello, world!"], tokenizer="lower_punct")
  assert vocab.tokens[4:] == ("!", ",", "hello", "world")
  ids = vocab.encode("HELLO, World!", tokenizer="lower_punct")
  assert UNK_ID not in ids.tolist() and len(ids) == 4 + 2
  assert vocab.encode("HELLO, World!").tolist() == [1, UNK_ID, UNK_ID, 2]  # whitespace default
  encoded = pipeline.encode_lines(["Hello, world!", "world"], vocab, tokenizer="lower_punct")
  assert [row.tolist() for row in encoded.ids] == [
      vocab.encode(["hello", ",", "world", "!"]).tolist(), vocab.encode(["world"]).tolist()]


# --------------------------------------------------------- "whitespace" is today's behaviour


def _reference_corpus(lines_by_split, vocab_split="train"):
  """The encoding before `data.tokenizer` existed, written out independently: whitespace tokens,
  words by descending count then alphabetically, the reserved tokens not counted."""
  counts = collections.Counter(w for line in lines_by_split[vocab_split] for w in line.split())
  reserved = set(vocab_lib.SPECIAL_TOKENS) | {"<unk>", "_UNK"}
  words = sorted((w for w in counts if w not in reserved), key=lambda w: (-counts[w], w))
  tokens = vocab_lib.SPECIAL_TOKENS + tuple(words)
  index = {t: i for i, t in enumerate(tokens)} | {"<unk>": UNK_ID, "_UNK": UNK_ID}
  ids = {split: [[1, *(index.get(w, UNK_ID) for w in line.split()), 2] for line in lines]
         for split, lines in lines_by_split.items()}
  return tokens, ids


def test_whitespace_leaves_the_ptb_encoding_unchanged(shared_data, tmp_path):
  lines = {}
  for split, n in (("train", 3000), ("valid", 400)):
    with open(shared_data / "ptb" / f"{split}.txt", encoding="utf-8") as f:
      head = [next(f) for _ in range(n)]
    (tmp_path / f"{split}.txt").write_text("".join(head), encoding="utf-8")
    lines[split] = [line for line in head if line.split()]
  tokens, ids = _reference_corpus(lines)
  for kwargs in ({}, {"tokenizer": "whitespace"}):
    corpus = corpus_lib.load_corpus(tmp_path, use_tfds=False, **kwargs)
    assert corpus.vocab.tokens == tokens
    for split in ("train", "valid"):
      assert [row.tolist() for row in corpus[split].ids] == ids[split]
      assert corpus[split].lines == [" ".join(line.split()) for line in lines[split]]


def test_whitespace_leaves_the_builtin_corpus_unchanged():
  sizes = {"train": 300, "valid": 50, "test": 50}
  default = corpus_lib.load_corpus(None, builtin_sizes=sizes)
  for mode in TOKENIZERS:  # the grammar's words are lower-case, without punctuation
    other = corpus_lib.load_corpus(None, builtin_sizes=sizes, tokenizer=mode)
    assert other.vocab == default.vocab
    assert all(np.array_equal(a, b) for a, b in zip(other["valid"].ids, default["valid"].ids))


# -------------------------------------------------------- a corpus with capitals and punctuation


RAW_TRAIN = "Hello, world!\nThe Cat sat.\nhello again, World\n"
RAW_VALID = "The cat, hello!\nWorld?\n"


@pytest.fixture()
def raw_config(tmp_path):
  directory = tmp_path / "raw"
  directory.mkdir()
  (directory / "train.txt").write_text(RAW_TRAIN, encoding="utf-8")
  (directory / "valid.txt").write_text(RAW_VALID, encoding="utf-8")
  config = config_lib.get_config()
  config.data.data_dir = os.fspath(directory)
  config.data.use_tfds = False
  config.data.tokenizer = "lower_punct"
  return config


def test_lower_punct_corpus_trains_and_encodes_consistently(raw_config):
  corpus = experiment.load_corpus(raw_config)
  vocab = corpus.vocab
  assert {"hello", ",", "world", "!", ".", "the", "cat"} <= set(vocab.tokens)
  assert not {"Hello,", "Hello", "World", "The"} & set(vocab.tokens)
  assert corpus["train"].lines == ["hello , world !", "the cat sat .", "hello again , world"]
  for split in ("train", "valid"):
    assert all(vocab.decode(ids) == [w if w in vocab else "<unk>" for w in line.split()]
               for line, ids in zip(corpus[split].lines, corpus[split].ids))
  # The API (which launch.generate and launch.encode call) and the QA set tokenise text the way
  # the corpus was.
  ids = api.tokenize(["Hello, world"], vocab, experiment.tokenizer(raw_config))[0]
  assert ids.tolist() == [1, vocab.id("hello"), vocab.id(","), vocab.id("world"), 2]
  assert UNK_ID not in ids.tolist()
  assert not api.unknown_words(["Hello, WORLD!"], vocab, "lower_punct")
  assert api.unknown_words(["Hello, WORLD!"], vocab) == collections.Counter(
      {"Hello,": 1, "WORLD!": 1})
  model = api.SentenceModel.__new__(api.SentenceModel)  # tokenize needs only the run
  model._run = types.SimpleNamespace(config=raw_config, vocab=vocab)
  assert model.tokenizer == "lower_punct"
  assert [x.tolist() for x in model.tokenize(["Hello, world"])] == [ids.tolist()]
  assert corpus["train"].ids[0].tolist() == model.tokenize(["HELLO ,WORLD !"])[0].tolist()
  items = qa.build_ranking_set(["Why? Because.", "What, now? Later!", "Who? Me.", "How? So."],
                               num_negatives=1, tokenizer="lower_punct")
  assert all(item.question[-1] == "?" for item in items)
  assert {item.question for item in items} >= {("why", "?"), ("what", ",", "now", "?")}


def test_the_tokenizer_is_stored_and_an_old_config_means_whitespace(raw_config, tmp_path):
  assert raw_config.to_dict()["data"]["tokenizer"] == "lower_punct"  # what config.json holds
  assert config_lib.get_config().data.tokenizer == "whitespace"
  old = config_lib.get_config().to_dict()
  del old["data"]["tokenizer"]
  assert experiment.tokenizer(old) == "whitespace"
  assert experiment.tokenizer(ml_collections.ConfigDict(old)) == "whitespace"
  assert experiment.merge_config(config_lib.get_config(), old).data.tokenizer == "whitespace"


# ------------------------------------------------------------------- config checks and resume


def test_validate_config_refuses_an_unknown_tokenizer():
  config = config_lib.get_config()
  for mode in TOKENIZERS:
    config.data.tokenizer = mode
    experiment.validate_config(config)
  config.data.tokenizer = "lowercase"
  with pytest.raises(experiment.ConfigError) as info:
    experiment.validate_config(config)
  message = str(info.value)
  assert message == ("--config.data.tokenizer='lowercase': must be one of "
                     "['whitespace', 'lower', 'lower_punct']")


def test_resume_with_another_tokenizer_is_refused():
  saved = config_lib.get_config().to_dict()
  saved["data"]["tokenizer"] = "lower_punct"
  config = config_lib.get_config()
  config.data.tokenizer = "lower"
  with pytest.raises(experiment.ConfigError) as info:
    experiment.check_resumable_config(config, saved, "/some/dir")
  message = str(info.value)
  assert message.startswith("--config.data.tokenizer='lower': /some/dir holds a run with "
                            "data.tokenizer='lower_punct'; "
                            "pass --config.data.tokenizer='lower_punct'")
  assert "\n" not in message
  config.data.tokenizer = "lower_punct"
  experiment.check_resumable_config(config, saved, "/some/dir")


def test_resume_of_a_run_saved_before_the_option():
  old = config_lib.get_config().to_dict()
  del old["data"]["tokenizer"]
  experiment.check_resumable_config(config_lib.get_config(), old, "/some/dir")  # whitespace: same
  config = config_lib.get_config()
  config.data.tokenizer = "lower"
  with pytest.raises(experiment.ConfigError, match="data.tokenizer='whitespace'"):
    experiment.check_resumable_config(config, old, "/some/dir")
