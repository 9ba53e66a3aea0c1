"""Pure neural-network layers: dense, embedding, highway, dropout, GRU and LSTM (uni- and
bidirectional), a table of cell kinds (``CELL_KINDS``), hidden-state summaries, word dropout.

Every layer is a pair ``init_x(key, ...) -> params`` / ``x(params, inputs, ...) -> outputs`` over a
params pytree (nested dicts of ``jnp`` arrays). Randomness only through explicit PRNG keys; no
global state. All functions work under ``jax.jit`` and ``jax.vmap``.

Shape notation: b batch, t time, v vocabulary, e embedding (input), h hidden, d latent, k samples.

GRU equations (PyTorch / cuDNN convention, so weights can be exchanged with ``torch.nn.GRU``; gate
order in the stacked matrices is r, z, n)::

  r  = σ(x W_ir + b_ir + h W_hr + b_hr)
  z  = σ(x W_iz + b_iz + h W_hz + b_hz)
  n  = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
  h' = (1 − z) ⊙ n + z ⊙ h

Weights are stored input-major (``w_i: [e, 3h]``, ``w_h: [h, 3h]``), i.e. the transpose of PyTorch's
``weight_ih_l0: [3h, e]`` / ``weight_hh_l0: [3h, h]``.

LSTM equations (PyTorch / cuDNN convention, ``torch.nn.LSTM``; gate order i, f, g, o; weights stored
input-major, ``w_i: [e, 4h]``, ``w_h: [h, 4h]``, two biases ``b_i``, ``b_h``)::

  i  = σ(x W_ii + b_ii + h W_hi + b_hi)
  f  = σ(x W_if + b_if + h W_hf + b_hf)
  g  = tanh(x W_ig + b_ig + h W_hg + b_hg)
  o  = σ(x W_io + b_io + h W_ho + b_ho)
  c' = f ⊙ c + i ⊙ g
  h' = o ⊙ tanh(c')
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mimtext import kernels

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


def dense(params: Params, x: Array, *, matmul_dtype: str = "float32") -> Array:
  """Affine map y = x W + b over the last axis.

  Args:
    params: ``{"w": [i, o], "b": [o]}`` (bias optional).
    x: ``[..., i]`` with any leading dims.
    matmul_dtype: operand dtype of x W, accumulated in float32 (``kernels.matmul``).

  Returns:
    ``[..., o]``.
  """
  y = kernels.matmul(x, params["w"], matmul_dtype)
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
# Gated recurrent layers: what GRU and LSTM share.
# ----------------------------------------------------------------------------------------------

LstmState = tuple[Array, Array]
State = Any  # a cell's recurrent state: h [b, h] (GRU) or (h, c) (LSTM)


class CellKind(NamedTuple):
  """Everything the generic recurrent code needs to know about one kind of cell.

  Attributes:
    gates: G, the number of gate blocks stacked in ``w_i [e, G·h]``, ``w_h [h, G·h]``,
      ``b_i [G·h]``, ``b_h [G·h]``.
    init: ``(key, in_dim, hidden_dim) -> params`` (``init_gru`` / ``init_lstm``).
    step: ``(params, x_proj [b, G·h], state, *, matmul_dtype) -> new state`` (``gru_cell`` /
      ``lstm_cell``).
    initial_state: ``h0 [b, h]`` (or an already complete state, passed through) -> the state.
    hidden: ``state -> h [b, h]``, the part of the state a layer outputs.
  """
  gates: int
  init: Callable[[Array, int, int], Params]
  step: Callable[[Params, Array, State], State]
  initial_state: Callable[[Any], State]
  hidden: Callable[[State], Array]


def _init_gated(key: Array, in_dim: int, hidden_dim: int, gates: int) -> Params:
  """A gated recurrent layer's weights, PyTorch's default init: every entry ~ U(−1/√h, 1/√h).

  Returns ``{"w_i": [e, gates·h], "w_h": [h, gates·h], "b_i": [gates·h], "b_h": [gates·h]}``.
  """
  bound = 1.0 / math.sqrt(hidden_dim)
  k_wi, k_wh, k_bi, k_bh = jax.random.split(key, 4)
  u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, -bound, bound)
  return {
      "w_i": u(k_wi, (in_dim, gates * hidden_dim)),
      "w_h": u(k_wh, (hidden_dim, gates * hidden_dim)),
      "b_i": u(k_bi, (gates * hidden_dim,)),
      "b_h": u(k_bh, (gates * hidden_dim,)),
  }


def _input_projection(params: Params, x: Array, matmul_dtype: str = "float32") -> Array:
  """Input-to-hidden projection of every step at once: x W_i + b_i,
  ``[..., e] -> [..., gates·h]``."""
  return kernels.matmul(x, params["w_i"], matmul_dtype) + params["b_i"]


def _masked_scan(kind: CellKind, params: Params, x: Array, mask: Array, state0: State | None,
                 reverse: bool, matmul_dtype: str = "float32") -> tuple[Array, State]:
  """The masked, optionally per-row-reversed recurrence of every cell kind.

  The input projection of every step is one matmul here, outside the scan (only h W_h runs
  inside). ``state0`` is a complete state (see ``CellKind.initial_state``) or None for zeros.
  Padded steps keep the state and output zeros. Returns (outputs [b,t,h], last state).
  The GRU runs as ``kernels.gru_scan`` (the same values, a faster backward pass); other cells as a
  ``lax.scan`` of their step.
  """
  mask = mask.astype(bool)
  lengths = jnp.sum(mask, axis=1)
  if reverse:
    x = reverse_padded(x, lengths)
  x_proj = _input_projection(params, x, matmul_dtype)   # [b, t, gates·h], hoisted out of the scan
  if state0 is None:
    state0 = kind.initial_state(jnp.zeros((x.shape[0], params["w_h"].shape[0]), x_proj.dtype))
  x_proj, mask_t = jnp.swapaxes(x_proj, 0, 1), jnp.swapaxes(mask, 0, 1)   # time-major

  if kind is GRU_KIND:
    outputs, last = kernels.gru_scan(params["w_h"], params["b_h"], x_proj, mask_t, state0,
                                     matmul_dtype)
  else:
    def step(state, inputs):
      xp_t, m_t = inputs                                 # [b, gates·h], [b]
      new = kind.step(params, xp_t, state, matmul_dtype=matmul_dtype)
      keep = m_t[:, None]
      state = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new, state)
      h_new = kind.hidden(new)
      return state, jnp.where(keep, h_new, jnp.zeros_like(h_new))

    last, outputs = jax.lax.scan(step, state0, (x_proj, mask_t))
  outputs = jnp.swapaxes(outputs, 0, 1)                  # [b, t, h]
  if reverse:
    outputs = reverse_padded(outputs, lengths)
  return outputs, last


def _init_bidirectional(init: Callable, key: Array, in_dim: int, hidden_dim: int) -> Params:
  """``{"fwd": init(...), "bwd": init(...)}``: two independent directions of h units each."""
  k_f, k_b = jax.random.split(key)
  return {"fwd": init(k_f, in_dim, hidden_dim), "bwd": init(k_b, in_dim, hidden_dim)}


def _bidirectional_scan(kind: CellKind, params: Params, x: Array, mask: Array,
                        state0: State | None, matmul_dtype: str = "float32"
                        ) -> tuple[Array, State]:
  """A forward and a reversed ``_masked_scan``, concatenated: (outputs [b,t,2h], last state).

  ``state0``: a complete state whose every array is ``[b, 2h] = [forward | backward]``, or None.
  The last state is likewise ``[forward after the last real token | backward after the first]``.
  """
  s0_f = s0_b = None
  if state0 is not None:
    s0_f = jax.tree_util.tree_map(lambda a: jnp.split(a, 2, axis=-1)[0], state0)
    s0_b = jax.tree_util.tree_map(lambda a: jnp.split(a, 2, axis=-1)[1], state0)
  out_f, last_f = _masked_scan(kind, params["fwd"], x, mask, s0_f, False, matmul_dtype)
  out_b, last_b = _masked_scan(kind, params["bwd"], x, mask, s0_b, True, matmul_dtype)
  last = jax.tree_util.tree_map(lambda f, b: jnp.concatenate([f, b], axis=-1), last_f, last_b)
  return jnp.concatenate([out_f, out_b], axis=-1), last


# ----------------------------------------------------------------------------------------------
# GRU.
# ----------------------------------------------------------------------------------------------


def init_gru(key: Array, in_dim: int, hidden_dim: int) -> Params:
  """A GRU: ``{"w_i": [e, 3h], "w_h": [h, 3h], "b_i": [3h], "b_h": [3h]}``, gate order r, z, n."""
  return _init_gated(key, in_dim, hidden_dim, 3)


gru_input_projection = _input_projection  # [..., e] -> [..., 3h]


def gru_cell(params: Params, x_proj: Array, h: Array, *, matmul_dtype: str = "float32") -> Array:
  """One GRU step from a precomputed input projection (equations in the module docstring).

  Args:
    params: GRU params (only ``w_h`` and ``b_h`` are read).
    x_proj: ``[b, 3h]`` = x W_i + b_i (``gru_input_projection``).
    h: ``[b, h]`` previous state.
    matmul_dtype: operand dtype of h W_h (``kernels.matmul``).

  Returns:
    ``[b, h]`` new state h' = (1 − z) ⊙ n + z ⊙ h.
  """
  h_proj = kernels.matmul(h, params["w_h"], matmul_dtype) + params["b_h"]
  x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
  h_r, h_z, h_n = jnp.split(h_proj, 3, axis=-1)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * h_n)
  return (1.0 - z) * n + z * h


def _identity(x):
  return x


GRU_KIND = CellKind(gates=3, init=init_gru, step=gru_cell, initial_state=_identity,
                    hidden=_identity)


def gru(params: Params, x: Array, mask: Array, *, h0: Array | None = None,
        reverse: bool = False, matmul_dtype: str = "float32") -> tuple[Array, Array]:
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
    ``(outputs [b, t, h], last [b, h])``: outputs are zero on padded positions; ``last`` is the
    state after the last token read (for ``reverse``, after the first token of the row), ``h0`` if
    the row has no real token.
  """
  return _masked_scan(GRU_KIND, params, x, mask, h0, reverse, matmul_dtype)


def init_bigru(key: Array, in_dim: int, hidden_dim: int) -> Params:
  """A bidirectional GRU: ``{"fwd": gru params, "bwd": gru params}``, h units per direction."""
  return _init_bidirectional(init_gru, key, in_dim, hidden_dim)


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
  return _bidirectional_scan(GRU_KIND, params, x, mask, h0)


# ----------------------------------------------------------------------------------------------
# LSTM.
# ----------------------------------------------------------------------------------------------


def init_lstm(key: Array, in_dim: int, hidden_dim: int) -> Params:
  """An LSTM: ``{"w_i": [e, 4h], "w_h": [h, 4h], "b_i": [4h], "b_h": [4h]}``, gate order
  i, f, g, o."""
  return _init_gated(key, in_dim, hidden_dim, 4)


lstm_input_projection = _input_projection  # [..., e] -> [..., 4h]


def lstm_cell(params: Params, x_proj: Array, state: LstmState, *,
              matmul_dtype: str = "float32") -> LstmState:
  """One LSTM step from a precomputed input projection (equations in the module docstring).

  Args:
    params: LSTM params (only ``w_h`` and ``b_h`` are read).
    x_proj: ``[b, 4h]`` = x W_i + b_i (``lstm_input_projection``).
    state: ``(h [b, h], c [b, h])`` previous hidden and cell states.
    matmul_dtype: operand dtype of h W_h (``kernels.matmul``).

  Returns:
    ``(h' [b, h], c' [b, h])`` with c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c').
  """
  h, c = state
  gates = x_proj + kernels.matmul(h, params["w_h"], matmul_dtype) + params["b_h"]
  g_i, g_f, g_g, g_o = jnp.split(gates, 4, axis=-1)
  c_new = jax.nn.sigmoid(g_f) * c + jax.nn.sigmoid(g_i) * jnp.tanh(g_g)
  h_new = jax.nn.sigmoid(g_o) * jnp.tanh(c_new)
  return h_new, c_new


def _lstm_state(h0: Array | LstmState) -> LstmState:
  """(h, c) from a tuple (passed through) or an array h (with c = 0)."""
  if isinstance(h0, (tuple, list)):
    h, c = h0
    return h, c
  return h0, jnp.zeros_like(h0)


def _lstm_hidden(state: LstmState) -> Array:
  return state[0]


LSTM_KIND = CellKind(gates=4, init=init_lstm, step=lstm_cell, initial_state=_lstm_state,
                     hidden=_lstm_hidden)


def lstm(params: Params, x: Array, mask: Array, *, h0: Array | LstmState | None = None,
         reverse: bool = False, matmul_dtype: str = "float32") -> tuple[Array, LstmState]:
  """Runs a masked LSTM over a padded batch with ``jax.lax.scan``; same semantics as ``gru``.

  The input projection x W_i + b_i of the whole sequence is one matmul outside the scan; only
  h W_h stays inside. Padded steps leave (h, c) unchanged and output zeros, so neither the values in
  padded positions nor the padded length t changes a real position's result.

  Args:
    params: from ``init_lstm``.
    x: ``[b, t, e]``.
    mask: bool ``[b, t]``, a prefix mask (real tokens first, then padding), e.g. ``sequence_mask``.
    h0: ``(h [b, h], c [b, h])`` initial state; an array ``[b, h]`` is taken as h with c = 0;
      zeros if None.
    reverse: if True, each row's real tokens are read last-to-first (padding stays at the end);
      outputs are returned aligned to the original positions, so ``outputs[i, j]`` is the hidden
      state after reading tokens j..lengths[i]−1.

  Returns:
    ``(outputs [b, t, h], (h_last [b, h], c_last [b, h]))``: outputs (the h's) are zero on padded
    positions; the last state is the one after the last token read (for ``reverse``, after the
    first token of the row), ``h0`` if the row has no real token.
  """
  h0 = None if h0 is None else _lstm_state(h0)
  return _masked_scan(LSTM_KIND, params, x, mask, h0, reverse, matmul_dtype)


def init_bilstm(key: Array, in_dim: int, hidden_dim: int) -> Params:
  """A bidirectional LSTM: ``{"fwd": lstm params, "bwd": lstm params}``, h units per direction."""
  return _init_bidirectional(init_lstm, key, in_dim, hidden_dim)


def bilstm(params: Params, x: Array, mask: Array, *,
           h0: Array | LstmState | None = None) -> tuple[Array, LstmState]:
  """Bidirectional masked LSTM: a forward ``lstm`` and a ``reverse=True`` ``lstm``, concatenated.

  Args:
    params: from ``init_bilstm``.
    x: ``[b, t, e]``.
    mask: bool prefix mask ``[b, t]``.
    h0: ``(h [b, 2h], c [b, 2h])`` initial states, each ``[forward | backward]``; an array
      ``[b, 2h]`` is taken as h with c = 0; zeros if None.

  Returns:
    ``(outputs [b, t, 2h], (h_last [b, 2h], c_last [b, 2h]))``: ``outputs[:, j] = [fwd_j | bwd_j]``
    (zeros on padding); ``h_last = [forward h after the last real token | backward h after reading
    the first token]``, ``c_last`` likewise.
  """
  h0 = None if h0 is None else _lstm_state(h0)
  return _bidirectional_scan(LSTM_KIND, params, x, mask, h0)


# ----------------------------------------------------------------------------------------------
# The cell table: a static string chosen by config -> its CellKind. Every function below looks
# its cell up here once; adding a kind is one entry (plus its init and step).
# ----------------------------------------------------------------------------------------------

CELL_KINDS: dict[str, CellKind] = {"gru": GRU_KIND, "lstm": LSTM_KIND}
CELLS: tuple[str, ...] = tuple(CELL_KINDS)


def cell_kind(cell: str) -> CellKind:
  """The ``CellKind`` of ``cell``.

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  kind = CELL_KINDS.get(cell) if isinstance(cell, str) else None
  if kind is None:
    raise ValueError(f"unknown recurrent cell {cell!r}; expected one of {CELLS}")
  return kind


def init_rnn(key: Array, cell: str, in_dim: int, hidden_dim: int) -> Params:
  """Initialises a recurrent layer of type ``cell`` (``init_gru`` or ``init_lstm``).

  Args:
    key: PRNG key.
    cell: one of ``CELLS`` (static).
    in_dim: e.
    hidden_dim: h.

  Returns:
    The cell's params: ``w_i [e, Gh]``, ``w_h [h, Gh]``, ``b_i [Gh]``, ``b_h [Gh]`` with G = 3 (GRU)
    or 4 (LSTM).

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  return cell_kind(cell).init(key, in_dim, hidden_dim)


def rnn(params: Params, cell: str, x: Array, mask: Array, *,
        h0: Array | LstmState | None = None, reverse: bool = False,
        matmul_dtype: str = "float32") -> tuple[Array, Array]:
  """Masked recurrent layer of type ``cell``: ``gru`` or ``lstm`` with the same semantics.

  Args:
    params: from ``init_rnn`` with the same ``cell``.
    cell: one of ``CELLS`` (static).
    x: ``[b, t, e]``.
    mask: bool prefix mask ``[b, t]``.
    h0: ``[b, h]`` initial hidden state (for "lstm" the cell state starts at 0), or for "lstm" a
      tuple ``(h [b, h], c [b, h])``; zeros if None.
    reverse: read each row's real tokens last-to-first (see ``gru``).
    matmul_dtype: operand dtype of the matmuls, accumulated in float32 (``kernels.matmul``).

  Returns:
    ``(outputs [b, t, h], last_h [b, h])``; for "lstm" ``last_h`` is the h part of the last state
    (use ``lstm`` directly for c).

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  kind = cell_kind(cell)
  state0 = None if h0 is None else kind.initial_state(h0)
  outputs, last = _masked_scan(kind, params, x, mask, state0, reverse, matmul_dtype)
  return outputs, kind.hidden(last)


def init_birnn(key: Array, cell: str, in_dim: int, hidden_dim: int) -> Params:
  """Initialises a bidirectional recurrent layer of type ``cell``.

  Args:
    key: PRNG key.
    cell: one of ``CELLS`` (static).
    in_dim: e.
    hidden_dim: h per direction.

  Returns:
    ``{"fwd": params, "bwd": params}``.

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  return _init_bidirectional(cell_kind(cell).init, key, in_dim, hidden_dim)


def birnn(params: Params, cell: str, x: Array, mask: Array, *,
          h0: Array | LstmState | None = None,
          matmul_dtype: str = "float32") -> tuple[Array, Array]:
  """Bidirectional masked recurrent layer of type ``cell`` (``bigru`` or ``bilstm``).

  Args:
    params: from ``init_birnn`` with the same ``cell``.
    cell: one of ``CELLS`` (static).
    x: ``[b, t, e]``.
    mask: bool prefix mask ``[b, t]``.
    h0: ``[b, 2h]`` initial hidden states ``[forward | backward]`` (for "lstm" the cell states start
      at 0), or for "lstm" a tuple ``(h [b, 2h], c [b, 2h])``; zeros if None.

  Returns:
    ``(outputs [b, t, 2h], last_h [b, 2h])`` = ``[forward h after the last real token | backward h
    after reading the first token]``.

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  kind = cell_kind(cell)
  state0 = None if h0 is None else kind.initial_state(h0)
  outputs, last = _bidirectional_scan(kind, params, x, mask, state0, matmul_dtype)
  return outputs, kind.hidden(last)


def rnn_input_projection(params: Params, cell: str, x: Array) -> Array:
  """Input-to-hidden projection x W_i + b_i for ``rnn_step``.

  Args:
    params: from ``init_rnn``.
    cell: one of ``CELLS`` (static).
    x: ``[..., e]``.

  Returns:
    ``[..., Gh]`` with G = 3 (GRU) or 4 (LSTM).

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  cell_kind(cell)
  return _input_projection(params, x)


def rnn_initial_state(cell: str, h0: Array | LstmState) -> Array | LstmState:
  """Recurrent state for ``rnn_step`` from an initial hidden state.

  Args:
    cell: one of ``CELLS`` (static).
    h0: ``[b, h]``; for "lstm" also a tuple ``(h, c)`` (passed through).

  Returns:
    "gru": ``h0``; "lstm": ``(h0, zeros_like(h0))`` (or the given tuple).

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  return cell_kind(cell).initial_state(h0)


def rnn_step(params: Params, cell: str, x_proj: Array,
             state: Array | LstmState) -> tuple[Array, Array | LstmState]:
  """One recurrent step of type ``cell`` (for decoding loops).

  Args:
    params: from ``init_rnn``.
    cell: one of ``CELLS`` (static).
    x_proj: ``[b, Gh]`` from ``rnn_input_projection``.
    state: "gru": h ``[b, h]``; "lstm": ``(h [b, h], c [b, h])`` (see ``rnn_initial_state``).

  Returns:
    ``(h_out [b, h], new_state)``: the new hidden state (what feeds the output layer) and the new
    recurrent state in the same structure as ``state``.

  Raises:
    ValueError: if ``cell`` is not in ``CELLS``.
  """
  kind = cell_kind(cell)
  state = kind.step(params, x_proj, state)
  return kind.hidden(state), state


# ----------------------------------------------------------------------------------------------
# Hidden-state summaries (encoder outputs -> one vector per row).
# ----------------------------------------------------------------------------------------------


def summary_last(outputs: Array, last: Array | LstmState) -> Array:
  """Summary by the last real state: s = last (for an LSTM state tuple, its h part).

  ``last`` from ``gru`` / ``rnn`` / ``bigru`` / ``birnn`` is already the state after each row's last
  real token (and for bidirectional layers the backward state after its first token), so it is
  padding-invariant by construction.

  Args:
    outputs: ``[b, t, h]`` (unused; kept so every summary takes the encoder's outputs).
    last: ``[b, h]``, or ``(h [b, h], c [b, h])`` from ``lstm`` / ``bilstm``.

  Returns:
    ``[b, h]``.
  """
  del outputs
  if isinstance(last, (tuple, list)):
    return last[0]
  return last


def summary_mean(outputs: Array, mask: Array) -> Array:
  """Masked mean of hidden states: s = Σ_j m_j h_j / max(Σ_j m_j, 1).

  Padded positions are excluded whatever they hold; a row with no real token gives zeros.

  Args:
    outputs: ``[b, t, h]``.
    mask: bool ``[b, t]``.

  Returns:
    ``[b, h]``.
  """
  mask = mask.astype(bool)
  total = jnp.sum(jnp.where(mask[..., None], outputs, jnp.zeros_like(outputs)), axis=1)
  count = jnp.sum(mask, axis=1, dtype=outputs.dtype)[:, None]
  return total / jnp.maximum(count, 1.0)


def init_attention_summary(key: Array, hidden_dim: int, attn_dim: int) -> Params:
  """Initialises additive attention pooling (``init_dense`` default for both maps).

  Args:
    key: PRNG key.
    hidden_dim: h (size of the states being summarised; 2h of a bidirectional encoder).
    attn_dim: a, the size of the scoring layer.

  Returns:
    ``{"proj": {"w": [h, a], "b": [a]}, "v": {"w": [a, 1]}}``.
  """
  k_p, k_v = jax.random.split(key)
  return {"proj": init_dense(k_p, hidden_dim, attn_dim),
          "v": init_dense(k_v, attn_dim, 1, bias=False)}


def attention_summary(params: Params, outputs: Array, mask: Array) -> tuple[Array, Array]:
  """Additive (Bahdanau-style) attention pooling of hidden states (seed 002 §5.3).

  Seed 002 §5.3 summarises the encoder by "the weighted mean (or attention) of the concatenated
  hidden states" without a formula; this is the standard additive form with a learnt query v::

    e_j = v · tanh(h_j W + b)                      (scores, [b, t])
    α_j = m_j exp(e_j) / Σ_k m_k exp(e_k)          (softmax over real positions only)
    s   = Σ_j α_j h_j

  Scores at padded positions are set to −∞ before the softmax, so their weights are exactly 0 and
  neither padding values nor the padded length change the result. A row with no real token gives
  weights 0 and summary 0 (no NaN, also in the gradient).

  Args:
    params: from ``init_attention_summary``.
    outputs: ``[b, t, h]``.
    mask: bool ``[b, t]``.

  Returns:
    ``(summary [b, h], weights [b, t])``.
  """
  mask = mask.astype(bool)
  outputs = jnp.where(mask[..., None], outputs, jnp.zeros_like(outputs))
  scores = dense(params["v"], jnp.tanh(dense(params["proj"], outputs)))[..., 0]  # [b, t]
  scores = jnp.where(mask, scores, -jnp.inf)
  s_max = jnp.max(scores, axis=1, keepdims=True)
  s_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(s_max), s_max, 0.0))
  unnorm = jnp.exp(scores - s_max)  # exactly 0 where masked
  denom = jnp.sum(unnorm, axis=1, keepdims=True)
  weights = unnorm / jnp.where(denom > 0, denom, 1.0)
  summary = jnp.einsum("bt,bth->bh", weights, outputs)
  return summary, weights


# ----------------------------------------------------------------------------------------------
# Word dropout (decoder inputs -> <unk>).
# ----------------------------------------------------------------------------------------------


def word_dropout(key: Array | None, ids: Array, mask: Array, keep_rate: float | Array, *,
                 unk_id: int, protect_first: bool = True) -> Array:
  """Word dropout on decoder inputs (seed 001 §3.2, seed 002 §5.4).

  Each real (masked-in) input token is replaced by ``unk_id`` independently with probability
  1 − keep_rate: with u_j ~ U[0, 1), y_j = unk if (m_j and u_j ≥ keep_rate) else ids_j. Padding is
  never touched; with ``protect_first`` position 0 (the ``<sos>`` input) is never replaced.
  keep_rate = 1 is the identity; keep_rate = 0 replaces every real non-first input (the "inputless"
  decoder of seed 001 Table 2).

  Args:
    key: PRNG key (may be None when ``keep_rate`` is the Python number 1.0 or 0.0, where the result
      is deterministic).
    ids: integer ``[b, t]`` decoder input ids.
    mask: bool ``[b, t]``.
    keep_rate: probability of keeping a word; a Python float or a (possibly traced) scalar, e.g.
      from ``word_keep_rate``. Only the Python value 1.0 short-cuts (no RNG drawn).
    unk_id: id of ``<unk>``.
    protect_first: never replace position 0.

  Returns:
    ``[b, t]`` ids, same dtype as ``ids``.
  """
  static = isinstance(keep_rate, (int, float)) and not isinstance(keep_rate, bool)
  if static and keep_rate == 1.0:
    return ids
  if static and keep_rate == 0.0:
    drop = mask.astype(bool)
  elif key is None:
    raise ValueError("word_dropout needs a PRNG key unless keep_rate is 1.0 or 0.0")
  else:
    u = jax.random.uniform(key, ids.shape)
    drop = mask.astype(bool) & (u >= jnp.asarray(keep_rate, u.dtype))
  if protect_first:
    drop = drop & (jnp.arange(ids.shape[1]) > 0)
  return jnp.where(drop, jnp.asarray(unk_id, ids.dtype), ids)


def word_keep_rate(step: Array | int, *, start_rate: float, end_rate: float, start_step: int,
                   end_step: int) -> Array:
  """Piecewise-linear word-dropout keep-rate schedule (keep rate = 1 − word-dropout rate).

  rate(s) = start_rate for s ≤ start_step, end_rate for s ≥ end_step, and linear in between:
  start_rate + (end_rate − start_rate) (s − start_step) / (end_step − start_step). If
  end_step ≤ start_step it is a step from start_rate to end_rate at end_step.

  Seed 002 §5.4 anneals the word-dropout *rate* from 1.0 at step 2000 to 0.0 at step 20000, i.e.
  ``start_rate=0.0, end_rate=1.0, start_step=2000, end_step=20000`` here (the paper does not say
  what happens before step 2000; this schedule holds ``start_rate`` there). Bowman et al. (seed 001)
  use a constant keep rate: ``start_rate == end_rate``.

  Args:
    step: training step, integer scalar (may be traced).
    start_rate: keep rate at and before ``start_step``.
    end_rate: keep rate at and after ``end_step``.
    start_step: where the ramp starts (static).
    end_step: where the ramp ends (static).

  Returns:
    float32 scalar keep rate.
  """
  step = jnp.asarray(step, jnp.float32)
  if end_step <= start_step:
    frac = (step >= end_step).astype(jnp.float32)
  else:
    frac = jnp.clip((step - start_step) / float(end_step - start_step), 0.0, 1.0)
  return jnp.asarray(start_rate, jnp.float32) + (end_rate - start_rate) * frac
