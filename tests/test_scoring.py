"""Every model is scored as it was trained: inputless decoders, L-latent averaging, AEs, floors.

References are independent of the scoring code: the inputless decoder against the same decoder
fed explicit <unk> rows; the L = 2 hidden-averaging model's bounds against 2-D quadrature of
p(x) = ∫∫ p(x|z1, z2) N(z1) N(z2); greedy decoding against teacher-forced argmax.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mimtext import objectives
from mimtext.evaluation import bounds
from mimtext.evaluation import runner
from mimtext.models import decoding
from mimtext.models import sentence_ae
from mimtext.objectives import common

UNK = 3
MODEL = sentence_ae.ModelConfig(vocab_size=9, embed_dim=4, hidden_dim=6, latent_dim=1,
                                embed_dropout=0.0)
TOKENS = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0]], np.int32)
LENGTHS = np.array([5, 3], np.int32)
BATCH = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(2, np.float32)}
# The decoder's inputs replaced by <unk> after <sos>, by hand (what an inputless decoder reads).
UNK_TOKENS = np.array([[1, UNK, UNK, UNK, 2], [1, UNK, 2, 0, 0]], np.int32)


@pytest.fixture(scope="module")
def params():
  p = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  p["z_to_h0"]["w"] = p["z_to_h0"]["w"] * 6.0      # a latent that matters
  return p


def _log_px_with_inputs(params, z, input_tokens, model=MODEL):
  """log p(x|z) with targets from TOKENS but decoder inputs from `input_tokens` (by hand)."""
  hidden = sentence_ae.decoder_hidden(params, z, jnp.asarray(input_tokens), LENGTHS, model)
  per_token = sentence_ae.token_log_likelihoods(sentence_ae.output_logits(params, hidden),
                                                TOKENS, LENGTHS)
  return np.asarray(per_token.sum(1))


def test_scoring_follows_the_training_config():
  cfg = lambda **kw: objectives.ObjectiveConfig(model=MODEL, **kw)
  assert common.scoring(cfg(name="vae", word_keep_rate=0.0)).word_keep == 0.0
  partial = common.scoring(cfg(name="vae", word_keep_rate=0.62))
  assert partial.word_keep == 1.0 and partial.trained_with_word_dropout
  ramp_to_full = common.scoring(cfg(name="vae", word_keep_schedule="linear"))
  assert ramp_to_full.word_keep == 1.0 and ramp_to_full.trained_with_word_dropout
  assert common.scoring(cfg(name="vae", num_samples=5, sample_average="hidden")).num_latents == 5
  assert common.scoring(cfg(name="vae", num_samples=5, sample_average="loss")).num_latents == 1
  assert common.scoring(cfg(name="ae")).deterministic_z
  assert "seed 001" in runner.describe_scoring(partial)["decoder_inputs"]


def test_inputless_model_is_validated_without_its_inputs(params):
  """Validation runs the loss deterministically: a keep-0 decoder must still read only <unk>s."""
  cfg = objectives.ObjectiveConfig(model=MODEL, name="vae", word_keep_rate=0.0)
  key = jax.random.PRNGKey(5)
  _, metrics = objectives.get_loss("vae")(params, BATCH, key=key, step=0, cfg=cfg,
                                          deterministic=True)
  keys = common.step_keys(key, True)
  post = sentence_ae.encode(params, TOKENS, LENGTHS, MODEL)
  z = objectives.latent_family(cfg).sample(keys.latent, post, cfg, 1).z[0]
  expected = -_log_px_with_inputs(params, z, UNK_TOKENS).mean()
  with_words = -_log_px_with_inputs(params, z, TOKENS).mean()
  assert abs(expected - with_words) > 1e-3
  np.testing.assert_allclose(float(metrics["rec"]), expected, rtol=1e-5)


def test_inputless_bounds_decode_without_inputs(params):
  cfg = objectives.ObjectiveConfig(model=MODEL, name="vae", word_keep_rate=0.0)
  ae_cfg = objectives.ObjectiveConfig(model=MODEL, name="ae", word_keep_rate=0.0)
  terms = bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(1), ae_cfg, 1)
  mean = sentence_ae.encode(params, TOKENS, LENGTHS, MODEL).mean
  np.testing.assert_allclose(terms["log_px"], _log_px_with_inputs(params, mean, UNK_TOKENS),
                             rtol=1e-5)
  # The ELBO of the inputless model against quadrature over the 1-D latent, both inputless.
  grid = np.linspace(-8, 8, 2001, dtype=np.float32)
  log_px_z = np.stack([_log_px_with_inputs(params, jnp.full((2, 1), g), UNK_TOKENS)
                       for g in grid[::10]])
  exact = jax.nn.logsumexp(log_px_z + stats.norm.logpdf(grid[::10])[:, None]
                           + math.log(grid[10] - grid[0]), axis=0)
  terms = bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(1), cfg, 2, iw_samples=2000)
  np.testing.assert_allclose(terms["iw_log_px"], exact, atol=0.03)


@pytest.mark.parametrize("inputless", [False, True])
def test_greedy_decoding_matches_teacher_forced_argmax(params, inputless):
  """Greedy ids re-fed by teacher forcing (with the model's input rule) give the same argmax."""
  z = jnp.asarray([[1.5], [-2.0]], jnp.float32)
  ids, lengths = decoding.greedy_decode(params, z, MODEL, max_len=6, inputless=inputless)
  ids, lengths = np.asarray(ids), np.asarray(lengths)
  tokens = np.concatenate([np.ones((2, 1), np.int32), ids], axis=1)
  full_lengths = lengths + 1
  keep = 0.0 if inputless else 1.0
  logits = sentence_ae.decoder_logits(params, z, jnp.asarray(tokens), full_lengths, MODEL,
                                      word_keep_rate=keep)
  logits = np.asarray(logits).copy()
  logits[..., [0, 1]] = -np.inf                     # never generated (<pad>, <sos>)
  for row in range(2):
    n = lengths[row]
    np.testing.assert_array_equal(np.argmax(logits[row, :n], -1), ids[row, :n])


def _two_latent_exact_log_px(params, model):
  """log ∫∫ p(x | h̄(z1, z2)) N(z1) N(z2) dz1 dz2 by a 2-D grid (d = 1)."""
  grid = np.linspace(-6, 6, 121, dtype=np.float32)
  hidden = jax.vmap(lambda g: sentence_ae.decoder_hidden(params, jnp.full((2, 1), g), TOKENS,
                                                         LENGTHS, model))(grid)   # [g,b,t,h]
  mixed = 0.5 * (hidden[:, None] + hidden[None, :])                                # [g,g,b,t,h]
  per_token = jax.vmap(lambda h: sentence_ae.token_log_likelihoods(
      sentence_ae.output_logits(params, h), TOKENS, LENGTHS))(
          mixed.reshape((-1,) + mixed.shape[2:]))
  log_px = np.asarray(per_token.sum(-1), np.float64).reshape(len(grid), len(grid), 2)
  log_w = stats.norm.logpdf(grid) + math.log(grid[1] - grid[0])
  return jax.nn.logsumexp(log_px + log_w[:, None, None] + log_w[None, :, None], axis=(0, 1))


def test_hidden_averaging_bounds_against_2d_quadrature(params):
  """L = 2 AVG model: IW over pairs converges to log p(x); the ELBO with 2 KL terms bounds it."""
  cfg = objectives.ObjectiveConfig(model=MODEL, name="vae", num_samples=2, sample_average="hidden")
  exact = np.asarray(_two_latent_exact_log_px(params, MODEL))
  terms = jax.device_get(bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(3), cfg, 400,
                                               iw_samples=3000))
  np.testing.assert_allclose(terms["iw_log_px"], exact, atol=0.05)
  assert np.all(terms["log_px"] - 2 * terms["kl"] < exact - 1e-3)
  report = bounds.nll_bounds(terms, LENGTHS - 2, common.scoring(cfg))
  assert report["num_latents"] == 2
  assert report["kl_total"] == pytest.approx(2 * report["kl"])
  assert report["elbo_nll"] == pytest.approx(report["elbo_one_kl_nll"] + report["kl"])
  assert report["elbo_nll"] >= -float(np.mean(exact))


def test_ae_is_scored_from_the_mean_without_bounds(params):
  cfg = objectives.ObjectiveConfig(model=MODEL, name="ae")
  terms = jax.device_get(bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(1), cfg, 5))
  mean = sentence_ae.encode(params, TOKENS, LENGTHS, MODEL).mean
  np.testing.assert_allclose(terms["log_px"], _log_px_with_inputs(params, mean, TOKENS),
                             rtol=1e-5)
  assert "iw_log_px" not in terms and "kl" not in terms
  np.testing.assert_array_equal(terms["z_sample"], mean)
  report = bounds.nll_bounds(terms, LENGTHS - 2, common.scoring(cfg))
  assert "bounds_skipped" in report and "elbo_nll" not in report
  assert report["rec"] == pytest.approx(-float(np.mean(terms["log_px"])))


def test_importance_weighted_bound_has_its_own_sample_count(params):
  cfg = objectives.ObjectiveConfig(model=MODEL, name="vae")
  small = bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(4), cfg, 2)
  large = bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(4), cfg, 2, iw_samples=500)
  np.testing.assert_allclose(small["log_px"], large["log_px"], rtol=1e-6)   # same 2 draws
  # Above the ELBO (estimated with 1000 draws: a 2-draw estimate is too noisy to compare with).
  elbo = bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(5), cfg, 1000, iw_samples=1)
  assert np.all(np.asarray(large["iw_log_px"]) > np.asarray(elbo["log_px"] - elbo["kl"]))
  assert not np.allclose(small["iw_log_px"], large["iw_log_px"])


def test_hoyer_uses_one_posterior_sample_per_sentence(params):
  model = dataclasses.replace(MODEL, latent_dim=3)
  p = sentence_ae.init_params(jax.random.PRNGKey(2), model)
  cfg = objectives.ObjectiveConfig(model=model, name="vae")
  terms = jax.device_get(bounds.sentence_terms(p, BATCH, jax.random.PRNGKey(3), cfg, 4))
  post = sentence_ae.encode(p, TOKENS, LENGTHS, model)
  assert terms["z_sample"].shape == (2, 3)
  assert not np.allclose(terms["z_sample"], terms["code"])
  # A draw from q(z|x): within a few posterior σ of the mean.
  sigma = np.exp(0.5 * np.asarray(post.log_var))
  assert np.all(np.abs(terms["z_sample"] - np.asarray(post.mean)) < 6 * sigma)


def test_three_perplexity_conventions():
  terms = {"log_px": np.array([-10.0, -20.0]), "log_px_no_eos": np.array([-9.0, -18.0]),
           "iw_log_px": np.array([-11.0, -21.0]), "iw_log_px_no_eos": np.array([-10.0, -19.0]),
           "kl": np.array([2.0, 4.0])}
  out = bounds.nll_bounds(terms, np.array([3, 5]))
  assert out["elbo_ppl"] == pytest.approx(math.exp(36.0 / 10))       # +eos: 36 nats / 10 tokens
  assert out["elbo_ppl_no_eos"] == pytest.approx(math.exp(33.0 / 8))  # -eos: 33 nats / 8 words
  assert out["elbo_ppl_smim"] == pytest.approx(math.exp(33.0 / 10))   # smim: 33 nats / 10 tokens
  assert out["melbo_ppl_smim"] == pytest.approx(math.exp((27.0 + 2 * math.log(2)) / 10))


@pytest.mark.parametrize("floor_mode", ["clamp", "softplus"])
def test_floor_fraction_has_one_definition(params, floor_mode):
  """Training metrics and evaluation count the same dimensions at the floor, in every mode."""
  model = dataclasses.replace(MODEL, latent_dim=2, floor_mode=floor_mode)
  p = sentence_ae.init_params(jax.random.PRNGKey(2), model)
  p["to_log_var"]["b"] = jnp.asarray([-30.0, 0.0])     # dimension 0 far below the floor
  p["to_log_var"]["w"] = jnp.zeros_like(p["to_log_var"]["w"])
  cfg = objectives.ObjectiveConfig(model=model, name="mim")
  _, metrics = objectives.get_loss("mim")(p, BATCH, key=jax.random.PRNGKey(0), step=0, cfg=cfg)
  terms = bounds.sentence_terms(p, BATCH, jax.random.PRNGKey(1), cfg, 1)
  assert float(metrics["frac_at_floor"]) == pytest.approx(0.5)
  np.testing.assert_allclose(terms["frac_at_floor"], [0.5, 0.5])
  np.testing.assert_allclose(float(metrics["post_std"]), float(np.mean(terms["post_std"])),
                             rtol=1e-6)


def _header(path):
  with open(path, encoding="utf-8") as f:
    return "".join(line for line in f if line.startswith("#"))


def test_every_config_that_cites_a_perplexity_names_its_convention():
  import glob
  import os
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cited = [p for p in glob.glob(os.path.join(repo, "launch", "configs", "*.flags"))
           if "PPL" in _header(p)]
  assert len(cited) >= 20
  for path in cited:
    assert any(f'"{label}"' in _header(path) for label in ("+eos", "-eos", "smim")), path
  bowman = _header(os.path.join(repo, "launch", "configs", "bowman_ptb.flags"))
  assert "<eos> counted" not in bowman and 'compare with "-eos"' in bowman
