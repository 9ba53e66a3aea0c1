"""The learned proposal r(z|x) of the post-hoc bound (issue 18), against quadrature.

On a model with a 1-D latent, log p̂(x) = log ∫ p(x|z) p̂(z) dz is computed by quadrature on a grid
for a two-component mixture p̂; the post-hoc bound under the learned proposal must converge to it
(large K), stay above it in expectation (few K), and be at least as tight as the widened proposal
it starts from, at equal K.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

from mimtext import distributions
from mimtext import objectives
from mimtext.evaluation import bounds
from mimtext.evaluation import posthoc_prior
from mimtext.evaluation import proposal
from mimtext.models import sentence_ae

MODEL = sentence_ae.ModelConfig(vocab_size=9, embed_dim=4, hidden_dim=6, latent_dim=1,
                                embed_dropout=0.0)
CFG = objectives.ObjectiveConfig(model=MODEL, name="vae")
GRID = np.linspace(-9, 9, 3601, dtype=np.float32)
PRIOR = posthoc_prior.GaussianMixture(jnp.log(jnp.array([0.3, 0.7])),
                                      jnp.array([[-1.5], [1.0]]), jnp.log(jnp.array([[0.3],
                                                                                     [0.6]])))
WIDENED_STD = np.array([1.5], np.float32)


def _sentences(n, seed):
  """n random sentences `<sos> w.. <eos>` over the words 3..8, 1 to 5 words long."""
  rng = np.random.default_rng(seed)
  return [np.array([1, *rng.integers(3, 9, size=rng.integers(1, 6)), 2], np.int32)
          for _ in range(n)]


def _batch(examples):
  width = max(len(e) for e in examples)
  tokens = np.zeros((len(examples), width), np.int32)
  for i, e in enumerate(examples):
    tokens[i, :len(e)] = e
  return {"tokens": tokens, "lengths": np.array([len(e) for e in examples], np.int32),
          "valid": np.ones(len(examples), np.float32)}


@pytest.fixture(scope="module")
def run():
  params = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  params["z_to_h0"]["w"] = params["z_to_h0"]["w"] * 6.0  # a latent that matters
  return types.SimpleNamespace(params=params, model_cfg=MODEL, obj_cfg=CFG)


@pytest.fixture(scope="module")
def held_out():
  return _batch(_sentences(48, seed=1))


@pytest.fixture(scope="module")
def exact_log_px(run, held_out):
  """log ∫ p(x|z) p̂(z) dz by quadrature over the grid: [b]."""
  b = len(held_out["lengths"])
  log_px_z = jax.vmap(lambda z: sentence_ae.sentence_log_likelihood(
      run.params, jnp.full((b, 1), z), held_out["tokens"], held_out["lengths"], MODEL))(GRID)
  log_prior = np.asarray(posthoc_prior.log_prob(PRIOR, GRID[:, None]), np.float64)
  log_w = log_prior + math.log(GRID[1] - GRID[0])
  return special.logsumexp(np.asarray(log_px_z, np.float64) + log_w[:, None], axis=0)


@pytest.fixture(scope="module")
def learned(run):
  params, info = proposal.train(run, _sentences(600, seed=2), posthoc_prior.log_prob, PRIOR,
                                WIDENED_STD, max_steps=600, eval_every=50, patience=4,
                                learning_rate=3e-3, min_improvement=0.0)
  return params, info



def _terms(run, batch, params, k, seed):
  return jax.device_get(bounds.sentence_terms(
      run.params, batch, jax.random.PRNGKey(seed), CFG, 1, k, iw_chunk=500,
      prior_fn=posthoc_prior.log_prob, prior_params=PRIOR, proposal_std=jnp.asarray(WIDENED_STD),
      proposal_params=params))


def test_the_proposal_starts_at_the_widened_proposal(run, held_out):
  params = proposal.init_params(run.params, MODEL, WIDENED_STD, deterministic_z=False)
  r = proposal.posterior(params, held_out["tokens"], held_out["lengths"], MODEL)
  q = bounds.widened_proposal(sentence_ae.encode(run.params, held_out["tokens"],
                                                 held_out["lengths"], MODEL), WIDENED_STD)
  np.testing.assert_allclose(r.mean, q.mean, rtol=1e-6)
  np.testing.assert_allclose(r.log_var, q.log_var, rtol=1e-6)


def test_training_improves_the_held_out_bound_and_reports_its_cost(learned):
  _, info = learned
  assert info["best_bound"] < info["start_bound"] - 0.05, info
  assert info["seconds"] > 0 and info["num_holdout"] == 60 and info["steps"] >= 50


def test_learned_proposal_converges_to_the_quadrature(run, held_out, exact_log_px, learned):
  """At K = 10,000 both proposals give log p̂(x) per sentence (the posterior of this bimodal
  p̂ can have two modes: a Gaussian r leaves a few heavy-tailed weights, hence the tolerance),
  and on average over the 48 sentences to 0.005 nats."""
  terms = _terms(run, held_out, learned[0], 10_000, seed=0)
  for name in ("posthoc_iw", "posthoc_widened_iw"):
    np.testing.assert_allclose(terms[f"{name}_log_px"], exact_log_px, atol=0.04)
    assert abs(np.mean(terms[f"{name}_log_px"] - exact_log_px)) < 0.005


def test_learned_proposal_is_valid_and_at_least_as_tight_at_equal_k(run, held_out,
                                                                    exact_log_px, learned):
  """Over 10 seeds at K = 2: both bounds lie at or above −log p̂(x) on average (Jensen), and the
  learned proposal's mean gap is no larger than the widened one's."""
  runs = [_terms(run, held_out, learned[0], 2, seed=s) for s in range(10)]
  gap = {name: float(np.mean([exact_log_px - t[f"{name}_log_px"] for t in runs]))
         for name in ("posthoc_iw", "posthoc_widened_iw")}
  assert gap["posthoc_iw"] >= -0.01 and gap["posthoc_widened_iw"] >= -0.01, gap
  assert gap["posthoc_iw"] <= gap["posthoc_widened_iw"] + 0.01, gap


def test_saved_proposal_loads_equal(tmp_path, learned):
  proposal.save(str(tmp_path), learned[0], learned[1])
  loaded, info = proposal.load(str(tmp_path))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(learned[0]))
  assert info == learned[1]
  assert proposal.load(str(tmp_path / "none")) is None


def _low_rank(seed=0, b=3, d=5, k=2):
  rng = np.random.default_rng(seed)
  return proposal.LowRankPosterior(jnp.asarray(rng.normal(size=(b, d)), jnp.float32),
                                   jnp.asarray(rng.uniform(-1.5, 1.0, size=(b, d)), jnp.float32),
                                   jnp.asarray(rng.normal(size=(b, d, k)), jnp.float32))


def _covariance(post, i):
  """Λ⁻¹ of row i in float64, Λ = diag exp(−log σ²) + U Uᵀ, inverted directly."""
  u = np.asarray(post.factor[i], np.float64)
  precision = np.diag(np.exp(-np.asarray(post.log_var[i], np.float64))) + u @ u.T
  return np.linalg.inv(precision)


def test_low_rank_density_matches_scipy():
  post = _low_rank()
  z = np.random.default_rng(1).normal(size=(4, 3, 5)).astype(np.float32)
  got = np.asarray(proposal.low_rank_log_prob(jnp.asarray(z), post))
  for i in range(3):
    want = stats.multivariate_normal(np.asarray(post.mean[i], np.float64),
                                     _covariance(post, i)).logpdf(z[:, i].astype(np.float64))
    np.testing.assert_allclose(got[:, i], want, rtol=1e-4, atol=1e-4)


def test_low_rank_draws_have_the_mean_and_covariance():
  post = _low_rank()
  z = np.asarray(proposal.low_rank_sample(jax.random.PRNGKey(0), post, 200_000), np.float64)
  for i in range(3):
    np.testing.assert_allclose(z[:, i].mean(0), post.mean[i], atol=0.02)
    np.testing.assert_allclose(np.cov(z[:, i].T), _covariance(post, i), atol=0.02)


def test_a_zero_factor_is_the_diagonal_gaussian():
  post = _low_rank()
  post = post._replace(factor=jnp.zeros_like(post.factor))
  z = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3, 5)), jnp.float32)
  np.testing.assert_allclose(proposal.low_rank_log_prob(z, post),
                             distributions.normal_log_prob(z, post.mean, post.log_var),
                             rtol=1e-5, atol=1e-5)


def test_the_learned_proposals_sweep_tightens_in_expectation(run, held_out, learned):
  """Both post-hoc bounds are non-increasing in K in expectation: averaged over 16 keys, each
  step of the sweep K = 1 → 4 → 16 is ≤ 0 up to twice its Monte Carlo error."""
  steps = {"posthoc_iw": [], "posthoc_widened_iw": []}
  for seed in range(16):
    t = jax.device_get(bounds.sentence_terms(
        run.params, held_out, jax.random.PRNGKey(seed), CFG, 1, 16, iw_chunk=16,
        iw_sweep=(1, 4), prior_fn=posthoc_prior.log_prob, prior_params=PRIOR,
        proposal_std=jnp.asarray(WIDENED_STD), proposal_params=learned[0]))
    for name, values in steps.items():
      values.append(np.diff([-np.mean(t[f"{name}_log_px@1"]), -np.mean(t[f"{name}_log_px@4"]),
                             -np.mean(t[f"{name}_log_px"])]))
  for name, values in steps.items():
    values = np.asarray(values)
    mean, se = values.mean(0), values.std(0, ddof=1) / np.sqrt(len(values))
    assert np.all(mean <= 2 * se), (name, mean, se)


def test_the_report_says_whether_the_sweep_converged():
  from mimtext.evaluation import runner  # pylint: disable=g-import-not-at-top
  rows = [{"K": 1, "posthoc_iw_nll": 40.0, "posthoc_iw_nll_stderr": 1.0},
          {"K": 10, "posthoc_iw_nll": 38.0, "posthoc_iw_nll_stderr": 1.0,
           "posthoc_iw_step": -2.0, "posthoc_iw_step_stderr": 0.1}]
  assert runner.convergence_line(rows, "posthoc_iw").endswith(
      "not converged: raise --iw_samples for a tighter bound")
  rows[1].update(posthoc_iw_step=-0.05, posthoc_iw_step_stderr=0.1)
  line = runner.convergence_line(rows, "posthoc_iw")
  assert line == ("posthoc_iw at K = 10: 38.000; it moved -0.050 ± 0.100 from K = 1: converged")
  assert runner.k_sweep_lines(rows)[-1] == line
