"""Adversarial evaluation of imputations (seed 001 §5, Table 4): can a classifier tell true
sentence endings from imputed ones?

Two discriminators are trained on pairs (a true sequence, label 1; its imputed counterpart,
label 0) and scored on held-out pairs, the pair split keeping both members of a pair on the same
side: (a) a bag-of-unigrams logistic regression (`probe.fit_linear_probe`, L-BFGS on
standardised counts), (b) a GRU that reads the sequence and predicts from its last state, trained
with Adam, early-stopped on a development split (seed 001: an LSTM, 80/10/10 split, early
stopping). The sequences may be the endings alone or the completed sentences
(`imputation.completed_sentences`; seed 001's classifiers read whole sentences).

Reported per classifier: its held-out error 1 − accuracy (0.5: indistinguishable; 0: always told
apart) and seed 001's "adversarial error", the gap accuracy − 0.5 between the attained and the
ideal accuracy (Table 4 lists it in %, lower is better). Because true and imputed members of a
pair are both held out, identical sets give an error of exactly 0.5: a classifier's answer is the
same for both members of every pair.

Notation: n pairs, t tokens, v vocabulary, c unigram features (ids seen in training), e embedding,
h hidden.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimtext import nn
from mimtext.evaluation import probe

Array = jax.Array


def split_pairs(num_pairs: int, *, test_fraction: float, dev_fraction: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A random split of pair indices 0..n−1 into (train, dev, test); test and dev take
  round(fraction · n) pairs (test at least 1), train keeps at least 1."""
  if not 0.0 < test_fraction < 1.0 or not 0.0 <= dev_fraction < 1.0:
    raise ValueError(f"need 0 < test_fraction < 1 and 0 <= dev_fraction < 1, got "
                     f"{test_fraction}, {dev_fraction}")
  num_test = max(1, int(round(test_fraction * num_pairs)))
  num_dev = int(round(dev_fraction * num_pairs))
  if num_pairs - num_test - num_dev < 1:
    raise ValueError(f"{num_pairs} pairs leave no training pair ({num_test} test, {num_dev} dev)")
  order = np.random.default_rng(seed).permutation(num_pairs)
  return order[num_test + num_dev:], order[num_test:num_test + num_dev], order[:num_test]


def labelled(true_seqs: Sequence[np.ndarray], imputed_seqs: Sequence[np.ndarray],
             pairs: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
  """The sequences of the given pairs, true ones (label 1) then imputed ones (label 0)."""
  seqs = [np.asarray(true_seqs[i]) for i in pairs] + [np.asarray(imputed_seqs[i]) for i in pairs]
  return seqs, np.concatenate([np.ones(len(pairs), np.int32), np.zeros(len(pairs), np.int32)])


def unigram_counts(seqs: Sequence[np.ndarray], columns: np.ndarray) -> np.ndarray:
  """Bag-of-unigrams counts [n,c]: columns [v] maps an id to its feature column, −1 = ignored."""
  out = np.zeros((len(seqs), max(int(columns.max()) + 1, 1)), np.float32)
  for row, seq in enumerate(seqs):
    cols = columns[np.asarray(seq, np.int64)]
    np.add.at(out[row], cols[cols >= 0], 1.0)
  return out


def unigram_classifier_accuracy(train_seqs, train_labels, test_seqs, test_labels, *,
                                vocab_size: int, l2: float = 1e-2) -> float:
  """Held-out accuracy of a bag-of-unigrams logistic regression over the ids seen in training."""
  seen = np.unique(np.concatenate([np.asarray(s, np.int64) for s in train_seqs] + [[0]]))
  columns = np.full(vocab_size, -1, np.int64)
  columns[seen] = np.arange(len(seen))
  # Unused columns up to a multiple of 128 (all zero: no effect on the fit) keep the compiled
  # shapes few.
  width = -(-len(seen) // 128) * 128
  features = lambda seqs: np.pad(unigram_counts(seqs, columns), ((0, 0), (0, width - len(seen))))
  fitted = probe.fit_linear_probe(features(train_seqs), train_labels, l2=l2)
  return fitted.accuracy(features(test_seqs), test_labels)


def init_rnn_classifier(key: Array, vocab_size: int, embed_dim: int, hidden_dim: int) -> dict:
  """Embedding [v,e], GRU e → h and a logistic output h → 1."""
  k_embed, k_rnn, k_out = jax.random.split(key, 3)
  return {"embed": nn.init_embedding(k_embed, vocab_size, embed_dim),
          "rnn": nn.init_rnn(k_rnn, "gru", embed_dim, hidden_dim),
          "out": nn.init_dense(k_out, hidden_dim, 1)}


def rnn_classifier_logits(params: dict, ids: Array, lengths: Array) -> Array:
  """Logit of "true" from the GRU state after the last token: ids [n,t], lengths [n] → [n]."""
  mask = nn.sequence_mask(lengths, ids.shape[1])
  _, last = nn.rnn(params["rnn"], "gru", nn.embed(params["embed"], ids), mask)
  return nn.dense(params["out"], last)[:, 0]


_rnn_logits = jax.jit(rnn_classifier_logits)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _train_epoch(params, opt_state, ids, lengths, labels, weights, key, learning_rate, *,
                 batch_size: int):
  """One shuffled pass of Adam over rows [N,t] (N a multiple of batch_size; weight 0 = filler)."""
  tx = optax.adam(learning_rate)
  order = jax.random.permutation(key, ids.shape[0]).reshape(-1, batch_size)

  def loss_fn(p, rows):
    logits = rnn_classifier_logits(p, ids[rows], lengths[rows])
    losses = optax.sigmoid_binary_cross_entropy(logits, labels[rows].astype(jnp.float32))
    return jnp.sum(losses * weights[rows]) / jnp.maximum(jnp.sum(weights[rows]), 1.0)

  def step(carry, rows):
    p, state = carry
    loss, grads = jax.value_and_grad(loss_fn)(p, rows)
    updates, state = tx.update(grads, state, p)
    return (optax.apply_updates(p, updates), state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
  return params, opt_state, losses.mean()


def _padded(seqs: Sequence[np.ndarray], num_rows: int, multiple: int = 8):
  """ids [N,t] (t a multiple of `multiple`), lengths [N], rows past len(seqs) empty."""
  t = max([len(s) for s in seqs] + [1])
  t = -(-t // multiple) * multiple
  ids = np.zeros((num_rows, t), np.int32)
  lengths = np.zeros(num_rows, np.int32)
  for row, seq in enumerate(seqs):
    ids[row, :len(seq)] = seq
    lengths[row] = len(seq)
  return ids, lengths


def _accuracy(params, seqs, labels) -> float:
  """Accuracy of the GRU classifier; rows padded to a multiple of 64 (fewer compiled shapes)."""
  ids, lengths = _padded(seqs, -(-len(seqs) // 64) * 64)
  logits = np.asarray(_rnn_logits(params, jnp.asarray(ids), jnp.asarray(lengths)))[:len(seqs)]
  return float(np.mean((logits > 0) == (np.asarray(labels) == 1)))


def rnn_classifier_accuracy(train_seqs, train_labels, dev_seqs, dev_labels, test_seqs,
                            test_labels, *, vocab_size: int, seed: int = 0, epochs: int = 10,
                            embed_dim: int = 32, hidden_dim: int = 64, batch_size: int = 32,
                            learning_rate: float = 1e-2) -> tuple[float, int]:
  """Held-out accuracy of a GRU classifier trained with Adam for `epochs` passes, keeping the
  epoch of best dev accuracy (the earliest on ties; the last epoch without dev data), and that
  epoch (1-based)."""
  key = jax.random.PRNGKey(seed)
  params = init_rnn_classifier(jax.random.fold_in(key, 0), vocab_size, embed_dim, hidden_dim)
  opt_state = optax.adam(learning_rate).init(params)
  num_rows = -(-len(train_seqs) // batch_size) * batch_size
  ids, lengths = _padded(train_seqs, num_rows)
  labels = np.zeros(num_rows, np.int32)
  labels[:len(train_labels)] = train_labels
  weights = (np.arange(num_rows) < len(train_seqs)).astype(np.float32)
  data = tuple(jnp.asarray(a) for a in (ids, lengths, labels, weights))
  best, best_accuracy, best_epoch = params, -1.0, epochs
  for epoch in range(1, epochs + 1):
    params, opt_state, _ = _train_epoch(params, opt_state, *data, jax.random.fold_in(key, epoch),
                                        jnp.float32(learning_rate), batch_size=batch_size)
    if len(dev_seqs):
      accuracy = _accuracy(params, dev_seqs, dev_labels)
      if accuracy > best_accuracy:
        best, best_accuracy, best_epoch = params, accuracy, epoch
    else:
      best = params
  return _accuracy(best, test_seqs, test_labels), best_epoch


def adversarial_error(true_endings: Sequence[np.ndarray], imputed_endings: Sequence[np.ndarray],
                      *, vocab_size: int, seed: int = 0, test_fraction: float = 0.3,
                      dev_fraction: float = 0.1, rnn_epochs: int = 10, rnn_embed_dim: int = 32,
                      rnn_hidden_dim: int = 64, batch_size: int = 32,
                      learning_rate: float = 1e-2, unigram_l2: float = 1e-2) -> dict:
  """Held-out errors of the two discriminators on pairs (true_endings[i], imputed_endings[i]).

  Returns unigram_error / rnn_error (1 − accuracy; 0.5 = indistinguishable), unigram_gap /
  rnn_gap (accuracy − 0.5, seed 001 Table 4's adversarial error as a fraction), the pair counts
  of the split and the GRU's early-stopping epoch.
  """
  if len(true_endings) != len(imputed_endings):
    raise ValueError(f"{len(true_endings)} true but {len(imputed_endings)} imputed sequences")
  for seq in list(true_endings) + list(imputed_endings):
    if len(seq) and not 0 <= int(np.min(seq)) <= int(np.max(seq)) < vocab_size:
      raise ValueError(f"ids must be in [0, {vocab_size}), got {np.asarray(seq)}")
  train, dev, test = split_pairs(len(true_endings), test_fraction=test_fraction,
                                 dev_fraction=dev_fraction, seed=seed)
  train_seqs, train_labels = labelled(true_endings, imputed_endings, train)
  dev_seqs, dev_labels = labelled(true_endings, imputed_endings, dev)
  test_seqs, test_labels = labelled(true_endings, imputed_endings, test)
  unigram = unigram_classifier_accuracy(train_seqs, train_labels, test_seqs, test_labels,
                                        vocab_size=vocab_size, l2=unigram_l2)
  rnn, epoch = rnn_classifier_accuracy(
      train_seqs, train_labels, dev_seqs, dev_labels, test_seqs, test_labels,
      vocab_size=vocab_size, seed=seed, epochs=rnn_epochs, embed_dim=rnn_embed_dim,
      hidden_dim=rnn_hidden_dim, batch_size=batch_size, learning_rate=learning_rate)
  return {"unigram_error": 1.0 - unigram, "rnn_error": 1.0 - rnn,
          "unigram_gap": unigram - 0.5, "rnn_gap": rnn - 0.5,
          "num_train_pairs": len(train), "num_dev_pairs": len(dev), "num_test_pairs": len(test),
          "rnn_best_epoch": epoch}
