"""Tests for mimtext.distributions: closed forms vs Monte Carlo and scipy, the log-variance
floor."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mimtext import distributions as dist

N_MC = 200_000
MEAN_Q = np.array([0.5, -1.0, 2.0], np.float32)
LOG_VAR_Q = np.array([-1.0, 0.3, 1.2], np.float32)
MEAN_P = np.array([0.2, 0.4, -1.0], np.float32)
LOG_VAR_P = np.array([0.5, -0.7, 0.0], np.float32)


@pytest.fixture(scope="module")
def z_q():
  """N_MC samples from q = N(MEAN_Q, exp(LOG_VAR_Q)), [N_MC, 3]."""
  return dist.normal_sample(jax.random.key(0), jnp.asarray(MEAN_Q), jnp.asarray(LOG_VAR_Q),
                            sample_shape=(N_MC,))


def _assert_mc(values, expected, n_se=5.0):
  values = np.asarray(values, np.float64)
  se = values.std(ddof=1) / math.sqrt(values.size)
  assert abs(values.mean() - expected) < n_se * se + 1e-6, (values.mean(), expected, se)


def test_sample_moments_and_not_truncated(z_q):
  assert z_q.shape == (N_MC, 3)
  z = np.asarray(z_q, np.float64)
  var = np.exp(LOG_VAR_Q.astype(np.float64))
  se_mean = np.sqrt(var / N_MC)
  assert np.all(np.abs(z.mean(0) - MEAN_Q) < 5 * se_mean)
  se_var = var * math.sqrt(2.0 / N_MC)
  assert np.all(np.abs(z.var(0, ddof=1) - var) < 5 * se_var)
  # A true Gaussian: P(|ε| > 2) ≈ 0.0455 (a normal truncated at ±2 would give 0).
  eps = (z - MEAN_Q) / np.sqrt(var)
  tail = np.mean(np.abs(eps) > 2.0)
  p = 2 * stats.norm.sf(2.0)
  assert abs(tail - p) < 5 * math.sqrt(p * (1 - p) / eps.size)


def test_sample_broadcast_and_reparameterised():
  mean = jnp.zeros((4, 3))
  log_var = jnp.zeros((3,))
  z = dist.normal_sample(jax.random.key(1), mean, log_var, sample_shape=(2,))
  assert z.shape == (2, 4, 3) and z.dtype == jnp.float32
  key = jax.random.key(2)
  m, lv = jnp.asarray(MEAN_Q), jnp.asarray(LOG_VAR_Q)
  eps = (dist.normal_sample(key, m, lv) - m) * jnp.exp(-0.5 * lv)
  g_mean = jax.grad(lambda mm: jnp.sum(dist.normal_sample(key, mm, lv)))(m)
  g_lv = jax.grad(lambda ll: jnp.sum(dist.normal_sample(key, m, ll)))(lv)
  np.testing.assert_allclose(g_mean, 1.0, rtol=1e-6)
  np.testing.assert_allclose(g_lv, 0.5 * jnp.exp(0.5 * lv) * eps, rtol=1e-5)


def test_log_prob_vs_scipy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(5, 2, 3)).astype(np.float32)
  mean = rng.normal(size=(2, 3)).astype(np.float32)
  log_var = rng.normal(size=(5, 1, 3)).astype(np.float32)
  ref = stats.norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(-1)
  out = dist.normal_log_prob(jnp.asarray(z), jnp.asarray(mean), jnp.asarray(log_var))
  assert out.shape == (5, 2)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dist.standard_normal_log_prob(jnp.asarray(z)),
                             stats.norm.logpdf(z).sum(-1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      dist.standard_normal_log_prob(jnp.asarray(z)),
      dist.normal_log_prob(jnp.asarray(z), jnp.zeros(3), jnp.zeros(3)), rtol=1e-6)


def test_kl_standard_closed_form_vs_mc(z_q):
  m, lv = jnp.asarray(MEAN_Q), jnp.asarray(LOG_VAR_Q)
  closed = float(dist.normal_kl_standard(m, lv))
  hand = 0.5 * np.sum(MEAN_Q**2 + np.exp(LOG_VAR_Q) - 1 - LOG_VAR_Q)
  np.testing.assert_allclose(closed, hand, rtol=1e-6)
  log_ratio = dist.normal_log_prob(z_q, m, lv) - dist.standard_normal_log_prob(z_q)
  _assert_mc(log_ratio, closed)
  assert float(dist.normal_kl_standard(jnp.zeros(3), jnp.zeros(3))) == 0.0


def test_kl_general_vs_mc_and_standard(z_q):
  m, lv = jnp.asarray(MEAN_Q), jnp.asarray(LOG_VAR_Q)
  mp, lvp = jnp.asarray(MEAN_P), jnp.asarray(LOG_VAR_P)
  closed = float(dist.normal_kl(m, lv, mp, lvp))
  log_ratio = dist.normal_log_prob(z_q, m, lv) - dist.normal_log_prob(z_q, mp, lvp)
  _assert_mc(log_ratio, closed)
  # p standard: equals the dedicated closed form, with broadcasting over a batch.
  rng = np.random.default_rng(1)
  mb = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
  lvb = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
  np.testing.assert_allclose(dist.normal_kl(mb, lvb, jnp.zeros(3), jnp.zeros(3)),
                             dist.normal_kl_standard(mb, lvb), rtol=1e-5, atol=1e-6)
  assert float(dist.normal_kl(mp, lvp, mp, lvp)) == pytest.approx(0.0, abs=1e-6)


def test_entropy_vs_mc(z_q):
  m, lv = jnp.asarray(MEAN_Q), jnp.asarray(LOG_VAR_Q)
  closed = float(dist.normal_entropy(lv))
  np.testing.assert_allclose(closed, stats.norm(MEAN_Q, np.exp(0.5 * LOG_VAR_Q)).entropy().sum(),
                             rtol=1e-5)
  _assert_mc(-dist.normal_log_prob(z_q, m, lv), closed)


def test_log_var_floor_clamp():
  floor = -10.0
  raw = jnp.array([-14.0, -10.5, -9.0, 0.0, 3.0])
  out = dist.log_var_floor(raw, floor, "clamp")
  np.testing.assert_array_equal(out, [-10.0, -10.0, -9.0, 0.0, 3.0])
  g = jax.grad(lambda r: jnp.sum(dist.log_var_floor(r, floor, "clamp")))(raw)
  np.testing.assert_array_equal(g, [0.0, 0.0, 1.0, 1.0, 1.0])


def test_log_var_floor_softplus():
  floor = -10.0
  raw = jnp.array([-40.0, -14.0, -10.0, -9.0, 0.0, 30.0])
  out = dist.log_var_floor(raw, floor, "softplus")
  assert np.all(np.asarray(out) >= floor)
  np.testing.assert_allclose(out[-1], 30.0, atol=1e-5)  # ≈ identity well above the floor
  np.testing.assert_allclose(out[2], floor + math.log(2.0), rtol=1e-6)
  g = jax.grad(lambda r: jnp.sum(dist.log_var_floor(r, floor, "softplus")))(raw)
  assert np.all(np.asarray(g) > 0.0) and np.all(np.asarray(g) <= 1.0)
  np.testing.assert_allclose(g, jax.nn.sigmoid(raw - floor), rtol=1e-5)


def test_log_var_floor_none_and_bad_mode():
  raw = jnp.array([-40.0, 1.0])
  assert dist.log_var_floor(raw, -10.0, "none") is raw
  with pytest.raises(ValueError):
    dist.log_var_floor(raw, -10.0, "relu")  # type: ignore[arg-type]


def test_fraction_at_floor():
  raw = jnp.array([[-12.0, -10.0, -9.9995], [-9.9, 0.0, 5.0]])
  frac = dist.fraction_at_floor(raw, -10.0)
  assert frac.shape == () and frac.dtype == jnp.float32
  assert float(frac) == pytest.approx(3 / 6)
  assert float(dist.fraction_at_floor(raw, -10.0, tol=0.2)) == pytest.approx(4 / 6)
  assert float(dist.fraction_at_floor(raw, -100.0)) == 0.0
