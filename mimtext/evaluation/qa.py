"""Question answering by latent distance, without fine-tuning (seed 000 §4.6, appendix D.4).

Ranking (seed 000 §4.6). For a question Q_i and its candidate answers A_i^k, encode the pair
Q_i^k = Q_i A_i^k and the "unknown answer" prompt Q_i^{k,unk} = Q_i <unk>^{|A_i^k|} (the question
followed by as many `<unk>` as the answer has words), and score

  S_i^k = ‖ (z_i^{k,unk} − z_i^k) / σ_i^{k,unk} ‖₂,

σ^{k,unk} the posterior standard deviation of q(z | Q_i^{k,unk}), the division elementwise (the
paper calls S "similar to log q(z_i^k | Q_i^{unk}) but without the log standard deviation": that
is the Mahalanobis distance under the diagonal Gaussian, i.e. elementwise division, then the norm).
Candidates are ranked by ascending S; the AE comparison of the paper uses σ = 1 (`normalise=False`).
The paper samples z from both posteriors; `key=None` uses the posterior means instead.

The data set (our construction, NOT YahooCQA). YahooCQA (Tay et al. 2017) is not available
here, so `build_ranking_set` builds a ranking task from the Yahoo Answers documents of Yang et al.
2017 (`yahoo/{valid,test}.txt`, one "question answer" document per line): a document is split at
its first "?" token (question = the tokens up to and including that "?", answer = the rest); each
question gets its true answer plus `num_negatives` answers of other documents, drawn with a seeded
RNG. Unlike YahooCQA the negatives are random answers to other questions, not hand-picked
near-misses, so the task is easier and the numbers are not comparable with seed 000 Table 8.

Answer generation (seed 000 §4.6 last paragraph, D.4): `answer_prompts` appends 5 / 10 / 15
`<unk>` (short / medium / long answers) to a question and `answer_codes` returns the posterior
means of those prompts; the launch layer decodes them with `mimtext.models.decoding.greedy_decode`
(greedy, `<unk>` banned, the answer is what follows the first "?").

Notation: n items (questions), K candidates per item, m encoder inputs, d latent, P prompt
lengths. Id arrays here hold word ids only (no `<sos>` / `<eos>`); `encoder_fn` adds them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import jax
import numpy as np

from mimtext import special_tokens
from mimtext.data import text_files
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import downstream
from mimtext.evaluation import encoding
from mimtext.models import sentence_ae

if TYPE_CHECKING:
  from mimtext.evaluation import runner

QUESTION_MARK = "?"
DEFAULT_PAD_LENGTHS = (5, 10, 15)
# encode_fn: m word-id arrays → (mean [m,d], std [m,d]) of q(z|x). An encoder of a run
# (`encoder_fn`) also has `.posterior(word_ids) -> sentence_ae.Posterior` and `.objective`, so
# that z can be drawn by the run's latent family.
EncodeFn = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]]


class RankingItem(NamedTuple):
  """One question with K candidate answers (tokens as str, or word ids after `encode_items`).

  Attributes:
    question: the question's tokens, ending with "?".
    candidates: K answers; candidates[true_index] is the question's own answer.
    true_index: position of the true answer among the candidates.
    source_line: 0-based index of the document in the `lines` it was built from.
  """
  question: Sequence
  candidates: tuple[Sequence, ...]
  true_index: int
  source_line: int


# ----------------------------------------------------------------------------- ranking set


def split_question(tokens: Sequence[str]) -> tuple[list[str], list[str]] | None:
  """(question up to and including the first "?", answer after it), or None.

  None when there is no "?", nothing before it, or nothing after it (our construction, see the
  module docstring).
  """
  tokens = list(tokens)
  if QUESTION_MARK not in tokens:
    return None
  cut = tokens.index(QUESTION_MARK) + 1
  if cut < 2 or cut == len(tokens):
    return None
  return tokens[:cut], tokens[cut:]


def _qa_pairs(lines: Sequence[str], max_len: int | None, min_answer_len: int,
              tokenizer: str = vocab_lib.DEFAULT_TOKENIZER
              ) -> list[tuple[int, list[str], list[str]]]:
  """(line index, question, answer) of every line that splits and whose question fits max_len."""
  pairs = []
  for i, line in enumerate(lines):
    split = split_question(vocab_lib.tokenize(line, tokenizer))
    if split is None:
      continue
    question, answer = split
    if max_len is not None and len(question) + min_answer_len > max_len:
      continue
    pairs.append((i, question, answer))
  return pairs


def _draw_negatives(rng: np.random.Generator, own: int, answers: Sequence[tuple[str, ...]],
                    num: int, max_tries: int) -> list[int]:
  """`num` distinct pair indices ≠ own whose answers differ from answers[own] and each other."""
  chosen: list[int] = []
  seen = {answers[own]}
  for _ in range(max_tries):
    j = int(rng.integers(len(answers)))
    if j != own and answers[j] not in seen:
      chosen.append(j)
      seen.add(answers[j])
      if len(chosen) == num:
        return chosen
  raise ValueError(f"could not draw {num} distinct negative answers for document {own} in "
                   f"{max_tries} tries: the pool of {len(answers)} answers is too small")


def build_ranking_set(lines: Sequence[str], *, num_negatives: int = 3, seed: int = 0,
                      max_questions: int | None = None, max_len: int | None = None,
                      min_answer_len: int = 1,
                      tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> list[RankingItem]:
  """A question-answer ranking set from Yahoo documents (our construction, not YahooCQA).

  Every line with a "?" that has words before and after it gives a question (tokens up to and
  including the first "?") and its true answer (the rest). Each of the first `max_questions` such
  questions (all by default, in line order) gets `num_negatives` answers of other documents,
  drawn uniformly from all split documents with `np.random.default_rng(seed)` (never the same
  document, never an answer with the same text as the true one or as another negative), and the
  K = num_negatives + 1 candidates in a random order.

  With `max_len` (the model's maximum words per sentence) a question + answer must fit: questions
  longer than max_len − min_answer_len words are left out, and every candidate answer of a
  question of q words is truncated to its first max_len − q words.

  Args:
    lines: documents (e.g. `read_yahoo_lines`), split by `vocab_lib.tokenize(line, tokenizer)`.
    num_negatives: wrong answers per question (3: 4 candidates as in seed 000's YahooCQA, 3-5).
    tokenizer: the run's `data.tokenizer`; default "whitespace".

  Returns:
    n `RankingItem`s with str tokens (seed 000 §4.6).
  """
  if num_negatives < 1:
    raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
  if max_len is not None and max_len < min_answer_len + 2:
    raise ValueError(f"max_len={max_len} leaves no room for a question and an answer")
  vocab_lib.check_tokenizer(tokenizer)
  pairs = _qa_pairs(lines, max_len, min_answer_len, tokenizer)
  if len(pairs) < num_negatives + 1:
    raise ValueError(f"only {len(pairs)} documents split into question and answer; need at least "
                     f"{num_negatives + 1}")
  answers = [tuple(answer) for _, _, answer in pairs]
  rng = np.random.default_rng(seed)
  num_items = len(pairs) if max_questions is None else min(max_questions, len(pairs))
  items = []
  for own in range(num_items):
    line_index, question, _ = pairs[own]
    negatives = _draw_negatives(rng, own, answers, num_negatives, max_tries=100 * num_negatives)
    true_index = int(rng.integers(num_negatives + 1))
    order = negatives[:true_index] + [own] + negatives[true_index:]
    keep = None if max_len is None else max_len - len(question)
    candidates = tuple(answers[j][:keep] for j in order)
    items.append(RankingItem(tuple(question), candidates, true_index, line_index))
  return items


def read_yahoo_lines(data_dir: str | os.PathLike, split: str = "valid", *,
                     tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> list[str]:
  """The documents of `data_dir/{split}.txt` (e.g. `$MIMTEXT_DATA/yahoo`), normalised: the tokens
  of `vocab_lib.tokenize(line, tokenizer)` (the run's `data.tokenizer`) joined by single spaces."""
  lines = text_files.read_split_dir(data_dir, split).lines
  if tokenizer == vocab_lib.DEFAULT_TOKENIZER:
    return lines
  return [vocab_lib.normalize_line(line, tokenizer) for line in lines]


def encode_items(items: Sequence[RankingItem], vocab: vocab_lib.Vocabulary) -> list[RankingItem]:
  """The items with every token sequence mapped to int32 word ids (no <sos>/<eos>)."""
  enc = lambda tokens: vocab.encode(list(tokens), add_sos_eos=False)
  return [item._replace(question=enc(item.question),
                        candidates=tuple(enc(a) for a in item.candidates)) for item in items]


# ----------------------------------------------------------------------------- scoring


def qa_scores(z_unk: np.ndarray, std_unk: np.ndarray, z_pair: np.ndarray, *,
              normalise: bool = True) -> np.ndarray:
  """S = ‖(z_unk − z_pair) / σ_unk‖₂ over the last axis (seed 000 §4.6): [..., d] → [...].

  normalise=False is the paper's AE comparison (σ = 1): the plain Euclidean distance.
  """
  diff = np.asarray(z_unk, np.float64) - np.asarray(z_pair, np.float64)
  if normalise:
    diff = diff / np.asarray(std_unk, np.float64)
  return np.sqrt(np.sum(np.square(diff), axis=-1))


def true_answer_ranks(scores: Sequence[np.ndarray], true_index: Sequence[int], *,
                      seed: int = 0) -> np.ndarray:
  """1-based rank of the true answer per item under ascending scores: int [n].

  scores: n arrays [K_i]. Exact ties are broken uniformly at random (seeded), so a model that
  scores every candidate alike gets the chance level in expectation, neither 1 nor K.
  """
  rng = np.random.default_rng(seed)
  ranks = np.zeros(len(scores), np.int64)
  for i, (s, t) in enumerate(zip(scores, true_index)):
    s = np.asarray(s)
    ties = int(np.sum(s == s[t])) - 1
    ranks[i] = 1 + int(np.sum(s < s[t])) + (int(rng.integers(ties + 1)) if ties else 0)
  return ranks


def ranking_inputs(items: Sequence[RankingItem], *, unk_id: int = special_tokens.UNK_ID
                   ) -> tuple[list[np.ndarray], list[np.ndarray], list[list[int]]]:
  """Encoder inputs of every candidate: (pairs, unk prompts, prompt index per candidate).

  pairs: Σ K_i arrays Q_i A_i^k, item-major; prompts: Q_i <unk>^{|A_i^k|}, one per distinct answer
  length of an item; prompt_of[i][k]: the index in prompts of candidate k of item i.
  """
  pairs, prompts, prompt_of = [], [], []
  for item in items:
    question = np.asarray(item.question, np.int32)
    by_length: dict[int, int] = {}
    row = []
    for answer in item.candidates:
      answer = np.asarray(answer, np.int32)
      pairs.append(np.concatenate([question, answer]))
      if len(answer) not in by_length:
        by_length[len(answer)] = len(prompts)
        prompts.append(np.concatenate([question, np.full(len(answer), unk_id, np.int32)]))
      row.append(by_length[len(answer)])
    prompt_of.append(row)
  return pairs, prompts, prompt_of


def _encode(encode_fn: EncodeFn, rows: Sequence[np.ndarray]):
  """(code, std, posterior, objective config or None) of the rows under `encode_fn`; a plain
  (mean, std) function is read as the Gaussian posterior N(mean, diag std²)."""
  if hasattr(encode_fn, "posterior"):
    post = encode_fn.posterior(rows)
    return (*encoding.code_and_std(post), post, encode_fn.objective)
  mean, std = encode_fn(rows)
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return mean, std, encoding.gaussian_posterior(mean, std), None


def _draw(key: jax.Array | None, code: np.ndarray, post: sentence_ae.Posterior,
          objective) -> np.ndarray:
  """z = the code (key None) or one draw z ~ q(z|x) by the latent family of `objective`
  (`downstream.sample_z`; without one, the family the posterior's fields imply): [m,d]."""
  if key is None:
    return np.asarray(code)
  return np.asarray(downstream.sample_z(key, post, 1, cfg=objective)[0])


def rank_candidates(encode_fn: EncodeFn, items: Sequence[RankingItem], *,
                    unk_id: int = special_tokens.UNK_ID, key: jax.Array | None = None,
                    normalise: bool = True, seed: int = 0) -> np.ndarray:
  """1-based rank of each item's true answer by the latent-distance score (seed 000 §4.6): [n].

  Args:
    encode_fn: word-id arrays → (mean, std) [m,d] of q(z|x) (e.g. `encoder_fn(run)`).
    items: id items (`encode_items`).
    unk_id: the `<unk>` id that stands for the unknown answer words.
    key: sample z from both posteriors (as the paper), by the run's latent family; None uses the
      codes E_q[z|x].
    normalise: divide by σ_unk elementwise (False: σ = 1, the paper's AE comparison, and the
      choice for any model whose σ head is untrained).
    seed: tie-breaking (`true_answer_ranks`).
  """
  if not items:
    raise ValueError("no items to rank")
  pairs, prompts, prompt_of = ranking_inputs(items, unk_id=unk_id)
  pair_code, _, pair_post, objective = _encode(encode_fn, pairs)
  unk_code, unk_std, unk_post, _ = _encode(encode_fn, prompts)
  pair_key, unk_key = (None, None) if key is None else jax.random.split(key)
  z_pair = _draw(pair_key, pair_code, pair_post, objective)
  z_unk = _draw(unk_key, unk_code, unk_post, objective)
  scores, start = [], 0
  for item, row in zip(items, prompt_of):
    stop = start + len(item.candidates)
    scores.append(qa_scores(z_unk[row], np.asarray(unk_std)[row], z_pair[start:stop],
                            normalise=normalise))
    start = stop
  return true_answer_ranks(scores, [item.true_index for item in items], seed=seed)


# ----------------------------------------------------------------------------- metrics


def precision_at_1(ranks: np.ndarray) -> float:
  """P@1 = (1/N) Σ_i 1[rank_i = 1] (seed 000 §4.6); ranks 1-based."""
  ranks = np.asarray(ranks)
  return float(np.mean(ranks == 1))


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
  """MRR = (1/N) Σ_i 1 / rank_i (seed 000 §4.6); ranks 1-based."""
  return float(np.mean(1.0 / np.asarray(ranks, np.float64)))


def chance_levels(num_candidates: int | Sequence[int]) -> tuple[float, float]:
  """(P@1, MRR) of a uniformly random ranking: mean over items of 1/K and (1/K) Σ_{r≤K} 1/r."""
  ks = np.atleast_1d(np.asarray(num_candidates, np.int64))
  p1 = float(np.mean(1.0 / ks))
  mrr = float(np.mean([np.mean(1.0 / np.arange(1, k + 1)) for k in ks]))
  return p1, mrr


def qa_report(ranks: np.ndarray, num_candidates: int | Sequence[int], **extra) -> dict:
  """P@1, MRR, the item count and the chance levels of a random ranking (plus `extra` fields)."""
  ranks = np.asarray(ranks)
  if ranks.size == 0:
    raise ValueError("no ranks")
  ks = np.broadcast_to(np.asarray(num_candidates), ranks.shape)
  if np.any(ranks < 1) or np.any(ranks > ks):
    raise ValueError("ranks must be in 1..num_candidates")
  chance_p1, chance_mrr = chance_levels(ks)
  report = {"p_at_1": precision_at_1(ranks), "mrr": mean_reciprocal_rank(ranks),
            "num_items": int(ranks.size), "num_candidates": int(ks.max()),
            "chance_p_at_1": chance_p1, "chance_mrr": chance_mrr}
  report.update(extra)
  return report


def evaluate_qa(encode_fn: EncodeFn, items: Sequence[RankingItem], *,
                unk_id: int = special_tokens.UNK_ID, key: jax.Array | None = None,
                normalise: bool = True, seed: int = 0) -> dict:
  """`rank_candidates` + `qa_report`, with how z and σ were used."""
  ranks = rank_candidates(encode_fn, items, unk_id=unk_id, key=key, normalise=normalise,
                          seed=seed)
  return qa_report(ranks, [len(item.candidates) for item in items],
                   sampled_z=key is not None, normalised_by_std=normalise)


# ----------------------------------------------------------------------------- generation


def answer_prompts(question_ids: Sequence[np.ndarray],
                   pad_lengths: Sequence[int] = DEFAULT_PAD_LENGTHS, *,
                   unk_id: int = special_tokens.UNK_ID) -> list[np.ndarray]:
  """Q <unk>^L for every question and L in pad_lengths, question-major: n·P id arrays (D.4)."""
  return [np.concatenate([np.asarray(q, np.int32), np.full(length, unk_id, np.int32)])
          for q in question_ids for length in pad_lengths]


def answer_codes(encode_fn: EncodeFn, question_ids: Sequence[np.ndarray],
                 pad_lengths: Sequence[int] = DEFAULT_PAD_LENGTHS, *,
                 unk_id: int = special_tokens.UNK_ID) -> np.ndarray:
  """Posterior means of the answer prompts: [n,P,d], for greedy decoding by the launch layer."""
  mean = np.asarray(encode_fn(answer_prompts(question_ids, pad_lengths, unk_id=unk_id))[0])
  return mean.reshape(len(question_ids), len(pad_lengths), mean.shape[-1])


# ----------------------------------------------------------------------------- model


class RunEncoder:
  """An `EncodeFn` of a restored run: <sos>/<eos> added, then `encoding.encode_sentences`.

  Called on word-id arrays it returns (code, std): the deterministic code
  `sentence_ae.posterior_code` (μ; (1 − E[γ]) μ for HSVAE) and exp(log σ²/2) of the (slab)
  Gaussian. `posterior(word_ids)` gives the whole q(z|x) (a `sentence_ae.Posterior`) and
  `objective` the run's objective config, so `rank_candidates` draws z with the run's family.
  """

  def __init__(self, run: "runner.Run", *, batch_size: int = 64, pad_multiple: int = 16,
               progress: bool = False):
    self.run, self.batch_size, self.pad_multiple, self.progress = (run, batch_size, pad_multiple,
                                                                   progress)

  @property
  def objective(self):
    """The run's objective config; None for a stand-in run without one (then the family the
    posterior head implies draws z)."""
    if "objective" not in self.run.config:
      return None
    return self.run.obj_cfg

  def posterior(self, word_ids: Sequence[np.ndarray]) -> sentence_ae.Posterior:
    rows = [np.concatenate([[special_tokens.SOS_ID], np.asarray(w, np.int32),
                            [special_tokens.EOS_ID]]).astype(np.int32) for w in word_ids]
    return encoding.encode_sentences(self.run.params, self.run.model_cfg, rows,
                                     batch_size=self.batch_size, pad_multiple=self.pad_multiple,
                                     progress=self.progress, desc="qa: encode")

  def __call__(self, word_ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return encoding.code_and_std(self.posterior(word_ids))


def encoder_fn(run: "runner.Run", *, batch_size: int = 64, pad_multiple: int = 16,
               progress: bool = False) -> RunEncoder:
  """The `EncodeFn` of a restored run (`RunEncoder`); `progress`: a bar over the batches."""
  return RunEncoder(run, batch_size=batch_size, pad_multiple=pad_multiple, progress=progress)
