"""Greedy reconstructions from the posterior mean and their BLEU (seed 000 §4.3, Table 7)."""

from __future__ import annotations

from typing import Sequence

import jax
import sacrebleu

from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import encoding
from mimtext.models import decoding
from mimtext.models import sentence_ae


def posterior_code(params, tokens: jax.Array, lengths: jax.Array, cfg: sentence_ae.ModelConfig
                   ) -> jax.Array:
  """z = E_q[z|x] (`sentence_ae.posterior_code`) of a padded batch: tokens [b,t], lengths [b] →
  [b,d], by the one jitted encoder (`encoding.encode_batch`)."""
  post = encoding.encode_batch(params, {"tokens": tokens, "lengths": lengths}, cfg)
  return sentence_ae.posterior_code(post)


def reconstruct_batch(params, batch, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary,
                      *, max_len: int, inputless: bool = False, code=None) -> list[str]:
  """Greedy decodes of z = E_q[z|x] for the valid rows of a batch, as space-joined words.

  `inputless`: decode as an inputless decoder was trained (<unk> inputs; seed 001 Table 2). A
  hidden-averaging decoder fed L copies of the same code equals the one-latent decoder, so the
  mean code is decoded once. `code`: the batch's codes [b,d] when the caller has them (the "code"
  of `bounds.sentence_terms`: the same numbers), so the batch is not encoded again.
  """
  z = posterior_code(params, batch["tokens"], batch["lengths"], cfg) if code is None else code
  ids, _ = decoding.greedy_decode(params, z, cfg, max_len=max_len, inputless=inputless)
  ids = jax.device_get(ids)
  return [" ".join(vocab.decode(row)) for row, ok in zip(ids, batch["valid"]) if ok > 0]


def bleu1(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
  """Corpus BLEU-1 in [0, 1] (unigram precision with brevity penalty) and sacrebleu's signature.

  Texts are already tokenised, so sacrebleu's tokeniser is off (tokenize="none").
  """
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  metric = sacrebleu.BLEU(tokenize="none", max_ngram_order=1, effective_order=False)
  score = metric.corpus_score(list(hypotheses), [list(references)])
  return score.score / 100.0, str(metric.get_signature())
