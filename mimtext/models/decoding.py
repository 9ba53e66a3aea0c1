"""Generating sentences from latent codes, jit-compiled (`lax.while_loop` / `lax.scan`).

Notation: b batch, d latent, h hidden, v vocabulary, m maximum number of generated tokens.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mimtext import nn
from mimtext.data import vocab as vocab_lib
from mimtext.models import sentence_ae

Array = jax.Array


class _Stepper(NamedTuple):
  """What every decoder step needs from z, computed once: z's share of the input projection."""
  z_proj: Array          # [..., b, gates·h]: code @ W_i[e:] + b_i (or b_i when z is not an input)
  state0: object         # initial recurrent state (h, or (h, c) for an LSTM), [..., b, h]


def _prepare(params, z: Array, cfg: sentence_ae.ModelConfig) -> _Stepper:
  """z: [..., b, d] (leading axes: jointly decoded latents, see `decode`)."""
  code = sentence_ae.decoder_code(params, z)
  w_i, b_i = params["decoder"]["w_i"], params["decoder"]["b_i"]
  z_proj = code @ w_i[cfg.embed_dim:] + b_i if cfg.concat_z else jnp.broadcast_to(
      b_i, z.shape[:-1] + b_i.shape)
  h0 = sentence_ae.decoder_initial_state(params, code, cfg)
  if h0 is None:
    h0 = jnp.zeros(z.shape[:-1] + (cfg.hidden_dim,), z.dtype)
  return _Stepper(z_proj, nn.rnn_initial_state(cfg.cell, h0))


def _step(params, cfg, stepper: _Stepper, prev: Array, state):
  """One decoder step from the previous token [b] → (hidden [...,b,h], logits [b,v], new state).

  With leading latent axes (several latents per sentence) the decoders step side by side and
  their hidden states are averaged before the softmax (seed 003 Eq. 7-8).
  """
  x_proj = nn.embed(params["embed"], prev) @ params["decoder"]["w_i"][:cfg.embed_dim]
  hidden, state = nn.rnn_step(params["decoder"], cfg.cell, x_proj + stepper.z_proj, state)
  mixed = hidden.reshape((-1,) + hidden.shape[-2:]).mean(axis=0)
  return hidden, sentence_ae.output_logits(params, mixed), state


def _mask_logits(logits: Array, ban_unk: bool) -> Array:
  """<pad> and <sos> are never generated; <unk> optionally banned."""
  banned = [vocab_lib.PAD_ID, vocab_lib.SOS_ID] + ([vocab_lib.UNK_ID] if ban_unk else [])
  return logits.at[:, jnp.asarray(banned)].set(-jnp.inf)


@functools.partial(jax.jit, static_argnames=("cfg", "max_len", "ban_unk", "inputless"))
def decode(params, z: Array, cfg: sentence_ae.ModelConfig, *, max_len: int,
           key: Array | None = None, temperature: float = 1.0, ban_unk: bool = False,
           inputless: bool = False):
  """Greedy (key=None) or temperature-sampled decoding from z → ids [b,m], lengths [b].

  z: [b,d], or [L,b,d] for a decoder that averages the states of L jointly decoded latents
  (seed 003 Eq. 7-8). `inputless`: the decoder reads `<unk>` after `<sos>` instead of its previous
  token, as an inputless decoder was trained (seed 001 Table 2). Each row stops at its first
  `<eos>` (included in `ids`, counted in `lengths`) or after m tokens; positions after the stop
  hold `<pad>`. The loop ends as soon as every row has stopped.
  """
  b = z.shape[-2]
  stepper = _prepare(params, z, cfg)
  ids0 = jnp.full((b, max_len), vocab_lib.PAD_ID, jnp.int32)
  prev0 = jnp.full((b,), vocab_lib.SOS_ID, jnp.int32)
  key0 = jax.random.PRNGKey(0) if key is None else key

  def cond(carry):
    step, _, _, done, _ = carry
    return (step < max_len) & ~jnp.all(done)

  def body(carry):
    step, state, prev, done, ids = carry
    if inputless:
      prev = jnp.where(step == 0, prev, vocab_lib.UNK_ID).astype(jnp.int32)
    _, logits, state = _step(params, cfg, stepper, prev, state)
    logits = _mask_logits(logits, ban_unk)
    if key is None:
      token = jnp.argmax(logits, axis=-1)
    else:
      token = jax.random.categorical(jax.random.fold_in(key0, step), logits / temperature)
    token = jnp.where(done, vocab_lib.PAD_ID, token.astype(jnp.int32))
    ids = ids.at[:, step].set(token)
    return step + 1, state, token, done | (token == vocab_lib.EOS_ID), ids

  carry = (0, stepper.state0, prev0, jnp.zeros((b,), bool), ids0)
  _, _, _, _, ids = jax.lax.while_loop(cond, body, carry)
  lengths = jnp.sum(ids != vocab_lib.PAD_ID, axis=1).astype(jnp.int32)
  return ids, lengths


def greedy_decode(params, z: Array, cfg: sentence_ae.ModelConfig, *, max_len: int,
                  ban_unk: bool = False, inputless: bool = False):
  """Greedy decoding (argmax at every step); see `decode`."""
  return decode(params, z, cfg, max_len=max_len, ban_unk=ban_unk, inputless=inputless)


def sample_with_hidden(params, z: Array, cfg: sentence_ae.ModelConfig, key: Array, *,
                       max_len: int):
  """Ancestral samples x ~ p(x|z) with the decoder states that produced them.

  A fixed-length `lax.scan` (differentiable in `params` and z through the states; the sampled
  tokens themselves carry no gradient). Returns ids [b,m], hidden [b,m,h] (the state that emitted
  each token, zeros after the row's <eos>) and mask [b,m] (True up to and including <eos>).
  Used by the mutual-information criterion of seed 002 §4, where q_MI reads these states.
  """
  b = z.shape[0]
  stepper = _prepare(params, z, cfg)

  def body(carry, step_key):
    state, prev, done = carry
    hidden, logits, state = _step(params, cfg, stepper, prev, state)
    token = jax.random.categorical(step_key, jax.lax.stop_gradient(_mask_logits(logits, False)))
    token = jnp.where(done, vocab_lib.PAD_ID, token.astype(jnp.int32))
    emitted = ~done
    hidden = jnp.where(emitted[:, None], hidden, 0.0)
    return (state, token, done | (token == vocab_lib.EOS_ID)), (token, hidden, emitted)

  carry = (stepper.state0, jnp.full((b,), vocab_lib.SOS_ID, jnp.int32), jnp.zeros((b,), bool))
  _, (ids, hidden, mask) = jax.lax.scan(body, carry, jax.random.split(key, max_len))
  return ids.T, jnp.swapaxes(hidden, 0, 1), mask.T
