"""Bounds on the negative log-likelihood of sentences, and the perplexities they imply.

Per sentence x_i (with T_i target tokens) and z_ij ~ q(z|x_i), j = 1..k:
- ELBO bound (seed 001 Eq. 2):  −log p(x_i) ≤ −(1/k) Σ_j log p(x_i|z_ij) + KL(q(z|x_i) ‖ N(0, I)).
- Importance-weighted bound (Burda et al. 2016):
  −log p(x_i) ≤ −log (1/k) Σ_j p(x_i|z_ij) p(z_ij) / q(z_ij|x_i), p(z) the model's prior.
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
from mimtext import objectives
from mimtext import sparse_distributions as sd
from mimtext.models import sentence_ae
from mimtext.objectives import hsvae
from mimtext.objectives import matvae

Array = jax.Array


def _latent_sampler(params, batch, cfg: objectives.ObjectiveConfig):
  """(posterior, code, closed-form KL or None, sample(key) -> (z, log q(z,·|x) − log p(z,·)))."""
  model = cfg.model
  post = sentence_ae.encode(params, batch["tokens"], batch["lengths"], model)
  if model.posterior == "hsvae":
    kl_gamma = sd.sum_last(sd.beta_kl(post.beta_a, post.beta_b, cfg.prior_alpha, cfg.prior_beta))
    code = sd.spike_slab_mean(sd.beta_log_mean(post.beta_a, post.beta_b)[1], post.mean)

    def sample(key):
      z, log_g, log1m_g = hsvae.sample_latents(key, post, cfg, 1)
      z, log_g, log1m_g = z[0], log_g[0], log1m_g[0]
      log_q_z = sd.spike_slab_log_prob(z, log_g, log1m_g, post.mean, post.log_var,
                                       spike_scale=cfg.spike_scale)
      log_p_z = sd.spike_slab_log_prob(z, log_g, log1m_g, jnp.zeros_like(z), jnp.zeros_like(z),
                                       spike_scale=cfg.spike_scale)
      log_q_g = sd.sum_last(sd.beta_log_prob_log_space(log_g, log1m_g, post.beta_a, post.beta_b))
      log_p_g = sd.sum_last(sd.beta_log_prob_log_space(log_g, log1m_g, cfg.prior_alpha,
                                                       cfg.prior_beta))
      # KL of the ELBO: MC over (γ, z) for the spike-and-slab part, closed form for γ.
      return z, (log_q_z - log_p_z) + (log_q_g - log_p_g), (log_q_z - log_p_z) + kl_gamma

    return post, code, sample

  def sample(key):
    z = distributions.normal_sample(key, post.mean, post.log_var)
    log_q = distributions.normal_log_prob(z, post.mean, post.log_var)
    if cfg.name == "matvae":  # its prior is the spike-and-slab, not N(0, I)
      log_ratio = log_q - matvae.prior_log_prob(z, cfg)
      return z, log_ratio, log_ratio
    log_ratio = log_q - distributions.standard_normal_log_prob(z)
    return z, log_ratio, distributions.normal_kl_standard(post.mean, post.log_var)

  return post, post.mean, sample


@functools.partial(jax.jit, static_argnames=("cfg", "num_samples"))
def sentence_terms(params, batch, key: Array, cfg: objectives.ObjectiveConfig, num_samples: int):
  """Per-sentence ingredients of every bound, without dropout: dict of [b] (or [b,d]) arrays.

  Returns log p(x|z) averaged over k samples with and without the <eos> term, the importance
  weighted log-likelihood estimate with and without <eos> (weights p(z, ·) / q(z, ·|x) under the
  model's own prior: N(0, I), MAT-VAE's spike-and-slab, or HSVAE's p(z|γ) p(γ)), the KL term of
  the ELBO (closed form where one exists, else its k-sample average), the code used for active
  units and sparsity (posterior mean; (1 − E γ) μ for HSVAE) and the log-variance. Samples run one
  at a time (`lax.map`) so memory stays at one [b,t,v] logits tensor.
  """
  tokens, lengths = batch["tokens"], batch["lengths"]
  post, code, sample = _latent_sampler(params, batch, cfg)
  eos_index = (lengths - 2)[:, None]

  def one_sample(sample_key):
    z, log_ratio, kl = sample(sample_key)
    logits = sentence_ae.decoder_logits(params, z, tokens, lengths, cfg.model)
    per_token = sentence_ae.token_log_likelihoods(logits, tokens, lengths)
    log_px = per_token.sum(axis=1)
    log_eos = jnp.take_along_axis(per_token, eos_index, axis=1)[:, 0]
    return log_px, log_eos, -log_ratio, kl

  log_px, log_eos, log_w, kl = jax.lax.map(one_sample, jax.random.split(key, num_samples))
  log_k = jnp.log(float(num_samples))
  return {
      "log_px": log_px.mean(0),
      "log_px_no_eos": (log_px - log_eos).mean(0),
      "iw_log_px": jax.nn.logsumexp(log_px + log_w, axis=0) - log_k,
      "iw_log_px_no_eos": jax.nn.logsumexp(log_px - log_eos + log_w, axis=0) - log_k,
      "kl": kl.mean(0),
      "mean": code,
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


def average_hoyer(codes: np.ndarray) -> float:
  """Average Hoyer sparsity of the codes [N,d] (seed 004 Eq. 3, dimensions standardised first)."""
  return float(sd.average_hoyer(jnp.asarray(codes)))


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
  """Number of latent dimensions with Cov_x(E_q[z_d]) > threshold (Burda et al. 2016): [N,d] → int."""
  if means.shape[0] < 2:
    return 0
  return int(np.sum(np.var(means, axis=0, ddof=1) > threshold))
