"""Pure neural-network layers: dense, embedding, highway, dropout, GRU (uni- and bidirectional).

Every layer is a pair ``init_x(key, ...) -> params`` / ``x(params, inputs, ...) -> outputs`` over a
params pytree (nested dicts of ``jnp`` arrays). Randomness only through explicit PRNG keys; no global
state. All functions work under ``jax.jit`` and ``jax.vmap``.

Shape notation: b batch, t time, v vocabulary, e embedding (input), h hidden, d latent, k samples.

GRU equations (PyTorch / cuDNN convention, so weights can be exchanged with ``torch.nn.GRU``; gate
order in the stacked matrices is r, z, n)::

  r  = σ(x W_ir + b_ir + h W_hr + b_hr)
  z  = σ(x W_iz + b_iz + h W_hz + b_hz)
  n  = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
  h' = (1 − z) ⊙ n + z ⊙ h

Weights are stored input-major (``w_i: [e, 3h]``, ``w_h: [h, 3h]``), i.e. the transpose of PyTorch's
``weight_ih_l0: [3h, e]`` / ``weight_hh_l0: [3h, h]``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Dense, embedding, highway, dropout.
# ----------------------------------------------------------------------------------------------


def init_dense(key: Array, in_dim: int, out_dim: int, *, bias: bool = True) -> Params:
  """Initialises an affine map with PyTorch's ``nn.Linear`` default.

  w, b ~ U(−1/√in_dim, 1/√in_dim).

  Args:
    key: PRNG key.
    in_dim: input features.
    out_dim: output features.
    bias: whether to create the bias ``b``.

  Returns:
    ``{"w": [in_dim, out_dim], "b": [out_dim]}`` (``"b"`` absent when ``bias`` is False).
  """
  k_w, k_b = jax.random.split(key)
  bound = 1.0 / math.sqrt(in_dim)
  params = {"w": jax.random.uniform(k_w, (in_dim, out_dim), jnp.float32, -bound, bound)}
  if bias:
    params["b"] = jax.random.uniform(k_b, (out_dim,), jnp.float32, -bound, bound)
  return params


def dense(params: Params, x: Array) -> Array:
  """Affine map y = x W + b over the last axis.

  Args:
    params: ``{"w": [i, o], "b": [o]}`` (bias optional).
    x: ``[..., i]`` with any leading dims.

  Returns:
    ``[..., o]``.
  """
  y = x @ params["w"]
  if "b" in params:
    y = y + params["b"]
  return y


def init_embedding(key: Array, vocab_size: int, dim: int) -> Params:
  """Initialises an embedding table with PyTorch's ``nn.Embedding`` default, N(0, 1).

  No row is special: there is no ``padding_idx`` that would freeze a (possibly real) word's vector;
  padded positions are handled by masks downstream.

  Args:
    key: PRNG key.
    vocab_size: v.
    dim: e.

  Returns:
    ``{"table": [v, e]}``.
  """
  return {"table": jax.random.normal(key, (vocab_size, dim), jnp.float32)}


def embed(params: Params, ids: Array) -> Array:
  """Looks up rows of the table: y[..., :] = table[ids[...], :].

  Args:
    params: ``{"table": [v, e]}``.
    ids: integer ids ``[...]`` (e.g. ``[b, t]``).

  Returns:
    ``[..., e]``.
  """
  return jnp.take(params["table"], ids, axis=0)


def init_highway(key: Array, dim: int, *, gate_bias: float = -1.0) -> Params:
  """Initialises a highway layer (Srivastava et al., 2015).

  Both maps use the ``init_dense`` default; the transform-gate bias is then set to ``gate_bias``
  (the paper recommends a negative value, −1 to −3, so the layer starts close to the identity).

  Args:
    key: PRNG key.
    dim: feature size (input = output).
    gate_bias: initial value of ``b_t``.

  Returns:
    ``{"h": {"w": [dim, dim], "b": [dim]}, "t": {"w": [dim, dim], "b": [dim]}}``.
  """
  k_h, k_t = jax.random.split(key)
  gate = init_dense(k_t, dim, dim)
  gate["b"] = jnp.full((dim,), gate_bias, jnp.float32)
  return {"h": init_dense(k_h, dim, dim), "t": gate}


def highway(params: Params, x: Array) -> Array:
  """Highway layer: y = t ⊙ relu(x W_h + b_h) + (1 − t) ⊙ x, with t = σ(x W_t + b_t).

  Args:
    params: from ``init_highway``.
    x: ``[..., dim]``.

  Returns:
    ``[..., dim]``.
  """
  t = jax.nn.sigmoid(dense(params["t"], x))
  return t * jax.nn.relu(dense(params["h"], x)) + (1.0 - t) * x


def dropout(key: Array | None, x: Array, rate: float, *, deterministic: bool) -> Array:
  """Inverted dropout: y = x ⊙ m / (1 − rate), m ~ Bernoulli(1 − rate) elementwise, so E[y] = x.

  Args:
    key: PRNG key (may be None when ``deterministic`` or ``rate == 0``).
    x: any shape.
    rate: drop probability, a Python float in [0, 1]; 1 gives zeros.
    deterministic: if True, the identity (evaluation mode).

  Returns:
    Same shape and dtype as ``x``.
  """
  if deterministic or rate == 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  if key is None:
    raise ValueError("dropout needs a PRNG key when rate > 0 and not deterministic")
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


# ----------------------------------------------------------------------------------------------
# Masks and per-row reversal.
# ----------------------------------------------------------------------------------------------


def sequence_mask(lengths: Array, max_len: int) -> Array:
  """Prefix mask: m[..., j] = j < lengths[...].

  Args:
    lengths: integer ``[b]`` (or any leading shape).
    max_len: t (static).

  Returns:
    bool ``[b, t]``.
  """
  return jnp.arange(max_len) < jnp.asarray(lengths)[..., None]


def reverse_padded(x: Array, lengths: Array) -> Array:
  """Reverses the first ``lengths[i]`` steps of each row, leaving padding in place.

  y[i, j] = x[i, lengths[i] − 1 − j] for j < lengths[i], and y[i, j] = x[i, j] otherwise. The map is
  its own inverse.

  Args:
    x: ``[b, t, ...]``.
    lengths: integer ``[b]`` with 0 ≤ lengths[i] ≤ t.

  Returns:
    ``[b, t, ...]``.
  """
  t = x.shape[1]
  j = jnp.arange(t)[None, :]
  lengths = jnp.asarray(lengths)[:, None]
  idx = jnp.where(j < lengths, lengths - 1 - j, j)  # [b, t]
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


# ----------------------------------------------------------------------------------------------
# GRU.
# ----------------------------------------------------------------------------------------------


def init_gru(key: Array, in_dim: int, hidden_dim: int) -> Params:
  """Initialises a GRU with PyTorch's default, every entry ~ U(−1/√h, 1/√h).

  Args:
    key: PRNG key.
    in_dim: e.
    hidden_dim: h.

  Returns:
    ``{"w_i": [e, 3h], "w_h": [h, 3h], "b_i": [3h], "b_h": [3h]}``, gate order r, z, n.
  """
  bound = 1.0 / math.sqrt(hidden_dim)
  k_wi, k_wh, k_bi, k_bh = jax.random.split(key, 4)
  u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, -bound, bound)
  return {
      "w_i": u(k_wi, (in_dim, 3 * hidden_dim)),
      "w_h": u(k_wh, (hidden_dim, 3 * hidden_dim)),
      "b_i": u(k_bi, (3 * hidden_dim,)),
      "b_h": u(k_bh, (3 * hidden_dim,)),
  }


def gru_input_projection(params: Params, x: Array) -> Array:
  """Input-to-hidden projection of every step at once: x_proj = x W_i + b_i.

  Args:
    params: GRU params.
    x: ``[..., e]`` (e.g. ``[b, t, e]``).

  Returns:
    ``[..., 3h]``.
  """
  return x @ params["w_i"] + params["b_i"]


def gru_cell(params: Params, x_proj: Array, h: Array) -> Array:
  """One GRU step from a precomputed input projection (equations in the module docstring).

  Args:
    params: GRU params (only ``w_h`` and ``b_h`` are read).
    x_proj: ``[b, 3h]`` = x W_i + b_i (``gru_input_projection``).
    h: ``[b, h]`` previous state.

  Returns:
    ``[b, h]`` new state h' = (1 − z) ⊙ n + z ⊙ h.
  """
  h_proj = h @ params["w_h"] + params["b_h"]
  x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
  h_r, h_z, h_n = jnp.split(h_proj, 3, axis=-1)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * h_n)
  return (1.0 - z) * n + z * h


def gru(params: Params, x: Array, mask: Array, *, h0: Array | None = None,
        reverse: bool = False) -> tuple[Array, Array]:
  """Runs a masked GRU over a padded batch with ``jax.lax.scan``.

  The input projection x W_i + b_i of the whole sequence is one matmul outside the scan; only
  h W_h stays inside. Padded steps leave the state unchanged and output zeros, so neither the values
  in padded positions nor the padded length t changes a real position's result.

  Args:
    params: from ``init_gru``.
    x: ``[b, t, e]``.
    mask: bool ``[b, t]``, a prefix mask (real tokens first, then padding), e.g. ``sequence_mask``.
    h0: ``[b, h]`` initial state; zeros if None.
    reverse: if True, each row's real tokens are read last-to-first (padding stays at the end);
      outputs are returned aligned to the original positions, so ``outputs[i, j]`` is the state
      after reading tokens j..lengths[i]−1.

  Returns:
    ``(outputs [b, t, h], last [b, h])``: outputs are zero on padded positions; ``last`` is the state
    after the last token read (for ``reverse``, after the first token of the row), ``h0`` if the row
    has no real token.
  """
  mask = mask.astype(bool)
  hidden = params["w_h"].shape[0]
  lengths = jnp.sum(mask, axis=1)
  if reverse:
    x = reverse_padded(x, lengths)
  x_proj = gru_input_projection(params, x)  # [b, t, 3h], hoisted out of the scan.
  if h0 is None:
    h0 = jnp.zeros((x.shape[0], hidden), x_proj.dtype)

  def step(h, inputs):
    xp_t, m_t = inputs  # [b, 3h], [b]
    h_new = gru_cell(params, xp_t, h)
    m_t = m_t[:, None]
    return jnp.where(m_t, h_new, h), jnp.where(m_t, h_new, jnp.zeros_like(h_new))

  last, outputs = jax.lax.scan(step, h0, (jnp.swapaxes(x_proj, 0, 1), jnp.swapaxes(mask, 0, 1)))
  outputs = jnp.swapaxes(outputs, 0, 1)  # [b, t, h]
  if reverse:
    outputs = reverse_padded(outputs, lengths)
  return outputs, last


def init_bigru(key: Array, in_dim: int, hidden_dim: int) -> Params:
  """Initialises a bidirectional GRU: two independent ``init_gru`` params.

  Args:
    key: PRNG key.
    in_dim: e.
    hidden_dim: h per direction.

  Returns:
    ``{"fwd": gru params, "bwd": gru params}``.
  """
  k_f, k_b = jax.random.split(key)
  return {"fwd": init_gru(k_f, in_dim, hidden_dim), "bwd": init_gru(k_b, in_dim, hidden_dim)}


def bigru(params: Params, x: Array, mask: Array, *,
          h0: Array | None = None) -> tuple[Array, Array]:
  """Bidirectional masked GRU: a forward ``gru`` and a ``reverse=True`` ``gru``, concatenated.

  Args:
    params: from ``init_bigru``.
    x: ``[b, t, e]``.
    mask: bool prefix mask ``[b, t]``.
    h0: ``[b, 2h]`` initial states, ``[forward | backward]``; zeros if None.

  Returns:
    ``(outputs [b, t, 2h], last [b, 2h])``: ``outputs[:, j] = [fwd_j | bwd_j]`` (zeros on padding);
    ``last = [forward state after the last real token | backward state after reading the first
    token]``.
  """
  h0_f = h0_b = None
  if h0 is not None:
    h0_f, h0_b = jnp.split(h0, 2, axis=-1)
  out_f, last_f = gru(params["fwd"], x, mask, h0=h0_f)
  out_b, last_b = gru(params["bwd"], x, mask, h0=h0_b, reverse=True)
  return jnp.concatenate([out_f, out_b], axis=-1), jnp.concatenate([last_f, last_b], axis=-1)
