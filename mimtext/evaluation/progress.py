"""The one progress bar of the evaluation: tqdm on stderr, off when asked or when there is little to
show (fewer than `min_total` steps), and gone from the terminal when it finishes (unless asked to
`leave` it)."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

import tqdm

T = TypeVar("T")


def bar(iterable: Iterable[T], *, desc: str, total: int | None = None, enabled: bool = True,
        unit: str = "batch", min_total: int = 2, leave: bool = False) -> Iterable[T]:
  """`iterable` wrapped in a tqdm bar on stderr named `desc`; the iterable itself when `enabled`
  is False or it has fewer than `min_total` steps (`total`, else len(iterable) if defined).

  `leave`: the finished bar stays on the terminal, and is shown even for a single step (the bar
  of a command that reports its work, e.g. `launch.encode`).
  """
  if total is None and hasattr(iterable, "__len__"):
    total = len(iterable)  # type: ignore[arg-type]
  if not enabled or (not leave and total is not None and total < min_total):
    return iterable
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr)
