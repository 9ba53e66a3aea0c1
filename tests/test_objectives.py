"""The objectives of issue 3 (MI, HSVAE, MAT-VAE, multi-sample, word dropout, free bits)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import objectives
from mimtext.models import sentence_ae

BASE = sentence_ae.ModelConfig(vocab_size=13, embed_dim=6, hidden_dim=8, latent_dim=3,
                               embed_dropout=0.0)
TOKENS = np.array([[1, 4, 5, 6, 2, 0, 0], [1, 7, 8, 2, 0, 0, 0], [1, 9, 10, 11, 12, 5, 2]],
                  np.int32)
LENGTHS = np.array([5, 4, 7], np.int32)
BATCH = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(3, np.float32)}


def _model(**kw):
  return dataclasses.replace(BASE, **kw)


def _params(cfg, seed=0):
  return sentence_ae.init_params(jax.random.PRNGKey(seed), cfg)


def _grads(loss_name, cfg, params, **obj):
  ocfg = objectives.ObjectiveConfig(model=cfg, name=loss_name, **obj)
  fn = lambda p: objectives.get_loss(loss_name)(p, BATCH, key=jax.random.PRNGKey(1), step=0,
                                                cfg=ocfg)
  return jax.value_and_grad(fn, has_aux=True)(params)


def test_mi_criterion_sends_no_gradient_into_the_encoder():
  cfg = _model(mi_head=True, bidirectional=True, summary="mean")
  params = _params(cfg)
  ocfg = objectives.ObjectiveConfig(model=cfg, name="mi", mi_max_len=5)
  grads = jax.grad(lambda p: objectives.mi.mi_loss(p, 4, jax.random.PRNGKey(2), ocfg).mean())(
      params)
  for name in ("encoder", "to_mean", "to_log_var"):
    for leaf in jax.tree_util.tree_leaves(grads[name]):
      assert np.all(np.asarray(leaf) == 0.0), name
  # It does train q_MI's head and the decoder.
  assert np.abs(np.asarray(grads["mi_head"]["to_mean"]["w"])).sum() > 0
  assert np.abs(np.asarray(grads["decoder"]["w_h"])).sum() > 0
  (value, metrics), _ = _grads("mi", cfg, params, mi_max_len=5, mi_weight=2.0)
  np.testing.assert_allclose(value, metrics["neg_elbo"] + 2.0 * metrics["mi_loss"], rtol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_hidden_averaging_with_one_sample_equals_the_plain_model(cell):
  cfg = _model(cell=cell, condition="both")
  params = _params(cfg)
  z = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
  plain = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, cfg)
  for average in ("hidden", "loss"):
    multi = sentence_ae.multi_sample_log_likelihood(params, z[None], TOKENS, LENGTHS, cfg,
                                                    average=average)
    np.testing.assert_allclose(multi, plain, rtol=1e-6)


def test_multi_sample_averages_are_what_they_claim():
  cfg = _model()
  params = _params(cfg)
  zs = np.random.default_rng(1).normal(size=(4, 3, 3)).astype(np.float32)
  each = [sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, cfg) for z in zs]
  got = sentence_ae.multi_sample_log_likelihood(params, zs, TOKENS, LENGTHS, cfg, average="loss")
  np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5)
  hidden = np.mean([sentence_ae.decoder_hidden(params, z, TOKENS, LENGTHS, cfg) for z in zs], 0)
  logits = sentence_ae.output_logits(params, hidden)
  want = sentence_ae.token_log_likelihoods(logits, TOKENS, LENGTHS).sum(1)
  got = sentence_ae.multi_sample_log_likelihood(params, zs, TOKENS, LENGTHS, cfg, average="hidden")
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Averaging states inside log p is not averaging log p.
  assert not np.allclose(got, np.mean(each, axis=0))


def test_word_keep_rate_one_equals_no_word_dropout():
  cfg = _model()
  params = _params(cfg)
  z = np.ones((3, 3), np.float32)
  plain = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, cfg)
  kept = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, cfg,
                                             word_key=jax.random.PRNGKey(0),
                                             word_keep_rate=jnp.asarray(1.0))
  np.testing.assert_allclose(kept, plain, rtol=1e-6)
  dropped = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, cfg,
                                                word_key=jax.random.PRNGKey(0),
                                                word_keep_rate=0.0)
  assert not np.allclose(dropped, plain)


@pytest.mark.parametrize("kw", [dict(bidirectional=True, summary="attention"),
                                dict(bidirectional=True, summary="mean", cell="lstm"),
                                dict(summary="last", encoder_highway=2, decoder_highway=1)])
def test_encoders_are_padding_invariant(kw):
  cfg = _model(**kw)
  params = _params(cfg)
  wide = np.concatenate([TOKENS, np.full((3, 5), 9, np.int32)], axis=1)
  a = sentence_ae.encode(params, TOKENS, LENGTHS, cfg)
  b = sentence_ae.encode(params, wide, LENGTHS, cfg)
  np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-6)
  alone = sentence_ae.encode(params, TOKENS[1:2, :4], LENGTHS[1:2], cfg)
  np.testing.assert_allclose(alone.mean[0], a.mean[1], rtol=1e-5, atol=1e-6)


def test_free_bits_floor_each_dimension():
  kl = jnp.array([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]])
  valid = jnp.ones(2)
  assert float(objectives.common.kl_term(kl, valid, 0.0)) == pytest.approx(1.7)
  # per-dimension means 0.2, 1.5, 0 → max(·, 0.5) = 0.5 + 1.5 + 0.5
  assert float(objectives.common.kl_term(kl, valid, 0.5)) == pytest.approx(2.5)


@pytest.mark.parametrize("name,kw,obj", [
    ("hsvae", dict(posterior="hsvae"), dict(prior_alpha=2.0, prior_beta=3.0)),
    ("matvae", dict(), dict(prior_gamma=0.7)),
    ("vae", dict(cell="lstm"), dict(num_samples=3, sample_average="hidden", free_bits=0.1,
                                    l1_weight=0.1, word_keep_rate=0.5)),
])
def test_objectives_have_finite_values_and_gradients(name, kw, obj):
  cfg = _model(**kw)
  (value, metrics), grads = _grads(name, cfg, _params(cfg), **obj)
  assert np.isfinite(value) and np.isfinite(metrics["criterion"])
  for leaf in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(leaf))


def test_hsvae_terms_add_up():
  cfg = _model(posterior="hsvae")
  params = _params(cfg)
  ocfg = objectives.ObjectiveConfig(model=cfg, name="hsvae", kl_z_weight=2.0, kl_gamma_weight=3.0,
                                    prior_alpha=2.0, prior_beta=3.0)
  value, m = objectives.get_loss("hsvae")(params, BATCH, key=jax.random.PRNGKey(0), step=0,
                                          cfg=ocfg)
  np.testing.assert_allclose(value, m["rec"] + 2.0 * m["kl_z"] + 3.0 * m["kl_gamma"], rtol=1e-5)
  np.testing.assert_allclose(m["criterion"], m["rec"] + m["kl_z"] + m["kl_gamma"], rtol=1e-5)
  assert 0.0 < float(m["gamma_mean"]) < 1.0 and float(m["kl_gamma"]) >= 0.0


def test_an_ae_reports_nothing_of_the_sigma_head_it_never_trains():
  """Its KL, mean σ and floor fraction would describe an untrained head (issue: "kl 29.954 |
  σ 1" in an AE's training log): the AE's metrics are the loss and the reconstruction only."""
  cfg = _model()
  (value, metrics), _ = _grads("ae", cfg, _params(cfg))
  assert set(metrics) == {"loss", "criterion", "rec", "rec_per_token"}
  np.testing.assert_allclose(metrics["loss"], metrics["rec"], rtol=1e-6)
