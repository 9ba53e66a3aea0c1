"""The post-hoc Gaussian-mixture prior (mimtext.evaluation.posthoc_prior)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext.evaluation import posthoc_prior as pp

# The planted mixture: weights, means [K,d], standard deviations [K,d].
_WEIGHTS = np.array([0.3, 0.7])
_MEANS = np.array([[-3.0, 1.0], [2.0, -1.0]])
_STDS = np.array([[0.5, 1.0], [1.0, 0.3]])


@pytest.fixture(scope="module")
def bimodal() -> np.ndarray:
  rng = np.random.default_rng(0)
  k = (rng.random(1000) >= _WEIGHTS[0]).astype(int)
  return _MEANS[k] + _STDS[k] * rng.normal(size=(1000, 2))


@pytest.fixture(scope="module")
def fitted(bimodal) -> pp.GaussianMixture:
  return pp.fit_gaussian_mixture(bimodal, 2, seed=0)


def _numpy_log_density(z: np.ndarray, weights, means, stds) -> np.ndarray:
  """log Σ_k w_k Π_d N(z_d; μ_kd, s_kd²) in float64: [n,d] → [n]."""
  dens = np.zeros(len(z))
  for w, m, s in zip(weights, means, stds):
    dens += w * np.prod(np.exp(-0.5 * ((z - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)), axis=1)
  return np.log(dens)


def test_fit_recovers_the_planted_mixture(fitted):
  order = np.argsort(np.asarray(fitted.means[:, 0]))  # components up to permutation
  np.testing.assert_allclose(np.exp(np.asarray(fitted.log_weights))[order], _WEIGHTS, atol=0.04)
  np.testing.assert_allclose(np.asarray(fitted.means)[order], _MEANS, atol=0.15)
  np.testing.assert_allclose(np.exp(0.5 * np.asarray(fitted.log_vars))[order], _STDS, rtol=0.12)
  assert float(jax.nn.logsumexp(fitted.log_weights)) == pytest.approx(0.0, abs=1e-6)


def test_fit_is_deterministic_and_checks_k(bimodal, fitted):
  again = pp.fit_gaussian_mixture(bimodal, 2, seed=0)
  for a, b in zip(fitted, again):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="num_components"):
    pp.fit_gaussian_mixture(bimodal[:3], 4)


def test_log_prob_matches_numpy_and_integrates_to_one(fitted):
  weights = np.exp(np.asarray(fitted.log_weights, np.float64))
  means = np.asarray(fitted.means, np.float64)
  stds = np.exp(0.5 * np.asarray(fitted.log_vars, np.float64))
  # A grid covering all the mass ([−8, 8]²): log p̂ against numpy, and ∫ p̂ = 1 by a Riemann sum.
  axis = np.linspace(-8.0, 8.0, 161)
  grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
  log_p = np.asarray(jax.jit(pp.log_prob)(fitted, jnp.asarray(grid, jnp.float32)), np.float64)
  np.testing.assert_allclose(log_p, _numpy_log_density(grid, weights, means, stds), rtol=1e-5,
                             atol=1e-4)
  assert np.exp(log_p).sum() * (axis[1] - axis[0]) ** 2 == pytest.approx(1.0, abs=0.01)


def test_log_prob_is_differentiable_inside_jit():
  gmm = pp.GaussianMixture(jnp.zeros(1), jnp.array([[1.0, -2.0]]), jnp.log(jnp.array([[4.0, 0.5]])))
  grad = jax.jit(jax.grad(lambda z: pp.log_prob(gmm, z)))(jnp.array([0.0, 0.0]))
  np.testing.assert_allclose(np.asarray(grad), [(1.0 - 0.0) / 4.0, (-2.0 - 0.0) / 0.5], rtol=1e-6)


def test_sample_moments_match_the_mixture(fitted):
  z = np.asarray(pp.sample(fitted, jax.random.key(0), 20000), np.float64)
  assert z.shape == (20000, 2)
  weights = np.exp(np.asarray(fitted.log_weights, np.float64))
  means = np.asarray(fitted.means, np.float64)
  var = np.exp(np.asarray(fitted.log_vars, np.float64))
  mean = weights @ means
  second = weights @ (var + means ** 2)
  # Standard errors at n = 20000: ≈ 0.017 for the mean, ≈ 0.01 for the std: tolerance ~4 SE.
  np.testing.assert_allclose(z.mean(axis=0), mean, atol=0.07)
  np.testing.assert_allclose(z.std(axis=0), np.sqrt(second - mean ** 2), atol=0.05)


def test_json_round_trip(fitted):
  restored = pp.from_json(json.loads(json.dumps(pp.to_json(fitted))))
  for a, b in zip(fitted, restored):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="inconsistent"):
    pp.from_json({"log_weights": [0.0, 0.0], "means": [[0.0]], "log_vars": [[0.0]]})


def test_select_prefers_two_components_on_bimodal_data(bimodal):
  best, scores = pp.select_num_components(bimodal, [1, 2], seed=0)
  assert best == 2
  assert scores[2] > scores[1] + 0.5  # nats per held-out code


def test_variance_floor_on_a_collapsed_dimension(bimodal):
  codes = bimodal.copy()
  codes[:, 1] = 0.25  # a collapsed dimension: its variance is 0, floored at min_var
  gmm = pp.fit_gaussian_mixture(codes, 1, min_var=1e-4)
  np.testing.assert_allclose(np.asarray(gmm.means)[0], codes.mean(axis=0), atol=1e-5)
  assert float(gmm.log_vars[0, 1]) == pytest.approx(math.log(1e-4), abs=1e-4)
  assert float(gmm.log_vars[0, 0]) == pytest.approx(math.log(codes[:, 0].var()), abs=1e-4)
