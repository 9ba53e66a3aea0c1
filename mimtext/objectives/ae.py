"""Deterministic sequence autoencoder (seed 000 §4.5): reconstruction only, z = μ(x).

L = −(1/N) Σ_i log p(x_i | μ(x_i)).
"""

from __future__ import annotations

from mimtext.models import sentence_ae
from mimtext.objectives import common


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """Reconstruction loss with z the posterior mean; metrics as the other objectives."""
  del step
  enc_key, _, dec_key = common.split_key(key, deterministic)
  model = cfg.model
  post = sentence_ae.encode(params, batch["tokens"], batch["lengths"], model, dropout_key=enc_key)
  z = post.mean
  log_px = sentence_ae.sentence_log_likelihood(
      params, z, batch["tokens"], batch["lengths"], model, dropout_key=dec_key)
  value = -common.batch_mean(log_px, batch["valid"])
  metrics = {"loss": value, "criterion": value, **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, z, batch, model)}
  return value, metrics
