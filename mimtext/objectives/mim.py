"""A-MIM loss of sentenceMIM (seed 000, Algorithm 1 and Eq. 14).

L = −(1/N) Σ_i [ log p(x_i|z_i) + ½ (log q(z_i|x_i) + log N(z_i; 0, I)) ],  z_i ~ q(z|x_i),

with one reparameterised sample per sentence (L > 1 averages all three terms over the samples).
The −½ log q term is unbounded below as the posterior σ → 0: the model's `log_var_floor` /
`floor_mode` bound it, and the metrics report the fraction of dimensions at the floor and the mean
σ (DESIGN §7).

The official training script (SentenceMIM-demo train.py) also adds a constant: it adds log B to
the batch's summed reconstruction NLL and then divides the whole loss by the batch size B, so its
reported loss is L + log(B) / B. Where log B comes from: Eq. 13 bounds log p(z) ≥ log q(z|x') +
log P(x'); with P the empirical distribution of a batch of B distinct sentences, log P(x_i) =
−log B, the entropy H_P(x) = log B of Eq. 14 (as log N in the MELBO, Eq. 16). Eq. 14 carries it as
½ H_P(x) = ½ log B per sentence; the script adds it once per batch instead, i.e. log(B) / B per
sentence (B = 20: 0.1498 nats). With `cfg.mim_batch_constant` this module adds log(B) / B with B
the number of valid sentences (filler rows excluded). It depends on no parameter (no gradient), so
it moves only the reported `loss`; `criterion` stays the Algorithm 1 value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mimtext.objectives import common
from mimtext.objectives import latents

LATENTS = latents.SMIM_GAUSSIAN  # prior samples decode N(0, 0.1² I) (seed 000 appendix D.3)


def batch_constant(valid) -> jax.Array:
  """log(B) / B with B = Σ valid ≥ 1 the valid sentences of the batch: a scalar constant.

  valid: [b] (1 real row, 0 filler). 0 when B = 1; no gradient (stop_gradient).
  """
  b = jnp.maximum(jnp.sum(jnp.asarray(valid, jnp.float32)), 1.0)
  return jax.lax.stop_gradient(jnp.log(b) / b)


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """A-MIM loss and metrics on a batch; see the module docstring."""
  keys = common.step_keys(key, deterministic)
  post = common.encode(params, batch, cfg, keys)
  draw = LATENTS.sample(keys.latent, post, cfg, cfg.num_samples)
  log_px = common.reconstruct(params, draw.z, batch, cfg, keys, step)
  log_q = draw.log_q.mean(0)
  log_prior = LATENTS.log_prior(draw.z, cfg).mean(0)
  criterion = -common.batch_mean(log_px + 0.5 * (log_q + log_prior), batch["valid"])
  value = criterion
  extra = {}
  if cfg.mim_batch_constant:
    extra["batch_constant"] = batch_constant(batch["valid"])
    value = criterion + extra["batch_constant"]
  metrics = {"loss": value, "criterion": criterion, **extra,
             **common.reconstruction_metrics(log_px, batch),
             **common.posterior_metrics(post, draw, batch, cfg, LATENTS)}
  return value, metrics
