"""Sentences -> id arrays -> padded, bucketed, sharded, resumable batches (grain).

A batch is a dict of numpy arrays for one process (b = global_batch_size / process_count rows):

  tokens  int32   [b, t]  `<sos> w1 .. wn <eos>` then PAD_ID (0)
  lengths int32   [b]     real tokens per row, `<sos>` and `<eos>` included
  index   int32   [b]     index of the row's example in the pipeline's example list; -1 for filler
  valid   float32 [b]     1 for a real example, 0 for a filler row

t is the longest row of the *global* batch rounded up to a multiple of `pad_multiple`, so every
process builds the same shape (as `jax.make_array_from_process_local_data` needs) and jit sees few
distinct shapes. Filler rows (`<sos> <eos>`, length 2, valid 0) complete the last partial batch
instead of dropping examples; evaluation pipelines never drop or reorder anything.

Training reads a `BatchPipeline`; inference (encoding, bounds, decoding of given sentences) reads
`inference_batches`, the one batcher of a list of sentences: every sentence once, in order of
length, results put back in place by "index".
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Iterator, Literal, Sequence

from absl import logging
import grain
import numpy as np

from mimtext.data import vocab as vocab_lib

Overflow = Literal["truncate", "drop"]
FILLER_INDEX = -1
MIN_ROWS = 8
_STATE_FORMAT = 1


@dataclasses.dataclass
class Encoded:
  """Encoded sentences.

  Attributes:
    ids: n int32 arrays, each `<sos> w1 .. wm <eos>` with m <= max_len.
    source_index: int64 [n], the index into the input lines of each kept example.
    num_truncated: lines cut to max_len words (kept).
    num_dropped: lines longer than max_len words that were dropped.
  """

  ids: list[np.ndarray]
  source_index: np.ndarray
  num_truncated: int = 0
  num_dropped: int = 0


def encode_lines(lines: Sequence[str], vocab: vocab_lib.Vocabulary, *, max_len: int | None = None,
                 overflow: Overflow = "truncate",
                 tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> Encoded:
  """Encodes lines, split by `vocab_lib.tokenize(line, tokenizer)`, as `<sos> .. <eos>` id arrays.

  Args:
    lines: n sentences.
    vocab: the vocabulary (unknown words become `<unk>`).
    max_len: the most words per sentence, `<sos>` / `<eos>` not counted; None for no limit.
    overflow: "truncate" keeps the first max_len words (still ending with `<eos>`); "drop" skips
      the sentence.
    tokenizer: one of `vocab_lib.TOKENIZERS`; default "whitespace" (`str.split`).

  Returns:
    The kept examples with their source indices and the truncation / drop counts (also logged).
  """
  if overflow not in ("truncate", "drop"):
    raise ValueError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
  if max_len is not None and max_len < 1:
    raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
  vocab_lib.check_tokenizer(tokenizer)
  ids, kept, num_truncated, num_dropped = [], [], 0, 0
  for index, line in enumerate(lines):
    row = vocab.encode(line, tokenizer=tokenizer)
    if max_len is not None and len(row) - 2 > max_len:
      if overflow == "drop":
        num_dropped += 1
        continue
      row = np.concatenate([row[:max_len + 1], [vocab_lib.EOS_ID]]).astype(np.int32)
      num_truncated += 1
    ids.append(row)
    kept.append(index)
  if num_truncated or num_dropped:
    logging.info("encode_lines: %d of %d lines longer than max_len=%s words: %d truncated, "
                 "%d dropped", num_truncated + num_dropped, len(lines), max_len, num_truncated,
                 num_dropped)
  return Encoded(ids=ids, source_index=np.asarray(kept, dtype=np.int64),
                 num_truncated=num_truncated, num_dropped=num_dropped)


def padded_length(max_tokens: int, pad_multiple: int) -> int:
  """`max_tokens` rounded up to a multiple of `pad_multiple`."""
  return -(-max_tokens // pad_multiple) * pad_multiple


def make_batch(examples: Sequence[np.ndarray], indices: np.ndarray, *, pad_multiple: int = 8,
               rows: slice = slice(None)) -> dict[str, np.ndarray]:
  """Pads the examples of one global batch and returns the requested rows.

  Args:
    examples: all encoded examples, each `<sos> .. <eos>`.
    indices: int [B], an example index per row of the global batch, `FILLER_INDEX` for filler.
    pad_multiple: the padded length t is a multiple of this.
    rows: the rows of the global batch to return (a process's contiguous block).

  Returns:
    The batch dict (see module docstring) for `indices[rows]`; t is computed over all B rows.
  """
  filler = np.asarray([vocab_lib.SOS_ID, vocab_lib.EOS_ID], dtype=np.int32)
  global_rows = [filler if i == FILLER_INDEX else examples[i] for i in indices.tolist()]
  length = padded_length(max(len(r) for r in global_rows), pad_multiple)
  local_indices = np.asarray(indices[rows], dtype=np.int32)
  local_rows = global_rows[rows]
  tokens = np.full((len(local_rows), length), vocab_lib.PAD_ID, dtype=np.int32)
  for row, ids in enumerate(local_rows):
    tokens[row, :len(ids)] = ids
  return {
      "tokens": tokens,
      "lengths": np.asarray([len(r) for r in local_rows], dtype=np.int32),
      "index": local_indices,
      "valid": (local_indices != FILLER_INDEX).astype(np.float32),
  }


def row_bucket(num_rows: int, batch_size: int) -> int:
  """The padded row count of a batch of `num_rows` real rows: the smallest power of two ≥ it, at
  least `MIN_ROWS`, at most `batch_size` (so a full batch is never padded).

  >>> row_bucket(44, 128), row_bucket(128, 128), row_bucket(3, 256)   # (64, 128, 8)
  """
  if not 0 < num_rows <= batch_size:
    raise ValueError(f"num_rows must be in [1, batch_size={batch_size}], got {num_rows}")
  return min(batch_size, max(MIN_ROWS, 1 << (num_rows - 1).bit_length()))


def num_batches(num_examples: int, batch_size: int) -> int:
  """Batches of at most `batch_size` rows that hold `num_examples` examples."""
  return -(-num_examples // batch_size)


def inference_plan(lengths: Sequence[int], batch_size: int, *, sort_by_length: bool = True,
                   bucket_rows: bool = False) -> list[np.ndarray]:
  """The example indices of each inference batch: int64 arrays, `FILLER_INDEX` for filler rows.

  Args:
    lengths: [n] tokens of each example.
    batch_size: real rows per batch (the last batch holds the n mod batch_size left).
    sort_by_length: the examples in order of length (ties in their original order: little
      padding); else in their original order.
    bucket_rows: the last batch completed with filler rows to `row_bucket(rows, batch_size)` rows
      only (a short list encodes a small batch); else every batch has batch_size rows.

  Returns:
    num_batches(n, batch_size) arrays; every example appears in exactly one of them.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  order = (np.argsort(np.asarray(lengths, np.int64), kind="stable") if sort_by_length
           else np.arange(len(lengths)))
  plan = []
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    size = row_bucket(len(rows), batch_size) if bucket_rows else batch_size
    plan.append(np.concatenate([rows, np.full(size - len(rows), FILLER_INDEX)]).astype(np.int64))
  return plan


def inference_batches(examples: Sequence[np.ndarray], batch_size: int, *, pad_multiple: int,
                      sort_by_length: bool = True, bucket_rows: bool = False
                      ) -> Iterator[dict[str, np.ndarray]]:
  """Padded batches (`make_batch` dicts: tokens [b,t], lengths [b], index [b], valid [b]) of n
  encoded sentences (`<sos> .. <eos>`) for inference: the batches of `inference_plan`, each padded
  to a multiple of `pad_multiple` tokens; "index" is each row's position in `examples`.

  Every example appears in exactly one batch; `num_batches(n, batch_size)` batches (none for
  n = 0). `evaluation_pipeline(examples, b)` yields the same batches as
  `inference_batches(examples, b, pad_multiple=8)`, as a resumable grain pipeline.

  >>> three_words = [np.array([1, 5, 6, 7, 2])] * 300
  >>> [b["tokens"].shape for b in inference_batches(three_words, 128, pad_multiple=16,
  ...                                               bucket_rows=True)]
  [(128, 16), (128, 16), (64, 16)]
  """
  lengths = [len(x) for x in examples]
  for indices in inference_plan(lengths, batch_size, sort_by_length=sort_by_length,
                                bucket_rows=bucket_rows):
    yield make_batch(examples, indices, pad_multiple=pad_multiple)


def bucket_by_length(order: np.ndarray, lengths: np.ndarray, chunk_size: int) -> np.ndarray:
  """Sorts `order` by length within consecutive chunks of `chunk_size` (stable)."""
  bucketed = order.copy()
  for start in range(0, len(order), chunk_size):
    chunk = order[start:start + chunk_size]
    bucketed[start:start + chunk_size] = chunk[np.argsort(lengths[chunk], kind="stable")]
  return bucketed


class BatchPipeline:
  """Epochs of padded batches over encoded examples, for one process of a data-parallel job.

  With `shuffle=True`, an epoch is a permutation drawn from (seed, epoch) only; with
  `bucket_batches > 0` it is sorted by length within chunks of that many batches (less padding) and
  the batches are then put in random order; with `drop_remainder` the few examples left over are
  dropped (a different random few each epoch). With `shuffle=False` the examples come in their
  original order (or, with `sort_by_length`, in order of length), bucketing is not applied, and
  the last partial batch is completed with filler rows: every example appears exactly once
  (evaluation).

  Every process builds the same global batches and yields its own contiguous block of rows.
  """

  def __init__(self, examples: Sequence[np.ndarray], *, global_batch_size: int, seed: int,
               shuffle: bool, bucket_batches: int = 50, drop_remainder: bool,
               pad_multiple: int = 8, process_index: int = 0, process_count: int = 1,
               read_options: grain.ReadOptions | None = None, sort_by_length: bool = False):
    """See the class docstring.

    Args:
      examples: n int arrays, each `<sos> .. <eos>` (e.g. `Encoded.ids`).
      global_batch_size: rows per global batch B (all processes together).
      seed: non-negative seed of the shuffling.
      shuffle: random order per epoch (training) or original order (evaluation).
      bucket_batches: sort by length within chunks of this many batches; 0 disables bucketing.
      drop_remainder: drop the n mod B examples that do not fill a batch (shuffle=True only).
      pad_multiple: padded lengths are multiples of this.
      process_index: this process, in [0, process_count).
      process_count: processes sharing each global batch; must divide B.
      read_options: grain threading / prefetch options (default 2 threads, 8 batches ahead).
      sort_by_length: unshuffled only: the examples in order of length (ties in their original
        order), so each batch pads little (evaluation: on PTB test in batches of 50, 58 % of the
        padded positions are padding in the original order, 17 % sorted). Every batch carries the
        examples' indices ("index"), so per-example results go back in place.
    """
    if not examples:
      raise ValueError("BatchPipeline needs at least one example")
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(f"global_batch_size={global_batch_size} must be positive and divisible by "
                       f"process_count={process_count}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    if seed < 0 or bucket_batches < 0 or pad_multiple < 1:
      raise ValueError("seed and bucket_batches must be >= 0 and pad_multiple >= 1")
    if drop_remainder and not shuffle:
      raise ValueError("drop_remainder=True with shuffle=False would silently skip evaluation "
                       "examples; an unshuffled pipeline always covers every example")
    if sort_by_length and shuffle:
      raise ValueError("sort_by_length is for unshuffled (evaluation) pipelines; a shuffled one "
                       "buckets by length with bucket_batches")
    if drop_remainder and len(examples) < global_batch_size:
      raise ValueError(f"{len(examples)} examples do not fill one batch of {global_batch_size}")
    self.examples = examples
    self.lengths = np.asarray([len(e) for e in examples], dtype=np.int64)
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.shuffle = shuffle
    self.bucket_batches = bucket_batches
    self.sort_by_length = sort_by_length
    self.drop_remainder = drop_remainder
    self.pad_multiple = pad_multiple
    self.process_index = process_index
    self.process_count = process_count
    self.read_options = read_options or grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)

  @property
  def num_examples(self) -> int:
    return len(self.examples)

  @property
  def local_batch_size(self) -> int:
    """Rows this process yields per batch: global_batch_size / process_count."""
    return self.global_batch_size // self.process_count

  @property
  def num_batches(self) -> int:
    """Batches per epoch."""
    full, partial = divmod(self.num_examples, self.global_batch_size)
    return full if self.drop_remainder else full + bool(partial)

  def epoch_plan(self, epoch: int) -> np.ndarray:
    """Example indices of every global batch of an epoch: int64 [num_batches, B], -1 = filler."""
    if epoch < 0:
      raise ValueError(f"epoch must be >= 0, got {epoch}")
    batch = self.global_batch_size
    if not self.shuffle:
      return np.stack(inference_plan(self.lengths, batch, sort_by_length=self.sort_by_length))
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(self.num_examples)
    if self.drop_remainder:
      order = order[:self.num_batches * batch]
    if self.bucket_batches:
      order = bucket_by_length(order, self.lengths, self.bucket_batches * batch)
    num_filler = self.num_batches * batch - len(order)
    plan = np.concatenate([order, np.full(num_filler, FILLER_INDEX)]).reshape(-1, batch)
    if self.bucket_batches:
      plan = plan[rng.permutation(len(plan))]
    return plan

  def _local_rows(self) -> slice:
    start = self.process_index * self.local_batch_size
    return slice(start, start + self.local_batch_size)

  def dataset(self, epoch: int) -> grain.IterDataset:
    """The grain dataset of this process's batches for one epoch."""
    build = functools.partial(make_batch, self.examples, pad_multiple=self.pad_multiple,
                              rows=self._local_rows())
    return (grain.MapDataset.source(self.epoch_plan(epoch))
            .map(build)
            .to_iter_dataset(self.read_options))

  def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
    """A grain iterator (with `get_state` / `set_state`) over this process's batches of an epoch."""
    return iter(self.dataset(epoch))

  def _fingerprint(self) -> dict[str, Any]:
    """What a saved state must match: the configuration and a digest of the example lengths."""
    return {
        "format": _STATE_FORMAT,
        "num_examples": self.num_examples,
        "lengths_sha256": hashlib.sha256(self.lengths.tobytes()).hexdigest()[:16],
        "global_batch_size": self.global_batch_size,
        "seed": self.seed,
        "shuffle": self.shuffle,
        "bucket_batches": self.bucket_batches,
        "drop_remainder": self.drop_remainder,
        "pad_multiple": self.pad_multiple,
        "process_index": self.process_index,
        "process_count": self.process_count,
        **({"sort_by_length": True} if self.sort_by_length else {}),
    }

  def state(self, iterator: Any, epoch: int) -> dict[str, Any]:
    """A JSON-serialisable position: the epoch, the grain iterator state and the configuration."""
    return {"epoch": int(epoch), "iterator": iterator.get_state(), "pipeline": self._fingerprint()}

  def restore(self, state: dict[str, Any]) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """An iterator positioned where `state` was taken (it yields the rest of that epoch).

    Raises:
      ValueError: the state was saved by a pipeline with another configuration or other examples.
    """
    expected = self._fingerprint()
    saved = state.get("pipeline", {})
    # The position is one of global batches, the same on every process; only process 0 writes
    # the state, so every other process restores the state it wrote.
    differences = {k: (saved.get(k), v) for k, v in expected.items()
                   if saved.get(k) != v and k != "process_index"}
    if differences:
      raise ValueError(
          f"pipeline state does not match this pipeline (saved, current): {differences}")
    epoch = int(state["epoch"])
    iterator = self.epoch(epoch)
    iterator.set_state(state["iterator"])
    return iterator, epoch


def evaluation_pipeline(examples: Sequence[np.ndarray], batch_size: int, *,
                        seed: int = 0) -> BatchPipeline:
  """`inference_batches(examples, batch_size, pad_multiple=8)` as a resumable grain pipeline: each
  example exactly once, in order of length (little padding), the last batch completed with filler
  rows; results go back by the batches' "index"."""
  return BatchPipeline(examples, global_batch_size=batch_size, seed=seed, shuffle=False,
                       bucket_batches=0, drop_remainder=False, sort_by_length=True)
