"""Flax (linen) modules over mimtext's pure functions, for Flax users who want a sentence encoder
inside their own model.

The core stays plain pytrees and pure functions (`sentence_ae`); these modules only own the
parameters the Flax way. `SentenceEncoder` holds the whole sentence-autoencoder parameter tree under
one variable (so a trained run's parameters drop in unchanged) and returns q(z|x):

  encoder = SentenceEncoder(run.model_cfg)
  variables = encoder.init(key, tokens, lengths)              # fresh parameters, or
  variables = SentenceEncoder.variables_from(run.params)      # a trained run's
  mean, log_var = encoder.apply(variables, tokens, lengths)   # [b,d] each

Inside a user's module, `SentenceEncoder(cfg, name="encoder")(tokens, lengths)` gives the codes,
and gradients flow into the encoder's parameters unless the caller stops them (a frozen encoder:
`jax.lax.stop_gradient` on its outputs, or an optax mask on its parameters).

Notation: b batch, t time, d latent.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from mimtext.models import sentence_ae

PARAMS_NAME = "sentence_ae"


class SentenceEncoder(nn.Module):
  """q(z|x) of a sentence autoencoder: (tokens [b,t], lengths [b]) → (mean [b,d], log σ² [b,d]).

  `mean` is the deterministic code (`sentence_ae.posterior_code`: μ; (1 − E γ) μ for HSVAE) when
  `code=True`, else the Gaussian mean μ. Deterministic (no dropout): an encoder for downstream use.
  """
  cfg: sentence_ae.ModelConfig
  code: bool = True

  @nn.compact
  def __call__(self, tokens: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    params = self.param(PARAMS_NAME, lambda key: sentence_ae.init_params(key, self.cfg))
    post = sentence_ae.encode(params, tokens, lengths, self.cfg)
    mean = sentence_ae.posterior_code(post) if self.code else post.mean
    return mean, post.log_var

  @staticmethod
  def variables_from(params: Any) -> dict[str, Any]:
    """The variables of a `SentenceEncoder` holding a trained run's parameters (`run.params`)."""
    return {"params": {PARAMS_NAME: params}}
