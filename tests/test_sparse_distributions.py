"""Tests for mimtext.sparse_distributions: Beta, binary concrete, spike-and-slab, MMD, Hoyer.

Closed forms are checked against scipy (quadrature, logpdf) and Monte Carlo with 5-standard-error
tolerances. Sampling-heavy results are computed once per module by a few jitted functions.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from mimtext import sparse_distributions as sd

N_MC = 100_000
# Beta configurations (a, b), one per column; a = 0.02 and 0.05 exercise float32 underflow.
BETA_A = np.array([2.0, 0.5, 0.05, 5.0, 0.02], np.float32)
BETA_B = np.array([3.0, 0.5, 0.5, 0.3, 0.5], np.float32)


def _assert_mc(values, expected, n_se=5.0, axis=0):
  values = np.asarray(values, np.float64)
  mean = values.mean(axis)
  se = values.std(axis, ddof=1) / math.sqrt(values.shape[axis])
  assert np.all(np.abs(mean - expected) < n_se * se + 1e-6), (mean, expected, se)


# --------------------------------------------------------------------------------------- Beta


@jax.jit
def _beta_draws(a, b):
  """Samples and per-sample pathwise derivatives d log x / da, d log x / db, [N_MC, c] each."""
  shape = (N_MC,) + a.shape
  ones, zeros = jnp.ones(shape), jnp.zeros(shape)
  fn = lambda aa, bb: sd.beta_log_sample(jax.random.key(0), aa, bb)
  (log_x, log1m_x), lin = jax.linearize(fn, jnp.broadcast_to(a, shape), jnp.broadcast_to(b, shape))
  # Each sample depends only on its own (a, b) entry, so a JVP with all-ones tangents gives the
  # per-sample derivatives.
  dlogx_da, _ = lin(ones, zeros)
  dlogx_db, _ = lin(zeros, ones)
  # beta_sample(key, ...) = clip(exp(log x)) (checked in test_beta_sample_shapes_and_naive_path).
  x = jnp.clip(jnp.exp(log_x), jnp.finfo(jnp.float32).tiny, 1.0 - 2.0**-24)
  return dict(x=x, log_x=log_x, log1m_x=log1m_x, dlogx_da=dlogx_da, dlogx_db=dlogx_db)


@pytest.fixture(scope="module")
def beta_draws():
  out = _beta_draws(jnp.asarray(BETA_A), jnp.asarray(BETA_B))
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def test_concentration_floor():
  raw = jnp.array([-50.0, -3.0, 0.0, 4.0, 40.0])
  out = sd.concentration_floor(raw, 1e-3)
  assert np.all(np.asarray(out) > 1e-3 * (1 - 1e-6))
  np.testing.assert_allclose(out[2], 1e-3 + math.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(out[-1], 40.0 + 1e-3, rtol=1e-6)
  g = jax.grad(lambda r: jnp.sum(sd.concentration_floor(r, 1e-3)))(raw)
  np.testing.assert_allclose(g, jax.nn.sigmoid(raw), rtol=1e-5)


def test_beta_samples_in_open_interval_and_moments(beta_draws):
  x, log_x, log1m_x = beta_draws["x"], beta_draws["log_x"], beta_draws["log1m_x"]
  assert x.shape == (N_MC, BETA_A.size)
  assert np.all(x > 0.0) and np.all(x < 1.0)
  assert np.all(np.isfinite(log_x)) and np.all(np.isfinite(log1m_x))
  assert np.all(log_x <= 0.0) and np.all(log1m_x <= 0.0)
  # Small a: many x underflow float32, yet log x stays finite (DESIGN §7).
  assert np.mean(log_x[:, -1] < math.log(np.finfo(np.float32).tiny)) > 0.05
  # exp(log x) + exp(log(1 − x)) = 1.
  np.testing.assert_allclose(np.exp(log_x) + np.exp(log1m_x), 1.0, atol=1e-6)
  a, b = BETA_A.astype(np.float64), BETA_B.astype(np.float64)
  _assert_mc(x, a / (a + b))
  var = a * b / ((a + b) ** 2 * (a + b + 1))
  _assert_mc((x - a / (a + b)) ** 2, var)
  # log-space moments: E[log x] = ψ(a) − ψ(a + b).
  _assert_mc(log_x, special.digamma(a) - special.digamma(a + b))


@jax.jit
def _beta_small(a, b):
  key = jax.random.key(3)
  return (sd.beta_sample(key, a, b), sd.beta_log_sample(key, a, b),
          sd.beta_sample(key, a, b, log_space=False))


def test_beta_sample_shapes_and_naive_path():
  shapes = jax.eval_shape(lambda k: sd.beta_sample(k, jnp.ones((4, 1)), jnp.full((3,), 2.0),
                                                   sample_shape=(2,)), jax.random.key(0))
  assert shapes.shape == (2, 4, 3) and shapes.dtype == jnp.float32
  shapes = jax.eval_shape(lambda k: sd.beta_log_sample(k, 0.5, 0.5, sample_shape=(5,)),
                          jax.random.key(0))
  assert [s.shape for s in shapes] == [(5,), (5,)]
  # Column 0: a = b = 3; column 1: a = b = 0.005. The naive ratio G_a / (G_a + G_b) underflows to
  # 0/0 for tiny concentrations; log space does not.
  a = jnp.asarray(np.tile([3.0, 0.005], (4000, 1)), jnp.float32)
  x, log_x, log1m_x, naive = (np.asarray(v) for v in jax.tree.leaves(_beta_small(a, a)))
  # Same key, same draws: beta_sample is the clipped exp of beta_log_sample's log x.
  np.testing.assert_allclose(x, np.clip(np.exp(log_x), np.finfo(np.float32).tiny, 1 - 2**-24),
                             rtol=1e-6)
  assert np.all((naive[:, 0] > 0) & (naive[:, 0] < 1))
  assert abs(naive[:, 0].mean() - 0.5) < 0.02
  assert np.isnan(naive[:, 1]).any()
  assert np.all((x > 0) & (x < 1)) and np.all(np.isfinite(log_x)) and np.all(np.isfinite(log1m_x))


def test_beta_pathwise_gradient_of_mean(beta_draws):
  x, da, db = beta_draws["x"], beta_draws["dlogx_da"], beta_draws["dlogx_db"]
  assert np.all(np.isfinite(da)) and np.all(np.isfinite(db))
  a, b = BETA_A.astype(np.float64), BETA_B.astype(np.float64)
  # d/da E[x] = b / (a + b)², d/db E[x] = −a / (a + b)², pathwise dx/da = x · d log x / da.
  _assert_mc(x * da, b / (a + b) ** 2)
  _assert_mc(x * db, -a / (a + b) ** 2)


def test_beta_pathwise_gradient_log_space(beta_draws):
  # d/da E[log x] = ψ'(a) − ψ'(a + b). At a = 0.02 most log G_a lie below −87 (exp underflows):
  # jax's own loggamma rule is biased there by ~20%, the series branch is not.
  da, db = beta_draws["dlogx_da"], beta_draws["dlogx_db"]
  a, b = BETA_A.astype(np.float64), BETA_B.astype(np.float64)
  _assert_mc(da, special.polygamma(1, a) - special.polygamma(1, a + b))
  _assert_mc(db, -special.polygamma(1, a + b))


def test_beta_log_prob_vs_scipy():
  rng = np.random.default_rng(0)
  x = rng.uniform(1e-3, 1 - 1e-3, size=(6, 5)).astype(np.float32)
  a = np.float32([0.05, 0.5, 1.0, 2.5, 30.0])
  b = np.float32([0.3, 0.5, 4.0, 1.0, 10.0])
  ref = stats.beta.logpdf(x.astype(np.float64), a, b)
  out = sd.beta_log_prob(jnp.asarray(x), jnp.asarray(a), jnp.asarray(b))
  assert out.shape == (6, 5)
  np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-4)
  out_log = sd.beta_log_prob_log_space(jnp.log(x), jnp.log1p(-x), jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_allclose(out_log, ref, rtol=2e-5, atol=2e-4)
  np.testing.assert_allclose(sd.sum_last(out), ref.sum(-1), rtol=2e-5, atol=1e-3)


def _beta_kl_quad(a1, b1, a2, b2):
  """KL by quadrature over t = logit x (smooth even for concentrations < 1)."""
  def integrand(t):
    log_x, log1m_x = -np.logaddexp(0.0, -t), -np.logaddexp(0.0, t)
    lq = (a1 - 1) * log_x + (b1 - 1) * log1m_x - special.betaln(a1, b1)
    lp = (a2 - 1) * log_x + (b2 - 1) * log1m_x - special.betaln(a2, b2)
    return np.exp(lq + log_x + log1m_x) * (lq - lp)
  return integrate.quad(integrand, -np.inf, np.inf, limit=400)[0]


def test_beta_kl_vs_quadrature_and_mc(beta_draws):
  a2, b2 = 1.5, 0.7
  a1 = BETA_A.astype(np.float64)
  b1 = BETA_B.astype(np.float64)
  closed = np.asarray(sd.beta_kl(jnp.asarray(BETA_A), jnp.asarray(BETA_B), a2, b2), np.float64)
  assert closed.shape == (BETA_A.size,) and np.all(closed >= 0)
  quad = np.array([_beta_kl_quad(p, q, a2, b2) for p, q in zip(a1, b1)])
  np.testing.assert_allclose(closed, quad, rtol=1e-4, atol=1e-4)
  log_ratio = (sd.beta_log_prob_log_space(beta_draws["log_x"], beta_draws["log1m_x"], a1, b1)
               - sd.beta_log_prob_log_space(beta_draws["log_x"], beta_draws["log1m_x"], a2, b2))
  _assert_mc(np.asarray(log_ratio), closed)
  np.testing.assert_allclose(sd.beta_kl(BETA_A, BETA_B, BETA_A, BETA_B), 0.0, atol=1e-5)
  lm, l1m = sd.beta_log_mean(jnp.float32(2.0), jnp.float32(6.0))
  np.testing.assert_allclose([np.exp(lm), np.exp(l1m)], [0.25, 0.75], rtol=1e-6)


# ---------------------------------------------------------------------------- binary concrete

LOGITS = np.array([-2.0, -0.3, 0.0, 1.0, 3.0], np.float32)


@functools.partial(jax.jit, static_argnames=("hard",))
def _concrete(logits, temperature, hard=False):
  return sd.binary_concrete_sample(jax.random.key(7), logits, temperature, hard=hard,
                                   sample_shape=(N_MC,))


def test_binary_concrete_low_temperature_is_bernoulli():
  p = 1.0 / (1.0 + np.exp(-LOGITS.astype(np.float64)))
  tau = 0.01
  y = np.asarray(_concrete(jnp.asarray(LOGITS), tau), np.float64)
  assert y.shape == (N_MC, LOGITS.size)
  assert np.all((y >= 0) & (y <= 1))
  # y ∈ [0.01, 0.99] iff |logits + L| ≤ τ logit(0.99), L ~ Logistic(0, 1): a ~1 % sliver.
  edge = tau * special.logit(0.99)
  mid = stats.logistic.cdf(edge - LOGITS) - stats.logistic.cdf(-edge - LOGITS)
  assert np.all(mid < 0.025)
  _assert_mc((y >= 0.01) & (y <= 0.99), mid)
  _assert_mc(y, p)
  # Hard straight-through samples are exact Bernoulli(σ(logits)) draws at any temperature.
  h = np.asarray(_concrete(jnp.asarray(LOGITS), 1.0, hard=True), np.float64)
  assert set(np.unique(h)) <= {0.0, 1.0}
  _assert_mc(h, p)
  # ... with the relaxed sample's gradient.
  g = jax.grad(lambda lg: jnp.sum(sd.binary_concrete_sample(
      jax.random.key(1), lg, 0.5, hard=True)))(jnp.asarray(LOGITS))
  assert np.all(np.asarray(g) > 0)


def test_binary_concrete_high_temperature_is_not_bernoulli():
  y = np.asarray(_concrete(jnp.asarray(LOGITS), 1.0), np.float64)
  assert np.mean((y < 0.01) | (y > 0.99)) < 0.2


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_binary_concrete_log_prob(temperature):
  # Integrates to 1 on a fine grid in t = logit y (dy = y (1 − y) dt).
  t = np.linspace(-80.0, 80.0, 160_001)
  tt = jnp.asarray(t, jnp.float32)[:, None]
  lp = sd.binary_concrete_log_prob_log_space(-jax.nn.softplus(-tt), -jax.nn.softplus(tt),
                                             jnp.asarray(LOGITS), temperature)
  lp = np.asarray(lp, np.float64)
  log_jac = -np.logaddexp(0.0, -t) - np.logaddexp(0.0, t)
  mass = integrate.trapezoid(np.exp(lp + log_jac[:, None]), t, axis=0)
  np.testing.assert_allclose(mass, 1.0, atol=2e-3)
  # Change of variables from X = τ logit y ~ Logistic(logits, 1).
  yy = np.linspace(0.02, 0.98, 49)[:, None]
  ref = (stats.logistic.logpdf(temperature * special.logit(yy), loc=LOGITS.astype(np.float64))
         + math.log(temperature) - np.log(yy * (1 - yy)))
  out = sd.binary_concrete_log_prob(jnp.asarray(yy, jnp.float32), jnp.asarray(LOGITS), temperature)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ spike-and-slab

GAMMA = np.array([0.1, 0.5, 0.9, 0.99], np.float64)  # spike probabilities
SLAB_MEAN = np.array([3.0, -2.5, 1.0, 0.5], np.float64)
SLAB_LOG_VAR = np.array([-1.0, 0.0, 0.5, -2.0], np.float64)


def _gamma_logs(gamma):
  return jnp.asarray(np.log(gamma), jnp.float32), jnp.asarray(np.log1p(-gamma), jnp.float32)


@functools.partial(jax.jit, static_argnames=("hard",))
def _spike_slab(log_g, log1m_g, mean, log_var, temperature, hard):
  z, pi = sd.spike_slab_sample(jax.random.key(11), log_g, log1m_g, mean, log_var,
                               temperature=temperature, hard=hard, sample_shape=(N_MC,))
  kl_mc = sd.spike_slab_kl_mc(z[..., None], log_g[:, None], log1m_g[:, None], mean[:, None],
                              log_var[:, None])  # per-dimension estimator, [N_MC, d]
  return z, pi, kl_mc


@pytest.fixture(scope="module")
def spike_slab_hard():
  lg, l1mg = _gamma_logs(GAMMA)
  out = _spike_slab(lg, l1mg, jnp.asarray(SLAB_MEAN, jnp.float32),
                    jnp.asarray(SLAB_LOG_VAR, jnp.float32), 0.5, True)
  return [np.asarray(o, np.float64) for o in out]


def test_spike_slab_sampling_follows_gamma(spike_slab_hard):
  z, pi, _ = spike_slab_hard
  assert z.shape == pi.shape == (N_MC, GAMMA.size)
  _assert_mc(pi, GAMMA)
  # γ → 1 means the spike at 0: the fraction of near-zero coordinates is γ (+ the slab's tiny mass
  # near 0, ≤ 0.1 % for these slabs).
  near_zero = (np.abs(z) < 0.2).astype(np.float64)
  slab = stats.norm(SLAB_MEAN, np.exp(0.5 * SLAB_LOG_VAR))
  slab_mass = slab.cdf(0.2) - slab.cdf(-0.2)
  spike_mass = stats.norm(0, sd.SPIKE_SCALE).cdf(0.2) * 2 - 1
  _assert_mc(near_zero, GAMMA * spike_mass + (1 - GAMMA) * slab_mass)
  # The slab coordinates are N(μ, σ²).
  on = pi == 0
  for j in range(GAMMA.size):
    zj = z[on[:, j], j]
    _assert_mc(zj, SLAB_MEAN[j])


def test_spike_slab_relaxed_sample_and_gradients():
  lg, l1mg = _gamma_logs(GAMMA)
  mean = jnp.asarray(SLAB_MEAN, jnp.float32)
  log_var = jnp.asarray(SLAB_LOG_VAR, jnp.float32)
  z, pi, _ = _spike_slab(lg, l1mg, mean, log_var, 0.05, False)
  assert np.all((np.asarray(pi) >= 0) & (np.asarray(pi) <= 1))
  near_zero = np.mean(np.abs(np.asarray(z)) < 0.2, axis=0)
  np.testing.assert_allclose(near_zero, GAMMA, atol=0.03)
  grads = _spike_slab_grads(lg, mean, log_var)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)


@jax.jit
def _spike_slab_grads(log_g, mean, log_var):
  def f(lg_, mean_, log_var_):
    # γ through its logs, as beta_log_sample produces them: log(1 − γ) = log1p(−exp(log γ)).
    z, _ = sd.spike_slab_sample(jax.random.key(2), lg_, jnp.log1p(-jnp.exp(lg_)), mean_, log_var_,
                                temperature=0.5, sample_shape=(64,))
    return jnp.sum(z ** 2)
  return jax.grad(f, argnums=(0, 1, 2))(log_g, mean, log_var)


def _mixture_logpdf(z, gamma, mean, log_var, s):
  return np.logaddexp(np.log(gamma) + stats.norm.logpdf(z, 0, s),
                      np.log1p(-gamma) + stats.norm.logpdf(z, mean, np.exp(0.5 * log_var)))


def test_spike_slab_log_prob_vs_scipy():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(7, GAMMA.size)) * np.array([1.0, 0.05, 2.0, 0.01])
  lg, l1mg = _gamma_logs(GAMMA)
  mean, log_var = jnp.asarray(SLAB_MEAN, jnp.float32), jnp.asarray(SLAB_LOG_VAR, jnp.float32)
  out = sd.spike_slab_log_prob(jnp.asarray(z, jnp.float32), lg, l1mg, mean, log_var)
  ref = _mixture_logpdf(z, GAMMA, SLAB_MEAN, SLAB_LOG_VAR, sd.SPIKE_SCALE).sum(-1)
  assert out.shape == (7,)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
  prior = sd.spike_slab_log_prob(jnp.asarray(z, jnp.float32), lg, l1mg, 0.0, 0.0, spike_scale=0.01)
  np.testing.assert_allclose(prior, _mixture_logpdf(z, GAMMA, 0.0, 0.0, 0.01).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(sd.spike_slab_mean(l1mg, mean), (1 - GAMMA) * SLAB_MEAN, rtol=1e-5)


def _spike_slab_kl_quad(gamma, mean, log_var, s):
  """Exact KL(q(z|γ) ‖ p(z|γ)) for one dimension by quadrature."""
  def integrand(z):
    lq = _mixture_logpdf(z, gamma, mean, log_var, s)
    return np.exp(lq) * (lq - _mixture_logpdf(z, gamma, 0.0, 0.0, s))
  pts = sorted({-10 * s, 0.0, 10 * s, mean})
  return integrate.quad(integrand, -30.0, 30.0, points=pts, limit=500)[0]


def test_spike_slab_kl_mc_unbiased_and_bound(spike_slab_hard):
  _, _, kl_mc = spike_slab_hard
  exact = np.array([_spike_slab_kl_quad(*p, sd.SPIKE_SCALE)
                    for p in zip(GAMMA, SLAB_MEAN, SLAB_LOG_VAR)])
  # Unbiased single-sample estimator of the exact KL (hard, i.e. exact, sampling of q).
  _assert_mc(kl_mc, exact)
  _, l1mg = _gamma_logs(GAMMA)
  bound = np.asarray(sd.spike_slab_kl_bound(l1mg[:, None], jnp.asarray(SLAB_MEAN)[:, None],
                                            jnp.asarray(SLAB_LOG_VAR)[:, None]), np.float64)
  assert np.all(bound >= exact - 1e-5), (bound, exact)
  slab_kl = 0.5 * (SLAB_MEAN**2 + np.exp(SLAB_LOG_VAR) - 1 - SLAB_LOG_VAR)
  np.testing.assert_allclose(bound, (1 - GAMMA) * slab_kl, rtol=1e-5)
  # Tight in the paper's limit σ_spike → 0.
  exact_narrow = np.array([_spike_slab_kl_quad(*p, 1e-4)
                           for p in zip(GAMMA, SLAB_MEAN, SLAB_LOG_VAR)])
  np.testing.assert_allclose(bound, exact_narrow, rtol=2e-3, atol=1e-4)
  # Zero when q's slab is the prior's.
  assert float(sd.spike_slab_kl_bound(l1mg, jnp.zeros(4), jnp.zeros(4))) == 0.0
  z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  np.testing.assert_allclose(
      sd.spike_slab_kl_mc(z, *_gamma_logs(GAMMA), jnp.zeros(4), jnp.zeros(4)), 0.0, atol=1e-6)


# ----------------------------------------------------------------------------------------- MMD


def _mmd_loop(x, y, kernel, c):
  k = (lambda u, v: c / (c + np.sum((u - v) ** 2))) if kernel == "imq" else (
      lambda u, v: np.exp(-np.sum((u - v) ** 2) / c))
  n, m = len(x), len(y)
  kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
  return kxx + kyy - 2 * kxy


_mmd = jax.jit(sd.mmd, static_argnames=("kernel", "scale"))


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_vs_loop(kernel):
  # Per coordinate (MAT-VAE): the sum over dimensions j of one-dimensional MMD²s with C = 2 · scale.
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3)) + 0.5
  out = _mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), kernel=kernel, scale=0.7)
  ref = sum(_mmd_loop(x[:, j:j + 1], y[:, j:j + 1], kernel, 2 * 0.7) for j in range(3))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)
  multi = _mmd(jnp.asarray(x), jnp.asarray(y), kernel=kernel, scale=(0.5, 2.0))
  ref = sum(_mmd_loop(x[:, j:j + 1], y[:, j:j + 1], kernel, 2 * s)
            for s in (0.5, 2.0) for j in range(3))
  np.testing.assert_allclose(multi, ref, rtol=1e-4, atol=1e-6)


@jax.jit
def _mmd_replicates(shift):
  keys = jax.random.split(jax.random.key(9), 200)

  def one(key):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (64, 4))
    y = jax.random.normal(ky, (48, 4)) + shift
    return sd.mmd(x, y, kernel="imq"), sd.mmd(x, y, kernel="rbf", scale=(0.5, 1.0, 2.0))

  return jax.vmap(one)(keys)


def test_mmd_unbiased_and_grows_with_shift():
  same = [np.asarray(v, np.float64) for v in _mmd_replicates(jnp.float32(0.0))]
  for v, num_scales in zip(same, (1, 3)):
    # Unbiased: mean over replicates ≈ 0, some < 0. A biased V-statistic would sit about
    # scales · d · (1/n + 1/m) above 0 (k(u, u) = 1 on each of the d = 4 coordinates).
    _assert_mc(v, 0.0, n_se=4.0)
    v_bias = num_scales * 4 * (1 / 64 + 1 / 48)
    assert np.any(v < 0) and abs(v.mean()) < 0.1 * v_bias
  small = [np.asarray(v, np.float64).mean() for v in _mmd_replicates(jnp.float32(0.5))]
  large = [np.asarray(v, np.float64).mean() for v in _mmd_replicates(jnp.float32(1.5))]
  for s, a, b in zip(same, small, large):
    assert s.mean() + 10 * s.std() / math.sqrt(s.size) < a < b
  with pytest.raises(ValueError):
    sd.mmd(jnp.zeros((3, 2)), jnp.ones((3, 2)), kernel="laplace")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- Hoyer


def test_hoyer_sparsity():
  d = 8
  one_hot = jnp.eye(d)
  np.testing.assert_allclose(sd.hoyer_sparsity(one_hot), 1.0, rtol=1e-6)
  np.testing.assert_allclose(sd.hoyer_sparsity(-3.0 * one_hot), 1.0, rtol=1e-6)
  const = jnp.array([[1.0] * d, [-2.0, 2.0] * (d // 2)])
  np.testing.assert_allclose(sd.hoyer_sparsity(const), 0.0, atol=1e-6)
  assert float(sd.hoyer_sparsity(jnp.zeros(d))) == 0.0
  z = jnp.array([3.0, 0.0, 4.0, 0.0])  # ‖z‖₁ / ‖z‖₂ = 7/5
  np.testing.assert_allclose(sd.hoyer_sparsity(z), (2.0 - 1.4) / (2.0 - 1.0), rtol=1e-6)
  with pytest.raises(ValueError):
    sd.hoyer_sparsity(jnp.ones((4, 1)))


def test_average_hoyer_normalises_per_dimension():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(500, 6)) * (rng.uniform(size=(500, 6)) < 0.3)
  z = jnp.asarray(z, jnp.float32)
  ah = float(sd.average_hoyer(z))
  assert 0.0 < ah < 1.0
  z_np = np.asarray(z, np.float64)
  ref = np.mean([(math.sqrt(6) - np.abs(v).sum() / np.linalg.norm(v)) / (math.sqrt(6) - 1)
                 if np.any(v) else 0.0 for v in z_np / z_np.std(0)])
  np.testing.assert_allclose(ah, ref, rtol=1e-5)
  # Rescaling a dimension (e.g. a collapsed, near-constant one) changes raw Hoyer, not AH.
  scale = jnp.array([1e-3, 1.0, 1.0, 1.0, 50.0, 1.0])
  np.testing.assert_allclose(sd.average_hoyer(z * scale), ah, rtol=1e-5)
  assert abs(float(sd.average_hoyer(z * scale, normalise=False)) - ah) > 0.01
  # A dimension that is identically zero is left as is (no 0/0).
  z0 = z.at[:, 2].set(0.0)
  assert np.isfinite(float(sd.average_hoyer(z0)))
