"""Sentence-VAE negative ELBO and its cures for posterior collapse (seeds 001, 003, 004; DESIGN §3).

L = −(1/N) Σ_i [ (1/L) Σ_l log p(x_i|z_il) − β_t KL(q(z|x_i) ‖ N(0, I)) ] + penalties,

with the KL in closed form, β_t from `common.kl_weight` (constant, linear or logistic annealing),
optional free bits, L samples averaged in the loss or in the decoder states (seed 003), decoder word
dropout (seed 001 §3.2, seed 002 §5.4), and optional L1 / L2 penalties on the posterior parameters
μ and σ (the VAE_L1 / VAE_L2 baselines of seed 004 §4.1.2, "the activation of μ and σ of q(z|x)
regularised by either L1 or L2 norms"), σ_i = exp(½ log σ_i²) (the floored log-variance):

  + l1 · mean_i (‖μ_i‖₁ + ‖σ_i‖₁) + l2 · mean_i (‖μ_i‖₂² + ‖σ_i‖₂²),   μ_i, σ_i ∈ R^d.
"""

from __future__ import annotations

import jax.numpy as jnp

from mimtext import distributions
from mimtext.objectives import common
from mimtext.objectives import latents

LATENTS = latents.GAUSSIAN


def vae_terms(params, batch, *, keys, step, cfg: common.ObjectiveConfig):
  """The pieces of the (annealed) negative ELBO: (loss, metrics, posterior, z samples)."""
  post = common.encode(params, batch, cfg, keys)
  draw = LATENTS.sample(keys.latent, post, cfg, cfg.num_samples)
  zs = draw.z
  log_px = common.reconstruct(params, zs, batch, cfg, keys, step)
  kl_dims = distributions.normal_kl_standard_per_dim(post.mean, post.log_var)
  kl = kl_dims.sum(-1)
  beta = common.kl_weight(step, cfg)
  value = common.batch_mean(-log_px, batch["valid"]) + beta * common.kl_term(
      kl_dims, batch["valid"], cfg.free_bits)
  std = jnp.exp(0.5 * post.log_var)  # σ [b,d] of the L1 / L2 penalties (unused otherwise)
  if cfg.l1_weight:
    l1 = jnp.abs(post.mean).sum(-1) + std.sum(-1)  # ‖μ_i‖₁ + ‖σ_i‖₁ [b]
    value += cfg.l1_weight * common.batch_mean(l1, batch["valid"])
  if cfg.l2_weight:
    l2 = jnp.square(post.mean).sum(-1) + jnp.square(std).sum(-1)  # ‖μ_i‖₂² + ‖σ_i‖₂² [b]
    value += cfg.l2_weight * common.batch_mean(l2, batch["valid"])
  neg_elbo = common.batch_mean(kl - log_px, batch["valid"])
  # The criterion for validation (LR schedule, best checkpoint) is the unannealed −ELBO, so that
  # it does not improve merely because β_t is still small.
  metrics = {"loss": value, "criterion": neg_elbo, "kl_weight": beta, "neg_elbo": neg_elbo,
             "word_keep": jnp.asarray(common.word_keep(step, cfg), jnp.float32),
             **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, draw, batch, cfg, LATENTS)}
  return value, metrics, post, zs


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """Annealed negative ELBO and metrics on a batch; see the module docstring."""
  value, metrics, _, _ = vae_terms(params, batch, keys=common.step_keys(key, deterministic),
                                   step=step, cfg=cfg)
  return value, metrics


