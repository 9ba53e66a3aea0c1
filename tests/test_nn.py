"""Tests for mimtext.nn: GRU against a numpy loop, masking / padding invariance, reversal, grads."""

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


@pytest.mark.parametrize("reverse", [False, True])
def test_gru_padding_invariance(setup, reverse):
  params, x, mask, h0 = setup
  out, last = _gru_jit(params, x, mask, h0=h0, reverse=reverse)
  # 1) Garbage in padded positions, and 3 extra padded steps of garbage.
  extra = 3
  garbage = 50.0 * jax.random.normal(jax.random.key(7), (B, T + extra, E))
  mask_long = nn.sequence_mask(jnp.asarray(LENGTHS), T + extra)
  x_long = jnp.where(mask_long[..., None], jnp.pad(x, ((0, 0), (0, extra), (0, 0))), garbage)
  out_long, last_long = _gru_jit(params, x_long, mask_long, h0=h0, reverse=reverse)
  np.testing.assert_allclose(out_long[:, :T], out, atol=1e-6)
  np.testing.assert_array_equal(out_long[:, T:], 0.0)
  np.testing.assert_allclose(last_long, last, atol=1e-6)
  # 2) Each row alone, padded only to its own length (other rows' lengths do not matter).
  for i, n in enumerate(LENGTHS):
    if n == 0:
      continue
    out_i, last_i = nn.gru(params, x[i:i + 1, :n], mask[i:i + 1, :n], h0=h0[i:i + 1],
                           reverse=reverse)
    np.testing.assert_allclose(out_i[0], out[i, :n], atol=1e-6)
    np.testing.assert_allclose(last_i[0], last[i], atol=1e-6)


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


def test_gru_input_projection_hoisted(setup):
  """Exactly one matmul (h @ W_h) inside the scan body; the input projection is outside."""
  params, x, mask, _ = setup
  closed = jax.make_jaxpr(lambda p, xx, m: nn.gru(p, xx, m, reverse=True))(params, x, mask)
  scans = [e for e in closed.jaxpr.eqns if e.primitive.name == "scan"]
  assert len(scans) == 1
  assert _count_dots(scans[0].params["jaxpr"].jaxpr) == 1
  outer = [e for e in closed.jaxpr.eqns if e.primitive.name == "dot_general"]
  assert len(outer) == 1 and outer[0].outvars[0].aval.shape == (B, T, 3 * H)


@pytest.mark.parametrize("reverse", [False, True])
def test_gru_gradients_match_finite_differences(reverse):
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    b, t, e, h = 2, 4, 2, 3
    params = {
        "w_i": rng.normal(size=(e, 3 * h)), "w_h": rng.normal(size=(h, 3 * h)),
        "b_i": rng.normal(size=(3 * h,)), "b_h": rng.normal(size=(3 * h,)),
    }
    inputs = {"params": params, "x": rng.normal(size=(b, t, e)), "h0": rng.normal(size=(b, h))}
    inputs = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), inputs)
    mask = nn.sequence_mask(jnp.array([4, 2]), t)
    w_out = jnp.asarray(rng.normal(size=(b, t, h)))
    w_last = jnp.asarray(rng.normal(size=(b, h)))

    def loss(inp):
      out, last = nn.gru(inp["params"], inp["x"], mask, h0=inp["h0"], reverse=reverse)
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
