"""evaluation.suite sections on stand-in posteriors: what a section does when a number is undefined."""

import math

import jax
import numpy as np

from launch.configs import base
from mimtext import experiment
from mimtext.evaluation import downstream
from mimtext.evaluation import runner
from mimtext.evaluation import suite
from mimtext.models import sentence_ae


def _context(config_name: str = "mim") -> suite.Context:
  config = base.get_config()
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
  post = downstream.PosteriorParams(codes, np.full_like(codes, -2.0))
  monkeypatch.setattr(downstream, "posterior_params", lambda run, split: post)
  split = type("Split", (), {"head": lambda self, n: self, "ids": [None] * (d // 2)})()
  ctx = _context()
  ctx.split = split
  out = suite.section_info(ctx)
  assert "gaussian_entropy_of_codes" not in out
  assert "singular" in out["gaussian_entropy_of_codes_skipped"]
  assert math.isfinite(out["kraskov_entropy"]) and math.isfinite(out["mutual_information"])
