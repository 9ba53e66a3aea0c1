"""The language-model baseline: objective "lm" over the decoder without z (condition "none")."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import config as config_lib
from mimtext import experiment
from mimtext import objectives
from mimtext.evaluation import bounds
from mimtext.models import sentence_ae

LM = sentence_ae.ModelConfig(vocab_size=13, embed_dim=6, hidden_dim=8, latent_dim=3,
                             embed_dropout=0.0, condition="none")
TOKENS = np.array([[1, 4, 5, 6, 2, 0, 0], [1, 7, 8, 2, 0, 0, 0], [1, 9, 10, 11, 12, 5, 2]],
                  np.int32)
LENGTHS = np.array([5, 4, 7], np.int32)
BATCH = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(3, np.float32)}


def _lm_loss(params, cfg=LM, deterministic=True):
  ocfg = objectives.ObjectiveConfig(model=cfg, name="lm")
  return objectives.get_loss("lm")(params, BATCH, key=jax.random.PRNGKey(1), step=0, cfg=ocfg,
                                   deterministic=deterministic)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_decoder_without_z_ignores_z(cell):
  cfg = dataclasses.replace(LM, cell=cell)
  params = sentence_ae.init_params(jax.random.PRNGKey(0), cfg)
  assert params["decoder"]["w_i"].shape[0] == cfg.embed_dim  # no rows for z
  assert "z_to_h0" not in params
  rng = np.random.default_rng(0)
  a, b = (rng.normal(size=(3, 3)).astype(np.float32) * s for s in (1.0, 10.0))
  np.testing.assert_array_equal(
      sentence_ae.sentence_log_likelihood(params, a, TOKENS, LENGTHS, cfg),
      sentence_ae.sentence_log_likelihood(params, b, TOKENS, LENGTHS, cfg))


def test_lm_loss_equals_a_concat_decoder_whose_z_weights_are_zero():
  """An independent route to log p(x): the same GRU with z concatenated to its inputs, its z rows
  of W_i set to 0 (and no z-derived initial state), gives the same per-sentence likelihood."""
  params = sentence_ae.init_params(jax.random.PRNGKey(0), LM)
  value, metrics = _lm_loss(params)
  concat = dataclasses.replace(LM, condition="concat")
  w_i = params["decoder"]["w_i"]
  cparams = dict(params, decoder=dict(params["decoder"], w_i=jnp.concatenate(
      [w_i, jnp.zeros((LM.latent_dim, w_i.shape[1]), w_i.dtype)], axis=0)))
  z = np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32)
  reference = sentence_ae.sentence_log_likelihood(cparams, z, TOKENS, LENGTHS, concat)
  np.testing.assert_allclose(value, -np.mean(reference), rtol=1e-5)
  np.testing.assert_allclose(metrics["rec"], value, rtol=1e-6)
  assert set(metrics) == {"loss", "criterion", "rec", "rec_per_token"}


def test_lm_trains_the_decoder_only():
  params = sentence_ae.init_params(jax.random.PRNGKey(0), LM)
  grads = jax.grad(lambda p: _lm_loss(p, deterministic=False)[0])(params)
  for name in ("encoder", "to_mean", "to_log_var"):
    for leaf in jax.tree_util.tree_leaves(grads[name]):
      assert np.all(np.asarray(leaf) == 0.0), name
  assert np.abs(np.asarray(grads["decoder"]["w_h"])).sum() > 0


def test_evaluation_reports_the_exact_nll_and_no_bound():
  ocfg = objectives.ObjectiveConfig(model=LM, name="lm")
  scoring = objectives.common.scoring(ocfg)
  assert scoring.latent_free and not scoring.deterministic_z
  params = sentence_ae.init_params(jax.random.PRNGKey(0), LM)
  terms = jax.device_get(bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(2), ocfg, 3, 7))
  value, _ = _lm_loss(params)
  np.testing.assert_allclose(-terms["log_px"].mean(), value, rtol=1e-5)
  report = bounds.nll_bounds(terms, LENGTHS - 2, scoring)
  np.testing.assert_allclose(report["exact_nll"], value, rtol=1e-5)
  assert report["exact_nll_no_eos"] < report["exact_nll"]
  assert not any(k.startswith(("elbo", "iw", "melbo", "kl")) for k in report)
  assert "language model" in report["bounds_skipped"]
  with pytest.raises(ValueError, match="no latent"):
    bounds.sentence_terms(params, BATCH, jax.random.PRNGKey(2), ocfg, 3, 7,
                          prior_fn=lambda p, z: jnp.zeros(z.shape[:-1]), prior_params=None)


@pytest.mark.parametrize("objective,condition", [("lm", "both"), ("mim", "none")])
def test_lm_and_condition_none_go_together(objective, condition):
  config = config_lib.get_config()
  config.objective.name, config.model.condition = objective, condition
  with pytest.raises(experiment.ConfigError, match="--config.model.condition=.*go together"):
    experiment.validate_config(config)
