"""Imputing the end of a sentence by approximate iterated conditional modes (seed 001 §5).

The last m = round(fraction · n) of a sentence's n words are unknown (seed 001 imputes the final
20%). Approximate ICM (Besag 1986) alternates two conditional maximisations, starting from the
sentence with its unknown words set to <unk>:

  z_t ← E_q[z | x_{t−1}]                    (the recognition model's mode, the posterior mean)
  x_t ← argmax over the unknown words of log p(x | z_t), by beam search constrained to keep the
        observed prefix and to produce exactly m words and then <eos>

for `num_iters` iterations (seed 001: 3 steps of a beam-5 search). A beam search is only an
approximate argmax, so each x-step also keeps the previous completion x_{t−1} when it scores
higher under z_t: every x-step then never lowers its own objective, log p(x_t | z_t) ≥
log p(x_{t−1} | z_t) for t ≥ 2 (at t = 1 the previous completion holds <unk>s and is not a
candidate). The z-step maximises q, not p(x|z), so log p(x_t | z_t) across iterations is not
monotone in general. Decoding is done as the model was trained (`objectives.common.scoring`):
an inputless decoder reads <unk>s; a hidden-averaging decoder fed L copies of the mean code is the
one-latent decoder, so the mean code is decoded once.

Our decoders read left to right, so the imputed suffix is generated after the observed prefix
(seed 001 trains right-to-left decoders to make the suffix the hard case).

Notation: b batch, t tokens `<sos> w_1 … w_n <eos>` (lengths = n + 2), n words, m missing words,
d latent, T iterations.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import objectives
from mimtext import special_tokens
from mimtext.data import pipeline as pipeline_lib
from mimtext.models import decoding
from mimtext.models import sentence_ae

Array = jax.Array

_DEFAULT_SCORING = objectives.common.Scoring(1.0, 1, False, False)


class Imputation(NamedTuple):
  """One sentence's observed words, its true last m words and the imputed ones (ids, no
  <sos>/<eos>); unpacks as the triple (prefix, true_ending, imputed_ending)."""
  prefix: np.ndarray
  true_ending: np.ndarray
  imputed_ending: np.ndarray


class IcmTrace(NamedTuple):
  """A batch after T ICM iterations: the completed tokens [b,t] (`<sos> … <eos>`), and per
  iteration log p(x_t | z_t) [T,b] and log p(x_{t−1} | z_t) [T,b] (the completion it replaced,
  scored under the same code; <unk>s at t = 1)."""
  tokens: Array
  log_px: Array
  previous_log_px: Array


def num_missing_words(num_words: np.ndarray, fraction: float) -> np.ndarray:
  """m = round(fraction · n) (halves up), at least 1 and at most n: int [b] from n [b]."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  n = np.asarray(num_words)
  return np.clip(np.floor(fraction * n + 0.5), np.minimum(n, 1), n).astype(np.int32)


def mask_endings(tokens: Array, lengths: Array, num_missing: Array) -> Array:
  """The last m words of each row replaced by <unk> (the ICM start, seed 001 §5): [b,t] → [b,t]."""
  position = jnp.arange(tokens.shape[1])[None]
  missing = (position >= (lengths - 1 - num_missing)[:, None]) & (position < (lengths - 1)[:, None])
  return jnp.where(missing, special_tokens.UNK_ID, tokens)


@functools.partial(jax.jit, static_argnames=("cfg", "beam_width", "ban_unk", "inputless"))
def icm_step(params, tokens: Array, lengths: Array, num_missing: Array, keep_previous: Array,
             cfg: sentence_ae.ModelConfig, *, beam_width: int, ban_unk: bool = False,
             inputless: bool = False):
  """One ICM iteration on tokens [b,t] → (tokens [b,t], log p(x_t|z_t), log p(x_{t−1}|z_t)) ([b]).

  z = E_q[z|x_{t−1}]; the last `num_missing` [b] words ← the constrained beam search from z (the
  observed words forced, exactly lengths − 1 tokens incl. <eos>); where `keep_previous` (a bool
  scalar) and the previous completion scores higher under z, it is kept.
  """
  z = sentence_ae.posterior_code(sentence_ae.encode(params, tokens, lengths, cfg))
  t = tokens.shape[1]
  found = decoding.beam_search(params, z, cfg, beam_width=beam_width, max_len=t - 1,
                               ban_unk=ban_unk, inputless=inputless, prefix=tokens[:, 1:],
                               prefix_lengths=lengths - 2 - num_missing,
                               exact_lengths=lengths - 1)
  new_tokens = jnp.concatenate([tokens[:, :1], found.ids], axis=1)
  previous = sentence_ae.sentence_log_likelihood(params, z, tokens, lengths, cfg,
                                                 word_keep_rate=0.0 if inputless else 1.0)
  keep = keep_previous & (previous > found.scores)
  return (jnp.where(keep[:, None], tokens, new_tokens), jnp.where(keep, previous, found.scores),
          previous)


def icm_impute(params, cfg: sentence_ae.ModelConfig, tokens: Array, lengths: Array,
               num_missing: Array, *, beam_width: int = 5, num_iters: int = 3,
               ban_unk: bool = False,
               scoring: objectives.common.Scoring = _DEFAULT_SCORING) -> IcmTrace:
  """Approximate ICM (see the module docstring) on one padded batch: tokens [b,t], lengths [b],
  num_missing [b] (m ≤ n per row)."""
  if num_iters < 1:
    raise ValueError(f"num_iters must be >= 1, got {num_iters}")
  tokens, lengths = jnp.asarray(tokens), jnp.asarray(lengths)
  num_missing = jnp.asarray(num_missing, jnp.int32)
  current = mask_endings(tokens, lengths, num_missing)
  log_px, previous = [], []
  for iteration in range(num_iters):
    current, score, before = icm_step(params, current, lengths, num_missing,
                                      jnp.asarray(iteration > 0), cfg, beam_width=beam_width,
                                      ban_unk=ban_unk, inputless=scoring.word_keep == 0.0)
    log_px.append(score)
    previous.append(before)
  return IcmTrace(current, jnp.stack(log_px), jnp.stack(previous))


def impute_endings(params, cfg: sentence_ae.ModelConfig, examples: Sequence[np.ndarray], *,
                   fraction: float = 0.2, beam_width: int = 5, num_iters: int = 3,
                   ban_unk: bool = False, batch_size: int = 64,
                   scoring: objectives.common.Scoring = _DEFAULT_SCORING) -> list[Imputation]:
  """Imputes the final `fraction` of each sentence's words (seed 001 §5: 20%, 3 ICM steps of a
  beam-5 search): one `Imputation` per example (`<sos> w… <eos>` ids) with n ≥ 1 words.

  Batches of `batch_size` rows in input order (`pipeline.inference_batches`; the last one filled
  with empty filler rows) padded to a multiple of 8 tokens, so a corpus compiles a few shapes only.
  """
  words = np.asarray([len(x) - 2 for x in examples])
  if np.any(words < 1):
    raise ValueError("every example needs at least one word to impute")
  out: list[Imputation] = []
  for batch in pipeline_lib.inference_batches(examples, batch_size, pad_multiple=8,
                                              sort_by_length=False):
    missing = np.where(batch["valid"] > 0, num_missing_words(batch["lengths"] - 2, fraction), 0)
    trace = icm_impute(params, cfg, batch["tokens"], batch["lengths"], missing,
                       beam_width=beam_width, num_iters=num_iters, ban_unk=ban_unk,
                       scoring=scoring)
    completed = np.asarray(jax.device_get(trace.tokens))
    for row, i in enumerate(batch["index"][batch["valid"] > 0]):
      n, m = words[i], int(missing[row])
      true = np.asarray(examples[i])
      out.append(Imputation(true[1:1 + n - m], true[1 + n - m:1 + n],
                            completed[row, 1 + n - m:1 + n]))
  return out


def completed_sentences(imputations: Sequence[Imputation]
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """(true sentences, sentences with the imputed ending) as word ids, e.g. for the adversarial
  classifiers of seed 001 §5, which read the whole sentence."""
  true = [np.concatenate([x.prefix, x.true_ending]) for x in imputations]
  imputed = [np.concatenate([x.prefix, x.imputed_ending]) for x in imputations]
  return true, imputed
