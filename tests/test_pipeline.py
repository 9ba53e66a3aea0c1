"""Tests for mimtext.data.pipeline: encoding, layout, coverage, bucketing, resume, sharding."""

import json

import numpy as np
import pytest

from mimtext.data import pipeline
from mimtext.data.pipeline import BatchPipeline
from mimtext.data.vocab import EOS_ID, PAD_ID, SOS_ID, UNK_ID, Vocabulary


def _examples(n: int, seed: int = 0, max_words: int = 30) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [np.array([SOS_ID, *rng.integers(4, 50, size=rng.integers(1, max_words + 1)), EOS_ID],
                   dtype=np.int32) for _ in range(n)]


def _epoch(pipe: BatchPipeline, epoch: int = 0) -> list[dict]:
  return list(pipe.epoch(epoch))


def _real_indices(batches: list[dict]) -> np.ndarray:
  indices = np.concatenate([b["index"] for b in batches])
  return indices[indices >= 0]


def test_encode_lines_truncate_and_drop():
  vocab = Vocabulary.build(["a b c d e"])
  lines = ["a b", "a b c d e", "zz a"]
  truncated = pipeline.encode_lines(lines, vocab, max_len=3, overflow="truncate")
  assert truncated.num_truncated == 1 and truncated.num_dropped == 0
  assert truncated.ids[1].tolist() == [SOS_ID, *vocab.encode("a b c", False).tolist(), EOS_ID]
  assert truncated.ids[2].tolist() == [SOS_ID, UNK_ID, vocab.id("a"), EOS_ID]
  assert truncated.source_index.tolist() == [0, 1, 2]
  dropped = pipeline.encode_lines(lines, vocab, max_len=3, overflow="drop")
  assert dropped.num_dropped == 1 and dropped.source_index.tolist() == [0, 2]
  unlimited = pipeline.encode_lines(lines, vocab)
  assert unlimited.num_truncated == unlimited.num_dropped == 0 and len(unlimited.ids[1]) == 7


def test_batch_layout_and_padding():
  examples = _examples(10)
  pipe = BatchPipeline(examples, global_batch_size=4, seed=0, shuffle=False, drop_remainder=False)
  batches = _epoch(pipe)
  assert pipe.num_batches == len(batches) == 3
  for batch in batches:
    tokens, lengths = batch["tokens"], batch["lengths"]
    assert tokens.dtype == np.int32 and lengths.dtype == np.int32
    assert batch["index"].dtype == np.int32 and batch["valid"].dtype == np.float32
    assert tokens.shape[1] % 8 == 0 and tokens.shape[1] - 8 < lengths.max() <= tokens.shape[1]
    for row, index in enumerate(batch["index"]):
      expected = examples[index] if index >= 0 else np.array([SOS_ID, EOS_ID])
      assert lengths[row] == len(expected)
      np.testing.assert_array_equal(tokens[row, :lengths[row]], expected)
      assert np.all(tokens[row, lengths[row]:] == PAD_ID)
  last = batches[-1]
  assert last["index"].tolist() == [8, 9, -1, -1]
  assert last["valid"].tolist() == [1, 1, 0, 0] and last["lengths"][2:].tolist() == [2, 2]


@pytest.mark.parametrize("shuffle, drop_remainder", [(False, False), (True, False), (True, True)])
def test_every_example_once_per_epoch(shuffle, drop_remainder):
  examples = _examples(103)
  pipe = BatchPipeline(examples, global_batch_size=8, seed=1, shuffle=shuffle,
                       bucket_batches=3, drop_remainder=drop_remainder)
  for epoch in (0, 1):
    batches = _epoch(pipe, epoch)
    assert len(batches) == pipe.num_batches
    assert all(b["tokens"].shape[0] == 8 for b in batches)
    real = _real_indices(batches)
    assert len(real) == len(set(real.tolist()))
    if drop_remainder:
      assert len(real) == 96 and all(b["valid"].all() for b in batches)
    else:
      assert sorted(real.tolist()) == list(range(103))
    if not shuffle:
      assert real.tolist() == list(range(103))  # original order


def test_unshuffled_pipeline_refuses_to_drop():
  with pytest.raises(ValueError, match="drop_remainder"):
    BatchPipeline(_examples(5), global_batch_size=2, seed=0, shuffle=False, drop_remainder=True)


def test_sort_by_length_covers_every_example_once_in_order_of_length():
  examples = _examples(103, max_words=60)
  lengths = np.array([len(e) for e in examples])
  pipe = BatchPipeline(examples, global_batch_size=8, seed=0, shuffle=False,
                       drop_remainder=False, pad_multiple=1, sort_by_length=True)
  batches = _epoch(pipe)
  real = _real_indices(batches)
  assert sorted(real.tolist()) == list(range(103))
  assert np.all(np.diff(lengths[real]) >= 0)
  ties = real[lengths[real] == np.bincount(lengths).argmax()]
  assert np.all(np.diff(ties) > 0)                 # equal lengths keep their original order
  for batch in batches:                             # rows still hold the example they name
    for row, index in enumerate(batch["index"]):
      if index >= 0:
        np.testing.assert_array_equal(batch["tokens"][row, :batch["lengths"][row]],
                                      examples[index])
  unsorted = BatchPipeline(examples, global_batch_size=8, seed=0, shuffle=False,
                           drop_remainder=False, pad_multiple=1)
  padding = lambda p: sum(b["tokens"].size - b["lengths"].sum() for b in _epoch(p))
  assert padding(pipe) < 0.2 * padding(unsorted)
  with pytest.raises(ValueError, match="sort_by_length is for unshuffled"):
    BatchPipeline(examples, global_batch_size=8, seed=0, shuffle=True, drop_remainder=False,
                  sort_by_length=True)


def test_inference_batches_are_the_evaluation_pipelines_and_cover_every_example_once():
  """The one inference batcher: the evaluation pipeline's batches (sorted, full rows); in input
  order on request; with bucketed rows, the last batch padded to a power of two only."""
  examples = _examples(103, max_words=60)
  sorted_batches = list(pipeline.inference_batches(examples, 8, pad_multiple=8))
  evaluation = _epoch(pipeline.evaluation_pipeline(examples, 8))
  assert len(sorted_batches) == len(evaluation) == pipeline.num_batches(103, 8) == 13
  for got, want in zip(sorted_batches, evaluation):
    assert got.keys() == want.keys()
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])
  in_order = list(pipeline.inference_batches(examples, 8, pad_multiple=16, sort_by_length=False))
  assert _real_indices(in_order).tolist() == list(range(103))
  assert all(b["tokens"].shape[1] % 16 == 0 for b in in_order)
  bucketed = list(pipeline.inference_batches(examples, 48, pad_multiple=8, bucket_rows=True))
  assert [len(b["index"]) for b in bucketed] == [48, 48, 8]       # 103 = 48 + 48 + 7
  assert sorted(_real_indices(bucketed).tolist()) == list(range(103))
  assert list(pipeline.inference_batches([], 8, pad_multiple=8)) == []
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    list(pipeline.inference_batches(examples, 0, pad_multiple=8))


def test_bucketing_reduces_padding():
  examples = _examples(640, max_words=60)

  def padded_cells(bucket_batches):
    pipe = BatchPipeline(examples, global_batch_size=16, seed=0, shuffle=True,
                         bucket_batches=bucket_batches, drop_remainder=True, pad_multiple=1)
    return sum(b["tokens"].size - b["lengths"].sum() for b in _epoch(pipe))

  assert padded_cells(20) < 0.5 * padded_cells(0)


def test_order_is_deterministic_per_seed_and_epoch():
  examples = _examples(100)

  def order(seed, epoch):
    pipe = BatchPipeline(examples, global_batch_size=10, seed=seed, shuffle=True,
                         drop_remainder=True)
    return _real_indices(_epoch(pipe, epoch)).tolist()

  assert order(0, 0) == order(0, 0)
  assert order(0, 0) != order(0, 1)
  assert order(0, 0) != order(1, 0)


def test_state_restore_yields_the_remaining_batches():
  examples = _examples(90)
  pipe = BatchPipeline(examples, global_batch_size=8, seed=5, shuffle=True, bucket_batches=2,
                       drop_remainder=False)
  full = _epoch(pipe, 3)
  iterator = pipe.epoch(3)
  for _ in range(4):
    next(iterator)
  state = json.loads(json.dumps(pipe.state(iterator, 3)))
  fresh = BatchPipeline(examples, global_batch_size=8, seed=5, shuffle=True, bucket_batches=2,
                        drop_remainder=False)
  resumed, epoch = fresh.restore(state)
  assert epoch == 3
  rest = list(resumed)
  assert len(rest) == len(full) - 4
  for expected, got in zip(full[4:], rest):
    for key in expected:
      np.testing.assert_array_equal(expected[key], got[key])
  other = BatchPipeline(examples, global_batch_size=8, seed=6, shuffle=True, drop_remainder=False)
  with pytest.raises(ValueError, match="seed"):
    other.restore(state)


@pytest.mark.parametrize("shuffle", [False, True])
def test_process_shards_partition_each_global_batch(shuffle):
  examples = _examples(37)
  kwargs = dict(global_batch_size=8, seed=2, shuffle=shuffle, drop_remainder=False)
  whole = _epoch(BatchPipeline(examples, **kwargs))
  shards = [_epoch(BatchPipeline(examples, process_index=p, process_count=2, **kwargs))
            for p in range(2)]
  assert len(shards[0]) == len(shards[1]) == len(whole)
  for full, first, second in zip(whole, *shards):
    assert first["tokens"].shape == second["tokens"].shape == (4, full["tokens"].shape[1])
    for key in full:
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), full[key])
  with pytest.raises(ValueError, match="divisible"):
    BatchPipeline(examples, global_batch_size=7, seed=0, shuffle=False, drop_remainder=False,
                  process_count=2)


def test_every_process_restores_the_state_process_0_saved():
  """Only process 0 writes the data state of a multi-process run: process 1 restores from it and
  yields its own rows of the same remaining global batches."""
  examples = _examples(37)
  kwargs = dict(global_batch_size=8, seed=2, shuffle=True, drop_remainder=False,
                process_count=2)
  first = BatchPipeline(examples, process_index=0, **kwargs)
  iterator = first.epoch(1)
  next(iterator)
  state = json.loads(json.dumps(first.state(iterator, 1)))
  second = BatchPipeline(examples, process_index=1, **kwargs)
  resumed, epoch = second.restore(state)
  expected = _epoch(second, 1)[1:]
  got = list(resumed)
  assert epoch == 1 and len(got) == len(expected)
  for want, have in zip(expected, got):
    np.testing.assert_array_equal(want["index"], have["index"])
  with pytest.raises(ValueError, match="process_count"):
    BatchPipeline(examples, process_index=0, **{**kwargs, "process_count": 1}).restore(state)
