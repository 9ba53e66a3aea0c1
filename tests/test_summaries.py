"""Tests for the hidden-state summaries of mimtext.nn: last, masked mean, additive attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import nn

B, T, H, A = 4, 6, 5, 7
LENGTHS = np.array([6, 3, 1, 0])
EXTRA = 3

_mean_jit = jax.jit(nn.summary_mean)
_attn_jit = jax.jit(nn.attention_summary)


@pytest.fixture(scope="module")
def setup():
  k_o, k_g, k_p = jax.random.split(jax.random.key(0), 3)
  mask = nn.sequence_mask(jnp.asarray(LENGTHS), T)
  outputs = jnp.where(mask[..., None], jax.random.normal(k_o, (B, T, H)), 0.0)
  # The same real states, with 1e3-scale garbage on padding and EXTRA more padded steps.
  mask_long = nn.sequence_mask(jnp.asarray(LENGTHS), T + EXTRA)
  garbage = 1e3 * jax.random.normal(k_g, (B, T + EXTRA, H))
  outputs_long = jnp.where(mask_long[..., None],
                           jnp.pad(outputs, ((0, 0), (0, EXTRA), (0, 0))), garbage)
  params = nn.init_attention_summary(k_p, H, A)
  params = jax.tree.map(lambda a: 3.0 * a, params)  # peaky weights, so errors would show
  return params, outputs, mask, outputs_long, mask_long


def _attention_ref(params, outputs, lengths):
  """Numpy reference: e_j = v · tanh(h_j W + b), α = softmax over the real j, s = Σ α_j h_j."""
  w = np.asarray(params["proj"]["w"], np.float64)
  b = np.asarray(params["proj"]["b"], np.float64)
  v = np.asarray(params["v"]["w"], np.float64)[:, 0]
  outputs = np.asarray(outputs, np.float64)
  summary = np.zeros((outputs.shape[0], outputs.shape[2]))
  weights = np.zeros(outputs.shape[:2])
  for i, n in enumerate(lengths):
    if n == 0:
      continue
    hs = outputs[i, :n]
    e = np.tanh(hs @ w + b) @ v
    a = np.exp(e - e.max())
    a /= a.sum()
    weights[i, :n] = a
    summary[i] = a @ hs
  return summary, weights


def test_summary_last():
  last = jnp.arange(6.0).reshape(2, 3)
  assert nn.summary_last(jnp.zeros((2, 4, 3)), last) is last
  assert nn.summary_last(jnp.zeros((2, 4, 3)), (last, -last)) is last  # LSTM (h, c)


def test_summary_mean_matches_numpy_and_padding_invariant(setup):
  _, outputs, mask, outputs_long, mask_long = setup
  s = _mean_jit(outputs, mask)
  ref = np.zeros((B, H))
  for i, n in enumerate(LENGTHS):
    if n:
      ref[i] = np.asarray(outputs)[i, :n].mean(axis=0)
  assert s.shape == (B, H)
  np.testing.assert_allclose(s, ref, atol=1e-6)
  np.testing.assert_array_equal(s[3], 0.0)  # no real token: zeros, not NaN
  np.testing.assert_allclose(_mean_jit(outputs_long, mask_long), s, atol=1e-6)
  # Gradient is finite (empty row included) and zero on padding.
  g = jax.grad(lambda o: jnp.sum(nn.summary_mean(o, mask_long) ** 2))(outputs_long)
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(np.asarray(g)[~np.asarray(mask_long)], 0.0)


def test_attention_summary_matches_reference(setup):
  params, outputs, mask, _, _ = setup
  s, w = _attn_jit(params, outputs, mask)
  assert s.shape == (B, H) and w.shape == (B, T)
  ref_s, ref_w = _attention_ref(params, outputs, LENGTHS)
  np.testing.assert_allclose(s, ref_s, atol=1e-5)
  np.testing.assert_allclose(w, ref_w, atol=1e-6)
  # Weights: a distribution over the real positions, exactly 0 on padding.
  w = np.asarray(w)
  m = np.asarray(mask)
  np.testing.assert_allclose(w[:3].sum(axis=1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(w[~m], 0.0)
  assert np.all(w[m] > 0)
  assert np.std(w[0]) > 1e-3  # not the uniform mean
  # Row with no real token: zeros, no NaN.
  np.testing.assert_array_equal(np.asarray(s)[3], 0.0)
  np.testing.assert_array_equal(w[3], 0.0)


def test_attention_summary_padding_invariant(setup):
  params, outputs, mask, outputs_long, mask_long = setup
  s, w = _attn_jit(params, outputs, mask)
  s_long, w_long = _attn_jit(params, outputs_long, mask_long)
  np.testing.assert_allclose(s_long, s, atol=1e-6)
  np.testing.assert_allclose(w_long[:, :T], w, atol=1e-7)
  np.testing.assert_array_equal(w_long[:, T:], 0.0)
  # Each row alone, padded only to its own length.
  for i, n in enumerate(LENGTHS):
    if n == 0:
      continue
    s_i, w_i = _attn_jit(params, outputs[i:i + 1, :n], mask[i:i + 1, :n])
    np.testing.assert_allclose(s_i[0], s[i], atol=1e-6)
    np.testing.assert_allclose(w_i[0], w[i, :n], atol=1e-7)


def test_attention_summary_gradients_finite(setup):
  params, _, _, outputs_long, mask_long = setup

  def loss(p, o):
    s, _ = nn.attention_summary(p, o, mask_long)
    return jnp.sum(jnp.sin(s))

  g_p, g_o = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, outputs_long)
  for leaf in jax.tree.leaves(g_p):
    assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
  assert np.all(np.isfinite(g_o))
  np.testing.assert_array_equal(np.asarray(g_o)[~np.asarray(mask_long)], 0.0)


def test_attention_summary_init():
  p = nn.init_attention_summary(jax.random.key(0), 16, 8)
  assert p["proj"]["w"].shape == (16, 8) and p["proj"]["b"].shape == (8,)
  assert p["v"]["w"].shape == (8, 1) and set(p["v"]) == {"w"}
