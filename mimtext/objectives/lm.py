"""The autoregressive language model that every latent-variable model is measured against.

Bowman et al. 2016 (Table 2) and Livne et al. 2020 (sMIM, Table 2) compare their sentence VAEs with
an RNN language model of the same decoder. Here it is that decoder with z removed
(`ModelConfig.condition = "none"`: no z in its inputs, no z in its initial state), trained on

  L = −(1/N) Σ_i log p(x_i) = −(1/N) Σ_i Σ_t log p(x_it | x_i<t),

the exact negative log-likelihood: no latent, no bound. The encoder is never run (its parameters
stay in the tree, untrained, so that the LM shares the parameter layout, checkpoints and tools of
the autoencoders). Evaluation reports this exact NLL (`evaluation.bounds.nll_bounds`, bound
"exact"), the yardstick for the ELBO, importance-weighted and post-hoc bounds of the others.
"""

from __future__ import annotations

import jax.numpy as jnp

from mimtext.objectives import common
from mimtext.objectives import latents

# The LM has no latent; the Gaussian family is named only so that generic code (the latent family
# lookup, the evaluation's draws, which the decoder then ignores) runs unchanged.
LATENTS = latents.GAUSSIAN


def loss(params, batch, *, key, step, cfg: common.ObjectiveConfig, deterministic: bool = False):
  """−(1/N) Σ_i log p(x_i) over the valid sentences; the criterion is the same number."""
  keys = common.step_keys(key, deterministic)
  batch_size = batch["tokens"].shape[0]
  # The decoder ignores z (condition "none"); a zero code of the right shape stands in for it.
  no_code = jnp.zeros((1, batch_size, cfg.model.latent_dim), jnp.float32)
  log_px = common.reconstruct(params, no_code, batch, cfg, keys, step)
  value = -common.batch_mean(log_px, batch["valid"])
  return value, {"loss": value, "criterion": value, **common.reconstruction_metrics(log_px, batch)}
