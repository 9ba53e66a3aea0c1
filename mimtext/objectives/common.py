"""What every objective shares: its configuration, batch averaging, and the posterior metrics.

Every objective is `loss(params, batch, *, key, step, cfg, deterministic=False) -> (loss, metrics)`
where `batch` holds `tokens` [b,t], `lengths` [b] and `valid` [b] (0 for filler rows), and the loss
is a plain mean over the valid sentences of the (global) batch: under `jax.jit` over a mesh XLA
inserts the all-reduce. `metrics["criterion"]` is what validation tracks (LR plateau schedule, best
checkpoint); `deterministic=True` switches dropout off (evaluation).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mimtext import distributions
from mimtext.models import sentence_ae

Array = jax.Array

KL_SCHEDULES = ("constant", "linear", "logistic")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """An objective (`name`) over a model, with the KL weight schedule of the VAE family.

  kl_schedule: "constant" (β = kl_weight), "linear" (β rises from 0 to kl_weight over
  kl_anneal_steps), "logistic" (β = kl_weight / (1 + exp(−k (step − x0))), Bowman et al. §3.1).
  """
  model: sentence_ae.ModelConfig
  name: str = "mim"
  kl_weight: float = 1.0
  kl_schedule: str = "constant"
  kl_anneal_steps: int = 10_000
  kl_logistic_k: float = 0.0025
  kl_logistic_x0: int = 2_500

  def __post_init__(self):
    if self.kl_schedule not in KL_SCHEDULES:
      raise ValueError(f"kl_schedule must be one of {KL_SCHEDULES}, got {self.kl_schedule!r}")
    if self.kl_anneal_steps <= 0:
      raise ValueError(f"kl_anneal_steps must be positive, got {self.kl_anneal_steps}")


def kl_weight(step: Array, cfg: ObjectiveConfig) -> Array:
  """β_t of the KL term at optimiser step `step` (DESIGN §3)."""
  step = jnp.asarray(step, jnp.float32)
  if cfg.kl_schedule == "linear":
    return cfg.kl_weight * jnp.clip(step / cfg.kl_anneal_steps, 0.0, 1.0)
  if cfg.kl_schedule == "logistic":
    return cfg.kl_weight * jax.nn.sigmoid(cfg.kl_logistic_k * (step - cfg.kl_logistic_x0))
  return jnp.asarray(cfg.kl_weight, jnp.float32)


def batch_mean(values: Array, valid: Array) -> Array:
  """Mean of per-sentence values [b] over the valid rows (filler rows weigh 0)."""
  valid = valid.astype(jnp.float32)
  return jnp.sum(values * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def num_target_tokens(batch) -> Array:
  """Target tokens of the valid rows, <eos> included (Σ (lengths − 1))."""
  return jnp.sum((batch["lengths"] - 1) * batch["valid"])


def reconstruction_metrics(log_px: Array, batch) -> dict[str, Array]:
  """Reconstruction −log p(x|z) per sentence and per target token (<eos> included)."""
  valid = batch["valid"].astype(jnp.float32)
  total = -jnp.sum(log_px * valid)
  return {
      "rec": total / jnp.maximum(jnp.sum(valid), 1.0),
      "rec_per_token": total / jnp.maximum(num_target_tokens(batch), 1.0),
  }


def posterior_metrics(post: sentence_ae.Posterior, z: Array, batch,
                      cfg: sentence_ae.ModelConfig) -> dict[str, Array]:
  """KL, log q(z|x), log N(z; 0, I), mean posterior σ and the fraction of dimensions at the floor."""
  valid = batch["valid"]
  row_std = jnp.mean(jnp.exp(0.5 * post.log_var), axis=-1)
  row_floor = jnp.mean(
      (post.raw_log_var <= cfg.log_var_floor + 1e-3).astype(jnp.float32), axis=-1)
  return {
      "kl": batch_mean(distributions.normal_kl_standard(post.mean, post.log_var), valid),
      "log_q": batch_mean(distributions.normal_log_prob(z, post.mean, post.log_var), valid),
      "log_prior": batch_mean(distributions.standard_normal_log_prob(z), valid),
      "post_std": batch_mean(row_std, valid),
      "frac_at_floor": batch_mean(row_floor, valid),
  }


def split_key(key: Array, deterministic: bool):
  """Keys for encoder dropout, the latent sample, and decoder dropout.

  With `deterministic` (evaluation) the dropout keys are None, which switches dropout off; the
  latent is still sampled.
  """
  enc_key, z_key, dec_key = jax.random.split(key, 3)
  if deterministic:
    return None, z_key, None
  return enc_key, z_key, dec_key
