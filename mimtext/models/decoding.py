"""Decoding sentences from latent codes, jit-compiled with `lax.while_loop`.

Notation: b batch, d latent, h hidden, v vocabulary, m maximum number of generated tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mimtext import nn
from mimtext.data import vocab as vocab_lib
from mimtext.models import sentence_ae

Array = jax.Array


def _step_logits(params, cfg: sentence_ae.ModelConfig, z_proj: Array, prev: Array, h: Array):
  """One decoder step from the previous token [b] and state [b,h] → (logits [b,v], new state)."""
  x = nn.embed(params["embed"], prev)
  w_i = params["decoder"]["w_i"]
  x_proj = x @ w_i[:cfg.embed_dim] + z_proj
  h = nn.gru_cell(params["decoder"], x_proj, h)
  return nn.dense(params["out"], h), h


@functools.partial(jax.jit, static_argnames=("cfg", "max_len", "ban_unk"))
def decode(params, z: Array, cfg: sentence_ae.ModelConfig, *, max_len: int,
           key: Array | None = None, temperature: float = 1.0, ban_unk: bool = False):
  """Greedy (key=None) or temperature-sampled decoding from z: [b,d] → ids [b,m], lengths [b].

  Each row stops at its first `<eos>` (included in `ids`, counted in `lengths`) or after m tokens;
  positions after the stop hold `<pad>`. The loop ends as soon as every row has stopped.
  """
  b = z.shape[0]
  # z enters every step's input: its share of the input projection is computed once.
  z_proj = z @ params["decoder"]["w_i"][cfg.embed_dim:] + params["decoder"]["b_i"]
  h0 = nn.dense(params["z_to_h0"], z)
  ids0 = jnp.full((b, max_len), vocab_lib.PAD_ID, jnp.int32)
  prev0 = jnp.full((b,), vocab_lib.SOS_ID, jnp.int32)
  done0 = jnp.zeros((b,), bool)
  key0 = jax.random.PRNGKey(0) if key is None else key

  def cond(carry):
    step, _, _, done, _ = carry
    return (step < max_len) & ~jnp.all(done)

  def body(carry):
    step, h, prev, done, ids = carry
    logits, h = _step_logits(params, cfg, z_proj, prev, h)
    if ban_unk:
      logits = logits.at[:, vocab_lib.UNK_ID].set(-jnp.inf)
    logits = logits.at[:, vocab_lib.PAD_ID].set(-jnp.inf).at[:, vocab_lib.SOS_ID].set(-jnp.inf)
    if key is None:
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      token = jax.random.categorical(jax.random.fold_in(key0, step), logits / temperature)
      token = token.astype(jnp.int32)
    token = jnp.where(done, vocab_lib.PAD_ID, token)
    ids = ids.at[:, step].set(token)
    return step + 1, h, token, done | (token == vocab_lib.EOS_ID), ids

  _, _, _, _, ids = jax.lax.while_loop(cond, body, (0, h0, prev0, done0, ids0))
  lengths = jnp.sum(ids != vocab_lib.PAD_ID, axis=1).astype(jnp.int32)
  return ids, lengths


def greedy_decode(params, z: Array, cfg: sentence_ae.ModelConfig, *, max_len: int,
                  ban_unk: bool = False):
  """Greedy decoding (argmax at every step); see `decode`."""
  return decode(params, z, cfg, max_len=max_len, ban_unk=ban_unk)
