"""The built-in corpus: a seeded, unambiguous probabilistic grammar with a latent topic.

Generative story for one sentence x:

  topic ~ Categorical(topic_probs)
  S      -> CLAUSE                         with prob 1 - p_second_clause
          | CLAUSE CONJ CLAUSE             with prob p_second_clause
  CLAUSE -> NP VERB_T NP                   p_transitive * (1 - p_pp)
          | NP VERB_T NP PP                p_transitive * p_pp
          | NP VERB_I ADV                  (1 - p_transitive) * p_adverb
          | NP VERB_I PP                   (1 - p_transitive) * (1 - p_adverb)
  NP     -> DET NOUN | DET ADJ NOUN        (1 - p_adjective) | p_adjective
  PP     -> PREP NP

Every word class (DET, ADJ, NOUN, VERB_T, VERB_I, PREP, ADV, CONJ) draws its word from a
topic-dependent distribution. Word classes have disjoint word sets, so a left-to-right reading of
the string fixes its derivation: each sentence has exactly one derivation (the same one under every
topic), and p(x) = sum_k p(topic = k) p(x | topic = k) is exact. Words carry a "home" topic
(weight `home_weight` there, `other_weight` elsewhere) or are generic (weight 1 everywhere), so a
single word only hints at the topic while a whole sentence usually reveals it.

Uses: the default corpus for a first run without data, a truth test for NLL bounds (a bound on
held-out NLL cannot fall below the entropy estimate `entropy_per_sentence` beyond its standard
error), and a known latent factor (the topic) that a non-collapsed posterior should make
recoverable from z.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from typing import Iterator, Mapping, NamedTuple, Sequence

import numpy as np

WORD_CLASSES: tuple[str, ...] = ("det", "adj", "noun", "verb_t", "verb_i", "prep", "adv", "conj")
DEFAULT_SPLIT_SIZES: Mapping[str, int] = {"train": 10_000, "valid": 1_000, "test": 1_000}


@dataclasses.dataclass(frozen=True)
class WordClass:
  """One word class: its words and their unnormalised weight under each topic.

  Attributes:
    name: one of `WORD_CLASSES`.
    words: the n words of the class (disjoint from every other class).
    weights: [num_topics][n] positive weights; row k is normalised into p(word | class, topic k).
  """

  name: str
  words: tuple[str, ...]
  weights: tuple[tuple[float, ...], ...]

  def log_probs(self) -> np.ndarray:
    """float64 [num_topics, n]: log p(word | class, topic)."""
    weights = np.asarray(self.weights, dtype=np.float64)
    return np.log(weights) - np.log(weights.sum(axis=1, keepdims=True))


def topic_word_class(name: str, generic: Sequence[str], by_topic: Sequence[Sequence[str]], *,
                     home_weight: float, other_weight: float) -> WordClass:
  """A word class where `by_topic[k]` words favour topic k and `generic` words are neutral.

  Args:
    name: the class name.
    generic: words with weight 1 under every topic.
    by_topic: K lists; word w in list k has weight `home_weight` under topic k and `other_weight`
      under every other topic.
    home_weight: weight of a word under its own topic.
    other_weight: weight of a word under another topic (> 0 keeps every sentence possible under
      every topic, so the topic is only partly identifiable from one word).
  """
  num_topics = len(by_topic)
  words = tuple(generic) + tuple(w for topic_words in by_topic for w in topic_words)
  home = [None] * len(generic) + [k for k, topic_words in enumerate(by_topic) for _ in topic_words]
  weights = tuple(
      tuple(1.0 if h is None else (home_weight if h == k else other_weight) for h in home)
      for k in range(num_topics))
  return WordClass(name=name, words=words, weights=weights)


class _Derivation(NamedTuple):
  """A parsed or generated sentence: its words and log p(words | topic) for each topic [K]."""
  words: tuple[str, ...]
  log_prob_given_topic: np.ndarray


@dataclasses.dataclass(frozen=True)
class TopicGrammar:
  """A topic-conditioned, non-recursive, unambiguous probabilistic grammar (see module docstring).

  Attributes:
    topic_names: K names.
    topic_probs: K prior probabilities p(topic), summing to 1.
    word_classes: one `WordClass` per name in `WORD_CLASSES`, with disjoint word sets.
    p_second_clause: probability of `CLAUSE CONJ CLAUSE` (else a single clause).
    p_transitive: probability that a clause has a transitive verb and an object.
    p_pp: probability of a prepositional phrase after a transitive clause's object.
    p_adverb: probability that an intransitive verb takes an adverb (else a prepositional phrase).
    p_adjective: probability that a noun phrase has an adjective.
  """

  topic_names: tuple[str, ...]
  topic_probs: tuple[float, ...]
  word_classes: tuple[WordClass, ...]
  p_second_clause: float = 0.3
  p_transitive: float = 0.6
  p_pp: float = 0.4
  p_adverb: float = 0.5
  p_adjective: float = 0.4

  def __post_init__(self):
    num_topics = len(self.topic_names)
    if len(self.topic_probs) != num_topics or not math.isclose(sum(self.topic_probs), 1.0):
      raise ValueError("topic_probs must hold one probability per topic and sum to 1")
    if tuple(c.name for c in self.word_classes) != WORD_CLASSES:
      raise ValueError(f"word_classes must be named {WORD_CLASSES} in this order")
    seen: dict[str, str] = {}
    for word_class in self.word_classes:
      if len(word_class.weights) != num_topics:
        raise ValueError(f"class {word_class.name}: need weights for {num_topics} topics")
      for row in word_class.weights:
        if len(row) != len(word_class.words) or min(row) <= 0:
          raise ValueError(f"class {word_class.name}: weights must be positive, one per word")
      for word in word_class.words:
        if word in seen or not word or len(word.split()) != 1:
          raise ValueError(f"word {word!r} of class {word_class.name} is blank or repeated "
                           f"(also in {seen.get(word)}); classes must be disjoint")
        seen[word] = word_class.name
    for name in ("p_second_clause", "p_transitive", "p_pp", "p_adverb", "p_adjective"):
      if not 0.0 < getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in (0, 1)")

  # ---------------------------------------------------------------- definitions

  @classmethod
  def default(cls) -> TopicGrammar:
    """Four topics (sea, farm, city, sky), 178 words, sentences of 4 to 23 words.

    A topic word is 30 times likelier under its own topic than under another (3.0 vs 0.1), so
    the Bayes classifier p(topic | sentence) recovers the topic of about 97% of sentences (about
    91% with the earlier 3.0 vs 0.3, too close to the 0.9 a working quickstart model's linear
    probe must reach); a single word still only hints at it.
    """
    by_topic = dict(home_weight=3.0, other_weight=0.1)
    classes = (
        topic_word_class("det", ["the", "a", "one", "every", "that"], [[], [], [], []], **by_topic),
        topic_word_class(
            "adj", ["old", "young", "small", "big", "quiet", "bright"],
            [["salty", "wet", "stormy", "blue", "deep", "calm", "sandy", "rusty"],
             ["green", "muddy", "golden", "ripe", "wooden", "fat", "hungry", "dusty"],
             ["busy", "noisy", "tall", "crowded", "modern", "expensive", "narrow", "grey"],
             ["distant", "dark", "silver", "frozen", "cold", "shining", "strange", "empty"]],
            **by_topic),
        topic_word_class(
            "noun", ["man", "woman", "child", "dog", "friend", "stranger", "boy", "girl"],
            [["sailor", "captain", "ship", "boat", "whale", "gull", "fisherman", "island", "wave",
              "harbor", "net", "crab", "anchor", "shell"],
             ["farmer", "cow", "horse", "goat", "barn", "field", "tractor", "pig", "hen", "orchard",
              "sheep", "fence", "plough", "shepherd"],
             ["driver", "taxi", "banker", "clerk", "shop", "tower", "street", "bus", "market",
              "waiter", "lawyer", "bridge", "office", "train"],
             ["pilot", "astronaut", "star", "planet", "moon", "comet", "rocket", "telescope",
              "satellite", "cloud", "balloon", "astronomer", "eagle", "storm"]],
            **by_topic),
        topic_word_class(
            "verb_t", ["sees", "likes", "finds", "follows", "watches", "remembers"],
            [["catches", "mends", "sails", "anchors", "rows"],
             ["feeds", "milks", "plants", "harvests", "ploughs"],
             ["sells", "buys", "drives", "repairs", "visits"],
             ["orbits", "launches", "observes", "circles", "photographs"]],
            **by_topic),
        topic_word_class(
            "verb_i", ["waits", "sleeps", "smiles", "laughs", "rests"],
            [["swims", "drifts", "floats", "dives"], ["grazes", "grows", "digs", "ripens"],
             ["hurries", "shops", "commutes", "honks"], ["flies", "glows", "spins", "soars"]],
            **by_topic),
        topic_word_class(
            "prep", ["near", "behind", "beside", "under", "above", "across", "inside", "past"],
            [[], [], [], []], **by_topic),
        topic_word_class(
            "adv", ["slowly", "quickly", "quietly", "today", "again", "often", "alone", "happily"],
            [["offshore"], ["outdoors"], ["downtown"], ["overhead"]], **by_topic),
        topic_word_class("conj", ["and", "but", "while", "because"], [[], [], [], []],
                         **by_topic),
    )
    return cls(topic_names=("sea", "farm", "city", "sky"), topic_probs=(0.25,) * 4,
               word_classes=classes)

  @classmethod
  def tiny(cls) -> TopicGrammar:
    """Two topics (told apart by the noun only), one or two words per class: 10,100 sentences."""
    by_topic = dict(home_weight=4.0, other_weight=0.5)
    classes = (
        topic_word_class("det", ["the"], [[], []], **by_topic),
        topic_word_class("adj", ["red"], [[], []], **by_topic),
        topic_word_class("noun", [], [["cat"], ["dog"]], **by_topic),
        topic_word_class("verb_t", ["sees"], [[], []], **by_topic),
        topic_word_class("verb_i", ["runs"], [[], []], **by_topic),
        topic_word_class("prep", ["near"], [[], []], **by_topic),
        topic_word_class("adv", ["today"], [[], []], **by_topic),
        topic_word_class("conj", ["and"], [[], []], **by_topic),
    )
    return cls(topic_names=("cats", "dogs"), topic_probs=(0.3, 0.7), word_classes=classes,
               p_second_clause=0.2, p_transitive=0.45, p_pp=0.3, p_adverb=0.6, p_adjective=0.35)

  # ---------------------------------------------------------------- derived tables

  @property
  def num_topics(self) -> int:
    return len(self.topic_names)

  @property
  def words(self) -> tuple[str, ...]:
    """Every word of the language, class by class."""
    return tuple(word for word_class in self.word_classes for word in word_class.words)

  @functools.cached_property
  def _word_table(self) -> dict[str, tuple[str, np.ndarray]]:
    """word -> (class name, log p(word | class, topic) [K])."""
    table = {}
    for word_class in self.word_classes:
      log_probs = word_class.log_probs()
      for index, word in enumerate(word_class.words):
        table[word] = (word_class.name, log_probs[:, index])
    return table

  @functools.cached_property
  def _class_cdfs(self) -> dict[str, tuple[tuple[str, ...], np.ndarray, np.ndarray]]:
    """class -> (words, cumulative probs [K, n], log probs [K, n]) for sampling."""
    return {c.name: (c.words, np.cumsum(np.exp(c.log_probs()), axis=1), c.log_probs())
            for c in self.word_classes}

  @functools.cached_property
  def _log_topic_probs(self) -> np.ndarray:
    return np.log(np.asarray(self.topic_probs, dtype=np.float64))

  def _log_choice(self, p: float, taken: bool) -> float:
    return math.log(p if taken else 1.0 - p)

  # ---------------------------------------------------------------- scoring

  def _parse(self, sentence: str | Sequence[str]) -> _Derivation | None:
    """The unique derivation of a sentence, or None if it is not in the language."""
    words = tuple(sentence.split() if isinstance(sentence, str) else sentence)
    table = self._word_table
    if any(w not in table for w in words):
      return None
    classes = [table[w][0] for w in words]
    total = np.zeros(self.num_topics)
    position = 0

    def take(expected: str) -> bool:
      nonlocal position, total
      if position < len(words) and classes[position] == expected:
        total = total + table[words[position]][1]
        position += 1
        return True
      return False

    def next_is(name: str) -> bool:
      return position < len(words) and classes[position] == name

    def noun_phrase() -> bool:
      nonlocal total
      if not take("det"):
        return False
      has_adjective = take("adj")
      total = total + self._log_choice(self.p_adjective, has_adjective)
      return take("noun")

    def clause() -> bool:
      nonlocal total
      if not noun_phrase():
        return False
      if take("verb_t"):
        total = total + math.log(self.p_transitive)
        if not noun_phrase():
          return False
        has_pp = next_is("prep")
        total = total + self._log_choice(self.p_pp, has_pp)
        return (take("prep") and noun_phrase()) if has_pp else True
      if take("verb_i"):
        total = total + math.log(1.0 - self.p_transitive)
        has_adverb = next_is("adv")
        total = total + self._log_choice(self.p_adverb, has_adverb)
        return take("adv") if has_adverb else (take("prep") and noun_phrase())
      return False

    if not clause():
      return None
    has_second = next_is("conj")
    total = total + self._log_choice(self.p_second_clause, has_second)
    if has_second and not (take("conj") and clause()):
      return None
    if position != len(words):
      return None
    return _Derivation(words, total)

  def log_prob_given_topic(self, sentence: str | Sequence[str]) -> np.ndarray:
    """float64 [K]: log p(x | topic = k); all -inf for a string outside the language."""
    derivation = self._parse(sentence)
    if derivation is None:
      return np.full(self.num_topics, -np.inf)
    return derivation.log_prob_given_topic

  def log_prob(self, sentence: str | Sequence[str]) -> float:
    """Exact log p(x) with the topic summed out (nats); -inf outside the language."""
    joint = self._log_topic_probs + self.log_prob_given_topic(sentence)
    return float(_logsumexp(joint))

  def topic_log_posterior(self, sentence: str | Sequence[str]) -> np.ndarray:
    """float64 [K]: log p(topic | x), the Bayes-optimal classifier; NaN outside the language."""
    joint = self._log_topic_probs + self.log_prob_given_topic(sentence)
    normaliser = _logsumexp(joint)
    if not np.isfinite(normaliser):
      return np.full(self.num_topics, np.nan)
    return joint - normaliser

  # ---------------------------------------------------------------- sampling

  def _sample_word(self, rng: np.random.Generator, name: str, topic: int,
                   total: np.ndarray) -> str:
    words, cdfs, log_probs = self._class_cdfs[name]
    index = min(int(np.searchsorted(cdfs[topic], rng.random() * cdfs[topic, -1], side="right")),
                len(words) - 1)
    total += log_probs[:, index]
    return words[index]

  def _sample_choice(self, rng: np.random.Generator, p: float, total: np.ndarray) -> bool:
    taken = bool(rng.random() < p)
    total += self._log_choice(p, taken)
    return taken

  def _sample_noun_phrase(self, rng: np.random.Generator, topic: int,
                          total: np.ndarray) -> list[str]:
    words = [self._sample_word(rng, "det", topic, total)]
    if self._sample_choice(rng, self.p_adjective, total):
      words.append(self._sample_word(rng, "adj", topic, total))
    words.append(self._sample_word(rng, "noun", topic, total))
    return words

  def _sample_clause(self, rng: np.random.Generator, topic: int,
                     total: np.ndarray) -> list[str]:
    words = self._sample_noun_phrase(rng, topic, total)
    if self._sample_choice(rng, self.p_transitive, total):
      words.append(self._sample_word(rng, "verb_t", topic, total))
      words += self._sample_noun_phrase(rng, topic, total)
      with_pp = self._sample_choice(rng, self.p_pp, total)
    else:
      words.append(self._sample_word(rng, "verb_i", topic, total))
      with_pp = not self._sample_choice(rng, self.p_adverb, total)
      if not with_pp:
        words.append(self._sample_word(rng, "adv", topic, total))
    if with_pp:
      words.append(self._sample_word(rng, "prep", topic, total))
      words += self._sample_noun_phrase(rng, topic, total)
    return words

  def _sample_one(self, rng: np.random.Generator, topic: int) -> _Derivation:
    total = np.zeros(self.num_topics)
    words = self._sample_clause(rng, topic, total)
    if self._sample_choice(rng, self.p_second_clause, total):
      words.append(self._sample_word(rng, "conj", topic, total))
      words += self._sample_clause(rng, topic, total)
    return _Derivation(tuple(words), total)

  def sample(self, rng: np.random.Generator,
             n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Draws n sentences.

    The log-probabilities are accumulated along each sampled derivation for every topic (not by
    re-parsing), then the topic is summed out.

    Args:
      rng: the random generator (the only source of randomness).
      n: number of sentences.

    Returns:
      sentences: n space-joined strings.
      topics: int32 [n], the topic each sentence was drawn from.
      log_probs: float64 [n], exact log p(x) (nats) with the topic summed out.
    """
    topics = rng.choice(self.num_topics, size=n, p=np.asarray(self.topic_probs))
    sentences, log_probs = [], np.empty(n, dtype=np.float64)
    for i, topic in enumerate(topics):
      derivation = self._sample_one(rng, int(topic))
      sentences.append(" ".join(derivation.words))
      log_probs[i] = _logsumexp(self._log_topic_probs + derivation.log_prob_given_topic)
    return sentences, topics.astype(np.int32), log_probs

  # ---------------------------------------------------------------- enumeration

  def language_size(self) -> int:
    """Number of distinct sentences of the (finite) language."""
    sizes = {c.name: len(c.words) for c in self.word_classes}
    noun_phrases = sizes["det"] * (1 + sizes["adj"]) * sizes["noun"]
    clauses = noun_phrases * (
        sizes["verb_t"] * noun_phrases * (1 + sizes["prep"] * noun_phrases)
        + sizes["verb_i"] * (sizes["adv"] + sizes["prep"] * noun_phrases))
    return clauses + clauses * sizes["conj"] * clauses

  def _enumerate_noun_phrases(self) -> Iterator[_Derivation]:
    table = self._word_table
    adjectives = [None, *self.word_classes[1].words]
    for det in self.word_classes[0].words:
      for adj in adjectives:
        for noun in self.word_classes[2].words:
          total = (table[det][1] + table[noun][1]
                   + self._log_choice(self.p_adjective, adj is not None))
          words = (det, noun) if adj is None else (det, adj, noun)
          yield _Derivation(words, total if adj is None else total + table[adj][1])

  def _enumerate_clauses(self) -> Iterator[_Derivation]:
    table = self._word_table
    noun_phrases = list(self._enumerate_noun_phrases())
    prep_phrases = [_Derivation((prep, *np_.words), table[prep][1] + np_.log_prob_given_topic)
                    for prep in self.word_classes[5].words for np_ in noun_phrases]
    log_t, log_i = math.log(self.p_transitive), math.log(1.0 - self.p_transitive)
    for subject in noun_phrases:
      for verb in self.word_classes[3].words:
        head = subject.log_prob_given_topic + table[verb][1] + log_t
        for obj in noun_phrases:
          base = head + obj.log_prob_given_topic
          yield _Derivation((*subject.words, verb, *obj.words), base + math.log(1 - self.p_pp))
          for pp in prep_phrases:
            yield _Derivation((*subject.words, verb, *obj.words, *pp.words),
                              base + math.log(self.p_pp) + pp.log_prob_given_topic)
      for verb in self.word_classes[4].words:
        head = subject.log_prob_given_topic + table[verb][1] + log_i
        for adv in self.word_classes[6].words:
          yield _Derivation((*subject.words, verb, adv),
                            head + math.log(self.p_adverb) + table[adv][1])
        for pp in prep_phrases:
          yield _Derivation((*subject.words, verb, *pp.words),
                            head + math.log(1 - self.p_adverb) + pp.log_prob_given_topic)

  def enumerate_sentences(self, max_count: int = 100_000) -> list[tuple[str, float]]:
    """Every sentence of the language with its probability p(x) (topic summed out).

    Args:
      max_count: refuse (ValueError) languages with more sentences than this.

    Returns:
      (sentence, p(x)) pairs; the probabilities sum to 1.
    """
    size = self.language_size()
    if size > max_count:
      raise ValueError(f"the language has {size} sentences, more than max_count={max_count}")
    clauses = list(self._enumerate_clauses())
    log_one, log_two = math.log(1 - self.p_second_clause), math.log(self.p_second_clause)
    result = []
    for first in clauses:
      result.append(self._finish(first.words, first.log_prob_given_topic + log_one))
    conj_table = self._word_table
    for first in clauses:
      for conj in self.word_classes[7].words:
        head = first.log_prob_given_topic + log_two + conj_table[conj][1]
        for second in clauses:
          result.append(self._finish((*first.words, conj, *second.words),
                                     head + second.log_prob_given_topic))
    return result

  def _finish(self, words: tuple[str, ...], log_prob_given_topic: np.ndarray) -> tuple[str, float]:
    return " ".join(words), float(np.exp(_logsumexp(self._log_topic_probs + log_prob_given_topic)))


def _logsumexp(values: np.ndarray) -> float:
  """log sum exp over a 1-D array; -inf if every entry is -inf."""
  peak = np.max(values)
  if not np.isfinite(peak):
    return float(peak)
  return float(peak + np.log(np.sum(np.exp(values - peak))))


# -------------------------------------------------------------------- corpus


@dataclasses.dataclass
class BuiltinSplit:
  """One split of the built-in corpus.

  Attributes:
    lines: n sentences (space-joined words).
    topics: int32 [n], the latent topic of each sentence.
    log_probs: float64 [n], exact log p(x) in nats, topic summed out.
  """

  lines: list[str]
  topics: np.ndarray
  log_probs: np.ndarray


def split_rng(seed: int, split: str) -> np.random.Generator:
  """An independent generator per (seed, split name): no split depends on the others' sizes."""
  return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])


def builtin_corpus(seed: int = 0, sizes: Mapping[str, int] | None = None,
                   grammar: TopicGrammar | None = None) -> dict[str, BuiltinSplit]:
  """Samples the built-in corpus: deterministic for a seed.

  Args:
    seed: the corpus seed.
    sizes: sentences per split (default train 10,000, valid 1,000, test 1,000).
    grammar: the grammar (default `TopicGrammar.default()`).

  Returns:
    split name -> `BuiltinSplit`.
  """
  grammar = grammar or TopicGrammar.default()
  sizes = DEFAULT_SPLIT_SIZES if sizes is None else sizes
  corpus = {}
  for split, size in sizes.items():
    lines, topics, log_probs = grammar.sample(split_rng(seed, split), size)
    corpus[split] = BuiltinSplit(lines=lines, topics=topics, log_probs=log_probs)
  return corpus


class EntropyEstimate(NamedTuple):
  """Monte Carlo estimate of the sentence entropy H[p(x)] in nats, with its standard error."""
  nats: float
  stderr: float


def entropy_per_sentence(log_probs: np.ndarray) -> EntropyEstimate:
  """mean(-log p(x)) over samples x ~ p, an unbiased estimate of H[p(x)] (nats per sentence).

  Args:
    log_probs: [n] exact log p(x) of n independent samples.

  Returns:
    The estimate and its standard error std(-log p) / sqrt(n) (0 when n == 1).
  """
  nll = -np.asarray(log_probs, dtype=np.float64).reshape(-1)
  if nll.size == 0:
    raise ValueError("need at least one log-probability")
  stderr = float(nll.std(ddof=1) / math.sqrt(nll.size)) if nll.size > 1 else 0.0
  return EntropyEstimate(float(nll.mean()), stderr)
