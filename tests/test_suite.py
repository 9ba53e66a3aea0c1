"""evaluation.suite sections: on stand-in posteriors (what a section does when a number is undefined
or the family's KL differs from N(0, I)'s), and end to end on a toy HSVAE run."""

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mimtext import config as config_lib
from mimtext import experiment
from mimtext import objectives
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import encoding
from mimtext.evaluation import information
from mimtext.evaluation import posthoc_prior
from mimtext.evaluation import runner
from mimtext.evaluation import suite
from mimtext.models import sentence_ae


def _context(config_name: str = "mim") -> suite.Context:
  config = config_lib.get_config()
  config.objective.name = config_name
  model_cfg = experiment.model_config(config, 12)
  run = runner.Run("/nowhere", config, None, model_cfg,
                   jax.eval_shape(lambda: sentence_ae.init_params(jax.random.PRNGKey(0),
                                                                  model_cfg)), 7)
  return suite.Context(run, None, "test", None, suite.Options(), "/nowhere")


def test_info_skips_the_gaussian_entropy_of_a_singular_sample(monkeypatch):
  """Fewer codes than dimensions (500 PTB sentences, a 512-d AE): the Gaussian fit's entropy is
  -inf, so the section names why it is missing instead of failing the evaluation."""
  d = _context().run.model_cfg.latent_dim
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(d // 2, d)).astype(np.float32)
  log_var = np.full_like(codes, -2.0)
  post = sentence_ae.Posterior(codes, log_var, log_var)
  monkeypatch.setattr(encoding, "encode_sentences", lambda params, cfg, examples, **kw: post)
  split = type("Split", (), {"head": lambda self, n: self, "ids": [None] * (d // 2)})()
  ctx = _context()
  ctx.split = split
  out = suite.section_info(ctx)
  assert "gaussian_entropy_of_codes" not in out
  assert "singular" in out["gaussian_entropy_of_codes_skipped"]
  assert math.isfinite(out["kraskov_entropy"]) and math.isfinite(out["mutual_information"])


# ------------------------------------------------------------------ info: the family's KL and MI


def _stand_in_info(monkeypatch, name: str, n: int = 40, **config_fields):
  """section_info of a stand-in `name` run on n random posteriors: (output, posteriors, ctx)."""
  ctx = _context(name)
  for field, value in config_fields.items():
    experiment.set_config_value(ctx.run.config, field, value)
  ctx.run.model_cfg = experiment.model_config(ctx.run.config, 12)
  d = ctx.run.model_cfg.latent_dim
  rng = np.random.default_rng(1)
  mean = rng.normal(size=(n, d)).astype(np.float32)
  log_var = rng.uniform(-2.0, 0.0, size=(n, d)).astype(np.float32)
  beta = None
  if ctx.run.model_cfg.posterior == "hsvae":
    beta = tuple(rng.uniform(0.5, 3.0, size=(n, d)).astype(np.float32) for _ in range(2))
  post = sentence_ae.Posterior(mean, log_var, log_var, *(beta or ()))
  monkeypatch.setattr(encoding, "encode_sentences", lambda params, cfg, examples, **kw: post)
  ctx.split = type("Split", (), {"head": lambda self, k: self, "ids": [None] * n})()
  return suite.section_info(ctx), post, ctx


def test_info_kl_of_matvae_is_its_family_kl_against_the_spike_and_slab(monkeypatch):
  """MAT-VAE's KL is to its spike-and-slab prior (the family's Monte Carlo KL over the same
  draws), not the closed form against N(0, I); no closed form per dimension, said so."""
  out, post, ctx = _stand_in_info(monkeypatch, "matvae")
  cfg = ctx.run.obj_cfg
  family = objectives.latent_family(cfg)
  draw = family.sample(jax.random.PRNGKey(ctx.options.seed), post, cfg,
                       ctx.options.num_z_samples)
  expected = float(np.mean(np.asarray(family.kl(post, draw, cfg), np.float64)))
  assert out["kl_total"] == pytest.approx(expected, rel=1e-5)
  against_standard_normal = float(information.kl_per_dimension(post.mean, post.log_var).sum())
  assert abs(out["kl_total"] - against_standard_normal) > 0.1
  assert "kl_per_dimension" not in out and "closed form" in out["kl_per_dimension_skipped"]
  assert "Monte Carlo" in out["kl_estimate"]
  # Its q(z|x) is Gaussian: the MI is estimated (from the family's first draw).
  assert math.isfinite(out["mutual_information"]) and "mi_skipped" not in out


def test_info_kl_of_a_gaussian_family_is_closed_form_per_dimension(monkeypatch):
  out, post, _ = _stand_in_info(monkeypatch, "vae")
  per_dim = information.kl_per_dimension(post.mean, post.log_var)
  np.testing.assert_allclose(out["kl_per_dimension"], per_dim, rtol=1e-5)
  assert out["kl_total"] == pytest.approx(float(per_dim.sum()), rel=1e-5)
  assert out["kl_estimate"] == "closed form"


def test_info_of_hsvae_skips_mi_and_kl_per_dimension_each_with_its_own_reason(monkeypatch):
  out, _, _ = _stand_in_info(monkeypatch, "hsvae", **{"model.posterior": "hsvae"})
  assert "Gaussian q(z|x)" in out["mi_skipped"] and "mutual_information" not in out
  assert "KL" in out["kl_per_dimension_skipped"] and "KL" not in out["mi_skipped"]
  assert math.isfinite(out["kl_total"])


def test_info_of_an_ae_skips_mi_and_kl(monkeypatch):
  out, _, _ = _stand_in_info(monkeypatch, "ae")
  assert "deterministic" in out["mi_skipped"] and "no prior" in out["kl_skipped"]
  assert "kl_total" not in out
  assert "KL skipped (an AE has no prior" in suite.one_line_summary("info", out)


# ------------------------------------------------------------------ classify on separable codes


def test_section_classify_recovers_separable_topics_with_the_frozen_encoder_classifier(
    monkeypatch):
  """The two-layer classifier of section_classify (seed 004 §4.2, default settings) on codes whose
  3 topics are linearly separable: well above the majority rate. (Stand-in codes: the trained
  fixtures of the tests are 4-step toys whose codes carry no topic.)"""
  rng = np.random.default_rng(0)
  n, d = 600, _context().run.model_cfg.latent_dim
  labels = rng.integers(3, size=n).astype(np.int32)
  mean = (4.0 * np.eye(3, d)[labels] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
  log_var = np.full_like(mean, 2 * np.log(0.3))
  post = sentence_ae.Posterior(mean, log_var, log_var)
  split = type("Split", (), {"labels": labels, "lines": ["a b"] * n, "ids": [None] * n})()
  monkeypatch.setattr(suite, "_labelled_splits", lambda ctx: {"synthetic": split,
                                                             "absent": "no such corpus"})
  monkeypatch.setattr(encoding, "encode_sentences", lambda params, cfg, examples, **kw: post)
  ctx = _context("vae")
  ctx.run.vocab = vocab_lib.Vocabulary(vocab_lib.SPECIAL_TOKENS + ("a", "b"))
  ctx.options.progress = False
  out = suite.section_classify(ctx)
  result = out["synthetic"]
  assert result["accuracy"] > 0.9 and result["majority_rate"] < 0.5, result
  assert result["num_classes"] == 3 and "gamma_figure" not in result     # a Gaussian head
  assert out["absent"] == {"skipped": "no such corpus"}


# ------------------------------------------------------------------ end to end on a toy HSVAE


_TINY_HSVAE = {"objective.name": "hsvae", "model.posterior": "hsvae", "model.embed_dim": 8,
               "model.hidden_dim": 16, "model.latent_dim": 4, "data.builtin_train_size": 64,
               "data.builtin_eval_size": 20, "batch_size": 16, "eval_batch_size": 20,
               "log_every_steps": 2, "num_devices": 1, "max_epochs": 0, "max_steps": 4}


@pytest.fixture(scope="module")
def hsvae_suite(tmp_path_factory):
  """A 4-step HSVAE on the built-in corpus at a toy size, every section but qa run on its test
  split (no external corpora: data_root is an empty directory) and the Markdown report written."""
  from mimtext import train as train_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.get_config()
  for field, value in _TINY_HSVAE.items():
    experiment.set_config_value(config, field, value)
  workdir = str(tmp_path_factory.mktemp("hsvae_run"))
  train_lib.train_and_evaluate(config, workdir)
  run = runner.load_run(workdir)
  corpus = experiment.load_corpus(run.config, run.vocab)
  options = suite.Options(num_z_samples=2, iw_samples=2, batch_size=20, histogram_sentences=8,
                          melbo_subsets=3, classify_max_sentences=200, progress=False,
                          data_root=str(tmp_path_factory.mktemp("no_corpora")))
  results = suite.run_suite(run, corpus, "test", corpus.splits["test"], suite.SECTIONS, options,
                            log=lambda line: None)
  path = suite.write_markdown(results, f"{workdir}/report_test.md", split="test",
                              corpus=corpus.name, workdir=workdir)
  with open(path, encoding="utf-8") as f:
    markdown = f.read()
  return run, results, markdown


def test_hsvae_suite_takes_the_hsvae_skip_paths(hsvae_suite):
  run, results, _ = hsvae_suite
  info, hist = results["info"], results["histograms"]
  assert "Gaussian q(z|x)" in info["mi_skipped"] and "KL" in info["kl_per_dimension_skipped"]
  assert math.isfinite(info["kl_total"]) and "Monte Carlo" in info["kl_estimate"]
  assert "spike-and-slab" in hist["log_q_skipped"] and "log_q_same_mean" not in hist
  assert "yahoo" in results["qa"]["skipped"].lower()
  b = results["bounds"]
  assert "exact draws of the model's prior" in b["prior"] and "hsvae" in b["prior"]
  assert 0.0 < b["prior_distinct"] <= 1.0 and "prior_std" not in b
  # One definition of the corpus's entropy: the melbo section's is the bounds section's.
  melbo = results["melbo"]
  assert melbo["true_nll"] == b["true_nll"] and melbo["true_nll_stderr"] == b["true_nll_stderr"]
  assert "not a bound" in melbo["note"]
  for name in ("info", "histograms", "melbo", "qa", "classify"):
    assert suite.one_line_summary(name, results[name])
  assert "not a bound on the model's NLL" in suite.one_line_summary("melbo", melbo)
  assert "MELBO − true entropy" in suite.one_line_summary("melbo", melbo)


def test_hsvae_suite_writes_the_gamma_heat_map(hsvae_suite):
  run, results, markdown = hsvae_suite
  builtin = results["classify"]["builtin"]
  png = os.path.join(run.workdir, builtin["gamma_figure"])
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert f"]({builtin['gamma_figure']})" in markdown
  assert "yahoo_topic" in results["classify"] and "skipped" in results["classify"]["dbpedia"]


def test_hsvae_report_carries_the_melbo_caveat_and_the_prior(hsvae_suite):
  _, results, markdown = hsvae_suite
  melbo_section = markdown.split("## melbo", 1)[1].split("## ", 1)[0]
  assert "not a bound on the model's NLL" in melbo_section
  assert "MELBO − true entropy" in markdown and "prior samples z ~ exact draws" in markdown
  text = runner.format_report(results["bounds"], "test", "builtin")
  assert "MELBO − true entropy" in text and "prior samples z ~ exact draws" in text


# ------------------------------------------------------------------ what does not apply to an AE


def _ae_variant(run: runner.Run) -> runner.Run:
  """The toy run's config and vocabulary as an AE, with fresh parameters (not trained)."""
  config = ml_collections.ConfigDict(run.config.to_dict())
  experiment.set_config_value(config, "objective.name", "ae")
  experiment.set_config_value(config, "model.posterior", "gaussian")
  model_cfg = experiment.model_config(config, run.vocab.size)
  params = sentence_ae.init_params(jax.random.PRNGKey(3), model_cfg)
  return dataclasses.replace(run, config=config, model_cfg=model_cfg, params=params)


def test_ae_prior_samples_come_from_the_posthoc_prior_or_are_skipped(hsvae_suite):
  ae = _ae_variant(hsvae_suite[0])
  skipped = runner.prior_sample_report(ae, num=4, max_len=8)
  assert "an AE has no prior" in skipped["prior_samples_skipped"]
  assert "prior_distinct" not in skipped
  assert runner.prior_samples_line(skipped).startswith("prior samples skipped: an AE has no prior")
  gmm = posthoc_prior.GaussianMixture(jnp.zeros(1), jnp.zeros((1, ae.model_cfg.latent_dim)),
                                      jnp.zeros((1, ae.model_cfg.latent_dim)))
  fitted = runner.prior_sample_report(ae, num=4, max_len=8,
                                      posthoc=runner.PosthocPrior(posthoc_prior.log_prob, gmm, 0.1))
  assert "post-hoc prior" in fitted["prior"] and len(fitted["prior_samples"]) == 4


def test_ae_report_prints_why_it_has_no_bounds_beside_the_posthoc_row(hsvae_suite, tmp_path):
  _, results, _ = hsvae_suite
  b = {k: v for k, v in results["bounds"].items()
       if not k.startswith(("elbo", "iw_", "melbo", "prior"))}
  b.update(bounds_skipped="an AE (z = μ) has no bound of its own; see the post-hoc IW row",
           prior_samples_skipped="an AE has no prior")
  b["scoring"] = dict(b["scoring"], deterministic_z=True)
  assert "posthoc_iw_nll" in b
  path = suite.write_markdown({"bounds": b}, str(tmp_path / "r.md"), split="test",
                              corpus="builtin", workdir="w")
  markdown = open(path, encoding="utf-8").read()
  assert "| IW (post-hoc prior) |" in markdown
  assert "No likelihood bounds of the model's own: an AE (z = μ)" in markdown
  assert "prior samples skipped: an AE has no prior" in markdown and "N(0, 1" not in markdown
  text = runner.format_report(b, "test", "builtin")
  assert "no bounds of the model's own" in text and "prior samples skipped" in text


def test_noposthoc_gives_its_reason(monkeypatch):
  monkeypatch.setattr(runner, "evaluate_split", lambda *a, **k: ({"N": 1}, {}))
  ctx = _context()
  ctx.options.posthoc = False
  ctx.corpus = type("Corpus", (), {"splits": {}})()
  assert "--noposthoc" in suite.section_bounds(ctx)["posthoc_skipped"]


def test_ae_qa_does_not_divide_by_the_untrained_sigma(hsvae_suite, tmp_path):
  run = _ae_variant(hsvae_suite[0])
  corpus = experiment.load_corpus(run.config, run.vocab)
  lines = corpus.splits["train"].lines[:24]
  (tmp_path / "yahoo").mkdir()
  (tmp_path / "yahoo" / "valid.txt").write_text(
      "".join(f"{a} ? {b}\n" for a, b in zip(lines[::2], lines[1::2])), encoding="utf-8")
  ctx = suite.Context(run, corpus, "test", corpus.splits["test"],
                      suite.Options(data_root=str(tmp_path), progress=False), str(tmp_path))
  out = suite.section_qa(ctx)
  assert out["normalised_by_std"] is False and "σ = 1" in out["note"], out
  assert out["num_items"] == 12


def test_a_failed_posthoc_fit_leaves_the_bounds_and_says_why(monkeypatch):
  """A diverged run's codes are not finite: the post-hoc prior cannot be fitted, the other bounds
  are still computed, and the report names the step and the cause in one line."""
  from mimtext.evaluation import posthoc  # pylint: disable=g-import-not-at-top

  def no_fit(*args, **kwargs):
    raise ValueError("codes contain NaN or infinite values")

  seen = {}
  monkeypatch.setattr(posthoc, "load_or_fit", no_fit)
  monkeypatch.setattr(runner, "evaluate_split",
                      lambda *a, **k: (seen.update(k) or {"N": 1, "elbo_nll": 3.0}, {}))
  ctx = _context()
  ctx.corpus = type("Corpus", (), {"splits": {"train": object()}})()
  report = suite.section_bounds(ctx)
  assert report["elbo_nll"] == 3.0 and seen["posthoc"] is None
  assert report["posthoc_failed"] == ("the post-hoc prior could not be fitted to the codes of "
                                      "step 7: codes contain NaN or infinite values")
  assert suite.failures({"bounds": report}) == [report["posthoc_failed"]]


def test_a_section_that_fails_lets_the_others_run(monkeypatch):
  def broken(ctx):
    raise FloatingPointError("overflow in the KL\nsecond line")

  monkeypatch.setitem(suite._SECTION_FNS, "info", broken)
  monkeypatch.setitem(suite._SECTION_FNS, "histograms", lambda ctx: {"ok": 1})
  ctx = _context()
  monkeypatch.setattr(suite, "Context", lambda *a, **k: ctx)
  lines = []
  results = suite.run_suite(ctx.run, None, "test", None, ("info", "histograms"), ctx.options,
                            log=lines.append)
  assert results["histograms"] == {"ok": 1}
  assert results["info"] == {"failed": "info could not be computed for step 7: overflow in the KL"}
  assert suite.failures(results) == [results["info"]["failed"]]
  assert any("[info] FAILED" in line for line in lines)
  assert suite.one_line_summary("info", results["info"]).startswith("FAILED: info could not")
