"""The post-hoc prior of a trained run: a Gaussian mixture fitted to its training codes, saved
beside the checkpoint (`WORKDIR/posthoc_prior.json`) and reused by evaluation and generation.

Fitted to the deterministic codes (`sentence_ae.posterior_code`) of up to `max_codes` training
sentences, with the number of components chosen by held-out log-likelihood among `candidates`
(`posthoc_prior.select_num_components`), then refitted on all of them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mimtext.evaluation import posthoc_prior

FILE_NAME = "posthoc_prior.json"
DEFAULT_CANDIDATES = (1, 4, 16)


def fit(run, train_split, *, candidates=DEFAULT_CANDIDATES, max_codes: int = 20_000,
        seed: int = 0) -> tuple[posthoc_prior.GaussianMixture, dict[str, Any]]:
  """Fits the mixture to the codes of `train_split` (a `CorpusSplit`) under `run` (`runner.Run`).

  Returns the mixture and what describes the fit: {"num_components", "scores" (held-out mean
  log-likelihood per candidate), "num_codes", "step"}.
  """
  from mimtext.evaluation import runner  # pylint: disable=g-import-not-at-top (cycle)
  codes = runner.posterior_codes(run, train_split.head(max_codes))
  candidates = [k for k in candidates if k <= len(codes) // 2] or [1]
  best, scores = posthoc_prior.select_num_components(codes, candidates, seed=seed)
  gmm = posthoc_prior.fit_gaussian_mixture(codes, best, seed=seed)
  return gmm, {"num_components": int(best), "scores": {str(k): float(v) for k, v in scores.items()},
               "num_codes": int(len(codes)), "step": int(run.step)}


def load_or_fit(run, train_split, *, refit: bool = False, seed: int = 0, **fit_kwargs
                ) -> tuple[posthoc_prior.GaussianMixture, dict[str, Any]]:
  """The run's saved post-hoc prior when it was fitted at the same step, else a new fit (saved)."""
  path = os.path.join(run.workdir, FILE_NAME)
  if not refit and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if saved.get("info", {}).get("step") == run.step:
      return posthoc_prior.from_json(saved["mixture"]), saved["info"]
  gmm, info = fit(run, train_split, seed=seed, **fit_kwargs)
  from mimtext import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.save_json(run.workdir, FILE_NAME, {"mixture": posthoc_prior.to_json(gmm),
                                                "info": info})
  return gmm, info
