"""The four special tokens and their ids: the one place the models and the data layer agree on.

Ids 0-3 are always `<pad>`, `<sos>`, `<eos>`, `<unk>`, in that order: every model relies on
`PAD_ID = 0` for padding, starts decoding from `SOS_ID`, stops at `EOS_ID` and replaces dropped
words by `UNK_ID`. This module is part of the core (no JAX, no data dependencies), so
`mimtext.nn` and `mimtext.models` need not import `mimtext.data`; `mimtext.data.vocab` builds every
vocabulary on these names and re-exports them.
"""

from __future__ import annotations

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
PAD_ID, SOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
# The first entries of every vocabulary, in id order: SPECIAL_TOKENS[i] has id i.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, SOS, EOS, UNK)

__all__ = ["EOS", "EOS_ID", "PAD", "PAD_ID", "SOS", "SOS_ID", "SPECIAL_TOKENS", "UNK", "UNK_ID"]
