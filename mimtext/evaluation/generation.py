"""Generating sentences from a trained model: prior samples and reconstructions (seed 000 §4.4).

Notation: b batch, d latent, m decoded tokens.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import distributions
from mimtext.data import pipeline as pipeline_lib
from mimtext.data import vocab as vocab_lib
from mimtext.models import decoding
from mimtext.models import sentence_ae

_encode = jax.jit(sentence_ae.encode, static_argnames=("cfg",))


def _texts(ids, vocab: vocab_lib.Vocabulary) -> list[str]:
  return [" ".join(vocab.decode(row)) for row in jax.device_get(ids)]


def prior_samples(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary, key, *,
                  num: int, std: float = 1.0, max_len: int = 40) -> list[str]:
  """Greedy decodes of z ~ N(0, std² I), `num` of them."""
  z = std * jax.random.normal(key, (num, cfg.latent_dim))
  ids, _ = decoding.greedy_decode(params, z, cfg, max_len=max_len)
  return _texts(ids, vocab)


def reconstructions(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary,
                    examples: Sequence[np.ndarray], key, *, max_len: int = 40,
                    perturb_scale: float = 10.0) -> list[dict[str, str]]:
  """For each sentence: data (D), greedy decodes of the posterior mean (M), of a sample (R) and of
  a sample perturbed with noise of `perturb_scale` posterior standard deviations (P)."""
  if not len(examples):
    return []
  batch = pipeline_lib.make_batch(examples, np.arange(len(examples)), pad_multiple=1)
  post = _encode(params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["lengths"]), cfg=cfg)
  k_sample, k_perturb = jax.random.split(key)
  z_sample = distributions.normal_sample(k_sample, post.mean, post.log_var)
  sigma = jnp.exp(0.5 * post.log_var)
  z_perturbed = z_sample + perturb_scale * sigma * jax.random.normal(k_perturb, sigma.shape)
  decoded = {tag: _texts(decoding.greedy_decode(params, z, cfg, max_len=max_len)[0], vocab)
             for tag, z in (("M", sentence_ae.posterior_code(post)), ("R", z_sample),
                            ("P", z_perturbed))}
  data = [" ".join(vocab.decode(x)) for x in examples]
  return [{"D": d, **{tag: decoded[tag][i] for tag in decoded}} for i, d in enumerate(data)]
