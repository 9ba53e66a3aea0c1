"""Generating sentences from a trained model: prior samples, reconstructions, interpolations.

Every decode goes through `generate` (greedy, temperature sampling or beam search) and is done as
the model was trained (`objectives.common.scoring`): an inputless decoder reads <unk>s, a
hidden-averaging decoder (seed 003 Eq. 7-8) decodes L latents jointly (z [L,b,d]); a single code
[b,d] decodes as L copies of itself would.

Notation: b batch, d latent, m decoded tokens, L jointly decoded latents, N interpolation points,
α ∈ [0, 1] position on an interpolation path.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import distributions
from mimtext import objectives
from mimtext.data import pipeline as pipeline_lib
from mimtext.data import vocab as vocab_lib
from mimtext.models import decoding
from mimtext.models import sentence_ae

METHODS = ("greedy", "sample", "beam")

_encode = jax.jit(sentence_ae.encode, static_argnames=("cfg",))


def _texts(ids, vocab: vocab_lib.Vocabulary) -> list[str]:
  return [" ".join(vocab.decode(row)) for row in jax.device_get(ids)]


_DEFAULT_SCORING = objectives.common.Scoring(1.0, 1, False, False)


def default_prior_std(cfg: objectives.ObjectiveConfig) -> float:
  """σ of the z ~ N(0, σ² I) that prior samples decode: 0.1 for sMIM (seed 000 appendix: its
  marginal over z is implicit; the anchor N(0, I) sets its scale only roughly), 1 otherwise."""
  return 0.1 if cfg.name == "mim" else 1.0


def generate_ids(params, z, cfg: sentence_ae.ModelConfig, *, method: str = "greedy",
                 key=None, temperature: float = 1.0, beam_width: int = 5,
                 ban_unk: bool = False, max_len: int = 40, length_penalty: float = 0.0,
                 scoring: objectives.common.Scoring = _DEFAULT_SCORING):
  """Decodes z [b,d] (or [L,b,d], L latents decoded jointly) → ids [b,m], lengths [b].

  method: "greedy" (argmax at every step), "sample" (x^k ~ softmax(logits / temperature); needs
  `key`) or "beam" (`decoding.beam_search` with `beam_width` and GNMT `length_penalty`).
  `ban_unk`: never generate <unk> (seed 000 §4.6). The decoder reads <unk>s when
  `scoring.word_keep` is 0 (an inputless decoder).
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  inputless = scoring.word_keep == 0.0
  z = jnp.asarray(z)
  if method == "beam":
    out = decoding.beam_search(params, z, cfg, beam_width=beam_width, max_len=max_len,
                               ban_unk=ban_unk, inputless=inputless,
                               length_penalty=length_penalty)
    return out.ids, out.lengths
  if method == "sample":
    if key is None:
      raise ValueError("method='sample' needs a key")
    if not temperature > 0:
      raise ValueError(f"temperature must be positive, got {temperature}")
    return decoding.decode(params, z, cfg, max_len=max_len, key=key, temperature=temperature,
                           ban_unk=ban_unk, inputless=inputless)
  return decoding.decode(params, z, cfg, max_len=max_len, ban_unk=ban_unk, inputless=inputless)


def generate(params, z, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary, *,
             method: str = "greedy", key=None, temperature: float = 1.0, beam_width: int = 5,
             ban_unk: bool = False, max_len: int = 40, length_penalty: float = 0.0,
             scoring: objectives.common.Scoring = _DEFAULT_SCORING) -> list[str]:
  """Sentences decoded from z [b,d] (or [L,b,d]) as space-joined words; see `generate_ids`."""
  ids, _ = generate_ids(params, z, cfg, method=method, key=key, temperature=temperature,
                        beam_width=beam_width, ban_unk=ban_unk, max_len=max_len,
                        length_penalty=length_penalty, scoring=scoring)
  return _texts(ids, vocab)


def prior_samples(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary, key, *,
                  num: int, std: float = 1.0, max_len: int = 40,
                  scoring: objectives.common.Scoring = _DEFAULT_SCORING,
                  prior: Callable | None = None, method: str = "greedy",
                  temperature: float = 1.0, beam_width: int = 5,
                  ban_unk: bool = False) -> list[str]:
  """Decodes of `num` prior draws (greedy by default), generated as the model was trained.

  z ~ N(0, std² I) (seed 000 appendix D.3 uses std 0.1 for sMIM), or z = prior(key, n) [n,d]
  when a sampler is given (e.g. a prior fitted to the aggregate posterior after training). A
  hidden-averaging decoder (seed 003 Eq. 7-8) decodes L independent draws jointly: n = L·num
  draws reshaped to [L,num,d]. `method` etc. as `generate`; sampling decodes with a key derived
  from `key`, so the draws of z do not depend on the method.
  """
  latents = scoring.num_latents
  if prior is None:
    z = std * jax.random.normal(key, (latents, num, cfg.latent_dim))
  else:
    z = jnp.asarray(prior(key, latents * num))
    if z.shape != (latents * num, cfg.latent_dim):
      raise ValueError(f"prior(key, {latents * num}) must return "
                       f"[{latents * num}, {cfg.latent_dim}], got {z.shape}")
    z = z.reshape(latents, num, cfg.latent_dim)
  return generate(params, z, cfg, vocab, method=method, key=jax.random.fold_in(key, 1),
                  temperature=temperature, beam_width=beam_width, ban_unk=ban_unk,
                  max_len=max_len, scoring=scoring)


def _posterior(params, cfg: sentence_ae.ModelConfig, examples: Sequence[np.ndarray]):
  batch = pipeline_lib.make_batch(examples, np.arange(len(examples)), pad_multiple=1)
  return _encode(params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["lengths"]), cfg=cfg)


def reconstructions(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary,
                    examples: Sequence[np.ndarray], key, *, max_len: int = 40,
                    perturb_scale: float = 10.0,
                    scoring: objectives.common.Scoring = _DEFAULT_SCORING,
                    method: str = "greedy", beam_width: int = 5, temperature: float = 1.0,
                    ban_unk: bool = False) -> list[dict[str, str]]:
  """For each sentence: data (D), decodes of the posterior mean (M), of a sample (R) and of a
  sample perturbed with noise of `perturb_scale` posterior standard deviations (P); seed 000
  §4.7 and Tables 11-14. Greedy by default (as the paper), or any `generate` method.

  Decoded as the model was trained (`scoring`): without inputs for an inputless decoder, from L
  joint posterior samples for a hidden-averaging decoder; an AE (z = μ, no trained σ) gets D and M
  only.
  """
  if not len(examples):
    return []
  post = _posterior(params, cfg, examples)
  codes = {"M": sentence_ae.posterior_code(post)}
  if not scoring.deterministic_z:
    k_sample, k_perturb = jax.random.split(key)
    z_sample = distributions.normal_sample(k_sample, post.mean, post.log_var,
                                           sample_shape=(scoring.num_latents,))
    sigma = jnp.exp(0.5 * post.log_var)
    codes["R"] = z_sample
    codes["P"] = z_sample + perturb_scale * sigma * jax.random.normal(k_perturb, z_sample.shape)
  decoded = {tag: generate(params, z, cfg, vocab, method=method,
                           key=jax.random.fold_in(key, 2 + i), temperature=temperature,
                           beam_width=beam_width, ban_unk=ban_unk, max_len=max_len,
                           scoring=scoring)
             for i, (tag, z) in enumerate(codes.items())}
  data = [" ".join(vocab.decode(x)) for x in examples]
  return [{"D": d, **{tag: decoded[tag][i] for tag in decoded}} for i, d in enumerate(data)]


def linear_path(z_a, z_b, num_points: int):
  """z(α) = (1 − α) z_a + α z_b at N equispaced α ∈ [0, 1], endpoints exact (seed 001 §6.3):
  z_a, z_b [..., d] → [..., N, d]."""
  if num_points < 2:
    raise ValueError(f"num_points must be >= 2 (both endpoints), got {num_points}")
  alpha = jnp.linspace(0.0, 1.0, num_points)[:, None]
  z_a, z_b = jnp.asarray(z_a)[..., None, :], jnp.asarray(z_b)[..., None, :]
  return (1.0 - alpha) * z_a + alpha * z_b


def interpolate(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary,
                a_ids: np.ndarray, b_ids: np.ndarray, *, num_points: int = 10,
                scoring: objectives.common.Scoring = _DEFAULT_SCORING, method: str = "greedy",
                key=None, beam_width: int = 5, temperature: float = 1.0, ban_unk: bool = False,
                max_len: int = 40) -> list[str]:
  """Sentences decoded at N equispaced points between the codes of two sentences, both ends
  included (a homotopy, seed 001 §6.3 and Table 8; seed 000 §4.7 and Table 10).

  a_ids, b_ids: encoded sentences `<sos> w… <eos>`. The ends are the posterior codes E_q[z|x]
  (μ; for an L-latent model every latent gets the mean code, which decodes as the one code), or
  with `key` posterior samples z ~ q(z|x) as seed 000 §4.7 (one per latent for an L-latent
  model, interpolated latent by latent). `method` as `generate`; sampling draws with `key`.
  """
  post = _posterior(params, cfg, [a_ids, b_ids])
  if key is None or scoring.deterministic_z:
    ends = sentence_ae.posterior_code(post)                                    # [2,d]
  else:
    ends = distributions.normal_sample(jax.random.fold_in(key, 0), post.mean, post.log_var,
                                       sample_shape=(scoring.num_latents,))    # [L,2,d]
  z = linear_path(ends[..., 0, :], ends[..., 1, :], num_points)               # [(L,) N, d]
  decode_key = None if key is None else jax.random.fold_in(key, 1)
  return generate(params, z, cfg, vocab, method=method, key=decode_key, temperature=temperature,
                  beam_width=beam_width, ban_unk=ban_unk, max_len=max_len, scoring=scoring)
