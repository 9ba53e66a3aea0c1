"""Tests for mimtext.data.vocab."""

import numpy as np
import pytest

from mimtext.data import vocab as vocab_lib
from mimtext.data.vocab import EOS_ID, PAD_ID, SOS_ID, UNK_ID, Vocabulary


def test_special_ids_are_fixed():
  assert (vocab_lib.PAD, vocab_lib.SOS, vocab_lib.EOS, vocab_lib.UNK) == (
      "<pad>", "<sos>", "<eos>", "<unk>")
  assert (PAD_ID, SOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)


def test_build_orders_by_count_then_alphabet_and_skips_unk_aliases():
  vocab = Vocabulary.build(["b a c a", "c b <unk> _UNK d", "a"])
  # a:3, b:2, c:2 (tie -> alphabetical), d:1; <unk>/_UNK are not words.
  assert vocab.tokens == ("<pad>", "<sos>", "<eos>", "<unk>", "a", "b", "c", "d")
  assert vocab.size == 8


def test_build_min_count_and_max_size_counting_specials():
  lines = ["a a a b b c"]
  assert Vocabulary.build(lines, min_count=2).tokens[4:] == ("a", "b")
  assert Vocabulary.build(lines, max_size=5).tokens == ("<pad>", "<sos>", "<eos>", "<unk>", "a")
  with pytest.raises(ValueError):
    Vocabulary.build(lines, max_size=3)


def test_encode_decode_round_trip_and_unknowns():
  vocab = Vocabulary.build(["the cat sat"])
  ids = vocab.encode("the dog  sat")
  assert ids.dtype == np.int32
  assert ids.tolist() == [SOS_ID, vocab.id("the"), UNK_ID, vocab.id("sat"), EOS_ID]
  assert vocab.encode(["the", "cat"], add_sos_eos=False).tolist() == [vocab.id("the"),
                                                                      vocab.id("cat")]
  assert vocab.id("_UNK") == vocab.id("<unk>") == vocab.id("never-seen") == UNK_ID
  assert vocab.decode(ids) == ["the", "<unk>", "sat"]


def test_decode_stops_at_first_eos_and_drops_pad_sos():
  vocab = Vocabulary.build(["x y"])
  x, y = vocab.id("x"), vocab.id("y")
  assert vocab.decode([SOS_ID, x, PAD_ID, y, EOS_ID, x, EOS_ID]) == ["x", "y"]
  assert vocab.decode(np.array([[SOS_ID, x, EOS_ID, PAD_ID]]), strip_special=False) == [
      "<sos>", "x", "<eos>", "<pad>"]
  with pytest.raises(ValueError):
    vocab.decode([vocab.size])


def test_save_load_round_trip(tmp_path):
  vocab = Vocabulary.build(["naïve café a b"])
  path = tmp_path / "vocab.txt"
  vocab.save(path)
  assert path.read_text(encoding="utf-8").splitlines()[:4] == list(vocab_lib.SPECIAL_TOKENS)
  assert Vocabulary.load(path) == vocab


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("<pad>\n<sos>\nhello\n<unk>\n", "must start with"),
    ("<pad>\n<sos>\n<eos>\n<unk>\na\na\n", "duplicates"),
    ("<pad>\n<sos>\n<eos>\n<unk>\n\n", "single non-blank"),
])
def test_load_rejects_bad_files(tmp_path, content, message):
  path = tmp_path / "vocab.txt"
  path.write_text(content, encoding="utf-8")
  with pytest.raises(ValueError, match=message):
    Vocabulary.load(path)


def test_load_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    Vocabulary.load(tmp_path / "nope.txt")


@pytest.mark.parametrize("tokenizer", vocab_lib.TOKENIZERS)
def test_control_tokens_in_text_are_unknown_words(tokenizer):
  """A literal <pad> / <sos> / <eos> in a sentence never becomes a control id: the sentence cannot
  end, pad or restart in the middle."""
  vocab = Vocabulary.build(["the cat sat", "the <eos> <pad> dog"], tokenizer=tokenizer)
  assert "<eos>" not in vocab.tokens[4:] and "<pad>" not in vocab.tokens[4:]
  ids = vocab.encode("the <pad> cat <eos> sat <sos>", tokenizer=tokenizer)
  the, cat, sat = (vocab.id(w) for w in ("the", "cat", "sat"))
  assert ids.tolist() == [SOS_ID, the, UNK_ID, cat, UNK_ID, sat, UNK_ID, EOS_ID]
  assert vocab.encode(["<eos>", "cat"], add_sos_eos=False).tolist() == [UNK_ID, cat]
  assert [vocab.id(t) for t in vocab_lib.CONTROL_TOKENS] == [UNK_ID] * 3
  assert vocab_lib.control_token_positions(["a", "<eos>", "b", "<pad>"]) == [1, 3]
  # Decoding the ids themselves is unchanged.
  assert vocab.decode([SOS_ID, cat, EOS_ID, cat]) == ["cat"]


def test_the_api_counts_control_tokens_as_unknown_words():
  from mimtext import api  # pylint: disable=g-import-not-at-top
  vocab = Vocabulary.build(["the cat sat"])
  assert api.unknown_words(["the <eos> cat <unk>", "<pad>"], vocab) == {"<eos>": 1, "<pad>": 1}
  assert [ids.tolist() for ids in api.tokenize(["the <eos>"], vocab)] == [
      [SOS_ID, vocab.id("the"), UNK_ID, EOS_ID]]
