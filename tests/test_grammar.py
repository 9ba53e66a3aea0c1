"""Tests for mimtext.data.grammar: exactness, unambiguity, determinism, topic signal."""

import math

import numpy as np
import pytest

from mimtext.data import grammar as grammar_lib
from mimtext.data.grammar import TopicGrammar


@pytest.fixture(scope="module")
def tiny_language():
  return TopicGrammar.tiny().enumerate_sentences()


@pytest.fixture(scope="module")
def corpus():
  return grammar_lib.builtin_corpus(seed=0, sizes={"train": 3000, "valid": 1000})


def test_tiny_language_probabilities_sum_to_one(tiny_language):
  grammar = TopicGrammar.tiny()
  assert len(tiny_language) == grammar.language_size() == 10_100
  assert len({sentence for sentence, _ in tiny_language}) == len(tiny_language)
  assert math.fsum(p for _, p in tiny_language) == pytest.approx(1.0, abs=1e-9)


def test_every_enumerated_sentence_parses_to_its_probability(tiny_language):
  # One derivation per string: the parser's probability equals the enumerated derivation's.
  grammar = TopicGrammar.tiny()
  for sentence, p in tiny_language:
    assert grammar.log_prob(sentence) == pytest.approx(math.log(p), abs=1e-9), sentence


def test_tiny_sampling_frequencies_match_enumeration(tiny_language):
  grammar = TopicGrammar.tiny()
  sentences, _, log_probs = grammar.sample(np.random.default_rng(3), 20_000)
  probs = dict(tiny_language)
  top = sorted(tiny_language, key=lambda item: -item[1])[:5]
  for sentence, p in top:
    frequency = np.mean([s == sentence for s in sentences])
    assert abs(frequency - p) < 4 * math.sqrt(p * (1 - p) / len(sentences)) + 1e-3
  np.testing.assert_allclose(log_probs, [math.log(probs[s]) for s in sentences], atol=1e-9)


def test_sample_log_probs_match_parser(corpus):
  grammar = TopicGrammar.default()
  split = corpus["train"]
  parsed = np.array([grammar.log_prob(s) for s in split.lines[:1000]])
  np.testing.assert_allclose(parsed, split.log_probs[:1000], rtol=0, atol=1e-9)
  assert np.all(np.isfinite(split.log_probs)) and np.all(split.log_probs < 0)


def test_strings_outside_the_language(corpus):
  grammar = TopicGrammar.default()
  sentence = corpus["train"].lines[0]
  for bad in ["", "the", "the man", "man the sleeps today", sentence + " today",
              sentence + " and", "the man sleeps today xyzzy"]:
    assert grammar.log_prob(bad) == -math.inf, bad


def test_default_grammar_shape(corpus):
  grammar = TopicGrammar.default()
  assert grammar.num_topics == 4 and 150 <= len(grammar.words) <= 300
  lengths = np.array([len(s.split()) for s in corpus["train"].lines])
  assert lengths.min() >= 4 and lengths.max() <= 23 and 6 <= lengths.mean() <= 14
  with pytest.raises(ValueError, match="max_count"):
    grammar.enumerate_sentences(max_count=10_000)


def test_word_classes_must_be_disjoint():
  grammar = TopicGrammar.tiny()
  classes = list(grammar.word_classes)
  classes[6] = grammar_lib.topic_word_class("adv", ["cat"], [[], []], home_weight=1,
                                            other_weight=1)
  with pytest.raises(ValueError, match="disjoint"):
    TopicGrammar(grammar.topic_names, grammar.topic_probs, tuple(classes))


def test_builtin_corpus_is_deterministic_per_seed():
  sizes = {"train": 200, "valid": 50}
  a, b = grammar_lib.builtin_corpus(7, sizes), grammar_lib.builtin_corpus(7, sizes)
  c = grammar_lib.builtin_corpus(8, sizes)
  for split in sizes:
    assert a[split].lines == b[split].lines
    np.testing.assert_array_equal(a[split].topics, b[split].topics)
    np.testing.assert_array_equal(a[split].log_probs, b[split].log_probs)
  assert a["train"].lines != c["train"].lines
  assert a["train"].lines[:50] != a["valid"].lines
  # A split does not depend on the other splits' sizes.
  assert grammar_lib.builtin_corpus(7, {"valid": 50})["valid"].lines == a["valid"].lines


def test_topic_is_recoverable_from_bag_of_words(corpus):
  train, valid = corpus["train"], corpus["valid"]
  words = sorted({w for s in train.lines for w in s.split()})
  index = {w: i for i, w in enumerate(words)}

  def bag(lines):
    counts = np.zeros((len(lines), len(words)))
    for row, line in enumerate(lines):
      for w in line.split():
        if w in index:
          counts[row, index[w]] += 1
    return counts

  # Multinomial naive Bayes with add-one smoothing.
  x_train, x_valid = bag(train.lines), bag(valid.lines)
  word_counts = np.stack([x_train[train.topics == k].sum(0) for k in range(4)]) + 1.0
  log_word = np.log(word_counts / word_counts.sum(1, keepdims=True))
  predicted = np.argmax(x_valid @ log_word.T, axis=1)
  accuracy = np.mean(predicted == valid.topics)
  assert accuracy > 0.25 + 0.35, accuracy
  # ... and the exact posterior is at least as good (it is the Bayes classifier).
  grammar = TopicGrammar.default()
  bayes = np.mean([np.argmax(grammar.topic_log_posterior(s)) == k
                   for s, k in zip(valid.lines, valid.topics)])
  assert bayes >= accuracy - 0.02


def test_entropy_per_sentence():
  estimate = grammar_lib.entropy_per_sentence(np.log([0.5, 0.25, 0.25, 0.5]))
  assert estimate.nats == pytest.approx(np.mean(-np.log([0.5, 0.25, 0.25, 0.5])))
  assert estimate.stderr == pytest.approx(np.std(-np.log([0.5, 0.25, 0.25, 0.5]), ddof=1) / 2)


def test_entropy_estimate_matches_exact_entropy_of_tiny_language(tiny_language):
  exact = -math.fsum(p * math.log(p) for _, p in tiny_language)
  _, _, log_probs = TopicGrammar.tiny().sample(np.random.default_rng(0), 5000)
  estimate = grammar_lib.entropy_per_sentence(log_probs)
  assert abs(estimate.nats - exact) < 4 * estimate.stderr


def test_topic_is_recoverable_from_a_whole_sentence():
  """The Bayes rate of the topic on the built-in test split: the ceiling of a quickstart probe."""
  test = grammar_lib.builtin_corpus(0)["test"]
  grammar = TopicGrammar.default()
  bayes = np.mean([np.argmax(grammar.topic_log_posterior(s)) == k
                   for s, k in zip(test.lines, test.topics)])
  assert bayes >= 0.96, bayes
