"""Hierarchical sparse VAE (HSVAE) of Prokhorov et al. (seed 004 §3, Eq. 2).

Generative model p(x, z, γ) = p(x|z) p(z|γ) p(γ) with p(γ_d) = Beta(α, β) and the spike-and-slab
p(z_d|γ_d) = γ_d N(0, s²) + (1 − γ_d) N(0, 1) (γ_d → 1: z_d is off). Posterior q(γ_d|x) =
Beta(a_d(x), b_d(x)) and q(z_d|γ_d, x) = γ_d N(0, s²) + (1 − γ_d) N(μ_d(x), σ_d²(x)). The loss is
the negative of Eq. 2 with one Monte Carlo sample of (γ, z) per sentence (or L of them):

L = −E_q[log p(x|z)] + ψ E_{q(γ|x)} KL(q(z|γ,x) ‖ p(z|γ)) + λ KL(Beta(a,b) ‖ Beta(α,β)),

γ sampled through Gamma draws in log space (implicit reparameterisation), the spike/slab choice
through a binary concrete relaxation (hard forward, relaxed gradient by default; appendix D), and
the ψ-term estimated by log q(z|γ,x) − log p(z|γ) at the sample (unbiased; `sparse_distributions`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mimtext import sparse_distributions as sd
from mimtext.objectives import common


def sample_latents(key, post, cfg: common.ObjectiveConfig, num: int):
  """(z [k,b,d], log γ, log(1−γ) [k,b,d]) from q(γ|x) q(z|γ,x)."""
  gamma_key, z_key = jax.random.split(key)
  log_gamma, log1m_gamma = sd.beta_log_sample(gamma_key, post.beta_a, post.beta_b,
                                              sample_shape=(num,))
  z, _ = sd.spike_slab_sample(z_key, log_gamma, log1m_gamma, post.mean, post.log_var,
                              temperature=cfg.concrete_temperature, spike_scale=cfg.spike_scale,
                              hard=cfg.concrete_hard)
  return z, log_gamma, log1m_gamma


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """Negative HSVAE ELBO (ψ, λ weighted) and metrics; see the module docstring."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  zs, log_gamma, log1m_gamma = sample_latents(keys.latent, post, cfg, cfg.num_samples)
  log_px = common.reconstruct(params, zs, batch, cfg, keys, step)
  kl_z = sd.spike_slab_kl_mc(zs, log_gamma, log1m_gamma, post.mean, post.log_var,
                             spike_scale=cfg.spike_scale).mean(0)
  kl_gamma = sd.sum_last(sd.beta_kl(post.beta_a, post.beta_b, cfg.prior_alpha, cfg.prior_beta))
  valid = batch["valid"]
  value = common.batch_mean(-log_px + cfg.psi * kl_z + cfg.lam * kl_gamma, valid)
  neg_elbo = common.batch_mean(-log_px + kl_z + kl_gamma, valid)
  mean_code = sd.spike_slab_mean(sd.beta_log_mean(post.beta_a, post.beta_b)[1], post.mean)
  metrics = {
      "loss": value, "criterion": neg_elbo, "neg_elbo": neg_elbo,
      **common.reconstruction_metrics(log_px, batch),
      **common.posterior_metrics(post, zs[0], batch, cfg.model),
      "kl": common.batch_mean(kl_z + kl_gamma, valid),
      "kl_z": common.batch_mean(kl_z, valid),
      "kl_gamma": common.batch_mean(kl_gamma, valid),
      "gamma_mean": common.batch_mean(jnp.exp(log_gamma[0]).mean(-1), valid),
      "hoyer_mean_code": common.batch_mean(sd.hoyer_sparsity(mean_code), valid),
      "hoyer_sample": common.batch_mean(sd.hoyer_sparsity(zs[0]), valid),
  }
  return value, metrics
