"""A-MIM loss of sentenceMIM (seed 000, Algorithm 1 and Eq. 14).

L = −(1/N) Σ_i [ log p(x_i|z_i) + ½ (log q(z_i|x_i) + log N(z_i; 0, I)) ],  z_i ~ q(z|x_i),

with one reparameterised sample per sentence. The −½ log q term is unbounded below as the
posterior σ → 0: the model's `log_var_floor` / `floor_mode` bound it, and the metrics report the
fraction of dimensions at the floor and the mean σ (DESIGN §7).
"""

from __future__ import annotations

from mimtext import distributions
from mimtext.models import sentence_ae
from mimtext.objectives import common


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """A-MIM loss and metrics on a batch; see the module docstring."""
  del step  # A-MIM has no schedule.
  enc_key, z_key, dec_key = common.split_key(key, deterministic)
  model = cfg.model
  post = sentence_ae.encode(params, batch["tokens"], batch["lengths"], model, dropout_key=enc_key)
  z = distributions.normal_sample(z_key, post.mean, post.log_var)
  log_px = sentence_ae.sentence_log_likelihood(
      params, z, batch["tokens"], batch["lengths"], model, dropout_key=dec_key)
  log_q = distributions.normal_log_prob(z, post.mean, post.log_var)
  log_prior = distributions.standard_normal_log_prob(z)
  value = -common.batch_mean(log_px + 0.5 * (log_q + log_prior), batch["valid"])
  metrics = {"loss": value, "criterion": value, **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, z, batch, model)}
  return value, metrics
