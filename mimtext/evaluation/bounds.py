"""Bounds on the negative log-likelihood of sentences, and the perplexities they imply.

Every model is scored as it was trained (`objectives.common.scoring`): an inputless decoder without
its inputs, a hidden-averaging decoder (seed 003 Eq. 7-8) on L jointly drawn latents, an AE from
z = μ with no bound at all. Per sentence x_i (with T_i target tokens) and draws
z_ij = (z_ij1..z_ijL), z_ijl ~ q(z|x_i), j = 1..k:
- ELBO bound (seed 001 Eq. 2):
  −log p(x_i) ≤ −(1/k) Σ_j log p(x_i|z_ij) + L · KL(q(z|x_i) ‖ p(z)).
  (seed 003 reports its AVG models with one KL term: `elbo_one_kl`, labelled, not a bound.)
- Importance-weighted bound (Burda et al. 2016), over the L-tuples:
  −log p(x_i) ≤ −log (1/K) Σ_j p(x_i|z_ij) Π_l p(z_ijl) / q(z_ijl|x_i), p(z) the model's prior.
- MELBO bound on the test-set NLL (seed 000 Eq. 16):
  NLL ≤ −(1/N) Σ_i (1/k) Σ_j log p(x_i|z_ij) + log N, a bound only for the prior equal to the
  evaluation set's own aggregate posterior; it grows with N, which is always reported beside it.
- PPL bound: exp(Σ_i NLL_i / Σ_i T_i) (for MELBO: exp(N · NLL / Σ_i T_i)), in three conventions
  (`PPL_CONVENTIONS`): <eos> in numerator and denominator ("+eos", seed 001, seed 003); in neither
  ("-eos"); out of the numerator but in the denominator ("smim", the official sMIM test script,
  seed 000 Table 2).

Notation: b batch, t time, d latent, k samples.
"""

from __future__ import annotations

import functools
import math
from typing import Any

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


def _log_likelihood_terms(params, zs: Array, tokens: Array, lengths: Array,
                          cfg: objectives.ObjectiveConfig, scoring: objectives.common.Scoring):
  """log p(x | z_1..L) with and without its <eos> term, scored as the model was trained: [b], [b].

  zs: [L,b,d]. L = 1 is the one-latent decoder; L > 1 averages the L decoder states before the
  softmax (seed 003 Eq. 7-8). The decoder reads its words, or only <unk>s when it was trained
  inputless (`scoring.word_keep` = 0).
  """
  model = cfg.model
  hidden = jax.vmap(lambda z: sentence_ae.decoder_hidden(
      params, z, tokens, lengths, model, word_keep_rate=scoring.word_keep))(zs)
  logits = sentence_ae.output_logits(params, hidden.mean(axis=0))
  per_token = sentence_ae.token_log_likelihoods(logits, tokens, lengths)
  log_eos = jnp.take_along_axis(per_token, (lengths - 2)[:, None], axis=1)[:, 0]
  return per_token.sum(axis=1), log_eos


@functools.partial(jax.jit, static_argnames=("cfg", "num_samples", "iw_samples"))
def sentence_terms(params, batch, key: Array, cfg: objectives.ObjectiveConfig, num_samples: int,
                   iw_samples: int | None = None):
  """Per-sentence ingredients of every bound, scored as the model was trained: dict of [b] arrays.

  Draws max(num_samples, iw_samples) latent draws per sentence, one at a time (`lax.map`, so
  memory stays at one [L,b,t,h] state tensor). Each draw is an L-tuple z_1..L of independent
  posterior samples (L = `scoring(cfg).num_latents`; 1 except for hidden-state averaging), scored
  by the decoder the way it was trained (`_log_likelihood_terms`). Returns:
    log_px, log_px_no_eos: (1/k) Σ_j log p(x | z_j,1..L) over the first k = num_samples draws, with
      and without the <eos> term;
    iw_log_px, iw_log_px_no_eos: log (1/K) Σ_j p(x | z_j,1..L) Π_l p(z_jl, ·) / q(z_jl, ·|x) over
      the first K = iw_samples draws (default num_samples), under the model's own prior (N(0, I),
      MAT-VAE's spike-and-slab, HSVAE's p(z|γ) p(γ));
    kl: the KL term of one latent (closed form where one exists, else its k-draw average); a
      valid bound for L latents carries L × kl;
    code: the deterministic code (posterior mean; (1 − E γ) μ for HSVAE), for active units;
    z_sample: one posterior sample per sentence (the first draw's first latent), for the average
      Hoyer of seed 004 §4.1.3;
    post_std, frac_at_floor: `objectives.common.posterior_row_stats`.
  For an AE (z = μ) only log_px, log_px_no_eos (at z = μ), code, z_sample (= μ) and the row
  statistics are returned: it defines no likelihood bound.
  """
  tokens, lengths = batch["tokens"], batch["lengths"]
  scoring = objectives.common.scoring(cfg)
  post, code, sample = _latent_sampler(params, batch, cfg)
  post_std, frac_at_floor = objectives.common.posterior_row_stats(post, cfg.model)
  shared = {"code": code, "post_std": post_std, "frac_at_floor": frac_at_floor}
  if scoring.deterministic_z:
    log_px, log_eos = _log_likelihood_terms(params, post.mean[None], tokens, lengths, cfg,
                                            scoring)
    return {"log_px": log_px, "log_px_no_eos": log_px - log_eos, "z_sample": post.mean,
            **shared}
  iw_samples = iw_samples or num_samples
  num_latents = scoring.num_latents

  def one_draw(draw_key):
    z, log_ratio, kl = jax.vmap(sample)(jax.random.split(draw_key, num_latents))
    log_px, log_eos = _log_likelihood_terms(params, z, tokens, lengths, cfg, scoring)
    return log_px, log_eos, -log_ratio.sum(0), kl.mean(0), z[0]

  draws = max(num_samples, iw_samples)
  log_px, log_eos, log_w, kl, zs = jax.lax.map(one_draw, jax.random.split(key, draws))
  k = num_samples

  def iw(values):
    return jax.nn.logsumexp(values[:iw_samples] + log_w[:iw_samples], axis=0) - jnp.log(
        float(iw_samples))

  return {
      "log_px": log_px[:k].mean(0),
      "log_px_no_eos": (log_px - log_eos)[:k].mean(0),
      "iw_log_px": iw(log_px),
      "iw_log_px_no_eos": iw(log_px - log_eos),
      "kl": kl[:k].mean(0),
      "z_sample": zs[0],
      **shared,
  }


# The three perplexity conventions (DESIGN §3, §7): which of <eos> enters the numerator (the NLL)
# and the denominator (the token count). "+eos" (seed 001; Kruengkrai) counts the <eos> step in
# both; "-eos" in neither; "smim" leaves the <eos> term out of the NLL but counts <eos> in the
# tokens, as the official sMIM test script does (seed 000 Table 2).
PPL_CONVENTIONS = {"": ("", 1), "_no_eos": ("_no_eos", 0), "_smim": ("_no_eos", 1)}
PPL_LABELS = {"": "PPL +eos", "_no_eos": "PPL -eos", "_smim": "PPL smim"}


def _add_bound(out: dict, name: str, per_sentence: dict[str, np.ndarray],
               tokens: dict[str, float], n: int, offset: float = 0.0) -> None:
  """NLL per sentence (+eos, -eos) and the three PPLs of one bound, given per-sentence NLLs."""
  for nll_suffix in ("", "_no_eos"):
    out[f"{name}_nll{nll_suffix}"] = float(np.mean(per_sentence[nll_suffix]) + offset)
  for suffix, (nll_suffix, _) in PPL_CONVENTIONS.items():
    total = float(np.sum(per_sentence[nll_suffix]) + n * offset)
    out[f"{name}_ppl{suffix}"] = float(np.exp(total / tokens[suffix]))


def nll_bounds(terms: dict[str, np.ndarray], num_words: np.ndarray,
               scoring: objectives.common.Scoring | None = None) -> dict[str, float]:
  """Dataset-level NLL and PPL bounds from per-sentence terms of N sentences.

  Args:
    terms: "log_px", "log_px_no_eos" and, unless `scoring.deterministic_z`, "iw_log_px",
      "iw_log_px_no_eos", "kl", each [N] (see `sentence_terms`).
    num_words: [N] words per sentence (without <sos>/<eos>).
    scoring: how the model was trained (default: one latent, stochastic z).
  Returns:
    A flat dict with N, rec / rec_no_eos (−E log p(x|z) per sentence), num_tokens (words + <eos>),
    num_tokens_no_eos (words) and, for each bound B in elbo, iw, melbo: B_nll and B_nll_no_eos
    (nats per sentence), B_ppl, B_ppl_no_eos and B_ppl_smim (the three conventions of
    `PPL_CONVENTIONS`). With L > 1 jointly decoded latents, "elbo" is the valid bound (L × KL)
    and "elbo_one_kl" the quantity seed 003 reports (one KL term, not a bound on this model's NLL);
    kl is one latent's KL and kl_total = L × kl. An AE gets rec only and "bounds_skipped" says why.
  """
  scoring = scoring or objectives.common.Scoring(1.0, 1, False, False)
  n = len(num_words)
  if n == 0:
    raise ValueError("cannot compute bounds on an empty evaluation set")
  tokens = {suffix: float(np.sum(num_words + extra))
            for suffix, (_, extra) in PPL_CONVENTIONS.items()}
  rec = {s: -np.asarray(terms["log_px" + s], np.float64) for s in ("", "_no_eos")}
  out: dict[str, Any] = {"N": float(n), "num_tokens": tokens[""],
                         "num_tokens_no_eos": tokens["_no_eos"],
                         "rec": float(rec[""].mean()), "rec_no_eos": float(rec["_no_eos"].mean())}
  if scoring.deterministic_z:
    out["bounds_skipped"] = (
        "an AE decodes z = μ(x) and never trains its log-variance head, so it defines no "
        "posterior or prior to bound log p(x) with: reconstruction from z = μ and BLEU only")
    return out
  kl = np.asarray(terms["kl"], np.float64)
  num_latents = scoring.num_latents
  out.update(kl=float(kl.mean()), kl_total=float(num_latents * kl.mean()),
             num_latents=num_latents)
  _add_bound(out, "elbo", {s: rec[s] + num_latents * kl for s in rec}, tokens, n)
  if num_latents > 1:
    _add_bound(out, "elbo_one_kl", {s: rec[s] + kl for s in rec}, tokens, n)
  _add_bound(out, "iw", {s: -np.asarray(terms["iw_log_px" + s], np.float64) for s in rec},
             tokens, n)
  _add_bound(out, "melbo", rec, tokens, n, offset=math.log(n))
  return out


def average_hoyer(codes: np.ndarray) -> float:
  """Average Hoyer sparsity of the codes [N,d] (seed 004 Eq. 3, dimensions standardised first)."""
  return float(sd.average_hoyer(jnp.asarray(codes)))


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
  """Number of latent dimensions with Cov_x(E_q[z_d]) > threshold (Burda et al. 2016): [N,d] → int."""
  if means.shape[0] < 2:
    return 0
  return int(np.sum(np.var(means, axis=0, ddof=1) > threshold))
