"""The post-hoc prior of a trained run: a Gaussian mixture fitted to its aggregate posterior on the
training set, saved beside the checkpoint (`WORKDIR/posthoc_prior.json`) and reused by evaluation
and generation.

The mixture is fitted to one draw z_i ~ q(z|x_i) for each of up to `max_codes` training sentences,
i.e. to samples of the aggregate posterior q(z) = E_x q(z|x), the prior that makes the ELBO
tightest; the number of components is chosen by held-out log-likelihood among `candidates`
(`posthoc_prior.select_num_components`). Fitting the posterior means instead would give a density
far narrower than q(z|x) for a model whose posterior is wide (a collapsed sVAE: σ ≈ 1 around
means near 0), and an importance-weighted bound that pays for it. An AE has no posterior: its
draws for the fit come from N(μ(x), s² I), s = `ae_proposal_std`.

The bound's proposal is chosen with the fit (`select_proposal_scale`), on training sentences, so
the evaluation split is never looked at: N(μ(x), diag max(σ(x), c·ŝ)²), ŝ the per-dimension
spread of the training codes and c from `PROPOSAL_SCALES` (c = 0: q itself; an AE has no σ, so
N(μ(x), diag (c·ŝ)²) with c > 0). Every choice gives a valid bound; the best of them is far tighter
for a model whose posterior is much narrower than p̂(z|x) (sMIM at its log-variance floor).
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
import numpy as np

from mimtext.evaluation import posthoc_prior

FILE_NAME = "posthoc_prior.json"
DEFAULT_CANDIDATES = (1, 4, 16)
FITTED_TO = "aggregate posterior samples; proposal chosen on training sentences"
# c of the proposal N(μ(x), diag max(σ(x), c·ŝ)²); 0 is q(z|x) itself (not for an AE).
PROPOSAL_SCALES = (0.0, 0.1, 0.3, 0.5, 1.0, 2.0)


def ae_proposal_std(codes: np.ndarray) -> float:
  """s of an AE's proposal N(μ(x), s² I): a tenth of the codes' mean per-dimension spread, set
  from training codes (any s > 0 gives a valid bound; this one keeps the proposal local)."""
  return float(max(0.1 * np.mean(np.std(codes, axis=0)), 1e-4))


def aggregate_posterior_samples(run, split, *, seed: int = 0, progress: bool = False
                                ) -> tuple[np.ndarray, float | None, np.ndarray]:
  """One draw z_i ~ q(z|x_i) per sentence of `split`: [n,d], by the run's latent family (an AE:
  from N(μ(x), s² I)); s for an AE, else None; and the posterior means [n,d]. `progress`: a bar
  over the encoding."""
  from mimtext import objectives  # pylint: disable=g-import-not-at-top
  from mimtext.evaluation import downstream  # pylint: disable=g-import-not-at-top
  post = downstream.posterior_params(run, split, progress=progress,
                                     desc="post-hoc prior: encode training sentences")
  key = jax.random.PRNGKey(seed)
  means = np.asarray(post.mean)
  if objectives.common.scoring(run.obj_cfg).deterministic_z:
    std = ae_proposal_std(means)
    return means + std * np.asarray(jax.random.normal(key, means.shape)), std, means
  return np.asarray(downstream.sample_z(key, post, 1, cfg=run.obj_cfg)[0]), None, means


def code_spread(means: np.ndarray) -> np.ndarray:
  """ŝ: the per-dimension standard deviation of the posterior means over sentences: [n,d] → [d]
  (at least 1e-4, so c·ŝ > 0 for c > 0)."""
  return np.maximum(np.std(means, axis=0), 1e-4).astype(np.float32)


def proposal_scales(run) -> tuple[float, ...]:
  """The c tried for the run: `PROPOSAL_SCALES` for a Gaussian posterior, without 0 for an AE;
  () for a family whose posterior is not Gaussian (HSVAE: its own q(z|x) is the proposal)."""
  from mimtext import objectives  # pylint: disable=g-import-not-at-top
  if objectives.common.scoring(run.obj_cfg).deterministic_z:
    return tuple(c for c in PROPOSAL_SCALES if c > 0)
  if objectives.latent_family(run.obj_cfg).gaussian_posterior:
    return PROPOSAL_SCALES
  return ()


def proposal_std(info: dict[str, Any]) -> np.ndarray | None:
  """s = c·ŝ of the bound's proposal from a fit's `info` ([d]), or None for q(z|x) itself."""
  scale = info.get("proposal_scale", 0.0)
  if not scale:
    return None
  return np.float32(scale) * np.asarray(info["proposal_spread"], np.float32)


def describe_proposal(info: dict[str, Any], deterministic_z: bool = False) -> str:
  """The bound's proposal in words, from a fit's `info`."""
  if "proposal_scale" not in info:
    return ("N(μ(x), s² I), s = %.3g" % info["ae_proposal_std"] if deterministic_z
            else "q(z|x)")
  scale = info["proposal_scale"]
  chosen = (f"c = {scale:g} chosen on training sentences; bound per c: "
            + ", ".join(f"{c}: {v:.1f}" for c, v in info["proposal_scores"].items()))
  if deterministic_z:
    return f"N(μ(x), diag (c·ŝ)²), ŝ the per-dimension spread of the training codes ({chosen})"
  if not scale:
    return f"q(z|x) ({chosen})"
  return (f"N(μ(x), diag max(σ(x), c·ŝ)²), q widened to c times the per-dimension spread ŝ of "
          f"the training codes ({chosen})")


def posthoc_nll(run, split, gmm: posthoc_prior.GaussianMixture, std: np.ndarray | None, *,
                iw_samples: int, seed: int = 0, batch_size: int = 64) -> float:
  """Mean over `split` of the post-hoc importance-weighted bound −log p̂(x) (nats per sentence)
  with K = iw_samples draws of the proposal of s = `std` (None: q(z|x))."""
  from mimtext.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from mimtext.evaluation import bounds  # pylint: disable=g-import-not-at-top
  pipe = pipeline_lib.evaluation_pipeline(split.ids, batch_size, seed=seed)
  key, total, count = jax.random.PRNGKey(seed), 0.0, 0
  for i, batch in enumerate(pipe.epoch(0)):
    terms = bounds.sentence_terms(run.params, batch, jax.random.fold_in(key, i), run.obj_cfg, 1,
                                  iw_samples, prior_fn=posthoc_prior.log_prob, prior_params=gmm,
                                  proposal_std=None if std is None else jax.numpy.asarray(std))
    valid = np.asarray(batch["valid"]) > 0
    total -= float(np.sum(np.asarray(terms["posthoc_iw_log_px"], np.float64)[valid]))
    count += int(valid.sum())
  return total / count


def select_proposal_scale(run, split, gmm: posthoc_prior.GaussianMixture, spread: np.ndarray, *,
                          scales: tuple[float, ...], num_sentences: int = 128,
                          iw_samples: int = 10, seed: int = 0, progress: bool = False
                          ) -> tuple[float, dict[str, float]]:
  """The c of `scales` whose proposal N(μ, diag max(σ, c·ŝ)²) gives the lowest post-hoc bound on
  the first `num_sentences` sentences of `split` (training sentences), and the bound per c."""
  from mimtext.evaluation import progress as progress_lib  # pylint: disable=g-import-not-at-top
  head = split.head(num_sentences)
  scores = {}
  for c in progress_lib.bar(scales, total=len(scales), desc="post-hoc prior: proposal width",
                            enabled=progress):
    std = None if c == 0 else np.float32(c) * spread
    scores[c] = posthoc_nll(run, head, gmm, std, iw_samples=iw_samples, seed=seed)
  best = min(scores, key=scores.get)
  return best, {str(c): v for c, v in scores.items()}


def fit(run, train_split, *, candidates=DEFAULT_CANDIDATES, max_codes: int = 20_000,
        seed: int = 0, progress: bool = False, proposal_kwargs: dict[str, Any] | None = None
        ) -> tuple[posthoc_prior.GaussianMixture, dict[str, Any]]:
  """Fits the mixture to aggregate-posterior draws of `train_split` (a `CorpusSplit`) under `run`.

  Returns the mixture and what describes the fit: {"num_components", "scores" (held-out mean
  log-likelihood per candidate), "num_codes", "step", "fitted_to", "ae_proposal_std" (the AE's
  fit noise), and for a Gaussian posterior or an AE the bound's proposal: "proposal_scale" (c),
  "proposal_scores" (the bound per c on training sentences), "proposal_spread" (ŝ, [d]); see
  `proposal_std`}. `progress`: bars (stderr) over the encoding, the EM fits and the widths.
  `proposal_kwargs` go to `select_proposal_scale` (num_sentences, iw_samples).
  """
  codes, fit_std, means = aggregate_posterior_samples(run, train_split.head(max_codes),
                                                      seed=seed, progress=progress)
  candidates = [k for k in candidates if k <= len(codes) // 2] or [1]
  best, scores = posthoc_prior.select_num_components(codes, candidates, seed=seed,
                                                     progress=progress)
  gmm = posthoc_prior.fit_gaussian_mixture(codes, best, seed=seed)
  info = {"num_components": int(best), "scores": {str(k): float(v) for k, v in scores.items()},
          "num_codes": int(len(codes)), "step": int(run.step), "fitted_to": FITTED_TO}
  if fit_std is not None:
    info["ae_proposal_std"] = fit_std
  scales = proposal_scales(run)
  if scales:
    spread = code_spread(means)
    scale, proposal_scores = select_proposal_scale(run, train_split, gmm, spread, scales=scales,
                                                   seed=seed, progress=progress,
                                                   **(proposal_kwargs or {}))
    info.update(proposal_scale=float(scale), proposal_scores=proposal_scores,
                proposal_spread=[float(v) for v in spread])
  return gmm, info


def load_or_fit(run, train_split, *, refit: bool = False, seed: int = 0,
                save_dir: str | None = None, **fit_kwargs
                ) -> tuple[posthoc_prior.GaussianMixture, dict[str, Any]]:
  """The run's saved post-hoc prior when it was fitted at the same step, else a new fit (saved);
  `fit_kwargs` go to `fit` (e.g. progress=True).

  The saved prior is looked for in `save_dir` (default: the run's workdir), then in the workdir,
  and a new fit is saved in `save_dir`. A fit that cannot be saved (a read-only directory) is
  used all the same, with a warning: it is refitted next time.
  """
  save_dir = save_dir or run.workdir
  for directory in dict.fromkeys((save_dir, run.workdir)):
    path = os.path.join(directory, FILE_NAME)
    if not refit and os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        saved = json.load(f)
      info = saved.get("info", {})
      if info.get("step") == run.step and info.get("fitted_to") == FITTED_TO:
        return posthoc_prior.from_json(saved["mixture"]), saved["info"]
  gmm, info = fit(run, train_split, seed=seed, **fit_kwargs)
  from mimtext import checkpoint  # pylint: disable=g-import-not-at-top
  try:
    checkpoint.save_json(save_dir, FILE_NAME, {"mixture": posthoc_prior.to_json(gmm),
                                               "info": info})
  except OSError as e:
    logging.warning("could not save the post-hoc prior in %s (%s); it is used now and refitted "
                    "next time", save_dir, e)
  return gmm, info
