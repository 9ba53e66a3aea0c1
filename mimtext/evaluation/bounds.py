"""Bounds on the negative log-likelihood of sentences, and the perplexities they imply.

Per sentence x_i (with T_i target tokens) and z_ij ~ q(z|x_i), j = 1..k:
- ELBO bound (seed 001 Eq. 2):  −log p(x_i) ≤ −(1/k) Σ_j log p(x_i|z_ij) + KL(q(z|x_i) ‖ N(0, I)).
- Importance-weighted bound (Burda et al. 2016):
  −log p(x_i) ≤ −log (1/k) Σ_j p(x_i|z_ij) N(z_ij; 0, I) / q(z_ij|x_i).
- MELBO bound on the test-set NLL (seed 000 Eq. 16):
  NLL ≤ −(1/N) Σ_i (1/k) Σ_j log p(x_i|z_ij) + log N, a bound only for the prior equal to the
  evaluation set's own aggregate posterior; it grows with N, which is always reported beside it.
- PPL bound: exp(Σ_i NLL_i / Σ_i T_i) (for MELBO: exp(N · NLL / Σ_i T_i)).
Every quantity is computed twice: with the <eos> step counted in both the log-likelihood and the
token count, and without it in either (seed 000 §4.3 excludes it; seed 001 includes it).

Notation: b batch, t time, d latent, k samples.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import distributions
from mimtext.models import sentence_ae

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("cfg", "num_samples"))
def sentence_terms(params, batch, key: Array, cfg: sentence_ae.ModelConfig, num_samples: int):
  """Per-sentence ingredients of every bound, without dropout: dict of [b] (or [b,d]) arrays.

  Returns log p(x|z) averaged over k samples with and without the <eos> term, the importance
  weighted log-likelihood estimate with and without <eos>, the closed-form KL, the posterior mean
  and log-variance. Samples are processed one at a time (`lax.map`) so memory stays at one
  [b,t,v] logits tensor.
  """
  tokens, lengths = batch["tokens"], batch["lengths"]
  post = sentence_ae.encode(params, tokens, lengths, cfg)
  eos_index = (lengths - 2)[:, None]

  def one_sample(sample_key):
    z = distributions.normal_sample(sample_key, post.mean, post.log_var)
    logits = sentence_ae.decoder_logits(params, z, tokens, lengths, cfg)
    per_token = sentence_ae.token_log_likelihoods(logits, tokens, lengths)
    log_px = per_token.sum(axis=1)
    log_eos = jnp.take_along_axis(per_token, eos_index, axis=1)[:, 0]
    log_ratio = (distributions.standard_normal_log_prob(z)
                 - distributions.normal_log_prob(z, post.mean, post.log_var))
    return log_px, log_eos, log_ratio

  log_px, log_eos, log_ratio = jax.lax.map(one_sample, jax.random.split(key, num_samples))
  log_k = jnp.log(float(num_samples))
  return {
      "log_px": log_px.mean(0),
      "log_px_no_eos": (log_px - log_eos).mean(0),
      "iw_log_px": jax.nn.logsumexp(log_px + log_ratio, axis=0) - log_k,
      "iw_log_px_no_eos": jax.nn.logsumexp(log_px - log_eos + log_ratio, axis=0) - log_k,
      "kl": distributions.normal_kl_standard(post.mean, post.log_var),
      "mean": post.mean,
      "log_var": post.log_var,
  }


def nll_bounds(terms: dict[str, np.ndarray], num_words: np.ndarray) -> dict[str, float]:
  """Dataset-level NLL and PPL bounds from per-sentence terms of N sentences.

  Args:
    terms: "log_px", "log_px_no_eos", "iw_log_px", "iw_log_px_no_eos", "kl", each [N].
    num_words: [N] words per sentence (without <sos>/<eos>).
  Returns:
    A flat dict: for suffix in ("", "_no_eos"): elbo_nll, iw_nll, melbo_nll (all per sentence,
    nats), elbo_ppl, iw_ppl, melbo_ppl, num_tokens; plus rec (−E log p(x|z)), kl, N.
  """
  n = len(num_words)
  if n == 0:
    raise ValueError("cannot compute bounds on an empty evaluation set")
  out: dict[str, float] = {"N": float(n), "kl": float(np.mean(terms["kl"]))}
  for suffix, extra_tokens in (("", 1), ("_no_eos", 0)):
    tokens = float(np.sum(num_words + extra_tokens))
    rec = -np.asarray(terms["log_px" + suffix], np.float64)
    per_sentence = {
        "elbo": rec + terms["kl"],
        "iw": -np.asarray(terms["iw_log_px" + suffix], np.float64),
    }
    out["rec" + suffix] = float(rec.mean())
    out["num_tokens" + suffix] = tokens
    for name, values in per_sentence.items():
      out[f"{name}_nll{suffix}"] = float(values.mean())
      out[f"{name}_ppl{suffix}"] = float(np.exp(values.sum() / tokens))
    melbo = float(rec.mean() + math.log(n))
    out["melbo_nll" + suffix] = melbo
    out["melbo_ppl" + suffix] = float(np.exp(n * melbo / tokens))
  return out


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
  """Number of latent dimensions with Cov_x(E_q[z_d]) > threshold (Burda et al. 2016): [N,d] → int."""
  if means.shape[0] < 2:
    return 0
  return int(np.sum(np.var(means, axis=0, ddof=1) > threshold))
