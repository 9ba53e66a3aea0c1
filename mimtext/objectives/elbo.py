"""Sentence-VAE negative ELBO with KL annealing (seed 001 §3.1; DESIGN §3).

L = −(1/N) Σ_i [ log p(x_i|z_i) − β_t KL(q(z|x_i) ‖ N(0, I)) ],  z_i ~ q(z|x_i),

with the KL in closed form and β_t from `common.kl_weight` (constant, linear or logistic).
"""

from __future__ import annotations

from mimtext import distributions
from mimtext.models import sentence_ae
from mimtext.objectives import common


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """Annealed negative ELBO and metrics on a batch; see the module docstring."""
  enc_key, z_key, dec_key = common.split_key(key, deterministic)
  model = cfg.model
  post = sentence_ae.encode(params, batch["tokens"], batch["lengths"], model, dropout_key=enc_key)
  z = distributions.normal_sample(z_key, post.mean, post.log_var)
  log_px = sentence_ae.sentence_log_likelihood(
      params, z, batch["tokens"], batch["lengths"], model, dropout_key=dec_key)
  kl = distributions.normal_kl_standard(post.mean, post.log_var)
  beta = common.kl_weight(step, cfg)
  value = common.batch_mean(-log_px + beta * kl, batch["valid"])
  neg_elbo = common.batch_mean(kl - log_px, batch["valid"])
  # The criterion for validation (LR schedule, best checkpoint) is the unannealed −ELBO, so that
  # it does not improve merely because β_t is still small.
  metrics = {"loss": value, "criterion": neg_elbo, "kl_weight": beta, "neg_elbo": neg_elbo,
             **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, z, batch, model)}
  return value, metrics
