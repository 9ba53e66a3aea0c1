"""The post-hoc prior of a trained run: a Gaussian mixture fitted to its aggregate posterior on the
training set, saved beside the checkpoint (`WORKDIR/posthoc_prior.json`) and reused by evaluation
and generation.

The mixture is fitted to one draw z_i ~ q(z|x_i) for each of up to `max_codes` training sentences,
i.e. to samples of the aggregate posterior q(z) = E_x q(z|x), the prior that makes the ELBO
tightest; the number of components is chosen by held-out log-likelihood among `candidates`
(`posthoc_prior.select_num_components`). Fitting the posterior means instead would give a density
far narrower than q(z|x) for a model whose posterior is wide (a collapsed sVAE: σ ≈ 1 around
means near 0), and an importance-weighted bound that pays for it. An AE has no posterior: its
draws come from the proposal q(z|x) = N(μ(x), s² I) its bound uses, s = `ae_proposal_std`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from mimtext.evaluation import posthoc_prior

FILE_NAME = "posthoc_prior.json"
DEFAULT_CANDIDATES = (1, 4, 16)
FITTED_TO = "aggregate posterior samples"


def ae_proposal_std(codes: np.ndarray) -> float:
  """s of an AE's proposal N(μ(x), s² I): a tenth of the codes' mean per-dimension spread, set
  from training codes (any s > 0 gives a valid bound; this one keeps the proposal local)."""
  return float(max(0.1 * np.mean(np.std(codes, axis=0)), 1e-4))


def aggregate_posterior_samples(run, split, *, seed: int = 0, progress: bool = False
                                ) -> tuple[np.ndarray, float | None]:
  """One draw z_i ~ q(z|x_i) per sentence of `split`: [n,d], by the run's latent family (an AE:
  from N(μ(x), s² I)); with s for an AE, else None. `progress`: a bar over the encoding."""
  from mimtext import objectives  # pylint: disable=g-import-not-at-top
  from mimtext.evaluation import downstream  # pylint: disable=g-import-not-at-top
  post = downstream.posterior_params(run, split, progress=progress,
                                     desc="post-hoc prior: encode training sentences")
  key = jax.random.PRNGKey(seed)
  if objectives.common.scoring(run.obj_cfg).deterministic_z:
    codes = np.asarray(post.mean)
    std = ae_proposal_std(codes)
    return codes + std * np.asarray(jax.random.normal(key, codes.shape)), std
  return np.asarray(downstream.sample_z(key, post, 1, cfg=run.obj_cfg)[0]), None


def fit(run, train_split, *, candidates=DEFAULT_CANDIDATES, max_codes: int = 20_000,
        seed: int = 0, progress: bool = False
        ) -> tuple[posthoc_prior.GaussianMixture, dict[str, Any]]:
  """Fits the mixture to aggregate-posterior draws of `train_split` (a `CorpusSplit`) under `run`.

  Returns the mixture and what describes the fit: {"num_components", "scores" (held-out mean
  log-likelihood per candidate), "num_codes", "step", "fitted_to", and "ae_proposal_std" for an
  AE}. `progress`: bars (stderr) over the encoding and over the EM fits of the candidates.
  """
  codes, proposal_std = aggregate_posterior_samples(run, train_split.head(max_codes), seed=seed,
                                                    progress=progress)
  candidates = [k for k in candidates if k <= len(codes) // 2] or [1]
  best, scores = posthoc_prior.select_num_components(codes, candidates, seed=seed,
                                                     progress=progress)
  gmm = posthoc_prior.fit_gaussian_mixture(codes, best, seed=seed)
  info = {"num_components": int(best), "scores": {str(k): float(v) for k, v in scores.items()},
          "num_codes": int(len(codes)), "step": int(run.step), "fitted_to": FITTED_TO}
  if proposal_std is not None:
    info["ae_proposal_std"] = proposal_std
  return gmm, info


def load_or_fit(run, train_split, *, refit: bool = False, seed: int = 0, **fit_kwargs
                ) -> tuple[posthoc_prior.GaussianMixture, dict[str, Any]]:
  """The run's saved post-hoc prior when it was fitted at the same step, else a new fit (saved);
  `fit_kwargs` go to `fit` (e.g. progress=True)."""
  path = os.path.join(run.workdir, FILE_NAME)
  if not refit and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    info = saved.get("info", {})
    if info.get("step") == run.step and info.get("fitted_to") == FITTED_TO:
      return posthoc_prior.from_json(saved["mixture"]), saved["info"]
  gmm, info = fit(run, train_split, seed=seed, **fit_kwargs)
  from mimtext import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.save_json(run.workdir, FILE_NAME, {"mixture": posthoc_prior.to_json(gmm),
                                                "info": info})
  return gmm, info
