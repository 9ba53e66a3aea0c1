"""MAT-VAE baseline of seed 004 appendix B (Mathieu et al. 2019).

L = −E_q[log p(x|z)] + ψ KL(q(z|x) ‖ p(z)) + λ MMD(q(z), p(z)),

with a Gaussian posterior q(z|x), the fixed spike-and-slab prior p(z_d) = γ N(0, s²) + (1 − γ) N(0, 1)
(γ = `prior_gamma`, the prior sparsity), the KL estimated by log q(z|x) − log p(z) at the posterior
sample (the prior is a mixture: no closed form), and the unbiased MMD between the batch's posterior
samples (the aggregate posterior q(z)) and as many prior samples, with a one-dimensional inverse
multiquadric (or RBF) kernel per coordinate, summed over the d coordinates and over the scales
`MMD_SCALES` (`sparse_distributions.mmd`; Mathieu et al.'s `imq_dim_kernel`, reimplemented in the
HSVAE authors' `Scripts/Models/mat_vae.py`: C = 2 · scale per dimension).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mimtext import distributions
from mimtext import sparse_distributions as sd
from mimtext.objectives import common

MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # Mathieu et al. / HSVAE code: C = 2 · scale per dim


def prior_log_prob(z, cfg: common.ObjectiveConfig):
  """log p(z) under the spike-and-slab prior, summed over d: [...]."""
  log_g = jnp.full_like(z, math.log(cfg.prior_gamma))
  log1m_g = jnp.full_like(z, math.log1p(-cfg.prior_gamma))
  return sd.spike_slab_log_prob(z, log_g, log1m_g, jnp.zeros_like(z), jnp.zeros_like(z),
                                spike_scale=cfg.spike_scale)


def prior_sample(key, shape, cfg: common.ObjectiveConfig):
  """Exact draws of the spike-and-slab prior: [*shape]."""
  log_g = jnp.full(shape, math.log(cfg.prior_gamma))
  log1m_g = jnp.full(shape, math.log1p(-cfg.prior_gamma))
  z, _ = sd.spike_slab_sample(key, log_g, log1m_g, jnp.zeros(shape), jnp.zeros(shape),
                              temperature=cfg.concrete_temperature, spike_scale=cfg.spike_scale,
                              hard=True)
  return jax.lax.stop_gradient(z)


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """ψ-KL + λ-MMD objective and metrics; see the module docstring."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  zs = common.gaussian_samples(keys.latent, post, cfg.num_samples)
  log_px = common.reconstruct(params, zs, batch, cfg, keys, step)
  kl = (distributions.normal_log_prob(zs, post.mean, post.log_var)
        - prior_log_prob(zs, cfg)).mean(0)
  z = zs[0]
  # Filler rows would bias the MMD: replace them by prior draws, which the prior sample matches.
  prior_z = prior_sample(keys.extra, z.shape, cfg)
  valid = batch["valid"]
  z_for_mmd = jnp.where(valid[:, None] > 0, z, prior_sample(jax.random.fold_in(keys.extra, 1),
                                                            z.shape, cfg))
  mmd = sd.mmd(z_for_mmd, prior_z, kernel=cfg.mmd_kernel, scale=MMD_SCALES)
  value = common.batch_mean(-log_px + cfg.psi * kl, valid) + cfg.mmd_weight * mmd
  neg_elbo = common.batch_mean(kl - log_px, valid)
  metrics = {"loss": value, "criterion": neg_elbo, "neg_elbo": neg_elbo, "mmd": mmd,
             **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, z, batch, cfg.model),
             "kl": common.batch_mean(kl, valid),
             "hoyer_mean_code": common.batch_mean(sd.hoyer_sparsity(post.mean), valid),
             "hoyer_sample": common.batch_mean(sd.hoyer_sparsity(z), valid)}
  return value, metrics
