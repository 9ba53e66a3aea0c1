"""QA by latent distance (seed 000 §4.6) and frozen-encoder classification (seed 004 §4.2).

Notation: n items / sentences, K candidates or Monte Carlo draws, d latent, C classes.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import downstream
from mimtext.evaluation import qa
from mimtext.evaluation import runner
from mimtext.models import sentence_ae

REPO = pathlib.Path(__file__).resolve().parents[1]
UNK = vocab_lib.UNK_ID


def _data_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("MIMTEXT_DATA") or REPO.parent / "shared" / "data")


def _corpus_dir(name: str, filename: str) -> pathlib.Path:
  path = _data_dir() / name
  if not (path / filename).is_file():
    pytest.skip(f"{path / filename} not found (set MIMTEXT_DATA)")
  return path


HAND_LINES = [
    "what is a cat ? a small furry animal .",
    "no question mark here at all",
    "? starts with a question mark",
    "how tall is it ? very tall ? yes",
    "ends with a question ?",
    "where is paris ? in france .",
    "who wrote hamlet ? shakespeare did",
    "why is the sky blue ? light scattering",
]


# ----------------------------------------------------------------------------- ranking set


def test_split_question_at_first_question_mark():
  assert qa.split_question("how tall is it ? very tall ? yes".split()) == (
      ["how", "tall", "is", "it", "?"], ["very", "tall", "?", "yes"])
  assert qa.split_question("no mark".split()) is None
  assert qa.split_question("? only after".split()) is None
  assert qa.split_question("ends here ?".split()) is None


def test_build_ranking_set_hand_lines():
  items = qa.build_ranking_set(HAND_LINES, num_negatives=3, seed=0)
  assert [item.source_line for item in items] == [0, 3, 5, 6, 7]
  for item in items:
    question, answer = qa.split_question(HAND_LINES[item.source_line].split())
    assert list(item.question) == question
    assert len(item.candidates) == 4
    assert list(item.candidates[item.true_index]) == answer
    negatives = [c for k, c in enumerate(item.candidates) if k != item.true_index]
    assert all(list(c) != answer for c in negatives)
    assert len(set(item.candidates)) == 4
  again = qa.build_ranking_set(HAND_LINES, num_negatives=3, seed=0)
  assert again == items
  others = [qa.build_ranking_set(HAND_LINES, num_negatives=3, seed=s) for s in range(1, 6)]
  assert any(o != items for o in others)
  assert len(qa.build_ranking_set(HAND_LINES, max_questions=2)) == 2


def test_build_ranking_set_negatives_skip_duplicate_answers():
  lines = ["q one ? same answer", "q two ? same answer", "q three ? other", "q four ? more",
           "q five ? else"]
  for seed in range(10):
    for item in qa.build_ranking_set(lines, num_negatives=2, seed=seed):
      true = item.candidates[item.true_index]
      assert sum(c == true for c in item.candidates) == 1
  with pytest.raises(ValueError):
    qa.build_ranking_set(lines[:3], num_negatives=3)


def test_build_ranking_set_max_len_truncates():
  items = qa.build_ranking_set(HAND_LINES, num_negatives=3, max_len=7)
  assert items
  for item in items:
    assert all(len(item.question) + len(c) <= 7 for c in item.candidates)
    assert len(item.question) <= 6


def test_build_ranking_set_real_yahoo():
  path = _corpus_dir("yahoo", "valid.txt")
  lines = qa.read_yahoo_lines(path, "valid")[:200]
  items = qa.build_ranking_set(lines, seed=0, max_len=60)
  assert 150 <= len(items) <= 200
  for item in items:
    assert item.question[-1] == "?" and "?" not in item.question[:-1]
    assert len(item.candidates) == 4 and 0 <= item.true_index < 4
    true = item.candidates[item.true_index]
    full_answer = lines[item.source_line].split()[len(item.question):]
    assert list(true) == full_answer[:60 - len(item.question)]
    assert all(c != true for k, c in enumerate(item.candidates) if k != item.true_index)
    assert all(len(item.question) + len(c) <= 60 for c in item.candidates)
  positions = np.bincount([item.true_index for item in items], minlength=4)
  assert positions.min() > 20                      # the true answer is not always in one slot


# ----------------------------------------------------------------------------- metrics


def test_precision_and_mrr_hand_made():
  ranks = np.array([1, 2, 1, 4])
  assert qa.precision_at_1(ranks) == pytest.approx(0.5)
  assert qa.mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 1 + 0.25) / 4)
  report = qa.qa_report(ranks, 4)
  assert report["num_items"] == 4
  assert report["chance_p_at_1"] == pytest.approx(0.25)
  assert report["chance_mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
  with pytest.raises(ValueError):
    qa.qa_report(np.array([1, 5]), 4)


def test_true_answer_ranks_and_ties():
  scores = [np.array([0.3, 0.1, 0.2]), np.array([0.5, 0.4, 0.9])]
  np.testing.assert_array_equal(qa.true_answer_ranks(scores, [1, 2]), [1, 3])
  tied = [np.zeros(4)] * 2000
  ranks = qa.true_answer_ranks(tied, [0] * 2000, seed=0)
  assert set(np.unique(ranks)) == {1, 2, 3, 4}
  assert qa.precision_at_1(ranks) == pytest.approx(0.25, abs=0.04)


def test_qa_scores_elementwise_std():
  rng = np.random.default_rng(0)
  z_unk, z, std = rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), rng.uniform(0.1, 2, (3, 5))
  expected = np.linalg.norm((z_unk - z) / std, axis=-1)
  np.testing.assert_allclose(qa.qa_scores(z_unk, std, z), expected)
  np.testing.assert_allclose(qa.qa_scores(z_unk, std, z, normalise=False),
                             np.linalg.norm(z_unk - z, axis=-1))


# ----------------------------------------------------------------------------- rank_candidates

TRUE_TOKEN = 7


def _fake_encode(word_ids):
  """z = (count of <unk> or TRUE_TOKEN, count of answer ids ≥ 20), σ = 1: a prompt Q <unk>^L and
  the true pair Q A (A = TRUE_TOKEN^L) share z = (L, 0); a negative pair is at (0, L)."""
  mean = np.array([[np.sum((w == UNK) | (w == TRUE_TOKEN)), np.sum(w >= 20)] for w in word_ids],
                  np.float64)
  std = np.ones_like(mean)
  return mean, std


def _planted_items(n: int = 6, true_token: int = TRUE_TOKEN):
  rng = np.random.default_rng(1)
  items = []
  for i in range(n):
    length = int(rng.integers(2, 6))
    true = np.full(length, true_token, np.int32)
    negatives = [np.full(length, 20 + j, np.int32) for j in range(3)]
    t = i % 4
    candidates = tuple(negatives[:t] + [true] + negatives[t:])
    items.append(qa.RankingItem(np.array([10, 11, 5], np.int32), candidates, t, i))
  return items


def test_rank_candidates_planted_nearest():
  items = _planted_items()
  ranks = qa.rank_candidates(_fake_encode, items, unk_id=UNK)
  np.testing.assert_array_equal(ranks, np.ones(len(items)))
  report = qa.evaluate_qa(_fake_encode, items, unk_id=UNK)
  assert report["p_at_1"] == 1.0 and report["mrr"] == 1.0
  # The true answer planted farthest: every negative (token 7) is closer to the <unk> prompt.
  inverted = [item._replace(candidates=tuple(
      np.full(len(c), 30 if k == item.true_index else TRUE_TOKEN, np.int32)
      for k, c in enumerate(item.candidates))) for item in items]
  inverted_ranks = qa.rank_candidates(_fake_encode, inverted, unk_id=UNK)
  assert np.all(inverted_ranks > 1)


def test_rank_candidates_uses_std_of_prompt():
  items = _planted_items()

  def encode(word_ids):
    mean, std = _fake_encode(word_ids)
    # The true pairs move by 10 along dimension 1, where every σ is 100: divided by σ they stay
    # nearest (0.1 vs ≥ 2 for the negatives); undivided, every negative (distance L√2 ≤
    # 5√2 < 10) is nearer.
    mean[:, 1] += 10.0 * np.array([np.all(w[3:] == TRUE_TOKEN) for w in word_ids])
    std[:, 1] = 100.0
    return mean, std

  assert np.all(qa.rank_candidates(encode, items, unk_id=UNK) == 1)
  assert np.all(qa.rank_candidates(encode, items, unk_id=UNK, normalise=False) > 1)


def test_ranking_inputs_unk_prompt_matches_answer_length():
  item = qa.RankingItem(np.array([4, 5], np.int32),
                        (np.array([8, 9, 10], np.int32), np.array([11], np.int32),
                         np.array([12, 13, 14], np.int32)), 0, 0)
  pairs, prompts, prompt_of = qa.ranking_inputs([item], unk_id=UNK)
  np.testing.assert_array_equal(pairs[1], [4, 5, 11])
  assert prompt_of == [[0, 1, 0]]
  np.testing.assert_array_equal(prompts[0], [4, 5, UNK, UNK, UNK])
  np.testing.assert_array_equal(prompts[1], [4, 5, UNK])


def test_answer_prompts_and_codes():
  questions = [np.array([4, 5], np.int32), np.array([6], np.int32)]
  prompts = qa.answer_prompts(questions, (5, 10, 15), unk_id=UNK)
  assert [len(p) for p in prompts] == [7, 12, 17, 6, 11, 16]
  np.testing.assert_array_equal(prompts[4], [6] + [UNK] * 10)
  codes = qa.answer_codes(_fake_encode, questions, (5, 10, 15), unk_id=UNK)
  assert codes.shape == (2, 3, 2)
  np.testing.assert_array_equal(codes[:, :, 0], [[5, 10, 15], [5, 10, 15]])


# ----------------------------------------------------------------------------- tiny real encoder


@pytest.fixture(scope="module")
def tiny_run():
  vocab = vocab_lib.Vocabulary.build(["what is a cat ? a small animal", "where is paris ? france"])
  cfg = sentence_ae.ModelConfig(vocab_size=vocab.size, embed_dim=8, hidden_dim=16, latent_dim=4)
  params = sentence_ae.init_params(jax.random.PRNGKey(0), cfg)
  return runner.Run("", ml_collections.ConfigDict(), vocab, cfg, params, 0)


def test_encoder_fn_matches_unbatched_encode(tiny_run):
  encode = qa.encoder_fn(tiny_run, batch_size=4, pad_multiple=8)
  items = qa.encode_items(qa.build_ranking_set(HAND_LINES, num_negatives=2, seed=3),
                          tiny_run.vocab)
  word_ids = [np.concatenate([item.question, item.candidates[0]]) for item in items]
  mean, std = encode(word_ids)
  assert mean.shape == std.shape == (len(word_ids), 4)
  row = np.concatenate([[vocab_lib.SOS_ID], word_ids[2], [vocab_lib.EOS_ID]])[None]
  post = sentence_ae.encode(tiny_run.params, jnp.asarray(row), jnp.asarray([row.shape[1]]),
                            tiny_run.model_cfg)
  np.testing.assert_allclose(mean[2], np.asarray(post.mean[0]), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(std[2], np.exp(0.5 * np.asarray(post.log_var[0])), rtol=1e-4)
  report = qa.evaluate_qa(encode, items, unk_id=UNK, key=jax.random.PRNGKey(0))
  assert report["num_items"] == len(items) and report["sampled_z"]
  assert 0.0 <= report["p_at_1"] <= 1.0


def test_sampled_qa_draws_z_by_the_latent_family(tiny_run):
  """With a key, z is drawn by the run's family: for an HSVAE head with q(γ|x) near 1, the spike
  (z near 0) rather than N(μ, σ²); a plain (mean, std) function is read as a Gaussian q."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(tiny_run.model_cfg, posterior="hsvae")
  params = sentence_ae.init_params(jax.random.PRNGKey(0), cfg)
  params["to_mean"]["w"] = params["to_mean"]["w"] * 6.0
  params["to_beta_a"]["b"] = params["to_beta_a"]["b"] + 8.0
  params["to_beta_b"]["b"] = params["to_beta_b"]["b"] - 20.0
  run = dataclasses.replace(tiny_run, model_cfg=cfg, params=params)
  encode = qa.encoder_fn(run, batch_size=4, pad_multiple=8)
  items = qa.encode_items(qa.build_ranking_set(HAND_LINES, num_negatives=2, seed=3), run.vocab)
  word_ids = [np.concatenate([item.question, item.candidates[0]]) for item in items]
  code, _, post, objective = qa._encode(encode, word_ids)
  assert objective is None                      # a stand-in run: the head's family (HSVAE)
  key = jax.random.PRNGKey(1)
  z = qa._draw(key, code, post, objective)
  assert np.abs(z).max() < 0.5 < np.abs(post.mean).max()
  np.testing.assert_array_equal(z, np.asarray(downstream.sample_z(key, post, 1)[0]))
  assert qa.evaluate_qa(encode, items, unk_id=UNK, key=key)["sampled_z"]
  mean, std = np.full((3, 2), 2.0, np.float32), np.full((3, 2), 0.5, np.float32)
  _, _, gaussian, _ = qa._encode(lambda rows: (mean, std), [None] * 3)
  np.testing.assert_array_equal(qa._draw(key, mean, gaussian, None),
                                mean + 0.5 * np.asarray(jax.random.normal(key, (1, 3, 2)))[0])


# ----------------------------------------------------------------------------- classification


def _gaussian_codes(n: int, num_classes: int, d: int, seed: int):
  """Separable codes: class c has mean 4·e_c (d ≥ C), posterior σ = 0.3."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(num_classes, size=n).astype(np.int32)
  centres = 4.0 * np.eye(num_classes, d)
  mean = (centres[labels] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
  log_var = np.full((n, d), 2 * np.log(0.3), np.float32)
  return sentence_ae.Posterior(mean, log_var, log_var), labels


@pytest.fixture(scope="module")
def gaussian_set():
  return _gaussian_codes(500, 3, 4, seed=0)


def test_classifier_separable_codes(gaussian_set):
  post, labels = gaussian_set
  report = downstream.classify_report(post, labels, epochs=15, batch_size=32)
  assert report["accuracy"] > 0.95
  assert report["num_train"] == 400 and report["num_test"] == 100 and report["num_classes"] == 3
  assert report["majority_rate"] < 0.5


def test_classifier_shuffled_labels_near_chance(gaussian_set):
  post, labels = gaussian_set
  shuffled = np.random.default_rng(5).permutation(labels)
  report = downstream.classify_report(post, shuffled, epochs=15, batch_size=32)
  assert report["accuracy"] < 0.5


def test_mc_averaging_at_test_time(gaussian_set):
  post, labels = gaussian_set
  fitted = downstream.train_classifier(post, labels, 3, key=jax.random.PRNGKey(1), epochs=2,
                                       batch_size=50, num_samples=1, objective="mean_loss")
  assert fitted.epoch_losses.shape == (2,)
  rows = downstream.take_rows(post, np.arange(7))
  key = jax.random.PRNGKey(2)
  for k in (1, 5):
    proba = downstream.predict_proba(fitted.params, rows, key=key, num_samples=k, batch_size=3)
    assert proba.shape == (7, 3)
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
  # (1/K) Σ_k softmax(f(z_k)) with the same draws as predict_proba's first batch.
  zs = downstream.sample_z(jax.random.fold_in(key, 0), downstream.take_rows(rows, np.arange(3)), 5)
  manual = jax.nn.softmax(downstream.classifier_logits(fitted.params, zs), -1).mean(0)
  proba = downstream.predict_proba(fitted.params, rows, key=key, num_samples=5, batch_size=3)
  np.testing.assert_allclose(proba[:3], np.asarray(manual), rtol=1e-5, atol=1e-6)


def test_classification_loss_objectives():
  params = downstream.init_classifier(jax.random.PRNGKey(0), 2, 3)
  zs = jax.random.normal(jax.random.PRNGKey(1), (4, 5, 2))
  labels = jnp.array([0, 1, 2, 0, 1])
  log_p = np.asarray(jax.nn.log_softmax(downstream.classifier_logits(params, zs), -1))
  picked = log_p[:, np.arange(5), np.asarray(labels)]                   # [K,b]
  marginal = -np.mean(np.log(np.mean(np.exp(picked), axis=0)))
  np.testing.assert_allclose(downstream.classification_loss(params, zs, labels, "marginal"),
                             marginal, rtol=1e-5)
  np.testing.assert_allclose(downstream.classification_loss(params, zs, labels, "mean_loss"),
                             -picked.mean(), rtol=1e-5)
  assert marginal <= -picked.mean() + 1e-6                             # Jensen


def test_sample_z_gaussian_and_hsvae():
  n, d = 200, 3
  mean = np.full((n, d), 2.0, np.float32)
  log_var = np.full((n, d), np.log(0.25), np.float32)
  zs = np.asarray(downstream.sample_z(jax.random.PRNGKey(0),
                                      sentence_ae.Posterior(mean, log_var, log_var), 5))
  assert zs.shape == (5, n, d)
  assert abs(zs.mean() - 2.0) < 0.05 and abs(zs.std() - 0.5) < 0.05
  # γ ≈ 1 (spike probability): every z near 0; γ ≈ 0: the slab N(2, 0.5²).
  on = sentence_ae.Posterior(mean, log_var, log_var, np.full((n, d), 50.0, np.float32),
                             np.full((n, d), 0.01, np.float32))
  off = on._replace(beta_a=on.beta_b, beta_b=on.beta_a)
  z_on = np.asarray(downstream.sample_z(jax.random.PRNGKey(1), on, 5))
  z_off = np.asarray(downstream.sample_z(jax.random.PRNGKey(1), off, 5))
  assert np.abs(z_on).max() < 0.5
  assert abs(z_off.mean() - 2.0) < 0.05


def test_split_probe_sets_real_dbpedia_labels():
  path = _corpus_dir("dbpedia", "test.labels.txt")
  labels = np.loadtxt(path / "test.labels.txt", dtype=np.int64)
  train, test = downstream.split_probe_sets(len(labels), seed=0)
  assert len(train) == 11_200 and len(test) == 2_800
  assert np.intersect1d(train, test).size == 0
  np.testing.assert_array_equal(np.union1d(train, test), np.arange(len(labels)))
  assert np.bincount(labels[test], minlength=14).min() > 100      # shuffled, not class blocks
  again, _ = downstream.split_probe_sets(len(labels), seed=0)
  other, _ = downstream.split_probe_sets(len(labels), seed=1)
  np.testing.assert_array_equal(train, again)
  assert not np.array_equal(train, other)


def test_per_class_mean_vs_numpy():
  rng = np.random.default_rng(0)
  values, labels = rng.normal(size=(50, 6)), rng.integers(4, size=50)
  labels[labels == 2] = 1                                          # class 2 empty
  got = downstream.per_class_mean(values, labels, 4)
  for c in (0, 1, 3):
    np.testing.assert_allclose(got[c], values[labels == c].mean(0))
  assert np.all(np.isnan(got[2]))


def test_gamma_class_matrix_binarises():
  a = np.array([[3.0, 1.0], [1.0, 3.0], [3.0, 3.0]])
  b = np.array([[1.0, 3.0], [3.0, 1.0], [1.0, 1.0]])
  got = downstream.gamma_class_matrix(a, b, np.array([0, 0, 1]), 2)
  np.testing.assert_allclose(got, [[0.5, 0.5], [1.0, 1.0]])
