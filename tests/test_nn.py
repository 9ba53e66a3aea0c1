"""Tests for mimtext.nn: GRU / LSTM against numpy loops, masking / padding invariance, reversal,
grads, cell dispatch, word dropout."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from mimtext import nn

B, T, E, H = 4, 6, 3, 5
LENGTHS = np.array([6, 3, 1, 0])

_gru_jit = jax.jit(nn.gru, static_argnames=("reverse",))
_bigru_jit = jax.jit(nn.bigru)
_lstm_jit = jax.jit(nn.lstm, static_argnames=("reverse",))
_bilstm_jit = jax.jit(nn.bilstm)
_rnn_jit = jax.jit(nn.rnn, static_argnames=("cell", "reverse"))
_birnn_jit = jax.jit(nn.birnn, static_argnames=("cell",))


# ------------------------------------------------------------------------------------------------
# Reference implementation (plain numpy loop over the same equations).
# ------------------------------------------------------------------------------------------------


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def _gru_ref(params, x_row, h0_row):
  """Numpy GRU over one row of real tokens x_row [L, e]: returns (outputs [L, h], last [h])."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  h = np.asarray(h0_row, np.float64)
  hid = h.shape[0]
  outs = []
  for x_t in np.asarray(x_row, np.float64):
    xp = x_t @ p["w_i"] + p["b_i"]
    hp = h @ p["w_h"] + p["b_h"]
    r = _sigmoid(xp[:hid] + hp[:hid])
    z = _sigmoid(xp[hid:2 * hid] + hp[hid:2 * hid])
    n = np.tanh(xp[2 * hid:] + r * hp[2 * hid:])
    h = (1.0 - z) * n + z * h
    outs.append(h)
  return np.asarray(outs).reshape(len(outs), hid), h


def _gru_ref_batch(params, x, lengths, h0, reverse=False):
  """Reference over a padded batch: outputs zero on padding, aligned to the original positions."""
  b, t, _ = x.shape
  hid = h0.shape[1]
  outputs = np.zeros((b, t, hid))
  last = np.zeros((b, hid))
  for i, n in enumerate(lengths):
    xs = x[i, :n][::-1] if reverse else x[i, :n]
    out, last[i] = _gru_ref(params, xs, h0[i])
    outputs[i, :n] = out[::-1] if reverse else out
  return outputs, last


def _lstm_ref(params, x_row, h0_row, c0_row):
  """Numpy LSTM (PyTorch equations, gates i, f, g, o) over one row of real tokens x_row [L, e].

  Returns (outputs [L, h], last h [h], last c [h]).
  """
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  h = np.asarray(h0_row, np.float64)
  c = np.asarray(c0_row, np.float64)
  hid = h.shape[0]
  outs = []
  for x_t in np.asarray(x_row, np.float64):
    a = x_t @ p["w_i"] + p["b_i"] + h @ p["w_h"] + p["b_h"]
    i = _sigmoid(a[:hid])
    f = _sigmoid(a[hid:2 * hid])
    g = np.tanh(a[2 * hid:3 * hid])
    o = _sigmoid(a[3 * hid:])
    c = f * c + i * g
    h = o * np.tanh(c)
    outs.append(h)
  return np.asarray(outs).reshape(len(outs), hid), h, c


def _lstm_ref_batch(params, x, lengths, h0, c0, reverse=False):
  """LSTM reference over a padded batch: (outputs zero on padding, last h, last c)."""
  b, t, _ = x.shape
  hid = h0.shape[1]
  outputs = np.zeros((b, t, hid))
  last_h = np.zeros((b, hid))
  last_c = np.zeros((b, hid))
  for i, n in enumerate(lengths):
    xs = x[i, :n][::-1] if reverse else x[i, :n]
    out, last_h[i], last_c[i] = _lstm_ref(params, xs, h0[i], c0[i])
    outputs[i, :n] = out[::-1] if reverse else out
  return outputs, last_h, last_c


@pytest.fixture(scope="module")
def setup():
  k_p, k_x, k_h = jax.random.split(jax.random.key(0), 3)
  params = nn.init_gru(k_p, E, H)
  # Larger-than-default weights so the gates are far from 0.5 and errors would show.
  params = jax.tree.map(lambda a: 3.0 * a, params)
  x = jax.random.normal(k_x, (B, T, E))
  h0 = jax.random.normal(k_h, (B, H))
  mask = nn.sequence_mask(jnp.asarray(LENGTHS), T)
  return params, x, mask, h0


@pytest.fixture(scope="module")
def lstm_setup(setup):
  _, x, mask, h0 = setup
  params = nn.init_lstm(jax.random.key(11), E, H)
  params = jax.tree.map(lambda a: 3.0 * a, params)
  c0 = 2.0 * jax.random.normal(jax.random.key(12), (B, H))
  return params, x, mask, h0, c0


def _run_cell(cell, params, x, mask, state0, reverse):
  """Direct (jitted) gru / lstm call; returns (outputs, last h, last c or None)."""
  if cell == "gru":
    out, last = _gru_jit(params, x, mask, h0=state0, reverse=reverse)
    return out, last, None
  out, (h, c) = _lstm_jit(params, x, mask, h0=state0, reverse=reverse)
  return out, h, c


# ------------------------------------------------------------------------------------------------
# GRU.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("use_h0", [False, True])
def test_gru_matches_numpy_loop(setup, reverse, use_h0):
  params, x, mask, h0 = setup
  h0_arg = h0 if use_h0 else None
  h0_ref = np.asarray(h0) if use_h0 else np.zeros((B, H))
  outputs, last = _gru_jit(params, x, mask, h0=h0_arg, reverse=reverse)
  ref_out, ref_last = _gru_ref_batch(params, np.asarray(x), LENGTHS, h0_ref, reverse=reverse)
  assert outputs.shape == (B, T, H) and last.shape == (B, H)
  np.testing.assert_allclose(outputs, ref_out, atol=1e-5)
  np.testing.assert_allclose(last, ref_last, atol=1e-5)
  # Row with no real token: last is h0, outputs all zero.
  np.testing.assert_allclose(last[3], h0_ref[3], atol=0)
  np.testing.assert_array_equal(outputs[3], 0.0)


@pytest.mark.parametrize("cell", nn.CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_padding_invariance(setup, lstm_setup, cell, reverse):
  if cell == "gru":
    params, x, mask, h0 = setup
    state0 = h0
    row_state = lambda i: h0[i:i + 1]
  else:
    params, x, mask, h0, c0 = lstm_setup
    state0 = (h0, c0)
    row_state = lambda i: (h0[i:i + 1], c0[i:i + 1])
  out, last, last_c = _run_cell(cell, params, x, mask, state0, reverse)
  # 1) Garbage in padded positions, and 3 extra padded steps of garbage.
  extra = 3
  garbage = 50.0 * jax.random.normal(jax.random.key(7), (B, T + extra, E))
  mask_long = nn.sequence_mask(jnp.asarray(LENGTHS), T + extra)
  x_long = jnp.where(mask_long[..., None], jnp.pad(x, ((0, 0), (0, extra), (0, 0))), garbage)
  out_long, last_long, last_c_long = _run_cell(cell, params, x_long, mask_long, state0, reverse)
  np.testing.assert_allclose(out_long[:, :T], out, atol=1e-6)
  np.testing.assert_array_equal(out_long[:, T:], 0.0)
  np.testing.assert_allclose(last_long, last, atol=1e-6)
  if cell == "lstm":
    np.testing.assert_allclose(last_c_long, last_c, atol=1e-6)
  # 2) Each row alone, padded only to its own length (other rows' lengths do not matter).
  for i, n in enumerate(LENGTHS):
    if n == 0:
      continue
    out_i, last_i, last_c_i = _run_cell(cell, params, x[i:i + 1, :n], mask[i:i + 1, :n],
                                        row_state(i), reverse)
    np.testing.assert_allclose(out_i[0], out[i, :n], atol=1e-6)
    np.testing.assert_allclose(last_i[0], last[i], atol=1e-6)
    if cell == "lstm":
      np.testing.assert_allclose(last_c_i[0], last_c[i], atol=1e-6)


def test_reverse_padded():
  x = jnp.arange(4 * 5).reshape(4, 5)
  lengths = jnp.array([5, 3, 1, 0])
  y = nn.reverse_padded(x, lengths)
  expected = np.array([
      [4, 3, 2, 1, 0],
      [7, 6, 5, 8, 9],
      [10, 11, 12, 13, 14],
      [15, 16, 17, 18, 19],
  ])
  np.testing.assert_array_equal(y, expected)
  np.testing.assert_array_equal(nn.reverse_padded(y, lengths), x)
  # Trailing feature dims are carried along.
  x3 = jax.random.normal(jax.random.key(1), (4, 5, 2))
  y3 = nn.reverse_padded(x3, lengths)
  np.testing.assert_array_equal(y3[1, :3], x3[1, :3][::-1])
  np.testing.assert_array_equal(y3[1, 3:], x3[1, 3:])
  np.testing.assert_array_equal(nn.reverse_padded(y3, lengths), x3)


def test_bigru(setup):
  _, x, mask, h0 = setup
  params = nn.init_bigru(jax.random.key(3), E, H)
  h0_2 = jnp.concatenate([h0, -h0], axis=-1)
  out, last = _bigru_jit(params, x, mask, h0=h0_2)
  assert out.shape == (B, T, 2 * H) and last.shape == (B, 2 * H)
  out_f, last_f = _gru_jit(params["fwd"], x, mask, h0=h0, reverse=False)
  out_b, _ = _gru_jit(params["bwd"], x, mask, h0=-h0, reverse=True)
  np.testing.assert_allclose(out[..., :H], out_f, atol=1e-6)
  np.testing.assert_allclose(out[..., H:], out_b, atol=1e-6)
  np.testing.assert_allclose(last[:, :H], last_f, atol=1e-6)
  # Backward final state = backward state after reading the first token = its output at position 0.
  np.testing.assert_allclose(last[:3, H:], out_b[:3, 0], atol=1e-6)
  np.testing.assert_allclose(last[3, H:], -h0[3], atol=1e-6)  # empty row keeps h0
  # Against the numpy loop too.
  _, ref_last_b = _gru_ref_batch(params["bwd"], np.asarray(x), LENGTHS, -np.asarray(h0), True)
  np.testing.assert_allclose(last[:, H:], ref_last_b, atol=1e-5)


def test_gru_jit_equals_eager(setup):
  params, x, mask, h0 = setup
  with jax.disable_jit():
    eager = nn.bigru({"fwd": params, "bwd": params}, x, mask,
                     h0=jnp.concatenate([h0, h0], axis=-1))
  jitted = _bigru_jit({"fwd": params, "bwd": params}, x, mask,
                      h0=jnp.concatenate([h0, h0], axis=-1))
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_gru_vmap(setup):
  params, x, mask, h0 = setup
  xs = jnp.stack([x, 2.0 * x])  # [k, b, t, e]
  out_v, last_v = jax.vmap(lambda xx: nn.gru(params, xx, mask, h0=h0))(xs)
  for k in range(2):
    out_k, last_k = _gru_jit(params, xs[k], mask, h0=h0, reverse=False)
    np.testing.assert_allclose(out_v[k], out_k, atol=1e-6)
    np.testing.assert_allclose(last_v[k], last_k, atol=1e-6)


def _count_dots(jaxpr) -> int:
  return sum(1 for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general")


@pytest.mark.parametrize("cell, gates", [("gru", 3), ("lstm", 4)])
def test_rnn_input_projection_hoisted(setup, cell, gates):
  """Exactly one matmul (h @ W_h) inside the scan body; the input projection is outside."""
  _, x, mask, _ = setup
  params = nn.init_rnn(jax.random.key(0), cell, E, H)
  closed = jax.make_jaxpr(lambda p, xx, m: nn.rnn(p, cell, xx, m, reverse=True))(params, x, mask)
  scans = _find_eqns(closed.jaxpr, "scan")      # the GRU's scan sits inside its custom_vjp
  assert len(scans) == 1
  assert _count_dots(scans[0].params["jaxpr"].jaxpr) == 1
  outer = [e for e in closed.jaxpr.eqns if e.primitive.name == "dot_general"]
  assert len(outer) == 1 and outer[0].outvars[0].aval.shape == (B, T, gates * H)


def _find_eqns(jaxpr, name: str) -> list:
  """Every equation called `name` in `jaxpr` and the jaxprs nested in its equations' params."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == name:
      found.append(eqn)
      continue
    for value in eqn.params.values():
      inner = getattr(value, "jaxpr", value)
      if hasattr(inner, "eqns"):
        found += _find_eqns(inner, name)
  return found


@pytest.mark.parametrize("cell, gates", [("gru", 3), ("lstm", 4)])
@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_gradients_match_finite_differences(cell, gates, reverse):
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    b, t, e, h = 2, 4, 2, 3
    params = {
        "w_i": rng.normal(size=(e, gates * h)), "w_h": rng.normal(size=(h, gates * h)),
        "b_i": rng.normal(size=(gates * h,)), "b_h": rng.normal(size=(gates * h,)),
    }
    inputs = {"params": params, "x": rng.normal(size=(b, t, e)), "h0": rng.normal(size=(b, h))}
    if cell == "lstm":
      inputs["c0"] = rng.normal(size=(b, h))
    inputs = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), inputs)
    mask = nn.sequence_mask(jnp.array([4, 2]), t)
    w_out = jnp.asarray(rng.normal(size=(b, t, h)))
    w_last = jnp.asarray(rng.normal(size=(b, h)))

    def loss(inp):
      h0 = (inp["h0"], inp["c0"]) if cell == "lstm" else inp["h0"]
      out, last = nn.rnn(inp["params"], cell, inp["x"], mask, h0=h0, reverse=reverse)
      return jnp.sum(out * w_out) + jnp.sum(jnp.sin(last) * w_last)

    flat, unravel = ravel_pytree(inputs)
    assert flat.dtype == jnp.float64
    f = jax.jit(lambda v: loss(unravel(v)))
    g = jax.jit(jax.grad(lambda v: loss(unravel(v))))(flat)
    eps = 1e-6
    # All coordinates (tiny case) by central differences.
    eye = jnp.eye(flat.size, dtype=jnp.float64)
    fd = jax.vmap(lambda d: (f(flat + eps * d) - f(flat - eps * d)) / (2 * eps))(eye)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    # Padded input positions get exactly zero gradient.
    g_x = unravel(g)["x"]
    np.testing.assert_array_equal(g_x[1, 2:], 0.0)


# ------------------------------------------------------------------------------------------------
# Dense, embedding, highway, dropout, masks, inits.
# ------------------------------------------------------------------------------------------------


def test_dense_shapes_and_init():
  p = nn.init_dense(jax.random.key(0), 16, 7)
  assert p["w"].shape == (16, 7) and p["b"].shape == (7,)
  assert float(jnp.max(jnp.abs(p["w"]))) <= 1 / 4 and float(jnp.max(jnp.abs(p["b"]))) <= 1 / 4
  x = jax.random.normal(jax.random.key(1), (2, 3, 16))
  y = nn.dense(p, x)
  assert y.shape == (2, 3, 7)
  np.testing.assert_allclose(y, np.asarray(x) @ np.asarray(p["w"]) + np.asarray(p["b"]),
                             atol=1e-5)
  p_nb = nn.init_dense(jax.random.key(0), 16, 7, bias=False)
  assert set(p_nb) == {"w"}
  np.testing.assert_allclose(nn.dense(p_nb, x), np.asarray(x) @ np.asarray(p_nb["w"]), atol=1e-5)


def test_embedding():
  p = nn.init_embedding(jax.random.key(0), 11, 4)
  assert p["table"].shape == (11, 4)
  ids = jnp.array([[0, 3, 10], [5, 5, 1]])
  y = nn.embed(p, ids)
  assert y.shape == (2, 3, 4)
  np.testing.assert_array_equal(y[1, 0], p["table"][5])
  np.testing.assert_array_equal(y[0, 2], p["table"][10])


def test_highway():
  dim = 6
  p = nn.init_highway(jax.random.key(0), dim)
  assert p["h"]["w"].shape == (dim, dim) and p["t"]["b"].shape == (dim,)
  x = jax.random.normal(jax.random.key(1), (3, 2, dim))
  y = nn.highway(p, x)
  assert y.shape == x.shape
  xn = np.asarray(x)
  t = _sigmoid(xn @ np.asarray(p["t"]["w"]) + np.asarray(p["t"]["b"]))
  hh = np.maximum(xn @ np.asarray(p["h"]["w"]) + np.asarray(p["h"]["b"]), 0.0)
  np.testing.assert_allclose(y, t * hh + (1 - t) * xn, atol=1e-5)
  # A closed gate carries the input through.
  p_closed = nn.init_highway(jax.random.key(0), dim, gate_bias=-100.0)
  np.testing.assert_allclose(nn.highway(p_closed, x), x, atol=1e-5)


def test_dropout():
  x = jnp.full((200_000,), 2.0)
  key = jax.random.key(0)
  rate = 0.3
  y = nn.dropout(key, x, rate, deterministic=False)
  kept = np.asarray(y != 0)
  # Kept entries are scaled by 1/(1 - rate); the expectation is preserved.
  np.testing.assert_allclose(np.asarray(y)[kept], 2.0 / (1 - rate), rtol=1e-6)
  se_frac = math.sqrt(rate * (1 - rate) / x.size)
  assert abs((1 - kept.mean()) - rate) < 5 * se_frac
  se_mean = 2.0 * math.sqrt(rate / (1 - rate) / x.size)
  assert abs(float(jnp.mean(y)) - 2.0) < 5 * se_mean
  assert nn.dropout(key, x, rate, deterministic=True) is x
  assert nn.dropout(None, x, 0.0, deterministic=False) is x
  np.testing.assert_array_equal(nn.dropout(key, x, 1.0, deterministic=False), 0.0)
  # Under jit with a static rate.
  y_jit = jax.jit(nn.dropout, static_argnames=("rate", "deterministic"))(
      key, x, rate=rate, deterministic=False)
  np.testing.assert_array_equal(y_jit, y)


def test_sequence_mask():
  m = nn.sequence_mask(jnp.array([0, 2, 4]), 4)
  np.testing.assert_array_equal(
      m, [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
  assert m.dtype == jnp.bool_


def test_gru_init():
  p = nn.init_gru(jax.random.key(0), 7, 16)
  shapes = {k: v.shape for k, v in p.items()}
  assert shapes == {"w_i": (7, 48), "w_h": (16, 48), "b_i": (48,), "b_h": (48,)}
  for v in p.values():
    assert v.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(v))) <= 0.25
  bp = nn.init_bigru(jax.random.key(0), 7, 16)
  assert set(bp) == {"fwd", "bwd"}
  assert not np.allclose(bp["fwd"]["w_h"], bp["bwd"]["w_h"])


def test_gru_cell_matches_reference():
  p = nn.init_gru(jax.random.key(0), E, H)
  x = jax.random.normal(jax.random.key(1), (2, E))
  h = jax.random.normal(jax.random.key(2), (2, H))
  h_new = nn.gru_cell(p, nn.gru_input_projection(p, x), h)
  for i in range(2):
    _, ref = _gru_ref(p, np.asarray(x[i:i + 1]), np.asarray(h[i]))
    np.testing.assert_allclose(h_new[i], ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# LSTM and the cell-type dispatch.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("use_h0", [False, True])
def test_lstm_matches_numpy_loop(lstm_setup, reverse, use_h0):
  params, x, mask, h0, c0 = lstm_setup
  state0 = (h0, c0) if use_h0 else None
  h0_ref = np.asarray(h0) if use_h0 else np.zeros((B, H))
  c0_ref = np.asarray(c0) if use_h0 else np.zeros((B, H))
  outputs, (last_h, last_c) = _lstm_jit(params, x, mask, h0=state0, reverse=reverse)
  ref_out, ref_h, ref_c = _lstm_ref_batch(params, np.asarray(x), LENGTHS, h0_ref, c0_ref,
                                          reverse=reverse)
  assert outputs.shape == (B, T, H) and last_h.shape == (B, H) and last_c.shape == (B, H)
  np.testing.assert_allclose(outputs, ref_out, atol=1e-5)
  np.testing.assert_allclose(last_h, ref_h, atol=1e-5)
  np.testing.assert_allclose(last_c, ref_c, atol=1e-5)
  # Row with no real token: last state is the initial state, outputs all zero.
  np.testing.assert_allclose(last_h[3], h0_ref[3], atol=0)
  np.testing.assert_allclose(last_c[3], c0_ref[3], atol=0)
  np.testing.assert_array_equal(outputs[3], 0.0)


def test_lstm_init_and_cell():
  p = nn.init_lstm(jax.random.key(0), 7, 16)
  shapes = {k: v.shape for k, v in p.items()}
  assert shapes == {"w_i": (7, 64), "w_h": (16, 64), "b_i": (64,), "b_h": (64,)}
  for v in p.values():
    assert v.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(v))) <= 0.25
    assert float(jnp.max(jnp.abs(v))) > 0.2  # uses the whole ±1/√h range
  bp = nn.init_bilstm(jax.random.key(0), 7, 16)
  assert set(bp) == {"fwd", "bwd"}
  assert not np.allclose(bp["fwd"]["w_h"], bp["bwd"]["w_h"])
  # One step against the numpy equations (gate order i, f, g, o).
  x = jax.random.normal(jax.random.key(1), (2, 7))
  h = jax.random.normal(jax.random.key(2), (2, 16))
  c = jax.random.normal(jax.random.key(3), (2, 16))
  h_new, c_new = jax.jit(lambda pp, xx, s: nn.lstm_cell(pp, nn.lstm_input_projection(pp, xx), s))(
      p, x, (h, c))
  for i in range(2):
    _, ref_h, ref_c = _lstm_ref(p, np.asarray(x[i:i + 1]), np.asarray(h[i]), np.asarray(c[i]))
    np.testing.assert_allclose(h_new[i], ref_h, atol=1e-5)
    np.testing.assert_allclose(c_new[i], ref_c, atol=1e-5)


def test_bilstm(lstm_setup):
  _, x, mask, h0, c0 = lstm_setup
  params = nn.init_bilstm(jax.random.key(3), E, H)
  state0 = (jnp.concatenate([h0, -h0], axis=-1), jnp.concatenate([c0, -c0], axis=-1))
  out, (last_h, last_c) = _bilstm_jit(params, x, mask, h0=state0)
  assert out.shape == (B, T, 2 * H) and last_h.shape == (B, 2 * H) and last_c.shape == (B, 2 * H)
  out_f, (h_f, c_f) = _lstm_jit(params["fwd"], x, mask, h0=(h0, c0), reverse=False)
  out_b, (_, c_b) = _lstm_jit(params["bwd"], x, mask, h0=(-h0, -c0), reverse=True)
  np.testing.assert_allclose(out[..., :H], out_f, atol=1e-6)
  np.testing.assert_allclose(out[..., H:], out_b, atol=1e-6)
  np.testing.assert_allclose(last_h[:, :H], h_f, atol=1e-6)
  np.testing.assert_allclose(last_c[:, :H], c_f, atol=1e-6)
  np.testing.assert_allclose(last_c[:, H:], c_b, atol=1e-6)
  # Backward final h = backward state after reading the first token = its output at position 0.
  np.testing.assert_allclose(last_h[:3, H:], out_b[:3, 0], atol=1e-6)
  np.testing.assert_allclose(last_h[3, H:], -h0[3], atol=1e-6)  # empty row keeps h0
  np.testing.assert_allclose(last_c[3, H:], -c0[3], atol=1e-6)
  _, ref_h_b, ref_c_b = _lstm_ref_batch(params["bwd"], np.asarray(x), LENGTHS,
                                        -np.asarray(h0), -np.asarray(c0), True)
  np.testing.assert_allclose(last_h[:, H:], ref_h_b, atol=1e-5)
  np.testing.assert_allclose(last_c[:, H:], ref_c_b, atol=1e-5)


@pytest.mark.parametrize("cell", nn.CELLS)
def test_rnn_dispatch_equals_direct_calls(setup, lstm_setup, cell):
  _, x, mask, h0 = setup
  key = jax.random.key(5)
  params = nn.init_rnn(key, cell, E, H)
  direct_init = nn.init_gru if cell == "gru" else nn.init_lstm
  jax.tree.map(np.testing.assert_array_equal, params, direct_init(key, E, H))
  bparams = nn.init_birnn(key, cell, E, H)
  direct_binit = nn.init_bigru if cell == "gru" else nn.init_bilstm
  jax.tree.map(np.testing.assert_array_equal, bparams, direct_binit(key, E, H))

  # Uni-directional, h0 as an array (for "lstm": h = h0, c = 0).
  out, last = _rnn_jit(params, cell, x, mask, h0=h0, reverse=True)
  state0 = h0 if cell == "gru" else (h0, jnp.zeros_like(h0))
  out_d, last_d, _ = _run_cell(cell, params, x, mask, state0, True)
  np.testing.assert_array_equal(out, out_d)
  np.testing.assert_array_equal(last, last_d)
  # Bidirectional, no h0.
  bout, blast = _birnn_jit(bparams, cell, x, mask)
  if cell == "gru":
    bout_d, blast_d = _bigru_jit(bparams, x, mask)
  else:
    bout_d, (blast_d, _) = _bilstm_jit(bparams, x, mask)
  np.testing.assert_array_equal(bout, bout_d)
  np.testing.assert_array_equal(blast, blast_d)
  assert blast.shape == (B, 2 * H)

  # Step API: stepping rnn_step by hand over full-length rows reproduces rnn.
  state = nn.rnn_initial_state(cell, h0)
  if cell == "lstm":
    assert isinstance(state, tuple) and len(state) == 2
    np.testing.assert_array_equal(state[1], 0.0)

  @jax.jit
  def by_steps(p, xx, s):
    xp = nn.rnn_input_projection(p, cell, xx)
    for j in range(T):
      h_out, s = nn.rnn_step(p, cell, xp[:, j], s)
    return h_out

  h_out = by_steps(params, x, state)
  out_full, last_full = _rnn_jit(params, cell, x, jnp.ones((B, T), bool), h0=h0)
  np.testing.assert_allclose(h_out, last_full, atol=1e-6)
  np.testing.assert_allclose(h_out, out_full[:, -1], atol=1e-6)


def test_rnn_unknown_cell_raises(setup):
  _, x, mask, _ = setup
  for fn in (lambda: nn.init_rnn(jax.random.key(0), "rnn_tanh", E, H),
             lambda: nn.init_birnn(jax.random.key(0), "LSTM", E, H),
             lambda: nn.rnn({}, "transformer", x, mask),
             lambda: nn.birnn({}, "transformer", x, mask),
             lambda: nn.rnn_step({}, "transformer", x[:, 0], x[:, 0]),
             lambda: nn.rnn_input_projection({}, "transformer", x),
             lambda: nn.rnn_initial_state("transformer", x[:, 0])):
    with pytest.raises(ValueError, match=r"unknown recurrent cell '\w+'"):
      fn()


# ------------------------------------------------------------------------------------------------
# Word dropout and its keep-rate schedule.
# ------------------------------------------------------------------------------------------------

UNK = 1
_word_dropout_jit = jax.jit(nn.word_dropout, static_argnames=("unk_id", "protect_first"))


def _ids_and_mask(b, t, seed):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, t + 1, size=b)
  lengths[:3] = [t, 1, 0]
  mask = np.arange(t)[None, :] < lengths[:, None]
  ids = rng.integers(2, 50, size=(b, t)).astype(np.int32)  # never UNK
  return jnp.asarray(ids), jnp.asarray(mask)


def test_word_dropout_keep_one_is_identity():
  ids, mask = _ids_and_mask(8, 7, 0)
  assert nn.word_dropout(None, ids, mask, 1.0, unk_id=UNK) is ids  # no RNG at all
  # A traced 1.0 draws but replaces nothing (u < 1 always).
  out = _word_dropout_jit(jax.random.key(0), ids, mask, jnp.float32(1.0), unk_id=UNK)
  np.testing.assert_array_equal(out, ids)
  with pytest.raises(ValueError, match="PRNG key"):
    nn.word_dropout(None, ids, mask, 0.5, unk_id=UNK)


@pytest.mark.parametrize("protect_first", [True, False])
def test_word_dropout_keep_zero_is_inputless(protect_first):
  ids, mask = _ids_and_mask(8, 7, 1)
  out = np.asarray(_word_dropout_jit(jax.random.key(0), ids, mask, 0.0, unk_id=UNK,
                                     protect_first=protect_first))
  ids, mask = np.asarray(ids), np.asarray(mask)
  np.testing.assert_array_equal(out[~mask], ids[~mask])  # padding untouched
  real = mask.copy()
  if protect_first:
    np.testing.assert_array_equal(out[:, 0], ids[:, 0])
    real[:, 0] = False
  assert np.all(out[real] == UNK)


def test_word_dropout_rate_and_traced_keep():
  ids, mask = _ids_and_mask(400, 40, 2)
  keep = 0.7
  key = jax.random.key(3)
  out = _word_dropout_jit(key, ids, mask, keep, unk_id=UNK)
  # A traced keep rate (as from an annealed schedule) gives the same draw.
  out_eager = nn.word_dropout(key, ids, mask, keep, unk_id=UNK)
  np.testing.assert_array_equal(out, out_eager)
  out, ids, mask = np.asarray(out), np.asarray(ids), np.asarray(mask)
  np.testing.assert_array_equal(out[~mask], ids[~mask])
  np.testing.assert_array_equal(out[:, 0], ids[:, 0])
  eligible = mask.copy()
  eligible[:, 0] = False
  n = int(eligible.sum())
  assert n > 5000
  replaced = out[eligible] == UNK
  np.testing.assert_array_equal(out[eligible][~replaced], ids[eligible][~replaced])
  se = math.sqrt(keep * (1 - keep) / n)
  assert abs(replaced.mean() - (1 - keep)) < 5 * se
  # A different key gives a different pattern.
  other = np.asarray(_word_dropout_jit(jax.random.key(4), jnp.asarray(ids), jnp.asarray(mask),
                                       keep, unk_id=UNK))
  assert np.any(other != out)


def test_word_keep_rate_schedule():
  kw = dict(start_rate=0.0, end_rate=1.0, start_step=2000, end_step=20000)  # seed 002 §5.4
  sched = jax.jit(lambda s: nn.word_keep_rate(s, **kw))
  for step, expected in [(0, 0.0), (2000, 0.0), (11000, 0.5), (15500, 0.75), (20000, 1.0),
                         (10**6, 1.0)]:
    np.testing.assert_allclose(sched(step), expected, atol=1e-6)
    np.testing.assert_allclose(nn.word_keep_rate(step, **kw), expected, atol=1e-6)
  const = nn.word_keep_rate(123, start_rate=0.62, end_rate=0.62, start_step=0, end_step=1)
  np.testing.assert_allclose(const, 0.62, atol=1e-7)
  step_fn = dict(start_rate=1.0, end_rate=0.5, start_step=100, end_step=100)
  np.testing.assert_allclose(nn.word_keep_rate(99, **step_fn), 1.0)
  np.testing.assert_allclose(nn.word_keep_rate(100, **step_fn), 0.5)
  assert nn.word_keep_rate(5, **kw).dtype == jnp.float32
