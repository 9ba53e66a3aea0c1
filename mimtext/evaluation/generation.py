"""Generating sentences from a trained model: prior samples and reconstructions (seed 000 §4.4).

Notation: b batch, d latent, m decoded tokens.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import distributions
from mimtext import objectives
from mimtext.data import pipeline as pipeline_lib
from mimtext.data import vocab as vocab_lib
from mimtext.models import decoding
from mimtext.models import sentence_ae

_encode = jax.jit(sentence_ae.encode, static_argnames=("cfg",))


def _texts(ids, vocab: vocab_lib.Vocabulary) -> list[str]:
  return [" ".join(vocab.decode(row)) for row in jax.device_get(ids)]


_DEFAULT_SCORING = objectives.common.Scoring(1.0, 1, False, False)


def default_prior_std(cfg: objectives.ObjectiveConfig) -> float:
  """σ of the z ~ N(0, σ² I) that prior samples decode: 0.1 for sMIM (seed 000 appendix: its
  marginal over z is implicit; the anchor N(0, I) sets its scale only roughly), 1 otherwise."""
  return 0.1 if cfg.name == "mim" else 1.0


def prior_samples(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary, key, *,
                  num: int, std: float = 1.0, max_len: int = 40,
                  scoring: objectives.common.Scoring = _DEFAULT_SCORING) -> list[str]:
  """Greedy decodes of z ~ N(0, std² I), `num` of them, generated as the model was trained.

  `scoring` (`objectives.common.scoring`): an inputless decoder reads <unk>s; a hidden-averaging
  decoder (seed 003 Eq. 7-8) decodes L independent prior draws jointly.
  """
  z = std * jax.random.normal(key, (scoring.num_latents, num, cfg.latent_dim))
  ids, _ = decoding.greedy_decode(params, z, cfg, max_len=max_len,
                                  inputless=scoring.word_keep == 0.0)
  return _texts(ids, vocab)


def reconstructions(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary,
                    examples: Sequence[np.ndarray], key, *, max_len: int = 40,
                    perturb_scale: float = 10.0,
                    scoring: objectives.common.Scoring = _DEFAULT_SCORING
                    ) -> list[dict[str, str]]:
  """For each sentence: data (D), greedy decodes of the posterior mean (M), of a sample (R) and of
  a sample perturbed with noise of `perturb_scale` posterior standard deviations (P).

  Decoded as the model was trained (`scoring`): without inputs for an inputless decoder, from L
  joint posterior samples for a hidden-averaging decoder; an AE (z = μ, no trained σ) gets D and M
  only.
  """
  if not len(examples):
    return []
  batch = pipeline_lib.make_batch(examples, np.arange(len(examples)), pad_multiple=1)
  post = _encode(params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["lengths"]), cfg=cfg)
  codes = {"M": sentence_ae.posterior_code(post)}
  if not scoring.deterministic_z:
    k_sample, k_perturb = jax.random.split(key)
    z_sample = distributions.normal_sample(k_sample, post.mean, post.log_var,
                                           sample_shape=(scoring.num_latents,))
    sigma = jnp.exp(0.5 * post.log_var)
    codes["R"] = z_sample
    codes["P"] = z_sample + perturb_scale * sigma * jax.random.normal(k_perturb, z_sample.shape)
  inputless = scoring.word_keep == 0.0
  decoded = {tag: _texts(decoding.greedy_decode(params, z, cfg, max_len=max_len,
                                                inputless=inputless)[0], vocab)
             for tag, z in codes.items()}
  data = [" ".join(vocab.decode(x)) for x in examples]
  return [{"D": d, **{tag: decoded[tag][i] for tag in decoded}} for i, d in enumerate(data)]
