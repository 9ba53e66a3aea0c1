"""Issue 10: the public Python API (`mimtext.load` → `SentenceModel`) and `launch.encode`.

One toy run (4 training steps on the built-in corpus) is shared by every test; the AE and HSVAE
variants reuse its vocabulary (the AE its parameters too) without training. References are
independent of the batching under test: `runner.posterior_codes` (the evaluation's batching: full
batches of 200 rows, lengths padded to multiples of 8) and `sentence_ae.encode` on one unpadded
sentence at a time.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import run_subprocess
import mimtext
from mimtext import api
from mimtext import config as config_lib
from mimtext import experiment
from mimtext import train as train_lib
from mimtext.data import corpus as corpus_lib
from mimtext.data import pipeline
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import runner
from mimtext.models import sentence_ae

REPO = pathlib.Path(__file__).resolve().parents[1]
_TINY = {"model.embed_dim": 8, "model.hidden_dim": 16, "model.latent_dim": 4,
         "data.builtin_train_size": 64, "data.builtin_eval_size": 20, "batch_size": 16,
         "eval_batch_size": 20, "log_every_steps": 2, "num_devices": 1, "max_epochs": 0,
         "max_steps": 4}
D = 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  config = config_lib.get_config()
  for field, value in _TINY.items():
    experiment.set_config_value(config, field, value)
  path = str(tmp_path_factory.mktemp("api_run"))
  train_lib.train_and_evaluate(config, path)
  return path


@pytest.fixture(scope="module")
def model(workdir):
  return mimtext.load(workdir)


@pytest.fixture(scope="module")
def sentences(model):
  """300 sentences of 0 to ~40 words: the built-in corpus's, pairs and triples of them, odd ones."""
  corpus = experiment.load_corpus(model.config, model.vocab)
  lines = [line for split in ("train", "valid", "test") for line in corpus[split].lines]
  pairs = [f"{a} {b}" for a, b in zip(lines, lines[7:] + lines[:7])]
  triples = [f"{a} {b}" for a, b in zip(pairs, lines[3:] + lines[:3])]
  odd = ["", "zyzzyva", "the zyzzyva quux", "<unk>"]
  out = (odd + pairs + lines + triples)[:300]
  assert len(out) == 300
  return out


def _variant(model, **fields) -> api.SentenceModel:
  """The toy run with some config fields changed (and fresh parameters if the model changes)."""
  run = model.run
  config = ml_collections.ConfigDict(run.config.to_dict())
  for field, value in fields.items():
    experiment.set_config_value(config, field, value)
  model_cfg = experiment.model_config(config, run.vocab.size)
  params = (run.params if model_cfg == run.model_cfg
            else sentence_ae.init_params(jax.random.PRNGKey(3), model_cfg))
  return api.SentenceModel(dataclasses.replace(run, config=config, model_cfg=model_cfg,
                                               params=params))


# ----------------------------------------------------------------------------- package


def test_import_mimtext_does_not_import_jax_until_load_is_touched():
  code = ("import sys, mimtext; assert 'jax' not in sys.modules, 'jax imported'; "
          "assert 'load' in dir(mimtext); print(mimtext.__version__)")
  proc = run_subprocess([sys.executable, "-c", code], 40, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  assert mimtext.load is api.load and mimtext.SentenceModel is api.SentenceModel
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    mimtext.nope  # pylint: disable=pointless-statement


def test_properties_and_repr(model, workdir):
  assert model.latent_dim == D and model.step == 4 and model.workdir == workdir
  assert model.objective == "mim" and model.config.model.latent_dim == D
  assert model.vocab.size > 4 and "embed" in model.params
  text = repr(model)
  assert "\n" not in text and "objective='mim'" in text and "latent_dim=4" in text


# ----------------------------------------------------------------------------- encode


def test_encode_matches_the_evaluation_pipeline_in_input_order(model, sentences):
  mean, std = model.encode(sentences, batch_size=128)
  assert mean.shape == std.shape == (300, D) and mean.dtype == np.float32
  ids = model.tokenize(sentences)
  split = corpus_lib.CorpusSplit(lines=list(sentences), ids=ids)
  np.testing.assert_allclose(mean, runner.posterior_codes(model.run, split), atol=1e-5)
  # Another batching (7 rows: 43 batches of several lengths) and a reversed input.
  mean_7, std_7 = model.encode(sentences, batch_size=7)
  np.testing.assert_allclose(mean_7, mean, atol=1e-5)
  np.testing.assert_allclose(std_7, std, atol=1e-5)
  np.testing.assert_allclose(model.encode(sentences[::-1], batch_size=128)[0], mean[::-1],
                             atol=1e-5)
  assert len({tuple(np.round(row, 4)) for row in mean}) > 100  # rows differ: order is tested
  assert np.all(std > 0)


def test_encode_matches_one_unpadded_sentence_at_a_time(model, sentences):
  picks = [0, 2, 150, 299]  # empty, unknown words, a corpus line, a triple
  mean, std = model.encode([sentences[i] for i in picks], batch_size=4)
  encode = jax.jit(sentence_ae.encode, static_argnames=("cfg",))
  for row, i in enumerate(picks):
    ids = model.vocab.encode(sentences[i])
    post = encode(model.params, jnp.asarray(ids)[None], jnp.asarray([len(ids)]),
                  cfg=model.model_config)
    np.testing.assert_allclose(mean[row], post.mean[0], atol=1e-5, err_msg=sentences[i])
    np.testing.assert_allclose(std[row], jnp.exp(0.5 * post.log_var[0]), atol=1e-5)


def test_encode_empty_list_and_bad_input(model):
  mean, std = model.encode([])
  assert mean.shape == std.shape == (0, D)
  with pytest.raises(TypeError, match="list of strings"):
    model.encode("the cat sat")
  with pytest.raises(TypeError, match=r"sentences\[1\] must be a string"):
    model.encode(["a", 3])


def test_unknown_words_are_read_as_unk_and_counted(model):
  word = model.vocab.tokens[10]
  assert model.unknown_words([f"zyzzyva {word} zyzzyva quux <unk>", word]) == {
      "zyzzyva": 2, "quux": 1}
  assert list(model.tokenize([f"zyzzyva {word}"])[0]) == [
      vocab_lib.SOS_ID, vocab_lib.UNK_ID, model.vocab.id(word), vocab_lib.EOS_ID]
  a, _ = model.encode([f"zyzzyva {word}", f"<unk> {word}", f"quux {word}"])
  np.testing.assert_array_equal(a[0], a[1])
  np.testing.assert_array_equal(a[0], a[2])


def test_hsvae_mean_is_the_deterministic_code_and_ae_has_no_std(model, sentences):
  hsvae = _variant(model, **{"objective.name": "hsvae", "model.posterior": "hsvae"})
  mean, _ = hsvae.encode(sentences[:20])
  ids = hsvae.tokenize(sentences[:20])
  split = corpus_lib.CorpusSplit(lines=sentences[:20], ids=ids)
  np.testing.assert_allclose(mean, runner.posterior_codes(hsvae.run, split), atol=1e-5)
  post_mean = sentence_ae.encode(hsvae.params, *_one_batch(ids), hsvae.model_config).mean[:20]
  assert not np.allclose(mean, post_mean, atol=1e-3)  # (1 − E γ) μ, not μ
  ae = _variant(model, **{"objective.name": "ae"})
  ae_mean, ae_std = ae.encode(sentences[:20])
  np.testing.assert_allclose(ae_mean, model.encode(sentences[:20])[0], atol=1e-6)
  assert np.all(ae_std == 0)


def _one_batch(ids):
  batch = pipeline.make_batch(ids, np.arange(len(ids)), pad_multiple=16)
  return jnp.asarray(batch["tokens"]), jnp.asarray(batch["lengths"])


def test_batches_have_few_shapes_and_cover_every_example(model, sentences):
  ids = model.tokenize(sentences)
  seen, shapes = [], set()
  for batch in api.batches(ids, 128):
    shapes.add(batch["tokens"].shape)
    seen += [int(i) for i in batch["index"] if i >= 0]
    assert batch["tokens"].shape[1] % 16 == 0
  assert sorted(seen) == list(range(300))
  assert {rows for rows, _ in shapes} == {128, 64}  # 300 = 128 + 128 + 44 (padded to 64)
  assert api.row_bucket(3, 256) == 8 and api.row_bucket(5, 4 + 1) == 5


# ----------------------------------------------------------------------------- text out


def test_reconstruct_sample_and_interpolate_return_one_string_each(model, sentences):
  # Every decode has 8 rows (5 sentences pad to 8), so few programs compile.
  picks = sentences[4:9]
  for mode in ("mean", "sample"):
    out = model.reconstruct(picks, mode)
    assert len(out) == 5 and all(isinstance(s, str) for s in out)
  assert model.reconstruct([]) == []
  assert len(model.reconstruct(picks[:2], method="beam", beam_width=3)) == 2
  assert model.reconstruct(picks, "sample", method="sample", seed=4) == model.reconstruct(
      picks, "sample", method="sample", seed=4)
  with pytest.raises(ValueError, match="mode must be one of"):
    model.reconstruct(picks, "median")

  assert len(model.sample(8)) == 8 and model.sample(0) == []
  assert len(model.sample(8, 0.5, method="sample", seed=1)) == 8
  assert len(model.sample(8, prior="model")) == 8
  with pytest.raises(ValueError, match="std is the scale"):
    model.sample(2, 0.5, prior="posthoc")

  path = model.interpolate(picks[0], picks[1], n=8)
  assert len(path) == 8
  # The ends are the codes themselves: the path starts and ends on the mean reconstructions.
  assert [path[0], path[-1]] == model.reconstruct(picks[:2])
  with pytest.raises(ValueError, match="n must be >= 2"):
    model.interpolate(picks[0], picks[1], n=1)


def test_decode_checks_the_code_shape(model):
  assert len(model.decode(np.zeros((8, D)))) == 8
  with pytest.raises(AssertionError):
    model.decode(np.zeros((8, D + 1)))
  with pytest.raises(AssertionError):
    model.decode(np.zeros(D))


def test_posthoc_samples_fit_and_save_the_prior(model, workdir):
  texts = model.sample(8, prior="posthoc", seed=2)
  assert len(texts) == 8
  assert os.path.exists(os.path.join(workdir, "posthoc_prior.json"))
  _, info = model.posthoc_prior()
  assert info["step"] == 4 and info["num_codes"] == 64


# ----------------------------------------------------------------------------- bounds


def test_log_likelihood_bounds_per_corpus_and_per_sentence(model, sentences):
  picks = sentences[:24]
  out = model.log_likelihood_bounds(picks, num_samples=20, iw_samples=20, batch_size=32)
  for key in ("N", "rec", "kl", "elbo_nll", "iw_nll", "melbo_nll", "iw_ppl", "elbo_ppl_no_eos"):
    assert key in out, key
  assert out["N"] == 24 and "bounds_skipped" not in out
  for key in ("reconstruction", "elbo", "iw", "posthoc_iw"):
    assert out[key].shape == (24,) and np.all(np.isfinite(out[key])), key
  np.testing.assert_allclose(np.mean(out["posthoc_iw"]), out["posthoc_iw_nll"], rtol=1e-6)
  valid = {b: out[f"{b}_nll"] for b in ("elbo", "iw", "posthoc_iw")}
  assert out["bound"] == min(valid, key=valid.get) and out["nll_bound"] == min(valid.values())
  np.testing.assert_allclose(np.mean(out["elbo"]), out["elbo_nll"], rtol=1e-6)
  np.testing.assert_allclose(np.mean(out["iw"]), out["iw_nll"], rtol=1e-6)
  assert np.all(out["elbo"] >= out["reconstruction"] - 1e-6)  # KL ≥ 0
  assert np.all(out["iw"] > 0)
  # The importance-weighted bound is tighter than the ELBO in expectation (averaged over 24).
  assert out["iw_nll"] <= out["elbo_nll"] + 0.05, (out["iw_nll"], out["elbo_nll"])
  # Same seed, same numbers.
  again = model.log_likelihood_bounds(picks, num_samples=20, iw_samples=20, batch_size=32)
  np.testing.assert_array_equal(again["iw"], out["iw"])
  with pytest.raises(ValueError, match="at least one sentence"):
    model.log_likelihood_bounds([])


def test_ae_bounds_say_there_is_no_bound_of_its_own_and_give_the_posthoc_one(model, sentences,
                                                                             tmp_path):
  ae = _variant(model, **{"objective.name": "ae"})
  out = ae.log_likelihood_bounds(sentences[:10], batch_size=16, posthoc=False)
  assert "bounds_skipped" in out and "AE" in out["bounds_skipped"]
  assert "elbo" not in out and "iw" not in out and "iw_nll" not in out and "bound" not in out
  assert out["reconstruction"].shape == (10,)
  np.testing.assert_allclose(np.mean(out["reconstruction"]), out["rec"], rtol=1e-6)
  # Its post-hoc prior is its own (fitted in a copy of the run directory, not the sMIM's file).
  shutil.copytree(model.run.workdir, tmp_path / "ae", ignore=shutil.ignore_patterns(
      "posthoc_prior.json"))
  ae = api.SentenceModel(dataclasses.replace(ae.run, workdir=str(tmp_path / "ae")))
  out = ae.log_likelihood_bounds(sentences[:10], batch_size=16)
  assert out["bound"] == "posthoc_iw" and out["posthoc_iw"].shape == (10,)
  assert np.all(np.isfinite(out["posthoc_iw"])) and out["nll_bound"] == out["posthoc_iw_nll"]


# ----------------------------------------------------------------------------- launch.encode


def test_launch_encode_writes_one_row_per_line(model, workdir, tmp_path):
  words = model.vocab.tokens[10:13]
  lines = [f"{words[0]} zyzzyva {words[1]}", "", words[2], "   "]
  text = tmp_path / "in.txt"
  text.write_text("\n".join(lines) + "\n", encoding="utf-8")
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"))

  def run(*args):
    return run_subprocess([sys.executable, "-m", "launch.encode", f"--workdir={workdir}", *args],
                          200, cwd=REPO, env=env)

  missing = run(f"--input={tmp_path / 'nope.txt'}", f"--output={tmp_path / 'x.npy'}")
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines() == [f"FATAL: --input={tmp_path / 'nope.txt'}: "
                                                 "no such file"], missing.stderr

  out, std_out = tmp_path / "emb", tmp_path / "std.npy"   # no .npy suffix added to --output
  proc = run(f"--input={text}", f"--output={out}", f"--std_output={std_out}", "--batch_size=2")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == f"wrote 4×{D} embeddings to {out}"
  assert "2 blank line(s) encoded as the empty sentence (lines 2, 4)" in proc.stderr
  assert "1 word(s) not in the vocabulary read as <unk>" in proc.stderr
  assert "encode: 100%" in proc.stderr
  mean, std = model.encode(lines)
  np.testing.assert_allclose(np.load(out), mean, atol=1e-5)
  np.testing.assert_allclose(np.load(std_out), std, atol=1e-5)
