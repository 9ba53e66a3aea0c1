"""Beam search, generation, interpolation, ICM imputation and adversarial evaluation.

References are independent of the code under test: greedy decoding for beam width 1, teacher-forced
rescoring (`sentence_ae.sentence_log_likelihood`) for beam scores, brute-force enumeration of every
2-word ending for the constrained beam search, and hand-built sequence sets whose distinguishability
is known (identical, disjoint vocabularies, same words in another order).

Shapes are shared between tests (b = 4 rows, m = 10 tokens, beam 4 or 9, t = 16) so that few
functions compile.
"""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import objectives
from mimtext.data import pipeline
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import adversarial
from mimtext.evaluation import generation
from mimtext.evaluation import imputation
from mimtext.models import decoding
from mimtext.models import sentence_ae

MODEL = sentence_ae.ModelConfig(vocab_size=12, embed_dim=5, hidden_dim=8, latent_dim=2,
                                embed_dropout=0.0)
LSTM = dataclasses.replace(MODEL, cell="lstm", condition="concat")
VOCAB = vocab_lib.Vocabulary(vocab_lib.SPECIAL_TOKENS + tuple("abcdefgh"))
MAX_LEN = 10
AE = objectives.common.Scoring(1.0, 1, True, False)
# Four sentences of 8-12 words (t = 16 after padding to a multiple of 8): m = round(0.2 n) = 2.
SENTENCES = [np.array([1, 4, 5, 6, 7, 8, 9, 10, 11, 2]),
             np.array([1, 9, 10, 11, 4, 5, 6, 7, 8, 9, 2]),
             np.array([1, 11, 10, 9, 8, 7, 6, 5, 4, 3, 11, 2]),
             np.array([1, 5, 6, 7, 8, 9, 10, 11, 4, 5, 6, 7, 8, 2])]
ICM_BEAM = 9     # ids 3..11 may precede <eos>: with 9 beams, 2 missing words are searched exactly


@pytest.fixture(scope="module")
def params():
  """A random model whose decodes depend on z and on the sentence encoded, and often end."""
  p = sentence_ae.init_params(jax.random.PRNGKey(1), MODEL)
  p["z_to_h0"]["w"] = p["z_to_h0"]["w"] * 4.0
  p["to_mean"]["w"] = p["to_mean"]["w"] * 6.0
  p["out"]["b"] = p["out"]["b"].at[vocab_lib.EOS_ID].add(0.5)
  return p


@pytest.fixture(scope="module")
def z():
  return 1.5 * jax.random.normal(jax.random.PRNGKey(2), (4, MODEL.latent_dim))


_log_px = jax.jit(sentence_ae.sentence_log_likelihood,
                  static_argnames=("cfg", "include_eos", "word_keep_rate"))


def _rescore(params, z, ids, lengths, cfg=MODEL, inputless=False):
  """log p(ids | z) by teacher forcing, from decoder output ids [b,m] and lengths [b]."""
  tokens = jnp.concatenate([jnp.full((ids.shape[0], 1), vocab_lib.SOS_ID), ids], axis=1)
  return np.asarray(_log_px(params, z, tokens, lengths + 1, cfg=cfg,
                            word_keep_rate=0.0 if inputless else 1.0))


# ----------------------------------------------------------------------------- beam search


def test_beam_width_one_is_greedy(params, z):
  greedy, lengths = decoding.greedy_decode(params, z, MODEL, max_len=MAX_LEN)
  beam = decoding.beam_search(params, z, MODEL, beam_width=1, max_len=MAX_LEN)
  np.testing.assert_array_equal(beam.ids, greedy)
  np.testing.assert_array_equal(beam.lengths, lengths)
  # The score is log p(ids|z) of the returned tokens (<eos> included where reached).
  np.testing.assert_allclose(beam.scores, _rescore(params, z, greedy, lengths), rtol=1e-5)


def test_beam_width_one_is_greedy_for_joint_latents_and_inputless_lstm():
  """L = 2 latents decoded jointly (hidden averaging), an LSTM reading only <unk>s."""
  p = sentence_ae.init_params(jax.random.PRNGKey(3), LSTM)
  zs = 1.5 * jax.random.normal(jax.random.PRNGKey(4), (2, 4, LSTM.latent_dim))
  greedy, _ = decoding.greedy_decode(p, zs, LSTM, max_len=MAX_LEN, inputless=True, ban_unk=True)
  beam = decoding.beam_search(p, zs, LSTM, beam_width=1, max_len=MAX_LEN, inputless=True,
                              ban_unk=True)
  np.testing.assert_array_equal(beam.ids, greedy)
  assert not np.any(np.asarray(beam.ids) == vocab_lib.UNK_ID)
  assert len({tuple(r) for r in np.asarray(greedy)}) > 1       # z matters: not one sentence


def test_beam_search_finds_likelier_sentences_than_greedy(params, z):
  greedy, greedy_lengths = decoding.greedy_decode(params, z, MODEL, max_len=MAX_LEN)
  beam = decoding.beam_search(params, z, MODEL, beam_width=4, max_len=MAX_LEN)
  rescored = _rescore(params, z, beam.ids, beam.lengths)
  np.testing.assert_allclose(beam.scores, rescored, rtol=1e-5)
  finished = np.any(np.asarray(greedy) == vocab_lib.EOS_ID, axis=1)
  assert np.all(np.any(np.asarray(beam.ids) == vocab_lib.EOS_ID, axis=1))
  assert finished.sum() >= 2
  greedy_score = _rescore(params, z, greedy, greedy_lengths)[finished]
  assert np.all(rescored[finished] >= greedy_score - 1e-5)
  assert np.any(rescored[finished] > greedy_score + 0.1)


def test_length_penalty_ranks_by_normalised_score(params, z):
  plain = decoding.beam_search(params, z, MODEL, beam_width=4, max_len=MAX_LEN)
  alpha = 3.0
  long = decoding.beam_search(params, z, MODEL, beam_width=4, max_len=MAX_LEN,
                              length_penalty=alpha)
  assert np.all(np.asarray(long.lengths) >= np.asarray(plain.lengths))
  assert np.any(np.asarray(long.lengths) > np.asarray(plain.lengths))
  # Each winner wins under its own criterion.
  norm = lambda r: np.asarray(r.scores) / np.asarray(
      decoding.length_normalizer(r.lengths, alpha))
  assert np.all(np.asarray(plain.scores) >= np.asarray(long.scores) - 1e-5)
  assert np.all(norm(long) >= norm(plain) - 1e-5)


def test_allowed_tokens_forces_prefix_and_length():
  prefix = jnp.asarray([[5, 3, 0], [7, 0, 0]])
  kw = dict(ban_unk=True, prefix=prefix, prefix_lengths=jnp.asarray([2, 0]),
            exact_lengths=jnp.asarray([4, 2]))
  at = lambda step: np.asarray(decoding.allowed_tokens(jnp.asarray(step), 8, 2, **kw))
  np.testing.assert_array_equal(np.flatnonzero(at(0)[0]), [5])
  np.testing.assert_array_equal(np.flatnonzero(at(1)[0]), [3])      # a forced <unk> overrides
  np.testing.assert_array_equal(np.flatnonzero(at(2)[0]), [4, 5, 6, 7])   # no <eos> yet
  np.testing.assert_array_equal(np.flatnonzero(at(3)[0]), [2])      # only <eos>
  np.testing.assert_array_equal(np.flatnonzero(at(0)[1]), [4, 5, 6, 7])
  np.testing.assert_array_equal(np.flatnonzero(at(1)[1]), [2])
  free = np.asarray(decoding.allowed_tokens(jnp.asarray(0), 8, 1))
  np.testing.assert_array_equal(np.flatnonzero(free[0]), [2, 3, 4, 5, 6, 7])
  np.testing.assert_allclose(decoding.length_normalizer(jnp.asarray([1, 7]), 0.0), [1.0, 1.0])
  np.testing.assert_allclose(decoding.length_normalizer(jnp.asarray([1, 7]), 1.0), [1.0, 2.0])


# ----------------------------------------------------------------------------- generation


def test_generate_methods(params, z):
  texts = lambda ids: [" ".join(VOCAB.decode(r)) for r in np.asarray(ids)]
  greedy = generation.generate(params, z, MODEL, VOCAB, max_len=MAX_LEN)
  assert greedy == texts(decoding.greedy_decode(params, z, MODEL, max_len=MAX_LEN)[0])
  beam = generation.generate(params, z, MODEL, VOCAB, method="beam", beam_width=4,
                             max_len=MAX_LEN)
  assert beam == texts(decoding.beam_search(params, z, MODEL, beam_width=4, max_len=MAX_LEN).ids)
  assert beam != greedy
  cold = generation.generate(params, z, MODEL, VOCAB, method="sample", temperature=1e-4,
                             key=jax.random.PRNGKey(0), max_len=MAX_LEN)
  assert cold == greedy                                   # T → 0 is the argmax
  hot = [generation.generate(params, z, MODEL, VOCAB, method="sample", temperature=3.0,
                             key=jax.random.PRNGKey(i), max_len=MAX_LEN) for i in range(3)]
  assert len({tuple(h) for h in hot}) == 3
  with pytest.raises(ValueError, match="key"):
    generation.generate(params, z, MODEL, VOCAB, method="sample")
  with pytest.raises(ValueError, match="method"):
    generation.generate(params, z, MODEL, VOCAB, method="nucleus")


def test_interpolation_endpoints_are_the_mean_reconstructions(params):
  a, b = SENTENCES[0], SENTENCES[3]
  path = generation.interpolate(params, MODEL, VOCAB, a, b, num_points=4, max_len=MAX_LEN)
  rows = generation.reconstructions(params, MODEL, VOCAB, [a, b, a, b], jax.random.PRNGKey(0),
                                    max_len=MAX_LEN, scoring=AE)
  assert set(rows[0]) == {"D", "M"}                       # an AE: no sample, no perturbation
  assert len(path) == 4 and path[0] == rows[0]["M"] and path[-1] == rows[1]["M"]
  assert path[0] != path[-1]
  beam_rows = generation.reconstructions(params, MODEL, VOCAB, [a, b, a, b],
                                         jax.random.PRNGKey(0), max_len=MAX_LEN, scoring=AE,
                                         method="beam", beam_width=4)
  code = generation._posterior(params, MODEL, [a, b, a, b]).mean
  expected = generation.generate(params, code, MODEL, VOCAB, method="beam", beam_width=4,
                                 max_len=MAX_LEN)
  assert [r["M"] for r in beam_rows] == expected


def test_linear_path_is_equispaced_with_exact_ends():
  z_a, z_b = jnp.asarray([[0.3, -1.0]]), jnp.asarray([[2.0, 4.0]])   # [L=1, d]
  path = np.asarray(generation.linear_path(z_a, z_b, 5))
  assert path.shape == (1, 5, 2)
  np.testing.assert_array_equal(path[0, 0], z_a[0])
  np.testing.assert_array_equal(path[0, -1], z_b[0])
  np.testing.assert_allclose(np.diff(path[0], axis=0), np.tile((z_b - z_a) / 4, (4, 1)),
                             rtol=1e-5)
  with pytest.raises(ValueError):
    generation.linear_path(z_a, z_b, 1)


def test_prior_samples_take_a_sampler(params, z):
  fixed = lambda key, n: jnp.tile(z, (n // 4, 1))
  from_sampler = generation.prior_samples(params, MODEL, VOCAB, jax.random.PRNGKey(0), num=4,
                                          max_len=MAX_LEN, prior=fixed)
  assert from_sampler == generation.generate(params, z, MODEL, VOCAB, max_len=MAX_LEN)
  key = jax.random.PRNGKey(5)
  default = generation.prior_samples(params, MODEL, VOCAB, key, num=4, std=2.0, max_len=MAX_LEN)
  z_default = 2.0 * jax.random.normal(key, (1, 4, MODEL.latent_dim))
  assert default == generation.generate(params, z_default, MODEL, VOCAB, max_len=MAX_LEN)
  with pytest.raises(ValueError, match="must return"):
    generation.prior_samples(params, MODEL, VOCAB, key, num=4, prior=lambda k, n: z[:1])


def test_prior_samples_decode_the_prior_of_the_objective(params):
  """Evaluation asks the objective's family: sMIM N(0, 0.1² I) (seed 000 D.3), MAT-VAE's and
  HSVAE's exact spike-and-slab draws; an AE has no prior."""
  key = jax.random.PRNGKey(6)
  smim = objectives.ObjectiveConfig(model=MODEL, name="mim")
  assert generation.default_prior_std(smim) == 0.1
  assert generation.default_prior_std(objectives.ObjectiveConfig(model=MODEL, name="vae")) == 1.0
  got = generation.prior_samples(params, MODEL, VOCAB, key, num=4, max_len=MAX_LEN, objective=smim)
  z_smim = 0.1 * jax.random.normal(key, (4, MODEL.latent_dim))
  assert got == generation.generate(params, z_smim, MODEL, VOCAB, max_len=MAX_LEN)
  matvae = objectives.ObjectiveConfig(model=MODEL, name="matvae", prior_gamma=0.5)
  sampler, description = generation.model_prior(matvae)
  family = objectives.latent_family(matvae)
  np.testing.assert_array_equal(sampler(key, 4), family.prior_sample(key, 4, matvae))
  assert "matvae" in description
  got = generation.prior_samples(params, MODEL, VOCAB, key, num=4, max_len=MAX_LEN,
                                 objective=matvae)
  assert got == generation.generate(params, family.prior_sample(key, 4, matvae), MODEL, VOCAB,
                                    max_len=MAX_LEN)
  hsvae = objectives.ObjectiveConfig(model=HSVAE_MODEL, name="hsvae")
  np.testing.assert_array_equal(generation.model_prior(hsvae)[0](key, 3),
                                objectives.latent_family(hsvae).prior_sample(key, 3, hsvae))
  ae = objectives.ObjectiveConfig(model=MODEL, name="ae")
  assert generation.model_prior(ae)[0] is None
  with pytest.raises(ValueError, match="no prior"):
    generation.prior_samples(params, MODEL, VOCAB, key, num=4, objective=ae)


HSVAE_MODEL = dataclasses.replace(MODEL, posterior="hsvae")


def test_hsvae_reconstructions_and_interpolations_draw_gamma_and_the_spike():
  """R rows and sampled interpolation ends are draws of the HSVAE family (γ ~ q(γ|x), then spike
  or slab), not N(μ, σ²): with q(γ|x) near 1 every coordinate is (near) the spike at 0."""
  p = sentence_ae.init_params(jax.random.PRNGKey(1), HSVAE_MODEL)
  p["to_mean"]["w"] = p["to_mean"]["w"] * 6.0
  p["to_beta_a"]["b"] = p["to_beta_a"]["b"] + 8.0             # E[γ] → 1: the spike everywhere
  p["to_beta_b"]["b"] = p["to_beta_b"]["b"] - 20.0
  cfg = objectives.ObjectiveConfig(model=HSVAE_MODEL, name="hsvae")
  post = generation._posterior(p, HSVAE_MODEL, SENTENCES)
  key = jax.random.PRNGKey(4)
  draws = np.asarray(generation.posterior_draws(key, post, HSVAE_MODEL, 1, cfg))
  expected = objectives.latent_family(cfg).sample(key, post, cfg, 1).z
  np.testing.assert_array_equal(draws, expected)
  assert np.abs(draws).max() < 0.5 < np.abs(np.asarray(post.mean)).max()
  rows = generation.reconstructions(p, HSVAE_MODEL, VOCAB, SENTENCES, key, max_len=MAX_LEN,
                                    objective=cfg)
  k_sample, _ = jax.random.split(key)
  z_r = generation.posterior_draws(k_sample, post, HSVAE_MODEL, 1, cfg)
  assert [r["R"] for r in rows] == generation.generate(p, z_r, HSVAE_MODEL, VOCAB,
                                                       max_len=MAX_LEN)
  # Without the objective the posterior head's family (HSVAE, default config) still draws γ.
  np.testing.assert_array_equal(
      generation.posterior_draws(key, post, HSVAE_MODEL, 1),
      generation.posterior_draws(key, post, HSVAE_MODEL, 1, cfg))
  path = generation.interpolate(p, HSVAE_MODEL, VOCAB, SENTENCES[0], SENTENCES[1], num_points=3,
                                key=key, method="sample", max_len=MAX_LEN, objective=cfg)
  assert len(path) == 3


# ----------------------------------------------------------------------------- imputation


def test_num_missing_words_and_masking():
  np.testing.assert_array_equal(imputation.num_missing_words(np.array([1, 2, 7, 8, 12, 13]), 0.2),
                                [1, 1, 1, 2, 2, 3])
  tokens = jnp.asarray([[1, 4, 5, 6, 2, 0], [1, 7, 2, 0, 0, 0]])
  masked = imputation.mask_endings(tokens, jnp.asarray([5, 3]), jnp.asarray([2, 1]))
  np.testing.assert_array_equal(masked, [[1, 4, 3, 3, 2, 0], [1, 3, 2, 0, 0, 0]])


@pytest.fixture(scope="module")
def batch():
  out = pipeline.make_batch(SENTENCES, np.arange(4), pad_multiple=8)
  out["missing"] = imputation.num_missing_words(out["lengths"] - 2, 0.2)
  assert out["tokens"].shape == (4, 16) and np.all(out["missing"] == 2)
  return out


def _icm(params, batch, num_iters):
  return imputation.icm_impute(params, MODEL, batch["tokens"], batch["lengths"],
                               batch["missing"], beam_width=ICM_BEAM, num_iters=num_iters)


def test_constrained_beam_search_matches_brute_force(params, batch):
  """First ICM step: z from the <unk>-masked sentence, then every 2-word ending enumerated."""
  trace = _icm(params, batch, 1)
  tokens, lengths = batch["tokens"], batch["lengths"]
  masked = imputation.mask_endings(jnp.asarray(tokens), jnp.asarray(lengths), batch["missing"])
  z = sentence_ae.posterior_code(sentence_ae.encode(params, masked, jnp.asarray(lengths), MODEL))
  endings = np.array(list(itertools.product(range(3, 12), repeat=2)))          # [81, 2]
  candidates = np.repeat(tokens[:, None], len(endings), axis=1)                # [4,81,t]
  for row, n in enumerate(lengths - 2):
    candidates[row, :, n - 1:n + 1] = endings
  scores = _log_px(params, jnp.repeat(z, len(endings), axis=0),
                   jnp.asarray(candidates.reshape(-1, tokens.shape[1])),
                   jnp.repeat(jnp.asarray(lengths), len(endings)), cfg=MODEL)
  scores = np.asarray(scores).reshape(4, len(endings))
  best = scores.argmax(axis=1)
  for row, n in enumerate(lengths - 2):
    np.testing.assert_array_equal(trace.tokens[row, n - 1:n + 1], endings[best[row]])
  np.testing.assert_allclose(trace.log_px[0], scores.max(axis=1), rtol=1e-5)


def test_icm_keeps_the_prefix_and_never_lowers_its_conditional_objective(params, batch):
  traces = {t: _icm(params, batch, t) for t in (2, 3)}
  final = np.asarray(traces[3].tokens)
  tokens, lengths = batch["tokens"], batch["lengths"]
  for row, n in enumerate(lengths - 2):
    np.testing.assert_array_equal(final[row, :n - 1], tokens[row, :n - 1])    # <sos> + prefix
    assert final[row, n + 1] == vocab_lib.EOS_ID and np.all(final[row, n + 2:] == 0)
    assert np.all(final[row, n - 1:n + 1] >= vocab_lib.UNK_ID)               # real words
  # x-step: log p(x_t | z_t) ≥ log p(x_{t−1} | z_t) once x_{t−1} is a real completion.
  log_px, previous = np.asarray(traces[3].log_px), np.asarray(traces[3].previous_log_px)
  assert np.all(log_px[1:] >= previous[1:] - 1e-5)
  # Both against teacher forcing: z_3 = E_q[z | x_2].
  x2 = jnp.asarray(traces[2].tokens)
  z3 = sentence_ae.posterior_code(sentence_ae.encode(params, x2, jnp.asarray(lengths), MODEL))
  np.testing.assert_allclose(previous[2], _log_px(params, z3, x2, lengths, cfg=MODEL), rtol=1e-5)
  np.testing.assert_allclose(log_px[2], _log_px(params, z3, final, lengths, cfg=MODEL), rtol=1e-5)
  # The first completion replaces the <unk>s whatever its score.
  assert np.all(previous[0] != log_px[0])


def test_icm_step_keeps_the_previous_completion_when_the_beam_finds_worse(params, batch):
  """Half the words missing: from a converged beam-9 ICM state a beam-1 step finds a worse
  ending for some row; with keep_previous that row keeps its completion."""
  lengths = jnp.asarray(batch["lengths"])
  missing = imputation.num_missing_words(batch["lengths"] - 2, 0.5)
  start = imputation.icm_impute(params, MODEL, batch["tokens"], lengths, missing,
                                beam_width=ICM_BEAM, num_iters=3).tokens
  step = lambda keep: imputation.icm_step(params, start, lengths, jnp.asarray(missing),
                                          jnp.asarray(keep), MODEL, beam_width=1)
  (found, found_score, before), (kept, kept_score, _) = step(False), step(True)
  worse = np.asarray(found_score < before - 1e-3)
  assert worse.any()
  np.testing.assert_allclose(kept_score, np.maximum(found_score, before), rtol=1e-6)
  np.testing.assert_array_equal(kept, np.where(worse[:, None], start, found))
  np.testing.assert_allclose(found_score, _log_px(params, sentence_ae.posterior_code(
      sentence_ae.encode(params, start, lengths, MODEL)), found, lengths, cfg=MODEL), rtol=1e-5)


def test_impute_endings(params, batch):
  out = imputation.impute_endings(params, MODEL, SENTENCES[:3], beam_width=ICM_BEAM,
                                  num_iters=2, batch_size=4)
  trace = _icm(params, batch, 2)
  assert len(out) == 3
  for row, (prefix, true, imputed) in enumerate(out):
    n = len(SENTENCES[row]) - 2
    np.testing.assert_array_equal(prefix, SENTENCES[row][1:n - 1])
    np.testing.assert_array_equal(true, SENTENCES[row][n - 1:n + 1])
    np.testing.assert_array_equal(imputed, trace.tokens[row, n - 1:n + 1])
  true_sents, imputed_sents = imputation.completed_sentences(out)
  np.testing.assert_array_equal(true_sents[1], SENTENCES[1][1:-1])
  assert len(imputed_sents[1]) == len(true_sents[1])
  with pytest.raises(ValueError, match="at least one word"):
    imputation.impute_endings(params, MODEL, [np.array([1, 2])])


# ----------------------------------------------------------------------------- adversarial


@pytest.fixture(scope="module")
def endings():
  rng = np.random.default_rng(0)
  draw = lambda lo, hi: [rng.integers(lo, hi, size=rng.integers(2, 6)) for _ in range(100)]
  return {"mixed": draw(4, 20), "low": draw(4, 12), "high": draw(12, 20)}


def test_identical_sets_are_indistinguishable(endings):
  out = adversarial.adversarial_error(endings["mixed"], endings["mixed"], vocab_size=24)
  assert out["unigram_error"] == pytest.approx(0.5) and out["rnn_error"] == pytest.approx(0.5)
  assert out["unigram_gap"] == pytest.approx(0.0)
  assert (out["num_train_pairs"], out["num_dev_pairs"], out["num_test_pairs"]) == (60, 10, 30)


def test_disjoint_vocabularies_are_told_apart(endings):
  out = adversarial.adversarial_error(endings["low"], endings["high"], vocab_size=24)
  assert out["unigram_error"] <= 0.05 and out["rnn_error"] <= 0.05
  assert out["rnn_gap"] >= 0.45


def test_only_the_recurrent_classifier_sees_word_order(endings):
  """The same words with a marker first (true) or last (imputed): equal bags of unigrams."""
  first = [np.concatenate([[20], s]) for s in endings["mixed"]]
  last = [np.concatenate([s, [20]]) for s in endings["mixed"]]
  out = adversarial.adversarial_error(first, last, vocab_size=24)
  assert out["unigram_error"] == pytest.approx(0.5)
  assert out["rnn_error"] <= 0.1
  with pytest.raises(ValueError, match="ids must be"):
    adversarial.adversarial_error(first, last, vocab_size=20)
