"""One entry point for the launch scripts: a directory (or nothing) -> vocabulary + encoded splits.

`load_corpus(None)` is the built-in grammar corpus (with exact log-probabilities and topics);
`load_corpus("…/ptb")` reads `train/valid/test.txt` through the TFDS builder (or plain files with
`use_tfds=False`; both give the same result) and builds the vocabulary from one split.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

from absl import logging
import numpy as np

from mimtext.data import grammar as grammar_lib
from mimtext.data import pipeline
from mimtext.data import text_files
from mimtext.data import tfds_text
from mimtext.data import vocab as vocab_lib

BUILTIN_NAME = "builtin"
DATA_ENV_VAR = "MIMTEXT_DATA"
# Flag values that ask for the built-in corpus even when $MIMTEXT_DATA is set.
_BUILTIN_FLAG_VALUES = frozenset({"builtin", "none"})


@dataclasses.dataclass
class CorpusSplit:
  """One encoded split.

  Attributes:
    lines: n kept sentences (normalised text), aligned with `ids`.
    ids: n int32 arrays `<sos> w1 .. wm <eos>`.
    log_probs: float64 [n] exact log p(x) (built-in corpus only), else None.
    labels: int32 [n] class ids: the topic (built-in corpus) or `{split}.labels.txt` when present.
    num_truncated: sentences cut to max_len words.
    num_dropped: sentences dropped for exceeding max_len words.
  """

  lines: list[str]
  ids: list[np.ndarray]
  log_probs: np.ndarray | None = None
  labels: np.ndarray | None = None
  num_truncated: int = 0
  num_dropped: int = 0

  def __len__(self) -> int:
    return len(self.ids)

  def head(self, n: int) -> "CorpusSplit":
    """The first n sentences (all of them when n exceeds the split), every field kept aligned."""
    cut = lambda a: None if a is None else a[:n]
    return dataclasses.replace(self, lines=self.lines[:n], ids=self.ids[:n],
                               log_probs=cut(self.log_probs), labels=cut(self.labels))

  def num_tokens(self, include_eos: bool) -> int:
    """Word tokens over all sentences (`<sos>` never counted), +1 per sentence with `<eos>`."""
    words = sum(len(ids) - 2 for ids in self.ids)
    return words + (len(self.ids) if include_eos else 0)


@dataclasses.dataclass
class Corpus:
  """A vocabulary and its encoded splits.

  Attributes:
    vocab: the vocabulary every split is encoded with.
    splits: split name ("train", "valid", "test", ...) -> `CorpusSplit`.
    name: the directory's basename (e.g. "ptb") or "builtin".
    data_dir: the directory read, None for the built-in corpus.
  """

  vocab: vocab_lib.Vocabulary
  splits: dict[str, CorpusSplit]
  name: str
  data_dir: str | None

  def __getitem__(self, split: str) -> CorpusSplit:
    if split not in self.splits:
      raise KeyError(f"corpus {self.name} has no split {split!r}; it has {sorted(self.splits)}")
    return self.splits[split]


def resolve_data_dir(flag_value: str | None, corpus: str = "ptb") -> str | None:
  """Chooses the corpus directory of a launch script.

  Args:
    flag_value: the `--data_dir` flag. It wins when set: a directory holding split files, or a
      parent holding `corpus/`. "" means unset; "builtin" / "none" select the built-in corpus.
    corpus: the sub-directory to use under a parent directory (e.g. "ptb", "yahoo").

  Returns:
    The directory, or None (the built-in corpus) when neither the flag nor `$MIMTEXT_DATA` is set.

  Raises:
    text_files.DataError: the flag or `$MIMTEXT_DATA` names a directory that does not exist or holds
      neither split files nor `corpus/`.
  """
  if flag_value and flag_value.lower() in _BUILTIN_FLAG_VALUES:
    return None
  if flag_value:
    return _corpus_dir(flag_value, corpus, "--data_dir")
  env_value = os.environ.get(DATA_ENV_VAR)
  if env_value:
    return _corpus_dir(env_value, corpus, f"${DATA_ENV_VAR}")
  return None


def _corpus_dir(path: str, corpus: str, origin: str) -> str:
  """`path` if it holds split files, else `path/corpus` if that does."""
  path = os.path.expanduser(path)
  if not os.path.isdir(path):
    raise text_files.DataError(f"{origin}={path}: directory does not exist")
  if text_files.available_splits(path):
    return path
  child = os.path.join(path, corpus)
  if text_files.available_splits(child):
    return child
  raise text_files.DataError(
      f"{origin}={path}: holds no split file (train.txt / valid.txt / test.txt) and no "
      f"'{corpus}' corpus directory with them")


def _read_split(data_dir: str, split: str, *, use_tfds: bool, tfds_dir: str | None,
                blank_lines: str) -> text_files.TextLines:
  if use_tfds:
    return tfds_text.load_text_split(data_dir, split, tfds_dir=tfds_dir,
                                     blank_lines=blank_lines).read_all()
  return text_files.read_split_dir(data_dir, split, blank_lines=blank_lines)


def control_token_report(text: text_files.TextLines, path: str) -> str | None:
  """"N control-token strings … (the first at PATH:LINE:COLUMN)" when the text spells `<pad>`,
  `<sos>` or `<eos>` as words (each is read as `<unk>`, `vocab.CONTROL_TOKENS`), else None."""
  count, first = 0, None
  for raw, line_number in zip(text.lines, text.line_numbers):
    hits = vocab_lib.control_token_positions(raw.split())
    if hits and first is None:
      token = raw.split()[hits[0]]
      first = (line_number, raw.find(token) + 1, token)
    count += len(hits)
  if not count:
    return None
  line_number, column, token = first
  return (f"{count} control-token string(s) ({', '.join(vocab_lib.CONTROL_TOKENS)}) in the text, "
          f"each read as {vocab_lib.UNK}, the first {token!r} at {path}:{line_number}:{column}")


def _count_source_lines(path: str) -> int:
  """Lines of a text file as `read_lines` numbers them (a final newline starts no line)."""
  with open(path, "rb") as f:
    data = f.read()
  return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def _split_labels(data_dir: str, split: str, line_numbers: Sequence[int]) -> np.ndarray | None:
  """Labels of the kept lines from `{split}.labels.txt`, or None if there is no such file."""
  path = os.path.join(data_dir, f"{split}.labels.txt")
  if not os.path.isfile(path):
    return None
  labels = text_files.read_labels(path, _count_source_lines(text_files.split_path(data_dir, split)))
  return labels[np.asarray(line_numbers, dtype=np.int64) - 1]


def _encode_split(lines: Sequence[str], vocab: vocab_lib.Vocabulary, *, max_len: int | None,
                  overflow: str, log_probs: np.ndarray | None,
                  labels: np.ndarray | None) -> CorpusSplit:
  encoded = pipeline.encode_lines(lines, vocab, max_len=max_len, overflow=overflow)
  keep = encoded.source_index
  return CorpusSplit(
      lines=[lines[i] for i in keep.tolist()], ids=encoded.ids,
      log_probs=None if log_probs is None else np.asarray(log_probs)[keep],
      labels=None if labels is None else np.asarray(labels)[keep],
      num_truncated=encoded.num_truncated, num_dropped=encoded.num_dropped)


def _tokenized_lines(lines: Sequence[str], tokenizer: str) -> list[str]:
  """The lines re-split by `vocab_lib.tokenize(line, tokenizer)`, tokens joined by single spaces.

  Under "whitespace" the lines (already normalised by the reader) are returned unchanged. A line
  never becomes empty: every non-space character is part of a token under every tokeniser.
  """
  if tokenizer == vocab_lib.DEFAULT_TOKENIZER:
    return list(lines)
  return [vocab_lib.normalize_line(line, tokenizer) for line in lines]


def _builtin_vocab(train_lines: Sequence[str], grammar: grammar_lib.TopicGrammar, *,
                   min_count: int, max_vocab: int | None,
                   tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> vocab_lib.Vocabulary:
  """Vocabulary of the built-in training split, every grammar word counted once more.

  The extra count makes even a small corpus cover the whole language: no `<unk>` ever replaces a
  word, so the exact log-probabilities stay exact for every split.
  """
  return vocab_lib.Vocabulary.build([*train_lines, " ".join(grammar.words)],
                                    min_count=min_count, max_size=max_vocab, tokenizer=tokenizer)


def _load_builtin(*, vocab: vocab_lib.Vocabulary | None, min_count: int, max_vocab: int | None,
                  max_len: int | None, overflow: pipeline.Overflow, seed: int,
                  sizes: Mapping[str, int] | None,
                  tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> Corpus:
  grammar = grammar_lib.TopicGrammar.default()
  raw = grammar_lib.builtin_corpus(seed=seed, sizes=sizes, grammar=grammar)
  lines = {name: _tokenized_lines(split.lines, tokenizer) for name, split in raw.items()}
  if vocab is None:
    if "train" not in raw:
      raise ValueError(f"builtin_sizes {dict(sizes or {})} has no 'train' split for the vocabulary")
    vocab = _builtin_vocab(lines["train"], grammar, min_count=min_count, max_vocab=max_vocab,
                           tokenizer=tokenizer)
  splits = {name: _encode_split(lines[name], vocab, max_len=max_len, overflow=overflow,
                                log_probs=split.log_probs, labels=split.topics)
            for name, split in raw.items()}
  return Corpus(vocab=vocab, splits=splits, name=BUILTIN_NAME, data_dir=None)


def load_corpus(data_dir: str | os.PathLike | None, *,
                vocab: vocab_lib.Vocabulary | None = None, vocab_split: str = "train",
                min_count: int = 1, max_vocab: int | None = None, max_len: int | None = None,
                overflow: pipeline.Overflow = "drop",
                blank_lines: text_files.BlankLinePolicy = "skip",
                tfds_dir: str | os.PathLike | None = None, use_tfds: bool = True,
                builtin_seed: int = 0,
                builtin_sizes: Mapping[str, int] | None = None,
                required_splits: Sequence[str] = (),
                tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> Corpus:
  """Loads and encodes a corpus.

  Args:
    data_dir: a directory with `{train,valid,test}.txt` (whichever exist); None for the built-in
      grammar corpus (train / valid / test with exact log-probabilities and topic labels).
    vocab: the vocabulary to use; None builds one from `vocab_split`.
    vocab_split: the split the vocabulary is built from (e.g. "valid" for Yahoo / DBpedia, which
      have no train split here).
    min_count: minimum word count for the built vocabulary.
    max_vocab: maximum vocabulary size, the four specials included.
    max_len: maximum words per sentence; None for no limit.
    overflow: what to do with longer sentences: "drop" or "truncate".
    blank_lines: "skip" or "error" (see `text_files.read_lines`).
    tfds_dir: where prepared TFDS datasets live (default `tfds_text.default_tfds_dir()`).
    use_tfds: read through the TFDS `array_record` builder; False reads the text files directly.
    builtin_seed: seed of the built-in corpus.
    builtin_sizes: split sizes of the built-in corpus (default 10,000 / 1,000 / 1,000).
    required_splits: splits `data_dir` must hold (e.g. ("train", "valid") for training); checked
      before any file is read.
    tokenizer: how a line becomes tokens (`vocab_lib.tokenize`, one of `vocab_lib.TOKENIZERS`):
      "whitespace" (default) splits on whitespace only; "lower" lower-cases first; "lower_punct"
      also splits punctuation off words. Applied to every split (and to the vocabulary's split)
      before encoding; `CorpusSplit.lines` hold the tokens joined by single spaces.

  Returns:
    The `Corpus`. The sentences dropped or truncated for `max_len` are logged per split.

  Raises:
    text_files.DataError: a missing directory, a missing required split, no `vocab_split` split
      and no `vocab`, or a malformed file (named with its line).
  """
  vocab_lib.check_tokenizer(tokenizer)
  if data_dir is None:
    corpus = _load_builtin(vocab=vocab, min_count=min_count, max_vocab=max_vocab,
                           max_len=max_len, overflow=overflow, seed=builtin_seed,
                           sizes=builtin_sizes, tokenizer=tokenizer)
    _log_overflow(corpus, max_len)
    return corpus
  data_dir = os.path.abspath(os.fspath(data_dir))
  if not os.path.isdir(data_dir):
    raise text_files.DataError(f"data directory {data_dir} does not exist")
  split_names = text_files.available_splits(data_dir)
  if not split_names:
    raise text_files.DataError(f"data directory {data_dir} holds no split file (*.txt)")
  for split in required_splits:
    text_files.check_split_file(data_dir, split)
  if vocab is None and vocab_split not in split_names:
    raise text_files.DataError(
        f"data directory {data_dir} has no '{vocab_split}' split to build the vocabulary from "
        f"(splits present: {', '.join(split_names)}); pass vocab_split= one of them or a vocab")
  texts = {split: _read_split(data_dir, split, use_tfds=use_tfds, tfds_dir=tfds_dir,
                              blank_lines=blank_lines) for split in split_names}
  for split, text in texts.items():
    report = control_token_report(text, text_files.split_path(data_dir, split))
    if report:
      logging.warning("corpus %s/%s: %s", os.path.basename(data_dir), split, report)
  lines = {split: _tokenized_lines(text.lines, tokenizer) for split, text in texts.items()}
  if vocab is None:
    vocab = vocab_lib.Vocabulary.build(lines[vocab_split], min_count=min_count,
                                       max_size=max_vocab)
    logging.info("Built a vocabulary of %d ids from %s/%s.txt (tokenizer %s)", vocab.size,
                 data_dir, vocab_split, tokenizer)
  splits = {split: _encode_split(lines[split], vocab, max_len=max_len, overflow=overflow,
                                 log_probs=None,
                                 labels=_split_labels(data_dir, split, text.line_numbers))
            for split, text in texts.items()}
  name = os.path.basename(os.path.normpath(data_dir))
  corpus = Corpus(vocab=vocab, splits=splits, name=name, data_dir=data_dir)
  _log_overflow(corpus, max_len)
  return corpus


def _log_overflow(corpus: Corpus, max_len: int | None) -> None:
  """Logs, per split, how many sentences longer than `max_len` words were dropped or truncated."""
  for name, split in corpus.splits.items():
    total = len(split) + split.num_dropped
    if split.num_dropped:
      logging.info("corpus %s/%s: dropped %d of %d sentences longer than max_len=%d words",
                   corpus.name, name, split.num_dropped, total, max_len)
    if split.num_truncated:
      logging.info("corpus %s/%s: truncated %d of %d sentences to max_len=%d words",
                   corpus.name, name, split.num_truncated, total, max_len)
