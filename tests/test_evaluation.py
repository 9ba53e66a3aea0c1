"""Evaluation bounds against exact answers: quadrature over a 1-D latent, hand arithmetic, BLEU."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mimtext import objectives
from mimtext.evaluation import bounds
from mimtext.evaluation import encoding
from mimtext.evaluation import reconstruction
from mimtext.models import sentence_ae

MODEL = sentence_ae.ModelConfig(vocab_size=9, embed_dim=4, hidden_dim=6, latent_dim=1,
                                embed_dropout=0.0)
TOKENS = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0]], np.int32)
LENGTHS = np.array([5, 3], np.int32)
BATCH = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(2, np.float32)}


@pytest.fixture(scope="module")
def params():
  p = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  # A latent that matters: scale up the decoder's use of z.
  p["z_to_h0"]["w"] = p["z_to_h0"]["w"] * 6.0
  return p


def _exact_log_px(params):
  """log p(x) = log ∫ p(x|z) N(z; 0, 1) dz by quadrature on a fine grid (d = 1)."""
  grid = np.linspace(-8, 8, 4001, dtype=np.float32)
  log_px_z = jax.vmap(lambda z: sentence_ae.sentence_log_likelihood(
      params, jnp.full((2, 1), z), TOKENS, LENGTHS, MODEL))(grid)          # [g, b]
  log_w = stats.norm.logpdf(grid) + math.log(grid[1] - grid[0])
  return jax.nn.logsumexp(np.asarray(log_px_z, np.float64) + log_w[:, None], axis=0)


def test_elbo_and_importance_weighted_bounds_against_quadrature(params):
  exact = np.asarray(_exact_log_px(params))
  cfg = objectives.ObjectiveConfig(model=MODEL, name="vae")
  terms = bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(1), cfg, 2000)
  elbo = np.asarray(terms["log_px"] - terms["kl"])
  iw = np.asarray(terms["iw_log_px"])
  assert np.all(elbo < exact - 1e-3), (elbo, exact)          # a strict gap for this posterior
  np.testing.assert_allclose(iw, exact, atol=0.02)            # k = 2000: tight
  # With k = 2 the estimate is a bound in expectation: between the ELBO and log p(x).
  few = np.mean([bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(i), cfg, 2)["iw_log_px"]
                 for i in range(40)], axis=0)
  assert np.all(few <= exact + 0.05) and np.all(few > elbo), (few, elbo, exact)


def test_no_eos_terms_drop_exactly_the_eos_step(params):
  cfg = objectives.ObjectiveConfig(model=MODEL, name="vae")
  terms = bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(1), cfg, 3)
  assert np.all(np.asarray(terms["log_px_no_eos"]) > np.asarray(terms["log_px"]))


def test_nll_bounds_arithmetic():
  terms = {"log_px": np.array([-10.0, -20.0]), "log_px_no_eos": np.array([-9.0, -18.0]),
           "iw_log_px": np.array([-11.0, -21.0]), "iw_log_px_no_eos": np.array([-10.0, -19.0]),
           "kl": np.array([2.0, 4.0])}
  words = np.array([3, 5])
  out = bounds.nll_bounds(terms, words)
  assert out["N"] == 2 and out["num_tokens"] == 10 and out["num_tokens_no_eos"] == 8
  assert out["elbo_nll"] == pytest.approx(18.0)                  # mean of 12 and 24
  assert out["elbo_ppl"] == pytest.approx(math.exp(36.0 / 10))
  assert out["elbo_nll_no_eos"] == pytest.approx(16.5)           # mean of 11 and 22
  assert out["elbo_ppl_no_eos"] == pytest.approx(math.exp(33.0 / 8))
  assert out["iw_nll"] == pytest.approx(16.0)
  assert out["melbo_nll"] == pytest.approx(15.0 + math.log(2))   # rec 15 + log N
  assert out["melbo_ppl"] == pytest.approx(math.exp(2 * (15.0 + math.log(2)) / 10))
  with pytest.raises(ValueError, match="empty"):
    bounds.nll_bounds({k: v[:0] for k, v in terms.items()}, words[:0])


@pytest.mark.parametrize("name,kw", [("hsvae", dict(posterior="hsvae")), ("matvae", {})])
def test_sparse_model_bounds_are_finite_and_ordered(name, kw, params):
  model = dataclasses.replace(MODEL, latent_dim=3, **kw)
  p = sentence_ae.init_params(jax.random.PRNGKey(2), model)
  cfg = objectives.ObjectiveConfig(model=model, name=name, prior_alpha=2.0, prior_beta=2.0)
  terms = jax.device_get(bounds.sentence_terms(p, BATCH, jax.random.PRNGKey(3), cfg, 64))
  for v in terms.values():
    assert np.all(np.isfinite(v))
  # log-mean-exp ≥ mean of the same log weights: the IW estimate is above the MC ELBO.
  assert np.all(terms["iw_log_px"] >= terms["log_px"] - terms["kl"] - 0.5)


def test_bleu1_is_unigram_precision_with_brevity_penalty():
  score, signature = reconstruction.bleu1(["a b c d"], ["a b x d"])
  assert score == pytest.approx(0.75) and "tok:none" in signature
  short, _ = reconstruction.bleu1(["a b"], ["a b c d"])
  assert short == pytest.approx(math.exp(1 - 4 / 2))
  with pytest.raises(ValueError):
    reconstruction.bleu1(["a"], [])


@pytest.mark.parametrize("posterior", ["gaussian", "hsvae"])
def test_encode_sentences_is_each_sentence_alone_in_input_order(posterior):
  """The one inference path (`encoding.encode_sentences`): every field of q(z|x) of each sentence,
  batched by length in batches of 3 (the last one with filler rows), equals the sentence encoded
  alone and unpadded, and comes back at its input position; no sentence gives [0,d] fields."""
  model = dataclasses.replace(MODEL, latent_dim=3, posterior=posterior)
  p = sentence_ae.init_params(jax.random.PRNGKey(2), model)
  rng = np.random.default_rng(0)
  examples = [np.array([1, *rng.integers(4, 9, size=k), 2], np.int32)
              for k in (5, 0, 9, 2, 2, 7, 1)]
  post = encoding.encode_sentences(p, model, examples, batch_size=3, pad_multiple=4)
  assert (post.beta_a is None) == (posterior == "gaussian")
  for i, ids in enumerate(examples):
    alone = sentence_ae.encode(p, jnp.asarray(ids)[None], jnp.asarray([len(ids)]), model)
    for name in post._fields:
      if getattr(alone, name) is not None:
        np.testing.assert_allclose(getattr(post, name)[i], getattr(alone, name)[0], atol=1e-5,
                                   err_msg=f"{name} of sentence {i}")
  code, std = encoding.code_and_std(post)
  np.testing.assert_allclose(code, sentence_ae.posterior_code(post), rtol=1e-6)
  np.testing.assert_allclose(std, np.exp(0.5 * post.log_var), rtol=1e-6)
  empty = encoding.encode_sentences(p, model, [])
  assert empty.mean.shape == empty.raw_log_var.shape == (0, 3)
