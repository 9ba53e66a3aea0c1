"""Generating sentences from a trained model: prior samples, reconstructions, interpolations.

Every decode goes through `generate` (greedy, temperature sampling or beam search) and is done as
the model was trained (`objectives.common.scoring`): an inputless decoder reads <unk>s, a
hidden-averaging decoder (seed 003 Eq. 7-8) decodes L latents jointly (z [L,b,d]); a single code
[b,d] decodes as L copies of itself would.

Notation: b batch, d latent, m decoded tokens, L jointly decoded latents, N interpolation points,
α ∈ [0, 1] position on an interpolation path.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import objectives
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import encoding
from mimtext.models import decoding
from mimtext.models import sentence_ae

METHODS = ("greedy", "sample", "beam")


def _texts(ids, vocab: vocab_lib.Vocabulary) -> list[str]:
  return [" ".join(vocab.decode(row)) for row in jax.device_get(ids)]


_DEFAULT_SCORING = objectives.common.Scoring(1.0, 1, False, False)


def _family_and_config(model: sentence_ae.ModelConfig,
                       objective: objectives.ObjectiveConfig | None):
  """The latent family and objective config that draw z for `model`: the objective's own, or
  without one the default config of the posterior head's family (HSVAE for posterior="hsvae",
  else the Gaussian family). Draws at decode time use the exact spike/slab choice."""
  if objective is None:
    objective = objectives.ObjectiveConfig(
        model=model, name="hsvae" if model.posterior == "hsvae" else "vae")
  objective = dataclasses.replace(objective, concrete_hard=True)
  return objectives.latent_family(objective), objective


def posterior_draws(key, post: sentence_ae.Posterior, model: sentence_ae.ModelConfig,
                    num: int, objective: objectives.ObjectiveConfig | None = None):
  """num draws z ~ q(z|x) by the objective's latent family (HSVAE: γ ~ q(γ|x), then the spike or
  the slab): [num,b,d]."""
  family, objective = _family_and_config(model, objective)
  return family.sample(key, post, objective, num).z


def default_prior_std(cfg: objectives.ObjectiveConfig) -> float:
  """σ of the Gaussian prior option z ~ N(0, σ² I): the family's `generation_prior_std` (0.1 for
  sMIM, seed 000 appendix D.3), else 1."""
  std = objectives.latent_family(cfg).generation_prior_std
  return 1.0 if std is None else float(std)


def model_prior(cfg: objectives.ObjectiveConfig) -> tuple[Callable | None, str]:
  """(sampler (key, n) → z [n,d], its description) of the prior that the evaluation decodes:
  N(0, σ² I) where the family names a `generation_prior_std` (sMIM), else the family's exact
  `prior_sample` (N(0, I); HSVAE's and MAT-VAE's spike-and-slab priors). (None, reason) for an AE,
  which has no prior."""
  if objectives.common.scoring(cfg).deterministic_z:
    return None, "an AE has no prior: z = μ(x) is deterministic and nothing is fitted to p(z)"
  family = objectives.latent_family(cfg)
  d = cfg.model.latent_dim
  if family.generation_prior_std is not None:
    std = float(family.generation_prior_std)
    return (lambda key, n: std * jax.random.normal(key, (n, d))), f"N(0, {std:g}² I)"
  return ((lambda key, n: family.prior_sample(key, n, cfg)),
          f"exact draws of the model's prior p(z) ({family.name} family)")


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
                  num: int, std: float | None = None, max_len: int = 40,
                  scoring: objectives.common.Scoring = _DEFAULT_SCORING,
                  prior: Callable | None = None, method: str = "greedy",
                  temperature: float = 1.0, beam_width: int = 5,
                  ban_unk: bool = False,
                  objective: objectives.ObjectiveConfig | None = None) -> list[str]:
  """Decodes of `num` prior draws (greedy by default), generated as the model was trained.

  z = prior(key, n) [n,d] when a sampler is given (e.g. a prior fitted to the aggregate posterior
  after training); else z ~ N(0, std² I) when `std` is given; else the prior of `objective`
  (`model_prior`: N(0, 0.1² I) for sMIM, seed 000 appendix D.3; exact draws of HSVAE's and
  MAT-VAE's spike-and-slab priors; N(0, I) for the Gaussian VAEs); without any of them N(0, I). A
  hidden-averaging decoder (seed 003 Eq. 7-8) decodes L independent draws jointly: n = L·num
  draws reshaped to [L,num,d]. `method` etc. as `generate`; sampling decodes with a key derived
  from `key`, so the draws of z do not depend on the method.
  """
  num_latents = scoring.num_latents
  if prior is None and std is None and objective is not None:
    prior, reason = model_prior(objective)
    if prior is None:
      raise ValueError(f"no prior to sample: {reason}; give std or prior")
  if prior is None:
    std = 1.0 if std is None else std
    z = std * jax.random.normal(key, (num_latents, num, cfg.latent_dim))
  else:
    z = jnp.asarray(prior(key, num_latents * num))
    if z.shape != (num_latents * num, cfg.latent_dim):
      raise ValueError(f"prior(key, {num_latents * num}) must return "
                       f"[{num_latents * num}, {cfg.latent_dim}], got {z.shape}")
    z = z.reshape(num_latents, num, cfg.latent_dim)
  return generate(params, z, cfg, vocab, method=method, key=jax.random.fold_in(key, 1),
                  temperature=temperature, beam_width=beam_width, ban_unk=ban_unk,
                  max_len=max_len, scoring=scoring)


def _posterior(params, cfg: sentence_ae.ModelConfig, examples: Sequence[np.ndarray]
               ) -> sentence_ae.Posterior:
  """q(z|x) of the examples, encoded as one unpadded batch: [n,d] numpy fields, in input order."""
  return encoding.encode_sentences(params, cfg, examples, batch_size=len(examples),
                                   pad_multiple=1)


def reconstructions(params, cfg: sentence_ae.ModelConfig, vocab: vocab_lib.Vocabulary,
                    examples: Sequence[np.ndarray], key, *, max_len: int = 40,
                    perturb_scale: float = 10.0,
                    scoring: objectives.common.Scoring = _DEFAULT_SCORING,
                    method: str = "greedy", beam_width: int = 5, temperature: float = 1.0,
                    ban_unk: bool = False,
                    objective: objectives.ObjectiveConfig | None = None) -> list[dict[str, str]]:
  """For each sentence: data (D), decodes of the posterior mean (M), of a sample (R) and of a
  sample perturbed with noise of `perturb_scale` posterior standard deviations (P); seed 000
  §4.7 and Tables 11-14. Greedy by default (as the paper), or any `generate` method.

  Decoded as the model was trained (`scoring`): without inputs for an inputless decoder, from L
  joint posterior samples for a hidden-averaging decoder; an AE (z = μ, no trained σ) gets D and M
  only. R is drawn by the latent family of `objective` (`posterior_draws`; without it, the
  posterior head's default family): for HSVAE γ ~ q(γ|x), then the spike or the slab. P adds
  noise of `perturb_scale` (slab) standard deviations σ to R.
  """
  if not len(examples):
    return []
  post = _posterior(params, cfg, examples)
  codes = {"M": sentence_ae.posterior_code(post)}
  if not scoring.deterministic_z:
    k_sample, k_perturb = jax.random.split(key)
    z_sample = posterior_draws(k_sample, post, cfg, scoring.num_latents, objective)
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
                max_len: int = 40, objective: objectives.ObjectiveConfig | None = None
                ) -> list[str]:
  """Sentences decoded at N equispaced points between the codes of two sentences, both ends
  included (a homotopy, seed 001 §6.3 and Table 8; seed 000 §4.7 and Table 10).

  a_ids, b_ids: encoded sentences `<sos> w… <eos>`. The ends are the posterior codes E_q[z|x]
  (μ; for an L-latent model every latent gets the mean code, which decodes as the one code), or
  with `key` posterior samples z ~ q(z|x) as seed 000 §4.7 (one per latent for an L-latent
  model, interpolated latent by latent), drawn by the family of `objective` (`posterior_draws`).
  `method` as `generate`; sampling draws with `key`.
  """
  post = _posterior(params, cfg, [a_ids, b_ids])
  if key is None or scoring.deterministic_z:
    ends = sentence_ae.posterior_code(post)                                    # [2,d]
  else:
    ends = posterior_draws(jax.random.fold_in(key, 0), post, cfg, scoring.num_latents,
                           objective)                                          # [L,2,d]
  z = linear_path(ends[..., 0, :], ends[..., 1, :], num_points)               # [(L,) N, d]
  decode_key = None if key is None else jax.random.fold_in(key, 1)
  return generate(params, z, cfg, vocab, method=method, key=decode_key, temperature=temperature,
                  beam_width=beam_width, ban_unk=ban_unk, max_len=max_len, scoring=scoring)
