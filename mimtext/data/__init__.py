"""Data layer: vocabulary, text files, TFDS builder, grain batches, the built-in grammar corpus.

The names below are re-exported lazily, so `import mimtext.data.vocab` does not pay for importing
grain and tensorflow_datasets.
"""

import importlib
from typing import Any

_EXPORTS = {
    "Corpus": "corpus", "CorpusSplit": "corpus", "load_corpus": "corpus",
    "resolve_data_dir": "corpus",
    "TopicGrammar": "grammar", "builtin_corpus": "grammar", "entropy_per_sentence": "grammar",
    "BatchPipeline": "pipeline", "Encoded": "pipeline", "encode_lines": "pipeline",
    "DataError": "text_files", "read_lines": "text_files",
    "load_text_split": "tfds_text",
    "Vocabulary": "vocab", "PAD_ID": "vocab", "SOS_ID": "vocab", "EOS_ID": "vocab",
    "UNK_ID": "vocab",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))
