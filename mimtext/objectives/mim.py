"""A-MIM loss of sentenceMIM (seed 000, Algorithm 1 and Eq. 14).

L = −(1/N) Σ_i [ log p(x_i|z_i) + ½ (log q(z_i|x_i) + log N(z_i; 0, I)) ],  z_i ~ q(z|x_i),

with one reparameterised sample per sentence (L > 1 averages all three terms over the samples).
The −½ log q term is unbounded below as the posterior σ → 0: the model's `log_var_floor` /
`floor_mode` bound it, and the metrics report the fraction of dimensions at the floor and the mean
σ (DESIGN §7).
"""

from __future__ import annotations

from mimtext import distributions
from mimtext.objectives import common


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """A-MIM loss and metrics on a batch; see the module docstring."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  zs = common.gaussian_samples(keys.latent, post, cfg.num_samples)
  log_px = common.reconstruct(params, zs, batch, cfg, keys, step)
  log_q = distributions.normal_log_prob(zs, post.mean, post.log_var).mean(0)
  log_prior = distributions.standard_normal_log_prob(zs).mean(0)
  value = -common.batch_mean(log_px + 0.5 * (log_q + log_prior), batch["valid"])
  metrics = {"loss": value, "criterion": value, **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, zs[0], batch, cfg.model)}
  return value, metrics
