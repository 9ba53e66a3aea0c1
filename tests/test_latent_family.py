"""Latent families (issue 8): one place per objective for q, p(z), KL, code and prior draws, and
the importance-weighted bounds that use them (chunked, K = 1, tightening, post-hoc prior).

References are independent of the library: scipy densities, moments of the priors, quadrature of
p(x) = ∫ p(x|z) p(z) dz over a 1-D latent.
"""

import dataclasses
import math

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
from mimtext.evaluation import reconstruction
from mimtext.models import sentence_ae
from mimtext.objectives import common

MODEL = sentence_ae.ModelConfig(vocab_size=9, embed_dim=4, hidden_dim=6, latent_dim=1,
                                embed_dropout=0.0)
HSVAE_MODEL = dataclasses.replace(MODEL, posterior="hsvae")
TOKENS = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0]], np.int32)
LENGTHS = np.array([5, 3], np.int32)
BATCH = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(2, np.float32)}
GRID = np.linspace(-8, 8, 4001, dtype=np.float32)


def _params(model, seed=0):
  p = sentence_ae.init_params(jax.random.PRNGKey(seed), model)
  p["z_to_h0"]["w"] = p["z_to_h0"]["w"] * 6.0      # a latent that matters
  return p


@pytest.fixture(scope="module")
def params():
  return _params(MODEL)


@pytest.fixture(scope="module")
def exact_log_px(params):
  """log ∫ p(x|z) N(z; 0, 1) dz by quadrature (d = 1): [b]; the decoder is shared by all heads."""
  log_px_z = jax.vmap(lambda z: sentence_ae.sentence_log_likelihood(
      params, jnp.full((2, 1), z), TOKENS, LENGTHS, MODEL))(GRID)
  log_w = stats.norm.logpdf(GRID) + math.log(GRID[1] - GRID[0])
  return np.asarray(special.logsumexp(np.asarray(log_px_z, np.float64) + log_w[:, None], axis=0))


def _cfg(name, model=MODEL, **kw):
  return objectives.ObjectiveConfig(model=model, name=name, **kw)


def _posterior(model, seed=3, b=4):
  """A posterior with spread-out parameters: μ, log σ² [b,d]; Beta a, b for the HSVAE head."""
  rng = np.random.default_rng(seed)
  d = 3
  mean = rng.normal(size=(b, d)).astype(np.float32)
  log_var = rng.uniform(-2, 0.5, size=(b, d)).astype(np.float32)
  if model.posterior != "hsvae":
    return sentence_ae.Posterior(jnp.asarray(mean), jnp.asarray(log_var), jnp.asarray(log_var))
  a, bb = (rng.uniform(0.5, 3.0, size=(b, d)).astype(np.float32) for _ in range(2))
  return sentence_ae.Posterior(*(jnp.asarray(x) for x in (mean, log_var, log_var, a, bb)))


FAMILIES = [("mim", MODEL), ("vae", MODEL), ("ae", MODEL), ("mi", MODEL), ("matvae", MODEL),
            ("hsvae", HSVAE_MODEL)]


def test_every_objective_has_one_family_and_it_checks_the_head():
  for name, model in FAMILIES:
    family = objectives.latent_family(_cfg(name, model))
    assert family is objectives.MODULES[name].LATENTS
  # sMIM and the VAE share the Gaussian q, p and KL; sMIM's prior samples decode N(0, 0.1² I).
  vae, smim = objectives.latent_family(_cfg("vae")), objectives.latent_family(_cfg("mim"))
  assert vae._replace(name=smim.name, generation_prior_std=0.1) == smim
  assert vae.generation_prior_std is None
  with pytest.raises(ValueError, match="hsvae posterior"):
    objectives.latent_family(_cfg("hsvae"))
  with pytest.raises(ValueError, match="gaussian posterior"):
    objectives.latent_family(_cfg("vae", HSVAE_MODEL))


def _mixture_log_pdf(z, spike_weight, spike_scale, mean, std):
  """Σ_d log[w N(z_d; 0, s²) + (1 − w) N(z_d; μ_d, σ_d²)] in float64: [...]."""
  return np.log(spike_weight * stats.norm.pdf(z, 0, spike_scale)
                + (1 - spike_weight) * stats.norm.pdf(z, mean, std)).sum(-1)


def _beta_log_pdf(log_g, log1m_g, a, b):
  """Σ_d log Beta(γ_d; a, b) from log γ and log(1 − γ) (γ near 1 keeps its precision): [...]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return ((a - 1) * log_g + (b - 1) * log1m_g - special.betaln(a, b)).sum(-1)


def _scipy_log_q(name, post, z, cfg):
  """log q(z|x) by scipy, float64: [k,b]; for HSVAE the mixture with ā = a / (a + b)."""
  z = np.asarray(z, np.float64)
  mean, std = np.asarray(post.mean, np.float64), np.exp(0.5 * np.asarray(post.log_var, np.float64))
  if name != "hsvae":
    return stats.norm.logpdf(z, mean, std).sum(-1)
  a, b = np.asarray(post.beta_a, np.float64), np.asarray(post.beta_b, np.float64)
  return _mixture_log_pdf(z, a / (a + b), cfg.spike_scale, mean, std)


def _scipy_log_prior(name, z, cfg):
  """log p(z) by scipy, float64: [...]; for HSVAE the mixture with E_p[γ] = α / (α + β)."""
  z = np.asarray(z, np.float64)
  if name == "matvae":
    return _mixture_log_pdf(z, cfg.prior_gamma, cfg.spike_scale, 0.0, 1.0)
  if name == "hsvae":
    mean_gamma = cfg.prior_alpha / (cfg.prior_alpha + cfg.prior_beta)
    return _mixture_log_pdf(z, mean_gamma, cfg.spike_scale, 0.0, 1.0)
  return stats.norm.logpdf(z).sum(-1)


def _hsvae_joint_log_ratio(post, draw, cfg):
  """log q(z, γ|x) − log p(z, γ) at the draws, by scipy: [k,b] (the integrand of HSVAE's KL)."""
  z = np.asarray(draw.z, np.float64)
  log_g, log1m_g = (np.asarray(x, np.float64) for x in draw.aux)
  gamma = np.exp(log_g)
  mean, std = np.asarray(post.mean, np.float64), np.exp(0.5 * np.asarray(post.log_var, np.float64))
  log_q = (_mixture_log_pdf(z, gamma, cfg.spike_scale, mean, std)
           + _beta_log_pdf(log_g, log1m_g, post.beta_a, post.beta_b))
  log_p = (_mixture_log_pdf(z, gamma, cfg.spike_scale, 0.0, 1.0)
           + _beta_log_pdf(log_g, log1m_g, cfg.prior_alpha, cfg.prior_beta))
  return log_q - log_p


@pytest.mark.parametrize("name,model", [("vae", MODEL), ("matvae", MODEL), ("hsvae", HSVAE_MODEL)])
def test_family_densities_and_kl_against_scipy(name, model):
  cfg = _cfg(name, dataclasses.replace(model, latent_dim=3), prior_alpha=2.0, prior_beta=3.0,
             spike_scale=0.3)
  family = objectives.latent_family(cfg)
  post = _posterior(cfg.model)
  draw = family.sample(jax.random.PRNGKey(0), post, cfg, 4000)
  assert draw.z.shape == (4000, 4, 3) and draw.log_q.shape == (4000, 4)
  np.testing.assert_allclose(draw.log_q, _scipy_log_q(name, post, draw.z, cfg), rtol=1e-4,
                             atol=1e-3)
  log_p = _scipy_log_prior(name, draw.z, cfg)
  np.testing.assert_allclose(family.log_prior(draw.z, cfg), log_p, rtol=1e-4, atol=1e-3)
  marginal_kl = np.mean(np.asarray(draw.log_q, np.float64) - log_p, axis=0)
  kl = np.asarray(family.kl(post, draw, cfg))
  if name == "hsvae":
    # The γ draws have mean ā = a / (a + b), the weight of the marginal's spike.
    gamma = np.exp(np.asarray(draw.aux[0], np.float64))
    np.testing.assert_allclose(gamma.mean(0), post.beta_a / (post.beta_a + post.beta_b),
                               atol=0.03)
    # Its KL is the ELBO's KL(q(z, γ|x) ‖ p(z, γ)), above the KL of the marginals.
    joint = np.mean(_hsvae_joint_log_ratio(post, draw, cfg), axis=0)
    np.testing.assert_allclose(kl, joint, atol=0.15)
    assert np.all(kl > marginal_kl), (kl, marginal_kl)
  else:
    np.testing.assert_allclose(kl, marginal_kl, atol=0.15)   # KL(q ‖ p) by 4000 draws
  if name == "vae":                                          # closed form: draws unused
    one = jax.tree_util.tree_map(lambda x: x[:1], draw)
    np.testing.assert_array_equal(family.kl(post, draw, cfg), family.kl(post, one, cfg))


@pytest.mark.parametrize("name,model", [("vae", MODEL), ("matvae", MODEL), ("hsvae", HSVAE_MODEL)])
def test_prior_samples_have_the_prior_moments(name, model):
  cfg = _cfg(name, dataclasses.replace(model, latent_dim=4), prior_alpha=2.0, prior_beta=3.0,
             spike_scale=0.05, prior_gamma=0.8)
  z = np.asarray(objectives.latent_family(cfg).prior_sample(jax.random.PRNGKey(1), 20000, cfg))
  assert z.shape == (20000, 4)
  # P(spike): γ for MAT-VAE, E[γ] = α / (α + β) for HSVAE, 0 for N(0, I).
  spike = {"vae": 0.0, "matvae": 0.8, "hsvae": 2.0 / 5.0}[name]
  var = spike * cfg.spike_scale ** 2 + (1 - spike)
  np.testing.assert_allclose(z.mean(), 0.0, atol=0.02)
  np.testing.assert_allclose(z.var(), var, rtol=0.04)
  # |z| < 0.15 holds for the spike (3 s) and for that slice of N(0, 1).
  near_zero = spike + (1 - spike) * (stats.norm.cdf(0.15) - stats.norm.cdf(-0.15))
  np.testing.assert_allclose(np.mean(np.abs(z) < 0.15), near_zero, atol=0.01)


def test_the_code_has_one_definition(params):
  post = _posterior(HSVAE_MODEL)
  by_hand = (1.0 - post.beta_a / (post.beta_a + post.beta_b)) * post.mean    # (1 − E γ) μ
  hsvae_family = objectives.latent_family(_cfg("hsvae", HSVAE_MODEL))
  np.testing.assert_allclose(hsvae_family.code(post), by_hand, rtol=1e-5)
  gauss = _posterior(MODEL)
  np.testing.assert_array_equal(objectives.latent_family(_cfg("vae")).code(gauss), gauss.mean)
  # Bounds, reconstructions and the loss's Hoyer metric read that same code.
  hp = _params(HSVAE_MODEL)
  cfg = _cfg("hsvae", HSVAE_MODEL)
  terms = bounds.sentence_terms(hp, BATCH, jax.random.PRNGKey(0), cfg, 1)
  enc = sentence_ae.encode(hp, TOKENS, LENGTHS, HSVAE_MODEL)
  np.testing.assert_array_equal(terms["code"], hsvae_family.code(enc))
  np.testing.assert_array_equal(reconstruction.posterior_code(hp, TOKENS, LENGTHS, HSVAE_MODEL),
                                hsvae_family.code(enc))


@pytest.mark.parametrize("name,model", [("mim", MODEL), ("matvae", MODEL), ("hsvae", HSVAE_MODEL)])
def test_losses_draw_with_their_family(name, model):
  """The loss's log q and KL metrics are those of `family.sample` with the loss's latent key."""
  model = dataclasses.replace(model, latent_dim=3)          # Hoyer metrics need d ≥ 2
  cfg = _cfg(name, model, num_samples=2)
  p = _params(model, seed=1)
  key = jax.random.PRNGKey(4)
  _, metrics = objectives.get_loss(name)(p, BATCH, key=key, step=0, cfg=cfg, deterministic=True)
  family = objectives.latent_family(cfg)
  post = sentence_ae.encode(p, TOKENS, LENGTHS, model)
  draw = family.sample(common.step_keys(key, True).latent, post, cfg, 2)
  np.testing.assert_allclose(metrics["log_q"], np.mean(draw.log_q[0]), rtol=1e-6)
  np.testing.assert_allclose(metrics["kl"], np.mean(family.kl(post, draw, cfg)), rtol=1e-6)
  first = objectives.latents.take_draw(draw, 0)
  np.testing.assert_allclose(metrics["log_prior"],
                             np.mean(family.log_prior(first.z, cfg)), rtol=1e-6)


# ------------------------------------------------------------------------ importance weighting


@pytest.mark.parametrize("name,model", [("vae", MODEL), ("hsvae", HSVAE_MODEL)])
def test_chunked_bound_equals_unchunked(name, model):
  p = _params(model)
  cfg = _cfg(name, model, prior_alpha=2.0, prior_beta=2.0)
  key = jax.random.PRNGKey(5)
  chunks = (1, 7, 23) if name == "vae" else (7, 23)     # 23: one chunk, i.e. unchunked
  runs = [jax.device_get(bounds.sentence_terms(p, BATCH, key, cfg, 5, 23, iw_chunk=c))
          for c in chunks]
  for other in runs[1:]:
    assert set(other) == set(runs[0])
    for name_ in runs[0]:
      np.testing.assert_allclose(other[name_], runs[0][name_], rtol=2e-5, atol=2e-5,
                                 err_msg=name_)


def _one_draw_elbo(p, cfg, key, terms):
  """log p(x|z) + log p(z) − log q(z|x) at the draw the bounds take first (key fold_in 0)."""
  family = objectives.latent_family(cfg)
  post = sentence_ae.encode(p, TOKENS, LENGTHS, cfg.model)
  draw = family.sample(jax.random.fold_in(key, 0), post, cfg, 1)
  np.testing.assert_allclose(draw.z[0], terms["z_sample"], rtol=1e-6)   # the same draw
  return (np.asarray(terms["log_px"]) + np.asarray(family.log_prior(draw.z, cfg)[0])
          - np.asarray(draw.log_q[0]))


@pytest.mark.parametrize("name,model", [("vae", MODEL), ("matvae", MODEL), ("hsvae", HSVAE_MODEL)])
def test_one_sample_iw_is_the_one_sample_elbo_estimate(name, model):
  p = _params(model)
  cfg = _cfg(name, model, prior_alpha=2.0, prior_beta=2.0)
  key = jax.random.PRNGKey(6)
  terms = jax.device_get(bounds.sentence_terms(p, BATCH, key, cfg, 1, 1))
  np.testing.assert_allclose(terms["iw_log_px"], _one_draw_elbo(p, cfg, key, terms), rtol=1e-5)
  if name == "matvae":                        # its KL is that draw's log q − log p
    np.testing.assert_allclose(terms["iw_log_px"], terms["log_px"] - terms["kl"], rtol=1e-5)


def test_iw_bound_tightens_with_k_in_expectation(params, exact_log_px):
  """Mean over 800 independent estimates per sentence (the two sentences repeated 200 times in a
  batch, 4 keys): K = 50 is above K = 1 (the ELBO; gaps 0.27 and 0.87 nats here), below log p(x)."""
  reps = 200
  batch = {"tokens": np.tile(TOKENS, (reps, 1)), "lengths": np.tile(LENGTHS, reps),
           "valid": np.ones(2 * reps, np.float32)}
  cfg = _cfg("vae")
  mean_over_draws = lambda k: np.mean([np.asarray(bounds.sentence_terms(
      params, batch, jax.random.PRNGKey(seed), cfg, 1, k)["iw_log_px"]).reshape(reps, 2)
                                       for seed in range(4)], axis=(0, 1))
  one, fifty = mean_over_draws(1), mean_over_draws(50)
  assert np.all(fifty > one + 0.1), (one, fifty)                  # NLL_50 < NLL_1
  assert np.all(fifty <= exact_log_px + 0.02), (fifty, exact_log_px)


def test_iw_memory_does_not_grow_with_k(params):
  """Compiled temporaries for K = 500 stay those of one chunk (K = 50 as reference)."""
  cfg = _cfg("vae")
  def temp_bytes(k):
    lowered = bounds.sentence_terms.lower(params, BATCH, jax.random.PRNGKey(0), cfg, 1, k,
                                          iw_chunk=10)
    analysis = lowered.compile().memory_analysis()
    if analysis is None:
      pytest.skip("no memory analysis on this backend")
    return analysis.temp_size_in_bytes
  small, large = temp_bytes(50), temp_bytes(500)
  assert large <= 1.2 * small + 4096, (small, large)


# -------------------------------------------------------------------------- post-hoc prior


def _standard_normal_gmm(d=1, shift=0.0):
  return posthoc_prior.GaussianMixture(jnp.zeros(1), jnp.full((1, d), shift), jnp.zeros((1, d)))


def test_posthoc_bound_under_the_model_prior_equals_the_model_bound(params):
  """p̂ = N(0, I) as a one-component mixture: the post-hoc IW is the model's IW, draw by draw."""
  cfg = _cfg("vae")
  key = jax.random.PRNGKey(7)
  terms = bounds.sentence_terms(params, BATCH, key, cfg, 2, 30, prior_fn=posthoc_prior.log_prob,
                                prior_params=_standard_normal_gmm())
  for suffix in ("", "_no_eos"):
    np.testing.assert_allclose(terms["posthoc_iw_log_px" + suffix], terms["iw_log_px" + suffix],
                               rtol=1e-5)
  # Refitting the prior (new parameters, same shapes) is a traced argument: no recompilation.
  before = bounds.sentence_terms._cache_size()
  moved = bounds.sentence_terms(params, BATCH, key, cfg, 2, 30, prior_fn=posthoc_prior.log_prob,
                                prior_params=_standard_normal_gmm(shift=2.0))
  assert bounds.sentence_terms._cache_size() == before
  assert not np.allclose(moved["posthoc_iw_log_px"], terms["posthoc_iw_log_px"])
  np.testing.assert_array_equal(moved["iw_log_px"], terms["iw_log_px"])
  with pytest.raises(ValueError, match="proposal_std .*pass its prior_fn"):
    bounds.sentence_terms(params, BATCH, key, cfg, 2, proposal_std=1.0)


def test_widened_proposal_raises_sigma_to_the_floor_and_zero_leaves_q():
  post = sentence_ae.Posterior(jnp.zeros((2, 3)), jnp.log(jnp.array([[0.01, 1.0, 4.0]] * 2)),
                               jnp.zeros((2, 3)))
  widened = bounds.widened_proposal(post, jnp.array([0.5, 0.5, 0.5]))
  np.testing.assert_allclose(jnp.exp(widened.log_var[0]), [0.25, 1.0, 4.0], rtol=1e-6)
  np.testing.assert_array_equal(bounds.widened_proposal(post, 0.0).log_var, post.log_var)
  np.testing.assert_allclose(jnp.exp(bounds.fixed_std_proposal(post, jnp.array([1., 2., 3.]))
                                     .log_var[1]), [1.0, 4.0, 9.0], rtol=1e-6)


def test_a_widened_proposal_gives_a_valid_posthoc_bound_of_the_same_likelihood(params,
                                                                               exact_log_px):
  """q widened to N(μ, max(σ, s)²) is another proposal of the post-hoc bound: under p̂ = N(0, I)
  it converges to the quadrature's log p(x) and lies below it in expectation for few draws; the
  model's own IW bound still comes from q's draws, unchanged."""
  cfg = _cfg("vae")
  gmm = _standard_normal_gmm()
  run = lambda seed, k: jax.device_get(bounds.sentence_terms(
      params, BATCH, jax.random.PRNGKey(seed), cfg, 1, k, iw_chunk=50,
      prior_fn=posthoc_prior.log_prob, prior_params=gmm, proposal_std=jnp.array([2.0])))
  tight = run(0, 2000)
  np.testing.assert_allclose(tight["posthoc_iw_log_px"], exact_log_px, atol=0.03)
  few = np.mean([run(s, 2)["posthoc_iw_log_px"] for s in range(20)], axis=0)
  assert np.all(few < exact_log_px + 0.02), (few, exact_log_px)
  plain = jax.device_get(bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(0), cfg, 1, 2000,
                                               iw_chunk=50))
  np.testing.assert_array_equal(tight["iw_log_px"], plain["iw_log_px"])
  with pytest.raises(ValueError, match="has no Gaussian posterior"):
    bounds.sentence_terms(_params(HSVAE_MODEL), BATCH, jax.random.PRNGKey(0),
                          _cfg("hsvae", HSVAE_MODEL), 1, prior_fn=posthoc_prior.log_prob,
                          prior_params=gmm, proposal_std=1.0)


def test_ae_gets_a_valid_posthoc_bound_from_a_fixed_std_proposal(params, exact_log_px):
  cfg = _cfg("ae")
  gmm = _standard_normal_gmm()
  with pytest.raises(ValueError, match="proposal_std"):
    bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(0), cfg, 1,
                          prior_fn=posthoc_prior.log_prob, prior_params=gmm)
  run = lambda seed, k: jax.device_get(bounds.sentence_terms(
      params, BATCH, jax.random.PRNGKey(seed), cfg, 1, k, iw_chunk=50,
      prior_fn=posthoc_prior.log_prob, prior_params=gmm, proposal_std=1.0))
  tight = run(0, 2000)
  # Under p̂ = N(0, 1) the AE's decoder has the likelihood of the quadrature: K = 2000 reaches it.
  np.testing.assert_allclose(tight["posthoc_iw_log_px"], exact_log_px, atol=0.03)
  few = np.mean([run(s, 2)["posthoc_iw_log_px"] for s in range(20)], axis=0)
  assert np.all(few < exact_log_px + 0.02), (few, exact_log_px)   # a bound (in expectation)
  report = bounds.nll_bounds(tight, LENGTHS - 2, common.scoring(cfg))
  assert "bounds_skipped" in report and "posthoc" in report["bounds_skipped"]
  assert report["posthoc_iw_nll"] == pytest.approx(-float(np.mean(tight["posthoc_iw_log_px"])))
  assert "iw_nll" not in report and "elbo_nll" not in report


def test_hsvae_posthoc_bound_converges_to_the_posthoc_likelihood(exact_log_px):
  """p̂ replaces HSVAE's marginal p(z); q(z|x) is its marginal over γ: → ∫ p(x|z) p̂(z) dz."""
  p = _params(HSVAE_MODEL)
  for name in ("z_to_h0", "decoder", "out", "embed"):      # the decoder of the quadrature
    p[name] = _params(MODEL)[name]
  cfg = _cfg("hsvae", HSVAE_MODEL, prior_alpha=2.0, prior_beta=2.0)
  reps = 8                      # 8 independent K = 2000 estimates per sentence in one batch
  batch = {"tokens": np.tile(TOKENS, (reps, 1)), "lengths": np.tile(LENGTHS, reps),
           "valid": np.ones(2 * reps, np.float32)}
  terms = jax.device_get(bounds.sentence_terms(
      p, batch, jax.random.PRNGKey(8), cfg, 1, 2000, iw_chunk=200,
      prior_fn=posthoc_prior.log_prob, prior_params=_standard_normal_gmm()))
  estimates = terms["posthoc_iw_log_px"].reshape(reps, 2)
  np.testing.assert_allclose(estimates.mean(0), exact_log_px, atol=0.03)
  report = bounds.nll_bounds(terms, np.tile(LENGTHS, reps) - 2, common.scoring(cfg))
  assert {"iw_nll", "posthoc_iw_nll", "elbo_nll"} <= set(report)


def test_kl_per_dimension_sums_to_the_kl():
  rng = np.random.default_rng(0)
  mean, log_var = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  per_dim = distributions.normal_kl_standard_per_dim(mean, log_var)
  np.testing.assert_allclose(per_dim, 0.5 * (mean ** 2 + np.exp(log_var) - 1 - log_var), rtol=1e-5)
  np.testing.assert_allclose(distributions.normal_kl_standard(mean, log_var), per_dim.sum(-1),
                             rtol=1e-6)
