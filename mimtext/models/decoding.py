"""Generating sentences from latent codes, jit-compiled (`lax.while_loop` / `lax.scan`).

Greedy and temperature-sampled decoding (`decode`), ancestral samples with their decoder states
(`sample_with_hidden`), and batched beam search (`beam_search`) with optional constraints: a forced
prefix and an exact length, as the constrained beam search of the imputation experiment of
seed 001 §5 needs.

Notation: b batch, d latent, h hidden, v vocabulary, m maximum number of generated tokens,
k beam width, p forced-prefix width, L jointly decoded latents, α length penalty.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mimtext import nn
from mimtext import special_tokens
from mimtext.models import sentence_ae

Array = jax.Array


class _Stepper(NamedTuple):
  """What every decoder step needs from z, computed once: z's share of the input projection."""
  z_proj: Array          # [..., b, gates·h]: code @ W_z + b_i (or b_i when z is not an input)
  state0: object         # initial recurrent state (h, or (h, c) for an LSTM), [..., b, h]


def _prepare(params, z: Array, cfg: sentence_ae.ModelConfig) -> _Stepper:
  """z: [..., b, d] (leading axes: jointly decoded latents, see `decode`)."""
  code = sentence_ae.decoder_code(params, z)
  w_z, b_i = sentence_ae.split_decoder_input_weights(params, cfg).z, params["decoder"]["b_i"]
  z_proj = code @ w_z + b_i if w_z is not None else jnp.broadcast_to(
      b_i, z.shape[:-1] + b_i.shape)
  h0 = sentence_ae.decoder_initial_state(params, code, cfg)
  if h0 is None:
    h0 = jnp.zeros(z.shape[:-1] + (cfg.hidden_dim,), z.dtype)
  return _Stepper(z_proj, nn.rnn_initial_state(cfg.cell, h0))


def step_input_projection(params, cfg: sentence_ae.ModelConfig, stepper: _Stepper,
                          prev: Array) -> Array:
  """x W_i + b_i of one step's decoder input x = [embedding(prev); z], by the blocks of W_i.

  prev: the previous token [b]; returns [..., b, gates·h], the same as the teacher-forced
  decoder's `concat_decoder_input(...) @ W_i + b_i` at that position.
  """
  w_word = sentence_ae.split_decoder_input_weights(params, cfg).word
  return nn.embed(params["embed"], prev) @ w_word + stepper.z_proj


def _step(params, cfg, stepper: _Stepper, prev: Array, state):
  """One decoder step from the previous token [b] → (hidden [...,b,h], logits [b,v], new state).

  With leading latent axes (several latents per sentence) the decoders step side by side and
  their hidden states are averaged before the softmax (seed 003 Eq. 7-8).
  """
  x_proj = step_input_projection(params, cfg, stepper, prev)
  hidden, state = nn.rnn_step(params["decoder"], cfg.cell, x_proj, state)
  mixed = hidden.reshape((-1,) + hidden.shape[-2:]).mean(axis=0)
  return hidden, sentence_ae.output_logits(params, mixed), state


def _mask_logits(logits: Array, ban_unk: bool) -> Array:
  """<pad> and <sos> are never generated; <unk> optionally banned."""
  banned = [special_tokens.PAD_ID, special_tokens.SOS_ID]
  if ban_unk:
    banned.append(special_tokens.UNK_ID)
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
  ids0 = jnp.full((b, max_len), special_tokens.PAD_ID, jnp.int32)
  prev0 = jnp.full((b,), special_tokens.SOS_ID, jnp.int32)
  key0 = jax.random.PRNGKey(0) if key is None else key

  def cond(carry):
    step, _, _, done, _ = carry
    return (step < max_len) & ~jnp.all(done)

  def body(carry):
    step, state, prev, done, ids = carry
    if inputless:
      prev = jnp.where(step == 0, prev, special_tokens.UNK_ID).astype(jnp.int32)
    _, logits, state = _step(params, cfg, stepper, prev, state)
    logits = _mask_logits(logits, ban_unk)
    if key is None:
      token = jnp.argmax(logits, axis=-1)
    else:
      token = jax.random.categorical(jax.random.fold_in(key0, step), logits / temperature)
    token = jnp.where(done, special_tokens.PAD_ID, token.astype(jnp.int32))
    ids = ids.at[:, step].set(token)
    return step + 1, state, token, done | (token == special_tokens.EOS_ID), ids

  carry = (0, stepper.state0, prev0, jnp.zeros((b,), bool), ids0)
  _, _, _, _, ids = jax.lax.while_loop(cond, body, carry)
  lengths = jnp.sum(ids != special_tokens.PAD_ID, axis=1).astype(jnp.int32)
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
    token = jnp.where(done, special_tokens.PAD_ID, token.astype(jnp.int32))
    emitted = ~done
    hidden = jnp.where(emitted[:, None], hidden, 0.0)
    return (state, token, done | (token == special_tokens.EOS_ID)), (token, hidden, emitted)

  carry = (stepper.state0, jnp.full((b,), special_tokens.SOS_ID, jnp.int32), jnp.zeros((b,), bool))
  _, (ids, hidden, mask) = jax.lax.scan(body, carry, jax.random.split(key, max_len))
  return ids.T, jnp.swapaxes(hidden, 0, 1), mask.T


# ----------------------------------------------------------------------------- beam search


class BeamResult(NamedTuple):
  """The best hypothesis of each row: ids [b,m] (`<pad>` after the stop), lengths [b] (generated
  tokens incl. `<eos>`), scores [b] = log p(ids | z), the model's log-likelihood of the returned
  tokens (forced ones included; the length penalty only ranks)."""
  ids: Array
  lengths: Array
  scores: Array


def allowed_tokens(step: Array, vocab_size: int, batch: int, *, ban_unk: bool = False,
                   prefix: Array | None = None, prefix_lengths: Array | None = None,
                   exact_lengths: Array | None = None) -> Array:
  """Which tokens row i may emit at generation step `step` (0-based, after `<sos>`): bool [b,v].

  Never `<pad>` or `<sos>`; `<unk>` only without `ban_unk`. With `exact_lengths` [b] (generated
  tokens incl. `<eos>`) `<eos>` is banned before step exact−1 and is the only token at it. With
  `prefix` [b,p] and `prefix_lengths` [b] (≤ p) the first prefix_lengths[i] tokens of row i are
  forced to prefix[i, :prefix_lengths[i]] (a forced token overrides the bans, e.g. an observed
  `<unk>`); a prefix must be shorter than its row's exact length.
  """
  ids = jnp.arange(vocab_size)
  base = (ids != special_tokens.PAD_ID) & (ids != special_tokens.SOS_ID)
  if ban_unk:
    base &= ids != special_tokens.UNK_ID
  allowed = jnp.broadcast_to(base, (batch, vocab_size))
  is_eos = ids == special_tokens.EOS_ID
  if exact_lengths is not None:
    last = (step == exact_lengths - 1)[:, None]
    early = (step < exact_lengths - 1)[:, None]
    allowed = jnp.where(last, is_eos, jnp.where(early, allowed & ~is_eos, allowed))
  if prefix is not None and prefix.shape[1] > 0:
    forced = (step < prefix_lengths)[:, None]
    token = jax.lax.dynamic_index_in_dim(prefix, jnp.minimum(step, prefix.shape[1] - 1), axis=1)
    allowed = jnp.where(forced, ids == token, allowed)
  return allowed


def length_normalizer(lengths: Array, alpha: float | Array) -> Array:
  """GNMT length penalty lp(n) = ((5 + n) / 6)^α (Wu et al. 2016, §7); 1 exactly at α = 0.

  Hypotheses are ranked by log p / lp(n), n the generated tokens incl. `<eos>`.
  """
  return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def _gather_beams(x: Array, beams: Array) -> Array:
  """x [b,k,...] reordered along the beam axis by beams [b,k] → [b,k,...]."""
  index = beams.reshape(beams.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


@functools.partial(jax.jit, static_argnames=("cfg", "beam_width", "max_len", "ban_unk",
                                             "inputless"))
def beam_search(params, z: Array, cfg: sentence_ae.ModelConfig, *, beam_width: int, max_len: int,
                ban_unk: bool = False, inputless: bool = False,
                length_penalty: float | Array = 0.0, prefix: Array | None = None,
                prefix_lengths: Array | None = None,
                exact_lengths: Array | None = None) -> BeamResult:
  """Beam search for argmax_x log p(x|z) (optionally / lp(|x|)): the best of k hypotheses per row.

  z: [b,d], or [L,b,d] for a hidden-averaging decoder (as `decode`); `inputless` as `decode`. All
  b·k hypotheses step together in one `lax.while_loop`. At each step every live hypothesis is
  extended by every allowed token (`allowed_tokens`), a finished one (after its `<eos>`) carries
  over once with `<pad>` at no cost, and the k best of these b·k·v candidates by
  log p / lp(n) (`length_normalizer`, α = `length_penalty`) form the next beam: finished
  hypotheses stay in the beam, so beam width 1 is greedy decoding exactly. The loop ends at m
  tokens, or once no live hypothesis of any row can still beat its row's best finished one
  (log-probabilities only fall; lp(n) ≤ lp(m)). The result is the best finished hypothesis of each
  row (the best live one where none finished within m tokens).

  Constraints (imputation, seed 001 §5): `prefix` [b,p] with `prefix_lengths` [b] (default p)
  forces each row's first tokens; `exact_lengths` [b] (≤ m) fixes each row's number of generated
  tokens including `<eos>`.
  """
  b, k, v = z.shape[-2], beam_width, cfg.vocab_size
  if k < 1:
    raise ValueError(f"beam_width must be >= 1, got {k}")
  if prefix is not None and prefix_lengths is None:
    prefix_lengths = jnp.full((b,), prefix.shape[1], jnp.int32)
  stepper = _prepare(params, z, cfg)
  stepper = jax.tree_util.tree_map(lambda a: jnp.repeat(a, k, axis=-2), stepper)  # [...,b·k,·]
  flat_offsets = (jnp.arange(b) * k)[:, None]
  pad_only = jnp.where(jnp.arange(v) == special_tokens.PAD_ID, 0.0, -jnp.inf)
  final_norm = length_normalizer(jnp.asarray(max_len), length_penalty)

  def cond(carry):
    step, _, _, logp, finished, lengths = carry
    alive = ~finished & jnp.isfinite(logp)
    best_finished = jnp.max(jnp.where(finished, logp / length_normalizer(lengths, length_penalty),
                                      -jnp.inf), axis=1)
    best_alive = jnp.max(jnp.where(alive, logp / final_norm, -jnp.inf), axis=1)
    open_rows = jnp.any(alive, axis=1) & (best_alive >= best_finished)
    return (step < max_len) & jnp.any(open_rows)

  def body(carry):
    step, state, seqs, logp, finished, lengths = carry
    last = jax.lax.dynamic_index_in_dim(seqs, jnp.maximum(step - 1, 0), axis=2, keepdims=False)
    read = jnp.full_like(last, special_tokens.UNK_ID) if inputless else last
    prev = jnp.where(step == 0, special_tokens.SOS_ID, read).astype(jnp.int32)
    _, logits, state = _step(params, cfg, stepper, prev.reshape(b * k), state)
    step_logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
    allowed = allowed_tokens(step, v, b, ban_unk=ban_unk, prefix=prefix,
                             prefix_lengths=prefix_lengths, exact_lengths=exact_lengths)
    step_logp = jnp.where(allowed[:, None, :], step_logp, -jnp.inf)
    step_logp = jnp.where(finished[..., None], pad_only, step_logp)
    candidates = logp[..., None] + step_logp                                   # [b,k,v]
    new_lengths = lengths + (~finished).astype(jnp.int32)
    rank = candidates / length_normalizer(new_lengths, length_penalty)[..., None]
    _, flat = jax.lax.top_k(rank.reshape(b, k * v), k)                         # [b,k]
    beams, tokens = flat // v, (flat % v).astype(jnp.int32)
    was_finished = _gather_beams(finished, beams)
    seqs = _gather_beams(seqs, beams).at[:, :, step].set(tokens)
    logp = jnp.take_along_axis(candidates.reshape(b, k * v), flat, axis=1)
    lengths = _gather_beams(lengths, beams) + (~was_finished).astype(jnp.int32)
    rows = (flat_offsets + beams).reshape(b * k)
    state = jax.tree_util.tree_map(lambda a: jnp.take(a, rows, axis=-2), state)
    return step + 1, state, seqs, logp, was_finished | (tokens == special_tokens.EOS_ID), lengths

  logp0 = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)        # one live hypothesis to start
  carry = (0, stepper.state0, jnp.full((b, k, max_len), special_tokens.PAD_ID, jnp.int32),
           jnp.broadcast_to(logp0, (b, k)), jnp.zeros((b, k), bool), jnp.zeros((b, k), jnp.int32))
  _, _, seqs, logp, finished, lengths = jax.lax.while_loop(cond, body, carry)
  norm = logp / length_normalizer(lengths, length_penalty)
  done = finished & jnp.isfinite(logp)
  rank = jnp.where(jnp.any(done, axis=1, keepdims=True), jnp.where(done, norm, -jnp.inf), norm)
  best = jnp.argmax(rank, axis=1)
  ids = jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]
  return BeamResult(ids, jnp.sum(ids != special_tokens.PAD_ID, axis=1).astype(jnp.int32),
                    jnp.take_along_axis(logp, best[:, None], axis=1)[:, 0])
