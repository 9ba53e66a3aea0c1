"""sMIM / sVAE / AE options that reproduce the official sentenceMIM code (seed 000, issue 6).

The reference below is a small numpy transcription of the official PyTorch model's forward pass
and A-MIM loss (seraphlabs-ca/SentenceMIM-demo: model.py, train.py, test.py, datasets.py), written
from their semantics, not their text, and fed the same weights as mimtext:
- a data row is `input = <sos> w_1 … w_n`, `target = w_1 … w_n <eos>`, `length = n + 1`;
- the encoder reads `input` reversed within `length` (w_n … w_1 <sos>, <sos> last), with no dropout;
  μ and log σ² are linear maps of its last state, log σ² clamped at −10;
- the decoder's initial state is linear(z) (no tanh), its input at each step [embedding; z];
- A-MIM (train.py): (Σ_tokens NLL + log B − ½ Σ_i [log q(z_i|x_i) + log N(z_i; 0, I)]) / B;
- test.py's numerator leaves out the <eos> term.
The GRU follows PyTorch's gate order r, z, n with PyTorch-layout weights ([3h, in]).
"""

import math
import pathlib
import re

import jax
import numpy as np
import pytest

from mimtext import nn
from mimtext import objectives
from mimtext.data import vocab as vocab_lib
from mimtext.models import sentence_ae
from mimtext.objectives import common
from mimtext.objectives import mim

V, E, H, D = 12, 5, 7, 3
OFFICIAL = dict(encoder_reads_sos=True, embed_dropout_scope="decoder")
CFG = sentence_ae.ModelConfig(vocab_size=V, embed_dim=E, hidden_dim=H, latent_dim=D,
                              embed_dropout=0.5, **OFFICIAL)
PAD, SOS, EOS = vocab_lib.PAD_ID, vocab_lib.SOS_ID, vocab_lib.EOS_ID
# Three sentences of 4, 2 and 1 words, padded, and a filler row (valid 0) as the pipeline makes.
TOKENS = np.array([[SOS, 4, 5, 6, 7, EOS, PAD],
                   [SOS, 8, 9, EOS, PAD, PAD, PAD],
                   [SOS, 10, EOS, PAD, PAD, PAD, PAD],
                   [SOS, EOS, PAD, PAD, PAD, PAD, PAD]], np.int32)
LENGTHS = np.array([6, 4, 3, 2], np.int32)
VALID = np.array([1, 1, 1, 0], np.float32)
REAL = 3
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
  p = jax.tree_util.tree_map(np.asarray, sentence_ae.init_params(jax.random.PRNGKey(7), CFG))
  # A log-variance head whose first dimension sits below the −10 floor (the official clamp).
  p["to_log_var"] = {"w": 0.3 * p["to_log_var"]["w"], "b": np.array([-12.0, 0.3, -1.0], np.float32)}
  return p


# ----------------------------------------------------------------------------- numpy reference


def _torch_layout(p):
  """mimtext params (input-major w [in, out]) → the official model's tensors (nn.Linear [out, in],
  nn.GRU weight_ih_l0 [3h, e], weight_hh_l0 [3h, h]), as float64 numpy arrays."""
  f = lambda x: np.asarray(x, np.float64)
  gru = lambda q: {"weight_ih": f(q["w_i"]).T, "weight_hh": f(q["w_h"]).T,
                   "bias_ih": f(q["b_i"]), "bias_hh": f(q["b_h"])}
  linear = lambda q: {"weight": f(q["w"]).T, "bias": f(q["b"])}
  return {"embedding": f(p["embed"]["table"]), "encoder_rnn": gru(p["encoder"]),
          "decoder_rnn": gru(p["decoder"]), "hidden2mean": linear(p["to_mean"]),
          "hidden2logv": linear(p["to_log_var"]), "latent2hidden": linear(p["z_to_h0"]),
          "outputs2vocab": linear(p["out"])}


def _linear(q, x):
  return q["weight"] @ x + q["bias"]


def _gru(q, xs, h):
  """torch.nn.GRU over one sequence: r, z, n gates; returns (outputs, last state)."""
  sig = lambda a: 1.0 / (1.0 + np.exp(-a))
  hd = h.shape[0]
  outputs = []
  for x in xs:
    gi = q["weight_ih"] @ x + q["bias_ih"]
    gh = q["weight_hh"] @ h + q["bias_hh"]
    r = sig(gi[:hd] + gh[:hd])
    u = sig(gi[hd:2 * hd] + gh[hd:2 * hd])
    n = np.tanh(gi[2 * hd:] + r * gh[2 * hd:])
    h = (1.0 - u) * n + u * h
    outputs.append(h)
  return outputs, h


def _official_item(row, length):
  """datasets.PTB item of a mimtext row `<sos> w… <eos>` (length n + 2): input, target, n + 1."""
  row = list(row[:length])
  return row[:-1], row[1:], length - 1


def _official_posterior(t, inp, length, min_logv=-10.0):
  """model.forward's encoder: reverse_padded_sequence, packed GRU, linear heads, clamp."""
  reversed_input = inp[:length][::-1]
  _, h = _gru(t["encoder_rnn"], [t["embedding"][w] for w in reversed_input], np.zeros(H))
  mean = _linear(t["hidden2mean"], h)
  logv = np.maximum(_linear(t["hidden2logv"], h), min_logv)
  return mean, logv


def _official_log_px(t, inp, target, length, z, eos_term=True):
  """model.forward's decoder and the NLL: h0 = latent2hidden(z), input [embedding; z].

  eos_term=False is test.py's numerator (its <eos> targets become padding, ignored by the NLL).
  """
  xs = [np.concatenate([t["embedding"][w], z]) for w in inp[:length]]
  outputs, _ = _gru(t["decoder_rnn"], xs, _linear(t["latent2hidden"], z))
  total = 0.0
  for h, y in zip(outputs, target[:length]):
    if y == EOS and not eos_term:
      continue
    logits = _linear(t["outputs2vocab"], h)
    m = logits.max()
    total += logits[y] - m - np.log(np.exp(logits - m).sum())
  return total


def _normal_log_prob(z, mean, logv):
  return np.sum(-0.5 * (z - mean) ** 2 / np.exp(logv) - 0.5 * logv - 0.5 * np.log(2 * np.pi))


def _official_amim_loss(t, rows, zs):
  """train.py's loss_fn with args.mim, divided by the batch size as its training loop does."""
  batch_size = len(rows)
  nll, kl = 0.0, 0.0
  for (inp, target, length), z in zip(rows, zs):
    mean, logv = _official_posterior(t, inp, length)
    nll -= _official_log_px(t, inp, target, length, z)
    kl += -0.5 * (_normal_log_prob(z, mean, logv) + _normal_log_prob(z, 0.0, 0.0))
  nll += np.log(batch_size)
  return (nll + kl) / batch_size


def _official_rows():
  return [_official_item(TOKENS[i], LENGTHS[i]) for i in range(REAL)]


# ---------------------------------------------------------------------------- against the reference


def test_posterior_and_log_likelihood_match_the_official_forward_pass(params):
  t = _torch_layout(params)
  post = sentence_ae.encode(params, TOKENS, LENGTHS, CFG)
  z = np.random.default_rng(0).normal(size=(len(TOKENS), D)).astype(np.float32)
  with_eos = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG)
  without_eos = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG,
                                                    include_eos=False)
  for i, (inp, target, length) in enumerate(_official_rows()):
    mean, logv = _official_posterior(t, inp, length)
    np.testing.assert_allclose(post.mean[i], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post.log_var[i], logv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(with_eos[i], _official_log_px(t, inp, target, length, z[i]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        without_eos[i], _official_log_px(t, inp, target, length, z[i], eos_term=False),
        rtol=1e-5, atol=1e-5)
  assert np.all(post.log_var[:REAL, 0] == -10.0)  # the clamp is active in this fixture


def test_amim_loss_with_the_batch_constant_matches_the_official_loss(params):
  key = jax.random.PRNGKey(11)
  cfg = objectives.ObjectiveConfig(model=CFG, name="mim", mim_batch_constant=True)
  batch = {"tokens": TOKENS, "lengths": LENGTHS, "valid": VALID}
  value, metrics = mim.loss(params, batch, key=key, step=0, cfg=cfg, deterministic=True)
  # The z the library draws (keys as in the loss), passed to the reference as model.forward does.
  post = sentence_ae.encode(params, TOKENS, LENGTHS, CFG)
  zs = np.asarray(mim.LATENTS.sample(common.step_keys(key, True).latent, post, cfg, 1).z[0])
  want = _official_amim_loss(_torch_layout(params), _official_rows(), zs[:REAL])
  np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)
  # B counts the valid sentences only; the criterion is Algorithm 1's value without the constant.
  np.testing.assert_allclose(metrics["batch_constant"], math.log(REAL) / REAL, rtol=1e-6)
  np.testing.assert_allclose(metrics["criterion"], want - math.log(REAL) / REAL,
                             rtol=1e-5, atol=1e-5)


def test_batch_constant_is_log_b_over_b_of_the_valid_rows_and_off_by_default(params):
  assert float(mim.batch_constant(np.array([1, 1, 1, 1, 0, 0], np.float32))) == pytest.approx(
      math.log(4) / 4)
  assert float(mim.batch_constant(np.ones(20, np.float32))) == pytest.approx(0.14978661)
  assert float(mim.batch_constant(np.array([1, 0], np.float32))) == 0.0
  assert jax.grad(lambda v: mim.batch_constant(v))(np.ones(3, np.float32)).tolist() == [0.0] * 3
  batch = {"tokens": TOKENS, "lengths": LENGTHS, "valid": VALID}
  key = jax.random.PRNGKey(2)
  off, m_off = mim.loss(params, batch, key=key, step=0, deterministic=True,
                        cfg=objectives.ObjectiveConfig(model=CFG, name="mim"))
  assert "batch_constant" not in m_off and float(off) == float(m_off["criterion"])


# ----------------------------------------------------------------------------- semantics


def test_encoder_reads_sos_last(params):
  """With encoder_reads_sos the reversed encoder takes one more GRU step, on <sos>, after w_1."""
  plain = sentence_ae.ModelConfig(vocab_size=V, embed_dim=E, hidden_dim=H, latent_dim=D)
  words_only = sentence_ae.encoder_summary(params, TOKENS, LENGTHS, plain)
  with_sos = sentence_ae.encoder_summary(params, TOKENS, LENGTHS, CFG)
  sos = params["embed"]["table"][SOS][None]
  step = nn.gru_cell(params["encoder"], nn.gru_input_projection(params["encoder"], sos),
                     words_only)
  np.testing.assert_allclose(with_sos, step, rtol=1e-5, atol=1e-6)
  # The <sos> embedding reaches the summary only when the encoder reads it.
  moved = dict(params, embed={"table": params["embed"]["table"].copy()})
  moved["embed"]["table"][SOS] += 1.0
  assert not np.allclose(sentence_ae.encoder_summary(moved, TOKENS, LENGTHS, CFG), with_sos)
  np.testing.assert_array_equal(sentence_ae.encoder_summary(moved, TOKENS, LENGTHS, plain),
                                words_only)


def test_decoder_scope_leaves_the_encoder_without_dropout(params):
  key = jax.random.PRNGKey(5)
  z = np.zeros((len(TOKENS), D), np.float32)
  both = sentence_ae.ModelConfig(vocab_size=V, embed_dim=E, hidden_dim=H, latent_dim=D,
                                 embed_dropout=0.5, encoder_reads_sos=True)
  clean = sentence_ae.encoder_summary(params, TOKENS, LENGTHS, CFG)
  np.testing.assert_array_equal(
      sentence_ae.encoder_summary(params, TOKENS, LENGTHS, CFG, dropout_key=key), clean)
  assert not np.allclose(
      sentence_ae.encoder_summary(params, TOKENS, LENGTHS, both, dropout_key=key), clean)
  # The decoder's input embeddings are still dropped.
  dec = lambda k: sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG,
                                                      dropout_key=k)
  assert not np.allclose(dec(key), dec(None))


def test_library_defaults_are_unchanged_and_values_are_checked():
  cfg = sentence_ae.ModelConfig(vocab_size=V)
  assert not cfg.encoder_reads_sos and cfg.embed_dropout_scope == "both"
  assert not objectives.ObjectiveConfig(model=cfg).mim_batch_constant
  with pytest.raises(ValueError, match="embed_dropout_scope"):
    sentence_ae.ModelConfig(vocab_size=V, embed_dropout_scope="encoder")


# ----------------------------------------------------------------------------- configs


PTB_CONFIGS = ["ptb_smim_16", "ptb_smim_128", "ptb_smim_512", "ptb_svae_16", "ptb_svae_128",
               "ptb_svae_512", "ptb_svae_kl_16", "ptb_svae_kl_128", "ptb_svae_kl_512", "ptb_ae_512"]
# Fields the header names in its paper sentence rather than by their flag name.
FROM_THE_PAPER = {"data.corpus", "model.latent_dim", "objective.name", "objective.kl_schedule",
                  "objective.kl_anneal_steps"}
TABLE2_MELBO = {("smim", 16): ("98.35", "76.3"), ("smim", 128): ("75.58", "27.93"),
                ("smim", 512): ("67.46", "19.53"), ("svae", 16): ("113.46", "148.18"),
                ("svae", 128): ("114.96", "158.31"), ("svae", 512): ("116.76", "171.37")}


@pytest.mark.parametrize("name", PTB_CONFIGS)
def test_ptb_configs_follow_the_official_code_and_name_their_sources(name):
  text = (REPO / "launch" / "configs" / f"{name}.flags").read_text(encoding="utf-8")
  header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
  flags = dict(re.findall(r"^--config\.([\w.]+)=(.*)$", text, flags=re.M))
  family = name[len("ptb_"):].rsplit("_", 1)[0]
  assert flags["model.encoder_reads_sos"] == "True"
  assert flags["model.embed_dropout_scope"] == "decoder"
  assert flags["optimizer.clip_norm"] == "0.25"
  assert flags["data.max_len"] == "99" and flags["data.overflow"] == "truncate"
  assert flags["data.min_count"] == "2"
  assert flags.get("objective.mim_batch_constant") == ("True" if family == "smim" else None)
  for field in set(flags) - FROM_THE_PAPER:
    assert field in header, f"{name}: no source for {field}"
  assert "seraphlabs-ca/SentenceMIM-demo" in header and "seed 000 §4.2" in header
  assert f"python -m launch.train --flagfile=launch/configs/{name}.flags" in header
  if family == "ae":
    assert "Table 7" in header and "0.637" in header
  else:
    latent = int(name.rsplit("_", 1)[1])
    nll, ppl = TABLE2_MELBO[("smim" if family == "smim" else "svae", latent)]
    assert "Table 2" in header and f"NLL {nll}, PPL {ppl}" in header
    assert "numerator without <eos>, denominator with" in header
