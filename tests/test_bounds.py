"""evaluation.bounds: the K sweep of the importance-weighted bounds, standard errors and gaps."""

import jax
import numpy as np
import pytest

from mimtext import objectives
from mimtext.evaluation import bounds
from mimtext.models import sentence_ae

MODEL = sentence_ae.ModelConfig(vocab_size=13, embed_dim=6, hidden_dim=8, latent_dim=3,
                                embed_dropout=0.0)
OBJECTIVE = objectives.ObjectiveConfig(model=MODEL, name="vae")
TOKENS = np.array([[1, 4, 5, 6, 2, 0, 0], [1, 7, 8, 2, 0, 0, 0], [1, 9, 10, 11, 12, 5, 2]],
                  np.int32)
LENGTHS = np.array([5, 4, 7], np.int32)
BATCH = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(3, np.float32)}


@pytest.fixture(scope="module")
def params():
  return sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)


def test_a_sweep_gives_at_each_k_the_bound_of_its_first_k_draws(params):
  """Draw j has the key fold_in(key, j) whatever K: the sweep's K' entry is the bound computed
  with iw_samples = K' directly."""
  key = jax.random.PRNGKey(3)
  swept = jax.device_get(bounds.sentence_terms(params, BATCH, key, OBJECTIVE, 2, 12, iw_chunk=5,
                                               iw_sweep=(1, 4)))
  for k in (1, 4):
    direct = jax.device_get(bounds.sentence_terms(params, BATCH, key, OBJECTIVE, 2, k,
                                                  iw_chunk=5))
    np.testing.assert_allclose(swept[f"iw_log_px@{k}"], direct["iw_log_px"], rtol=1e-5)
    np.testing.assert_allclose(swept[f"iw_log_px_no_eos@{k}"], direct["iw_log_px_no_eos"],
                               rtol=1e-5)
  truth = -np.asarray(swept["iw_log_px"]) - 1.0  # a stand-in for the exact −log p(x)
  rows = bounds.k_sweep(swept, (1, 4), 12, truth)
  assert [r["K"] for r in rows] == [1, 4, 12]
  assert rows[-1]["iw_nll"] == pytest.approx(-np.mean(swept["iw_log_px"]))
  assert rows[-1]["iw_gap"] == pytest.approx(1.0) and rows[-1]["iw_gap_stderr"] == pytest.approx(0)
  step = -np.asarray(swept["iw_log_px"]) + np.asarray(swept["iw_log_px@4"])
  assert rows[-1]["iw_step"] == pytest.approx(step.mean())
  assert "iw_step" not in rows[0]


def test_the_sweep_tightens_in_expectation(params):
  """The IW bound is non-increasing in K in expectation (Burda et al. 2016): averaged over many
  keys, each step of the sweep is ≤ 0 up to its Monte Carlo error."""
  keys = jax.random.split(jax.random.PRNGKey(7), 24)
  steps = []
  for key in keys:
    t = jax.device_get(bounds.sentence_terms(params, BATCH, key, OBJECTIVE, 1, 16, iw_chunk=8,
                                             iw_sweep=(1, 4)))
    nll = [-np.mean(t["iw_log_px@1"]), -np.mean(t["iw_log_px@4"]), -np.mean(t["iw_log_px"])]
    steps.append(np.diff(nll))
  steps = np.asarray(steps)
  mean, se = steps.mean(0), steps.std(0, ddof=1) / np.sqrt(len(steps))
  assert np.all(mean <= 2 * se), (mean, se)


def test_standard_errors_and_the_gap_to_the_truth():
  terms = {"log_px": -np.array([10.0, 12.0, 14.0]), "log_px_no_eos": -np.array([9.0, 11.0, 13.0]),
           "kl": np.array([1.0, 1.0, 1.0]), "iw_log_px": -np.array([10.5, 12.5, 14.5]),
           "iw_log_px_no_eos": -np.array([9.5, 11.5, 13.5])}
  truth = np.array([10.0, 12.0, 15.0])
  out = bounds.nll_bounds(terms, np.array([3, 4, 5]), true_nll=truth)
  assert out["elbo_nll"] == pytest.approx(13.0)
  assert out["elbo_nll_stderr"] == pytest.approx(np.std([11.0, 13.0, 15.0], ddof=1) / np.sqrt(3))
  assert out["elbo_gap"] == pytest.approx(np.mean([1.0, 1.0, 0.0]))
  assert out["iw_gap"] == pytest.approx(np.mean([0.5, 0.5, -0.5]))
  assert out["melbo_gap"] == pytest.approx(np.mean([0.0, 0.0, -1.0]) + np.log(3))
