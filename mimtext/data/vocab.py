"""Word vocabulary: token <-> id maps with the four special tokens first.

Ids 0-3 are always `<pad>`, `<sos>`, `<eos>`, `<unk>` (in that order), so every model can rely on
`PAD_ID = 0` for padding and on `<eos>` terminating a sentence. Source corpora mark
out-of-vocabulary words as `<unk>` (PTB) or `_UNK` (Yahoo / DBpedia): both map to `UNK_ID` and are
never counted as words.

The control tokens `<pad>`, `<sos>`, `<eos>` are never read from text: a literal "<eos>" in a
sentence is an unknown word and encodes as `<unk>` (`encode`; the corpus loader counts and logs
them with the first position, `control_token_positions`), so that a sentence can never end, pad or
restart in the middle. Only the encoder's own `<sos> … <eos>` wrapping produces those ids.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
from typing import Iterable, Sequence

import numpy as np

# The special tokens and their ids live in the core (`mimtext.special_tokens`, which the models
# import); re-exported here so `vocab.PAD_ID` etc. keep working.
from mimtext.special_tokens import (  # noqa: F401  (re-exported)
    EOS, EOS_ID, PAD, PAD_ID, SOS, SOS_ID, SPECIAL_TOKENS, UNK, UNK_ID)

# Spellings of "unknown word" used by the source corpora; all of them map to UNK_ID.
UNK_ALIASES: frozenset[str] = frozenset({UNK, "_UNK"})
# Tokens of a source text that are never added to a vocabulary as ordinary words.
_RESERVED_TOKENS: frozenset[str] = frozenset(SPECIAL_TOKENS) | UNK_ALIASES
# Special tokens that text cannot contain: read from text, each is an unknown word (`<unk>`).
CONTROL_TOKENS: tuple[str, ...] = (PAD, SOS, EOS)


def control_token_positions(tokens: Sequence[str]) -> list[int]:
  """Indices of the tokens that spell a control token (`CONTROL_TOKENS`), read as `<unk>`."""
  return [i for i, token in enumerate(tokens) if token in CONTROL_TOKENS]


def _validate_tokens(tokens: tuple[str, ...]) -> None:
  """Raises ValueError unless `tokens` starts with the specials and holds unique single words."""
  if tuple(tokens[:4]) != SPECIAL_TOKENS:
    raise ValueError(
        f"a vocabulary must start with {list(SPECIAL_TOKENS)}, got {list(tokens[:4])}")
  seen: set[str] = set()
  for position, token in enumerate(tokens):
    if not isinstance(token, str) or not token or token != token.strip() or len(token.split()) != 1:
      raise ValueError(f"vocabulary entry {position} is not a single non-blank token: {token!r}")
    if token in seen:
      raise ValueError(f"vocabulary entry {position} duplicates the token {token!r}")
    if position >= 4 and token in UNK_ALIASES:
      raise ValueError(f"vocabulary entry {position} is the unknown-word alias {token!r}")
    seen.add(token)


# The tokenisers of `tokenize` (the config field `data.tokenizer`); the first is the default.
TOKENIZERS: tuple[str, ...] = ("whitespace", "lower", "lower_punct")
DEFAULT_TOKENIZER = TOKENIZERS[0]
# "lower_punct": a word is a run of word characters (`\w`: letters, digits, `_`, any script),
# possibly joined by single `-` or `'` to further runs (`don't`, `state-of-the-art`, `o'brien`);
# every other non-space character is a token on its own (`u.s.` -> `u . s .`, `3.5` -> `3 . 5`).
WORD_OR_PUNCT = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def check_tokenizer(mode: str) -> str:
  """Returns `mode` if it names a tokeniser of `TOKENIZERS`, else raises ValueError."""
  if mode not in TOKENIZERS:
    raise ValueError(f"unknown tokenizer {mode!r}: use one of {list(TOKENIZERS)}")
  return mode


def tokenize(text: str, mode: str = DEFAULT_TOKENIZER) -> list[str]:
  """Splits a text into tokens: the one tokeniser of the library (corpus, vocabulary, API, CLI).

  Args:
    text: one sentence.
    mode: "whitespace": `text.split()`, nothing else (case-sensitive; the default, for corpora
      that are already tokenised such as PTB). "lower": lower-case (`str.lower`), then split on
      whitespace. "lower_punct": lower-case, then `WORD_OR_PUNCT.findall` on each whitespace
      token: words (with inner `-` / `'`) and single punctuation characters
      (`"Hello, World!"` -> `["hello", ",", "world", "!"]`). Under "lower" and "lower_punct" a
      whitespace token that is a special token or an unknown-word alias (`<unk>`, `_UNK`, `<pad>`,
      `<sos>`, `<eos>`) is kept verbatim.

  Returns:
    The tokens; none is empty or holds whitespace. Idempotent: joining the tokens with spaces and
    tokenising again gives the same tokens.
  """
  if mode == "whitespace":
    return text.split()
  check_tokenizer(mode)
  tokens = []
  for chunk in text.split():
    if chunk in _RESERVED_TOKENS:
      tokens.append(chunk)
    elif mode == "lower":
      tokens.append(chunk.lower())
    else:
      tokens.extend(WORD_OR_PUNCT.findall(chunk.lower()))
  return tokens


def normalize_line(text: str, mode: str = DEFAULT_TOKENIZER) -> str:
  """The tokens of `tokenize(text, mode)` joined by single spaces (how corpus lines are kept)."""
  return " ".join(tokenize(text, mode))


def _sentence_tokens(sentence: str | Sequence[str], mode: str = DEFAULT_TOKENIZER) -> list[str]:
  """Tokenises a sentence string (`tokenize`); passes a token sequence through as a list."""
  return tokenize(sentence, mode) if isinstance(sentence, str) else list(sentence)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """An immutable token list; the index of a token is its id.

  Attributes:
    tokens: all tokens, `tokens[:4] == (PAD, SOS, EOS, UNK)`; no duplicates, no whitespace.
  """

  tokens: tuple[str, ...]

  def __post_init__(self):
    object.__setattr__(self, "tokens", tuple(self.tokens))
    _validate_tokens(self.tokens)

  @functools.cached_property
  def _token_to_id(self) -> dict[str, int]:
    table = {token: index for index, token in enumerate(self.tokens)}
    for alias in (*UNK_ALIASES, *CONTROL_TOKENS):  # text never yields a control id
      table[alias] = UNK_ID
    return table

  @property
  def size(self) -> int:
    """Number of ids (v), specials included."""
    return len(self.tokens)

  def __len__(self) -> int:
    return self.size

  def __contains__(self, token: str) -> bool:
    return token in self._token_to_id

  def id(self, token: str) -> int:
    """Id of a token of text: `UNK_ID` for unknown words, the aliases `<unk>` / `_UNK` and the
    control tokens `<pad>` / `<sos>` / `<eos>` (whose ids are `PAD_ID` etc.)."""
    return self._token_to_id.get(token, UNK_ID)

  def encode(self, sentence: str | Sequence[str], add_sos_eos: bool = True, *,
             tokenizer: str = DEFAULT_TOKENIZER) -> np.ndarray:
    """Maps a sentence to ids.

    Args:
      sentence: a string (split by `tokenize(sentence, tokenizer)`) or a sequence of n tokens
        (used as they are). A token spelling a control token (`<pad>`, `<sos>`, `<eos>`) is read
        as `<unk>`.
      add_sos_eos: wrap the ids as `<sos> w1 .. wn <eos>`.
      tokenizer: the tokeniser of a string sentence (`TOKENIZERS`); default "whitespace".

    Returns:
      int32 array [n + 2] (or [n] without `add_sos_eos`).
    """
    lookup = self._token_to_id
    ids = [lookup.get(token, UNK_ID) for token in _sentence_tokens(sentence, tokenizer)]
    if add_sos_eos:
      ids = [SOS_ID, *ids, EOS_ID]
    return np.asarray(ids, dtype=np.int32)

  def decode(self, ids: Iterable[int] | np.ndarray, strip_special: bool = True) -> list[str]:
    """Maps ids [t] back to tokens.

    Args:
      ids: token ids, e.g. one row of a batch or a decoder output.
      strip_special: stop at the first `<eos>` and drop `<pad>` / `<sos>` (`<unk>` is kept as a
        word). With False every id is mapped verbatim, nothing is dropped.

    Returns:
      The tokens, as a list of strings.
    """
    words = []
    for raw_id in np.asarray(ids).reshape(-1).tolist():
      token_id = int(raw_id)
      if not 0 <= token_id < self.size:
        raise ValueError(f"id {token_id} is outside the vocabulary of size {self.size}")
      if strip_special:
        if token_id == EOS_ID:
          break
        if token_id in (PAD_ID, SOS_ID):
          continue
      words.append(self.tokens[token_id])
    return words

  def save(self, path: str | os.PathLike) -> None:
    """Writes one token per line (UTF-8, LF line endings)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
      f.write("".join(token + "\n" for token in self.tokens))

  @classmethod
  def load(cls, path: str | os.PathLike) -> Vocabulary:
    """Reads a file written by `save`.

    Raises:
      FileNotFoundError: the file does not exist.
      text_files.DataError (a ValueError): the file is empty or not UTF-8, or it does not start
        with the four special tokens, or an entry is blank / duplicated.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"vocabulary file {path} does not exist")
    from mimtext.data import text_files  # pylint: disable=g-import-not-at-top
    try:
      with open(path, encoding="utf-8") as f:
        tokens = tuple(line.rstrip("\r\n") for line in f)
    except UnicodeDecodeError as e:
      raise text_files.DataError(f"vocabulary file {path} is not valid UTF-8 ({e.reason} at byte "
                                 f"{e.start})") from None
    if not tokens:
      raise text_files.DataError(f"vocabulary file {path} is empty (a run's vocab.txt holds the "
                                 "4 special tokens and its words, one a line)")
    try:
      return cls(tokens)
    except ValueError as e:
      raise text_files.DataError(f"vocabulary file {path}: {e}") from None

  @classmethod
  def build(cls, lines: Iterable[str], *, min_count: int = 1,
            max_size: int | None = None, tokenizer: str = DEFAULT_TOKENIZER) -> Vocabulary:
    """Builds a vocabulary from lines split by `tokenize(line, tokenizer)`.

    Args:
      lines: sentences. Special tokens and the unknown-word aliases (`<unk>`, `_UNK`) in the text
        are not counted as words.
      min_count: keep words occurring at least this often.
      max_size: keep at most this many ids in total, the four specials included.
      tokenizer: one of `TOKENIZERS`; default "whitespace" (`str.split`).

    Returns:
      The specials, then words by descending count, ties in alphabetical order.
    """
    if min_count < 1:
      raise ValueError(f"min_count must be >= 1, got {min_count}")
    if max_size is not None and max_size <= len(SPECIAL_TOKENS):
      raise ValueError(f"max_size must be >= {len(SPECIAL_TOKENS) + 1} (the {len(SPECIAL_TOKENS)} "
                       f"specials plus a word), got {max_size}")
    check_tokenizer(tokenizer)
    counts = collections.Counter(token for line in lines for token in tokenize(line, tokenizer))
    words = sorted((word for word, count in counts.items()
                    if count >= min_count and word not in _RESERVED_TOKENS),
                   key=lambda word: (-counts[word], word))
    if max_size is not None:
      words = words[:max_size - len(SPECIAL_TOKENS)]
    return cls(SPECIAL_TOKENS + tuple(words))
