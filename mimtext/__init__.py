"""mimtext: probabilistic sentence autoencoders (sentenceMIM, sentence VAEs, HSVAE) in JAX.

The public API (`mimtext.api`) is imported lazily, so `import mimtext` stays cheap (no JAX) until
`mimtext.load` or `mimtext.SentenceModel` is first touched:

  >>> import mimtext
  >>> model = mimtext.load("runs/ptb_smim_128")      # imports JAX, restores the best checkpoint
  >>> mean, std = model.encode(["the cat sat"])      # [1,d], [1,d]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
  from mimtext.api import SentenceModel, load  # noqa: F401

_EXPORTS = {"load": "api", "SentenceModel": "api"}
__all__ = ["SentenceModel", "__version__", "load"]


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))
