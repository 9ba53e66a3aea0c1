"""Hierarchical sparse VAE (HSVAE) of Prokhorov et al. (seed 004 §3, Eq. 2).

Generative model p(x, z, γ) = p(x|z) p(z|γ) p(γ) with p(γ_d) = Beta(α, β) and the spike-and-slab
p(z_d|γ_d) = γ_d N(0, s²) + (1 − γ_d) N(0, 1) (γ_d → 1: z_d is off). Posterior q(γ_d|x) =
Beta(a_d(x), b_d(x)) and q(z_d|γ_d, x) = γ_d N(0, s²) + (1 − γ_d) N(μ_d(x), σ_d²(x)). The loss is
the negative of Eq. 2 with one Monte Carlo sample of (γ, z) per sentence (or L of them):

L = −E_q[log p(x|z)] + ψ E_{q(γ|x)} KL(q(z|γ,x) ‖ p(z|γ)) + λ KL(Beta(a,b) ‖ Beta(α,β)),

ψ = `kl_z_weight` and λ = `kl_gamma_weight` of the config (formerly `psi` and `lam`),
γ sampled through Gamma draws in log space (implicit reparameterisation), the spike/slab choice
through a binary concrete relaxation (hard forward, relaxed gradient by default; appendix D), and
the ψ-term estimated by log q(z|γ,x) − log p(z|γ) at the sample (unbiased; `sparse_distributions`).

`LATENTS` is this model's latent family (`objectives.latents`): the draws of q(γ, z|x), the
densities of z, the KL term, the code (1 − E_q[γ]) μ and exact prior draws, shared by the loss
and the evaluation bounds. The spike-and-slab is linear in γ, so the densities of z marginal over
γ are closed-form mixtures with the mean γ (γ_d independent across d):

  q(z|x) = Π_d [ā_d N(z_d; 0, s²) + (1 − ā_d) N(z_d; μ_d, σ_d²)],
           ā_d = E_q[γ_d] = a_d / (a_d + b_d),
  p(z)   = Π_d [ᾱ N(z_d; 0, s²) + (1 − ᾱ) N(z_d; 0, 1)],  ᾱ = E_p[γ] = α / (α + β);

importance-weighted bounds use them (Rao-Blackwellised over γ: tighter and of lower variance than
weights over (z, γ)), the loss keeps seed 004's KL of the joint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mimtext import sparse_distributions as sd
from mimtext.models import sentence_ae
from mimtext.objectives import common
from mimtext.objectives import latents


def sample_latents(key, post, cfg: common.ObjectiveConfig, num: int):
  """(z [k,b,d], log γ, log(1−γ) [k,b,d]) from q(γ|x) q(z|γ,x)."""
  gamma_key, z_key = jax.random.split(key)
  log_gamma, log1m_gamma = sd.beta_log_sample(gamma_key, post.beta_a, post.beta_b,
                                              sample_shape=(num,))
  z, _ = sd.spike_slab_sample(z_key, log_gamma, log1m_gamma, post.mean, post.log_var,
                              temperature=cfg.concrete_temperature, spike_scale=cfg.spike_scale,
                              hard=cfg.concrete_hard)
  return z, log_gamma, log1m_gamma


def sample(key, post: sentence_ae.Posterior, cfg: common.ObjectiveConfig,
           num: int) -> latents.LatentDraw:
  """num draws (γ, z) ~ q(γ|x) q(z|γ,x) (seed 004 §3) with a = (log γ, log(1 − γ)) and the
  marginal log q(z|x) = Σ_d log[ā_d N(z_d; 0, s²) + (1 − ā_d) N(z_d; μ_d, σ_d²)]: z [k,b,d],
  log q [k,b]."""
  z, log_g, log1m_g = sample_latents(key, post, cfg, num)
  log_mean_g, log1m_mean_g = sd.beta_log_mean(post.beta_a, post.beta_b)
  log_q = sd.spike_slab_log_prob(z, log_mean_g, log1m_mean_g, post.mean, post.log_var,
                                 spike_scale=cfg.spike_scale)
  return latents.LatentDraw(z, log_q, (log_g, log1m_g))


def log_prior(z, cfg: common.ObjectiveConfig):
  """log p(z) = ∫ p(z|γ) p(γ) dγ = Σ_d log[ᾱ N(z_d; 0, s²) + (1 − ᾱ) N(z_d; 0, 1)], ᾱ = α / (α + β)
  the mean of p(γ_d) = Beta(α, β): [..., d] → [...]."""
  log_mean, log1m_mean = sd.beta_log_mean(jnp.asarray(cfg.prior_alpha, z.dtype),
                                          jnp.asarray(cfg.prior_beta, z.dtype))
  zeros = jnp.zeros_like(z)
  return sd.spike_slab_log_prob(z, log_mean + zeros, log1m_mean + zeros, zeros, zeros,
                                spike_scale=cfg.spike_scale)


def kl_z(post: sentence_ae.Posterior, draw: latents.LatentDraw, cfg: common.ObjectiveConfig):
  """log q(z|γ,x) − log p(z|γ) at each draw, the estimate of E_{q(γ|x)} KL(q(z|γ,x) ‖ p(z|γ))
  (the ψ-term of seed 004 Eq. 2): [k,b]."""
  log_g, log1m_g = draw.aux
  return sd.spike_slab_kl_mc(draw.z, log_g, log1m_g, post.mean, post.log_var,
                             spike_scale=cfg.spike_scale)


def kl_gamma(post: sentence_ae.Posterior, cfg: common.ObjectiveConfig):
  """KL(Beta(a(x), b(x)) ‖ Beta(α, β)) in closed form, summed over d (the λ-term of Eq. 2): [b]."""
  return sd.sum_last(sd.beta_kl(post.beta_a, post.beta_b, cfg.prior_alpha, cfg.prior_beta))


def kl(post: sentence_ae.Posterior, draw: latents.LatentDraw, cfg: common.ObjectiveConfig):
  """KL(q(z, γ|x) ‖ p(z, γ)) = E_{q(γ|x)} KL(q(z|γ,x) ‖ p(z|γ)) + KL(q(γ|x) ‖ p(γ)): the first
  term averaged over the k draws, the second in closed form: [b]."""
  return kl_z(post, draw, cfg).mean(0) + kl_gamma(post, cfg)


def prior_sample(key, n: int, cfg: common.ObjectiveConfig):
  """Exact draws of p(z) = ∫ p(z|γ) p(γ) dγ: γ ~ Beta(α, β), then z_d ~ p(z_d|γ_d) with an exact
  Bernoulli(γ_d) spike/slab choice: [n,d]."""
  gamma_key, z_key = jax.random.split(key)
  shape = (n, cfg.model.latent_dim)
  log_g, log1m_g = sd.beta_log_sample(gamma_key, jnp.full(shape, cfg.prior_alpha),
                                      jnp.full(shape, cfg.prior_beta))
  z, _ = sd.spike_slab_sample(z_key, log_g, log1m_g, jnp.zeros(shape), jnp.zeros(shape),
                              temperature=cfg.concrete_temperature, spike_scale=cfg.spike_scale,
                              hard=True)
  return jax.lax.stop_gradient(z)


LATENTS = latents.LatentFamily(
    name="hsvae", posterior="hsvae", sample=sample, log_prior=log_prior, kl=kl,
    code=sentence_ae.posterior_code, prior_sample=prior_sample)


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """Negative HSVAE ELBO, ψ (kl_z_weight) and λ (kl_gamma_weight) weighted, and metrics; see the
  module docstring."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  draw = LATENTS.sample(keys.latent, post, cfg, cfg.num_samples)
  zs, (log_gamma, _) = draw.z, draw.aux
  log_px = common.reconstruct(params, zs, batch, cfg, keys, step)
  kl_z_mean = kl_z(post, draw, cfg).mean(0)
  kl_g = kl_gamma(post, cfg)
  valid = batch["valid"]
  value = common.batch_mean(
      -log_px + cfg.kl_z_weight * kl_z_mean + cfg.kl_gamma_weight * kl_g, valid)
  neg_elbo = common.batch_mean(-log_px + kl_z_mean + kl_g, valid)
  metrics = {
      "loss": value, "criterion": neg_elbo, "neg_elbo": neg_elbo,
      **common.reconstruction_metrics(log_px, batch),
      **common.posterior_metrics(post, draw, batch, cfg, LATENTS),
      "kl_z": common.batch_mean(kl_z_mean, valid),
      "kl_gamma": common.batch_mean(kl_g, valid),
      "gamma_mean": common.batch_mean(jnp.exp(log_gamma[0]).mean(-1), valid),
      "hoyer_mean_code": common.batch_mean(sd.hoyer_sparsity(LATENTS.code(post)), valid),
      "hoyer_sample": common.batch_mean(sd.hoyer_sparsity(zs[0]), valid),
  }
  return value, metrics
