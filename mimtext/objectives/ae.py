"""Deterministic sequence autoencoder (seed 000 §4.5): reconstruction only, z = μ(x).

L = −(1/N) Σ_i log p(x_i | μ(x_i)).
"""

from __future__ import annotations

from mimtext.objectives import common


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """Reconstruction loss with z the posterior mean; metrics as the other objectives."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  log_px = common.reconstruct(params, post.mean[None], batch, cfg, keys, step)
  value = -common.batch_mean(log_px, batch["valid"])
  metrics = {"loss": value, "criterion": value, **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, post.mean, batch, cfg.model)}
  return value, metrics
