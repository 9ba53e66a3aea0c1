"""The sentence autoencoder of sentenceMIM (seed 000, section 2 and 4.2; Figs. 1-2).

Shared word embeddings feed a one-layer GRU encoder that reads the sentence reversed (seed 000
§4.2); linear maps from its last real hidden state give the mean and log-variance of a diagonal
Gaussian posterior q(z|x) (Eq. 3). The decoder is a GRU whose initial state is a linear map of z
and whose input at every step is the previous word's embedding concatenated with z; a linear map
of its hidden state gives the logits of p(x^k | x^{<k}, z) (Eq. 1). The same network serves sMIM,
sVAE and the deterministic AE: only the objective differs.

Notation: b batch, t time (tokens incl. <sos>/<eos>), v vocabulary, e embedding, h hidden, d latent.
A batch row is `<sos> w_1 … w_n <eos> <pad>…` with `lengths = n + 2`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mimtext import distributions
from mimtext import nn

Params = dict
Array = jax.Array

FLOOR_MODES = ("clamp", "softplus", "none")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static architecture of the sentence autoencoder (defaults: seed 000 §4.2, PTB)."""
  vocab_size: int
  embed_dim: int = 300
  hidden_dim: int = 512
  latent_dim: int = 128
  embed_dropout: float = 0.5
  reverse_encoder_input: bool = True
  # Floor on the posterior log-variance (DESIGN §7): "clamp" as the original code (zero gradient
  # below the floor), "softplus" for a smooth floor, "none" to leave it unbounded.
  log_var_floor: float = -10.0
  floor_mode: str = "clamp"

  def __post_init__(self):
    if self.floor_mode not in FLOOR_MODES:
      raise ValueError(f"floor_mode must be one of {FLOOR_MODES}, got {self.floor_mode!r}")
    for name in ("vocab_size", "embed_dim", "hidden_dim", "latent_dim"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if not 0.0 <= self.embed_dropout < 1.0:
      raise ValueError(f"embed_dropout must be in [0, 1), got {self.embed_dropout}")


class Posterior(NamedTuple):
  """Diagonal Gaussian q(z|x): mean [b,d], floored log-variance [b,d], raw log-variance [b,d]."""
  mean: Array
  log_var: Array
  raw_log_var: Array


def init_params(key: Array, cfg: ModelConfig) -> Params:
  """Initialises every weight of the autoencoder."""
  keys = jax.random.split(key, 7)
  e, h, d, v = cfg.embed_dim, cfg.hidden_dim, cfg.latent_dim, cfg.vocab_size
  return {
      "embed": nn.init_embedding(keys[0], v, e),
      "encoder": nn.init_gru(keys[1], e, h),
      "to_mean": nn.init_dense(keys[2], h, d),
      "to_log_var": nn.init_dense(keys[3], h, d),
      "z_to_h0": nn.init_dense(keys[4], d, h),
      "decoder": nn.init_gru(keys[5], e + d, h),
      "out": nn.init_dense(keys[6], h, v),
  }


def count_params(params: Params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def _embed_dropped(params: Params, ids: Array, cfg: ModelConfig, key: Array | None) -> Array:
  x = nn.embed(params["embed"], ids)
  if key is None:
    return x
  return nn.dropout(key, x, cfg.embed_dropout, deterministic=False)


def encode(params: Params, tokens: Array, lengths: Array, cfg: ModelConfig, *,
           dropout_key: Array | None = None) -> Posterior:
  """q(z|x) from the last real encoder state (seed 000 Eq. 3, Fig. 2).

  Args:
    tokens: [b,t] int ids `<sos> w… <eos> <pad>…`; lengths: [b] real tokens incl. <sos>/<eos>.
    dropout_key: enables embedding dropout (training) when given.
  Returns:
    Posterior with mean, floored log-variance and raw log-variance, each [b,d].
  """
  words = tokens[:, 1:]                                     # [b,t-1]; <sos> is not read
  mask = nn.sequence_mask(lengths - 2, words.shape[1])      # words only: <eos> is not read
  x = _embed_dropped(params, words, cfg, dropout_key)
  _, last = nn.gru(params["encoder"], x, mask, reverse=cfg.reverse_encoder_input)
  raw_log_var = nn.dense(params["to_log_var"], last)
  log_var = distributions.log_var_floor(raw_log_var, cfg.log_var_floor, cfg.floor_mode)
  return Posterior(nn.dense(params["to_mean"], last), log_var, raw_log_var)


def decoder_logits(params: Params, z: Array, tokens: Array, lengths: Array, cfg: ModelConfig, *,
                   dropout_key: Array | None = None) -> Array:
  """Logits of p(x^k | x^{<k}, z) for k = 1..t-1 (seed 000 Eq. 1, Fig. 1): [b,t-1,v].

  The decoder reads `<sos> w_1 … w_n` (teacher forcing), each embedding concatenated with z, from
  the initial state W z + c; position k predicts tokens[:, k+1].
  """
  inputs = tokens[:, :-1]
  mask = nn.sequence_mask(lengths - 1, inputs.shape[1])
  x = _embed_dropped(params, inputs, cfg, dropout_key)
  z_steps = jnp.broadcast_to(z[:, None, :], x.shape[:2] + z.shape[-1:])
  h0 = nn.dense(params["z_to_h0"], z)
  hidden, _ = nn.gru(params["decoder"], jnp.concatenate([x, z_steps], -1), mask, h0=h0)
  return nn.dense(params["out"], hidden)


def token_log_likelihoods(logits: Array, tokens: Array, lengths: Array) -> Array:
  """log p(x^k | x^{<k}, z) of every target token, 0 at padding: [b,t-1].

  Targets are tokens[:, 1:] (w_1 … w_n <eos>); the <eos> step is included (it models the length).
  """
  targets = tokens[:, 1:]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.where(nn.sequence_mask(lengths - 1, targets.shape[1]), picked, 0.0)


def sentence_log_likelihood(params: Params, z: Array, tokens: Array, lengths: Array,
                            cfg: ModelConfig, *, dropout_key: Array | None = None,
                            include_eos: bool = True) -> Array:
  """log p(x|z) = Σ_k log p(x^k | x^{<k}, z) per sentence: [b] (seed 000 Eq. 1-2).

  With include_eos=False the final <eos> term is left out (for PPL without <eos>, seed 000 §4.3).
  """
  logits = decoder_logits(params, z, tokens, lengths, cfg, dropout_key=dropout_key)
  per_token = token_log_likelihoods(logits, tokens, lengths)
  if not include_eos:
    eos_position = lengths - 2                              # index of <eos> among the targets
    per_token = jnp.where(jnp.arange(per_token.shape[1])[None] == eos_position[:, None],
                          0.0, per_token)
  return per_token.sum(axis=1)
