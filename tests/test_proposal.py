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
                                learning_rate=3e-3)
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
