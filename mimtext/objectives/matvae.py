"""MAT-VAE baseline of seed 004 appendix B (Mathieu et al. 2019).

L = −E_q[log p(x|z)] + ψ KL(q(z|x) ‖ p(z)) + λ MMD(q(z), p(z)),

ψ = `kl_z_weight` (formerly `psi`) and λ = `mmd_weight` of the config, with a Gaussian
posterior q(z|x), the fixed spike-and-slab prior p(z_d) = γ N(0, s²) + (1 − γ) N(0, 1)
(γ = `prior_gamma`, the prior sparsity), the KL estimated by log q(z|x) − log p(z) at the posterior
sample (the prior is a mixture: no closed form), and the unbiased MMD between the batch's posterior
samples (the aggregate posterior q(z)) and as many prior samples, with a one-dimensional inverse
multiquadric (or RBF) kernel per coordinate, summed over the d coordinates and over the scales
`MMD_SCALES` (`sparse_distributions.mmd`; Mathieu et al.'s `imq_dim_kernel`, reimplemented in the
HSVAE authors' `Scripts/Models/mat_vae.py`: C = 2 · scale per dimension).

`LATENTS` is its latent family (`objectives.latents`): Gaussian draws of q(z|x), the spike-and-slab
log p(z), the Monte Carlo KL and exact prior draws, shared by the loss and the evaluation bounds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mimtext import sparse_distributions as sd
from mimtext.models import sentence_ae
from mimtext.objectives import common
from mimtext.objectives import latents

MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # Mathieu et al. / HSVAE code: C = 2 · scale per dim


def log_prior(z, cfg: common.ObjectiveConfig):
  """log p(z) = Σ_d log[γ N(z_d; 0, s²) + (1 − γ) N(z_d; 0, 1)], γ = prior_gamma: [..., d] → [...].
  """
  log_g = jnp.full_like(z, math.log(cfg.prior_gamma))
  log1m_g = jnp.full_like(z, math.log1p(-cfg.prior_gamma))
  return sd.spike_slab_log_prob(z, log_g, log1m_g, jnp.zeros_like(z), jnp.zeros_like(z),
                                spike_scale=cfg.spike_scale)


def prior_sample(key, n: int, cfg: common.ObjectiveConfig):
  """n exact draws of the spike-and-slab prior (exact Bernoulli(γ) spike/slab choice): [n,d]."""
  shape = (n, cfg.model.latent_dim)
  log_g = jnp.full(shape, math.log(cfg.prior_gamma))
  log1m_g = jnp.full(shape, math.log1p(-cfg.prior_gamma))
  z, _ = sd.spike_slab_sample(key, log_g, log1m_g, jnp.zeros(shape), jnp.zeros(shape),
                              temperature=cfg.concrete_temperature, spike_scale=cfg.spike_scale,
                              hard=True)
  return jax.lax.stop_gradient(z)


def kl(post: sentence_ae.Posterior, draw: latents.LatentDraw, cfg: common.ObjectiveConfig):
  """KL(q(z|x) ‖ p(z)) estimated by log q(z|x) − log p(z), averaged over the k draws (the prior is
  a mixture: no closed form): [b]."""
  del post
  return (draw.log_q - log_prior(draw.z, cfg)).mean(0)


LATENTS = latents.LatentFamily(
    name="matvae", posterior="gaussian", sample=latents.gaussian_sample,
    log_prior=log_prior, kl=kl, code=sentence_ae.posterior_code, prior_sample=prior_sample)


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """ψ-KL + λ-MMD objective (ψ = kl_z_weight, λ = mmd_weight) and metrics; see the docstring."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  draw = LATENTS.sample(keys.latent, post, cfg, cfg.num_samples)
  log_px = common.reconstruct(params, draw.z, batch, cfg, keys, step)
  kl_mc = LATENTS.kl(post, draw, cfg)
  z = draw.z[0]
  # Filler rows would bias the MMD: replace them by prior draws, which the prior sample matches.
  prior_z = prior_sample(keys.extra, z.shape[0], cfg)
  valid = batch["valid"]
  z_for_mmd = jnp.where(valid[:, None] > 0, z, prior_sample(jax.random.fold_in(keys.extra, 1),
                                                            z.shape[0], cfg))
  mmd = sd.mmd(z_for_mmd, prior_z, kernel=cfg.mmd_kernel, scale=MMD_SCALES)
  value = common.batch_mean(-log_px + cfg.kl_z_weight * kl_mc, valid) + cfg.mmd_weight * mmd
  neg_elbo = common.batch_mean(kl_mc - log_px, valid)
  metrics = {"loss": value, "criterion": neg_elbo, "neg_elbo": neg_elbo, "mmd": mmd,
             **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, draw, batch, cfg, LATENTS),
             "hoyer_mean_code": common.batch_mean(sd.hoyer_sparsity(LATENTS.code(post)), valid),
             "hoyer_sample": common.batch_mean(sd.hoyer_sparsity(z), valid)}
  return value, metrics
