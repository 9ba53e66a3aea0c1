"""Deterministic sequence autoencoder (seed 000 §4.5): reconstruction only, z = μ(x).

L = −(1/N) Σ_i log p(x_i | μ(x_i)).
"""

from __future__ import annotations

from mimtext.objectives import common
from mimtext.objectives import latents

# Its latent family is used only to score z = μ in the metrics and, in evaluation, as the
# N(μ, s² I) proposal of an importance-weighted bound under a post-hoc prior (`evaluation.bounds`).
LATENTS = latents.GAUSSIAN


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """Reconstruction loss with z the posterior mean. The metrics leave out the KL, σ and floor of
  the other objectives: they would describe a log-variance head the AE never trains."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  log_px = common.reconstruct(params, post.mean[None], batch, cfg, keys, step)
  value = -common.batch_mean(log_px, batch["valid"])
  metrics = {"loss": value, "criterion": value, **common.reconstruction_metrics(log_px, batch)}
  return value, metrics
