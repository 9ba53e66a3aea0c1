"""The sentence autoencoder and its objectives against an independent numpy implementation."""

import dataclasses

import jax
import numpy as np
import pytest

from mimtext import objectives
from mimtext.models import decoding
from mimtext.models import sentence_ae

CFG = sentence_ae.ModelConfig(vocab_size=11, embed_dim=5, hidden_dim=6, latent_dim=3,
                              embed_dropout=0.5)
# Rows: "<sos> 4 5 6 <eos>", "<sos> 7 <eos>", "<sos> <eos>" (empty sentence), padded with 0.
TOKENS = np.array([[1, 4, 5, 6, 2, 0], [1, 7, 2, 0, 0, 0], [1, 2, 0, 0, 0, 0]], np.int32)
LENGTHS = np.array([5, 3, 2], np.int32)


@pytest.fixture(scope="module")
def params():
  return jax.tree_util.tree_map(np.asarray, sentence_ae.init_params(jax.random.PRNGKey(0), CFG))


def _np_gru(p, xs, h):
  """Plain loop of the GRU equations of DESIGN.md (PyTorch gate order r, z, n)."""
  sig = lambda a: 1 / (1 + np.exp(-a))
  hd = h.shape[-1]
  states = []
  for x in xs:
    gi, gh = x @ p["w_i"] + p["b_i"], h @ p["w_h"] + p["b_h"]
    r = sig(gi[:hd] + gh[:hd])
    u = sig(gi[hd:2 * hd] + gh[hd:2 * hd])
    n = np.tanh(gi[2 * hd:] + r * gh[2 * hd:])
    h = (1 - u) * n + u * h
    states.append(h)
  return states, h


def _np_posterior(p, row):
  words = list(row[1:-1])
  emb = p["embed"]["table"]
  _, last = _np_gru(p["encoder"], [emb[w] for w in reversed(words)], np.zeros(CFG.hidden_dim))
  mean = last @ p["to_mean"]["w"] + p["to_mean"]["b"]
  log_var = np.maximum(last @ p["to_log_var"]["w"] + p["to_log_var"]["b"], CFG.log_var_floor)
  return mean, log_var


def _np_log_px(p, row, z):
  emb = p["embed"]["table"]
  h0 = z @ p["z_to_h0"]["w"] + p["z_to_h0"]["b"]
  inputs = [np.concatenate([emb[w], z]) for w in row[:-1]]
  states, _ = _np_gru(p["decoder"], inputs, h0)
  total = 0.0
  for h, target in zip(states, row[1:]):
    logits = h @ p["out"]["w"] + p["out"]["b"]
    m = logits.max()
    total += logits[target] - (m + np.log(np.exp(logits - m).sum()))
  return total


def _rows():
  return [TOKENS[i, :LENGTHS[i]] for i in range(len(LENGTHS))]


def test_encode_matches_numpy(params):
  post = sentence_ae.encode(params, TOKENS, LENGTHS, CFG)
  for i, row in enumerate(_rows()):
    mean, log_var = _np_posterior(params, row)
    np.testing.assert_allclose(post.mean[i], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post.log_var[i], log_var, rtol=1e-5, atol=1e-5)


def test_log_likelihood_matches_numpy_and_includes_eos(params):
  z = np.random.default_rng(0).normal(size=(3, CFG.latent_dim)).astype(np.float32)
  got = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG)
  want = [_np_log_px(params, row, z[i]) for i, row in enumerate(_rows())]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  no_eos = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG, include_eos=False)
  want_no_eos = [_np_log_px(params, row[:-1], z[i]) for i, row in enumerate(_rows())]
  np.testing.assert_allclose(no_eos, want_no_eos, rtol=1e-5, atol=1e-5)


def test_padding_and_batch_composition_do_not_change_results(params):
  z = np.ones((3, CFG.latent_dim), np.float32)
  wide = np.concatenate([TOKENS, np.full((3, 4), 9, np.int32)], axis=1)  # garbage past lengths
  for fn in (lambda t: sentence_ae.encode(params, t, LENGTHS, CFG).mean,
             lambda t: sentence_ae.sentence_log_likelihood(params, z, t, LENGTHS, CFG)):
    np.testing.assert_allclose(fn(TOKENS), fn(wide), rtol=1e-6, atol=1e-6)
  alone = sentence_ae.sentence_log_likelihood(params, z[1:2], TOKENS[1:2, :3], LENGTHS[1:2], CFG)
  together = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG)
  np.testing.assert_allclose(alone[0], together[1], rtol=1e-6)


def _objective_reference(params, name, key, beta=1.0):
  """The objective from numpy pieces and the same ε the library draws (DESIGN §3)."""
  z_key = objectives.common.step_keys(key, deterministic=True).latent
  eps = np.asarray(jax.random.normal(z_key, (1, 3, CFG.latent_dim)))[0]
  values = []
  for i, row in enumerate(_rows()):
    mean, log_var = _np_posterior(params, row)
    z = mean if name == "ae" else mean + np.exp(0.5 * log_var) * eps[i]
    log_px = _np_log_px(params, row, z)
    log_q = -0.5 * np.sum(np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var))
    log_prior = -0.5 * np.sum(np.log(2 * np.pi) + z ** 2)
    kl = 0.5 * np.sum(mean ** 2 + np.exp(log_var) - 1 - log_var)
    values.append({"mim": -(log_px + 0.5 * (log_q + log_prior)),
                   "vae": -log_px + beta * kl, "ae": -log_px}[name])
  return np.mean(values)


@pytest.mark.parametrize("name", ["mim", "vae", "ae"])
def test_objective_values_match_reference(params, name):
  key = jax.random.PRNGKey(3)
  cfg = objectives.ObjectiveConfig(model=CFG, name=name)
  batch = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(3, np.float32)}
  value, metrics = objectives.get_loss(name)(params, batch, key=key, step=0, cfg=cfg,
                                              deterministic=True)
  np.testing.assert_allclose(value, _objective_reference(params, name, key), rtol=1e-5)
  assert metrics["rec"] > 0
  # An AE reports no KL: it would be that of a σ head it never trains.
  assert ("kl" in metrics) == (name != "ae") and np.isfinite(metrics.get("kl", 0.0))


def test_filler_rows_do_not_count(params):
  cfg = objectives.ObjectiveConfig(model=CFG, name="vae")
  full = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.array([1, 1, 0], np.float32)}
  two = {"tokens": TOKENS[:2], "lengths": LENGTHS[:2], "valid": np.ones(2, np.float32)}
  key = jax.random.PRNGKey(0)
  a, _ = objectives.get_loss("ae")(params, full, key=key, step=0, cfg=cfg, deterministic=True)
  b, _ = objectives.get_loss("ae")(params, two, key=key, step=0, cfg=cfg, deterministic=True)
  np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("schedule,step,want", [
    ("constant", 0, 1.0), ("linear", 0, 0.0), ("linear", 50, 0.5), ("linear", 500, 1.0),
    ("logistic", 2500, 0.5)])
def test_kl_weight_schedules(schedule, step, want):
  cfg = objectives.ObjectiveConfig(model=CFG, name="vae", kl_schedule=schedule,
                                   kl_anneal_steps=100)
  assert float(objectives.common.kl_weight(step, cfg)) == pytest.approx(want, abs=1e-6)


def test_annealed_elbo_weights_the_kl(params):
  key = jax.random.PRNGKey(5)
  cfg = objectives.ObjectiveConfig(model=CFG, name="vae", kl_schedule="linear",
                                   kl_anneal_steps=4)
  batch = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(3, np.float32)}
  value, m = objectives.get_loss("vae")(params, batch, key=key, step=1, cfg=cfg,
                                         deterministic=True)
  np.testing.assert_allclose(value, _objective_reference(params, "vae", key, beta=0.25), rtol=1e-5)
  np.testing.assert_allclose(m["criterion"], _objective_reference(params, "vae", key), rtol=1e-5)


def test_clamped_floor_blocks_gradient_and_softplus_does_not(params):
  """The A-MIM trap of DESIGN §7: below a hard clamp the log-variance gets no gradient."""
  low = dict(params, to_log_var={"w": params["to_log_var"]["w"] * 0,
                                 "b": np.full(CFG.latent_dim, -20.0, np.float32)})
  batch = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.ones(3, np.float32)}
  grads = {}
  for mode in ("clamp", "softplus"):
    model = sentence_ae.ModelConfig(**{**CFG.__dict__, "floor_mode": mode})
    cfg = objectives.ObjectiveConfig(model=model, name="mim")
    g = jax.grad(lambda p: objectives.get_loss("mim")(
        p, batch, key=jax.random.PRNGKey(0), step=0, cfg=cfg, deterministic=True)[0])(low)
    grads[mode] = np.abs(np.asarray(g["to_log_var"]["b"])).max()
  assert grads["clamp"] == 0.0 and grads["softplus"] > 0.0
  _, metrics = objectives.get_loss("mim")(low, batch, key=jax.random.PRNGKey(0), step=0,
                                          cfg=objectives.ObjectiveConfig(model=CFG, name="mim"))
  assert float(metrics["frac_at_floor"]) == 1.0
  np.testing.assert_allclose(metrics["post_std"], np.exp(-5.0), rtol=1e-5)


def test_greedy_decode_matches_teacher_forced_argmax(params):
  z = np.random.default_rng(1).normal(size=(4, CFG.latent_dim)).astype(np.float32)
  ids, lengths = decoding.greedy_decode(params, z, CFG, max_len=8)
  ids, lengths = np.asarray(ids), np.asarray(lengths)
  for i in range(4):
    row = ids[i, :lengths[i]]
    assert (ids[i, lengths[i]:] == 0).all()
    assert lengths[i] == 8 or row[-1] == 2
    # Feeding the decoded prefix back with teacher forcing reproduces each argmax choice.
    tokens = np.concatenate([[1], row, [2]]).astype(np.int32)[None]
    logits = sentence_ae.decoder_logits(params, z[i:i + 1], tokens, np.array([len(row) + 2]), CFG)
    logits = np.array(logits)[0, :len(row)]
    logits[:, :2] = -np.inf  # <pad> and <sos> are never generated
    np.testing.assert_array_equal(logits.argmax(-1), row)


def test_embedding_dropout_is_random_only_in_training(params):
  key = jax.random.PRNGKey(0)
  a = sentence_ae.encode(params, TOKENS, LENGTHS, CFG).mean
  b = sentence_ae.encode(params, TOKENS, LENGTHS, CFG, dropout_key=key).mean
  c = sentence_ae.encode(params, TOKENS, LENGTHS, CFG, dropout_key=key).mean
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(b, c)


def test_model_config_rejects_bad_values():
  with pytest.raises(ValueError, match="floor_mode"):
    sentence_ae.ModelConfig(vocab_size=5, floor_mode="hard")
  with pytest.raises(ValueError, match="latent_dim"):
    sentence_ae.ModelConfig(vocab_size=5, latent_dim=0)


def test_wrong_shapes_name_themselves(params):
  with pytest.raises(ValueError, match=r"tokens must be \[batch, time\]"):
    sentence_ae.encode(params, TOKENS[0], LENGTHS, CFG)
  with pytest.raises(ValueError, match="lengths must be"):
    sentence_ae.encode(params, TOKENS, LENGTHS[:2], CFG)
  with pytest.raises(ValueError, match="z must be"):
    sentence_ae.sentence_log_likelihood(params, np.zeros((3, 7), np.float32), TOKENS, LENGTHS, CFG)


def test_log_var_head_can_start_at_the_floor():
  cfg = dataclasses.replace(CFG, log_var_init="floor")
  params = sentence_ae.init_params(jax.random.PRNGKey(0), cfg)
  tokens = np.array([[1, 4, 5, 2], [1, 6, 2, 0]], np.int32)
  post = sentence_ae.encode(params, tokens, np.array([4, 3]), cfg)
  np.testing.assert_array_equal(post.raw_log_var, cfg.log_var_floor)
  default = sentence_ae.init_params(jax.random.PRNGKey(0), CFG)
  assert np.all(np.asarray(default["to_log_var"]["b"]) > cfg.log_var_floor + 5)
  with pytest.raises(ValueError, match="log_var_init"):
    dataclasses.replace(CFG, log_var_init="zero")
