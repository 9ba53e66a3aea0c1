"""The flow post-hoc prior (mimtext.evaluation.flow_prior): a normalised density (quadrature in 1
and 2 dimensions), better than a Gaussian mixture on curved codes, usable as the traced prior of
the post-hoc bound, and saved and loaded exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext.evaluation import bounds
from mimtext.evaluation import flow_prior
from mimtext.evaluation import posthoc
from mimtext.evaluation import posthoc_prior

SMALL = dict(layers=2, width=16, max_epochs=40, patience=5)


def _banana(n: int, seed: int = 0) -> np.ndarray:
  """Curved 2-D codes: z1 ~ N(0, 1), z2 = z1² / 2 + N(0, 0.2²), shifted and scaled."""
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=n)
  return np.stack([3.0 + 2.0 * z1, 0.5 * z1**2 + 0.2 * rng.normal(size=n)], axis=1)


@pytest.fixture(scope="module")
def banana_flow():
  train, held = posthoc_prior.holdout_split(_banana(3000), seed=0)
  prior, info = flow_prior.fit(train, seed=0, **SMALL)
  return prior, info, train, held


def test_the_2d_flow_integrates_to_one(banana_flow):
  """∫∫ p̂(z) dz by the midpoint rule on a grid that holds the codes with a wide margin."""
  prior = banana_flow[0]
  z1 = np.linspace(-9.0, 15.0, 481)
  z2 = np.linspace(-6.0, 14.0, 401)
  grid = np.stack(np.meshgrid(z1, z2, indexing="ij"), axis=-1).reshape(-1, 2)
  density = np.exp(np.asarray(flow_prior.log_prob(prior, jnp.asarray(grid, jnp.float32)),
                              np.float64))
  total = density.sum() * (z1[1] - z1[0]) * (z2[1] - z2[0])
  assert abs(total - 1.0) < 0.01, total


@pytest.fixture(scope="module")
def skewed_flow():
  codes = np.random.default_rng(1).gamma(2.0, 1.5, size=(1500, 1))
  return flow_prior.fit(codes, seed=0, **SMALL)[0]


def _density_on(prior, grid):
  return np.exp(np.asarray(flow_prior.log_prob(prior, jnp.asarray(grid[:, None], jnp.float32)),
                           np.float64))


def test_a_1d_flow_integrates_to_one(skewed_flow):
  grid = np.linspace(-20.0, 40.0, 24001)
  assert abs(_density_on(skewed_flow, grid).sum() * (grid[1] - grid[0]) - 1.0) < 0.005


def test_samples_follow_the_density(skewed_flow):
  """The empirical CDF of 20,000 draws against the CDF integrated from the density (1-D)."""
  grid = np.linspace(-20.0, 40.0, 24001)
  cdf = np.cumsum(_density_on(skewed_flow, grid)) * (grid[1] - grid[0])
  draws = np.asarray(posthoc.prior_sampler(skewed_flow)(jax.random.PRNGKey(0), 20_000))[:, 0]
  for q in (0.05, 0.25, 0.5, 0.75, 0.95):
    point = grid[np.searchsorted(cdf, q)]
    assert abs(np.mean(draws <= point) - q) < 0.015, (q, point, np.mean(draws <= point))


def test_the_flow_fits_curved_codes_as_well_as_the_best_mixture(banana_flow):
  """Held-out mean log-likelihood: the flow (2 layers of 16) within 0.1 nats of the best of 1-16
  mixture components, and far above one Gaussian (which cannot bend)."""
  prior, info, train, held = banana_flow
  held_z = jnp.asarray(held, jnp.float32)
  flow_score = float(jnp.mean(flow_prior.log_prob(prior, held_z)))
  mixture = {k: float(jnp.mean(posthoc_prior.log_prob(posthoc_prior.fit_gaussian_mixture(train, k),
                                                      held_z)))
             for k in (1, 4, 16)}
  assert flow_score > max(mixture.values()) - 0.1, (flow_score, mixture)
  assert flow_score > mixture[1] + 0.5, (flow_score, mixture)
  assert info["epochs"] >= 1 and info["seconds"] > 0


def test_save_load_round_trip(tmp_path, banana_flow):
  prior, info, _, held = banana_flow
  flow_prior.save(str(tmp_path), prior, info)
  loaded = flow_prior.load(str(tmp_path))
  z = jnp.asarray(held[:50], jnp.float32)
  np.testing.assert_array_equal(flow_prior.log_prob(loaded, z), flow_prior.log_prob(prior, z))
  assert flow_prior.load(str(tmp_path / "none")) is None
  assert posthoc.prior_fingerprint(loaded) == posthoc.prior_fingerprint(prior)


def test_the_flow_is_a_traced_prior_of_the_bound(banana_flow):
  """Inside the jitted bound the flow's arrays are traced: a refitted flow of the same shape does
  not recompile, and the density equals the eager one."""
  prior = banana_flow[0]
  z = jnp.asarray(_banana(7, seed=3), jnp.float32)
  jitted = jax.jit(flow_prior.log_prob)
  np.testing.assert_allclose(jitted(prior, z), flow_prior.log_prob(prior, z), rtol=1e-5,
                             atol=1e-5)
  assert posthoc.prior_log_prob_fn(prior) is flow_prior.log_prob
  assert bounds.PriorFn is not None
