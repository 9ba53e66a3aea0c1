"""VAE with the mutual-information criterion of Vani & Birodkar (seed 002 §4, Eq. 8-9).

L = L_VAE + λ L_MI,   L_MI = −E_{z~p(z), x~p(x|z)} [ log q_MI(z|x) − log N(z; 0, I) ],

a variational lower bound on I(z; x ~ p(x|z)) up to H(z) (Eq. 6-8). z is drawn from the prior and
x is sampled from the decoder; q_MI(z|x) is a diagonal Gaussian whose mean and log-variance are
linear maps of the masked mean of the decoder states that generated x (the decoder's own states,
since no gradient passes through discrete words). z comes from the prior, not the encoder, so
L_MI sends no gradient into z or the encoder (the paper's requirement; tested).
"""

from __future__ import annotations

import jax

from mimtext import distributions
from mimtext import nn
from mimtext.models import decoding
from mimtext.objectives import common
from mimtext.objectives import elbo

LATENTS = elbo.LATENTS  # q_MI's target is the VAE's own prior N(0, I)


def mi_loss(params, num: int, key, cfg: common.ObjectiveConfig):
  """L_MI per generated sentence, [num], from `num` prior draws (Eq. 8)."""
  z_key, x_key = jax.random.split(key)
  z = LATENTS.prior_sample(z_key, num, cfg)
  _, hidden, mask = decoding.sample_with_hidden(params, z, cfg.model, x_key,
                                                max_len=cfg.mi_max_len)
  summary = nn.summary_mean(hidden, mask)
  mean = nn.dense(params["mi_head"]["to_mean"], summary)
  log_var = nn.dense(params["mi_head"]["to_log_var"], summary)
  return -(distributions.normal_log_prob(z, mean, log_var) - LATENTS.log_prior(z, cfg))


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """−ELBO (with every VAE option) + λ L_MI, on as many prior draws as the batch has rows."""
  keys = common.step_keys(key, deterministic)
  value, metrics, _, _ = elbo.vae_terms(params, batch, keys=keys, step=step, cfg=cfg)
  l_mi = common.batch_mean(mi_loss(params, batch["tokens"].shape[0], keys.extra, cfg),
                           batch["valid"])
  value = value + cfg.mi_weight * l_mi
  return value, dict(metrics, loss=value, mi_loss=l_mi)
