"""The post-hoc prior of a trained run and the proposals of its importance-weighted bound, fitted
on training sentences, saved beside the checkpoint (`WORKDIR/posthoc_prior.json`,
`posthoc_flow.eqx`, `posthoc_proposal.msgpack`) and reused by evaluation and generation.

What is fitted on what (no sentence of an evaluated split is ever looked at, so every bound below
stays valid; Burda et al. 2016 need only a normalised prior and proposal with full support):
1. Codes: one draw z_i ~ q(z|x_i) for each of up to `max_codes` training sentences, i.e. samples
   of the aggregate posterior q(z) = E_x q(z|x), the prior that makes the ELBO tightest. Fitting
   the posterior means instead would give a density far narrower than q(z|x) for a model whose
   posterior is wide (a collapsed sVAE: σ ≈ 1 around means near 0). An AE has no posterior: its
   draws come from N(μ(x), s² I), s = `ae_proposal_std`.
2. Candidate priors (`fit`): diagonal Gaussian mixtures of 1, 4, 16, 64 components
   (`posthoc_prior`; 256 scored best on the quickstart sMIM's held-out codes but worst by the
   bound, and cost a minute of EM), and optionally a masked autoregressive flow (`flow_prior`),
   fitted to 90 % of the codes and scored on the other 10 %.
3. The widened proposal N(μ(x), diag max(σ(x), c·ŝ)²) (`select_proposal_scale`): ŝ the
   per-dimension spread of the training codes, c from `PROPOSAL_SCALES` (c = 0: q itself; an AE
   has no σ, so N(μ(x), diag (c·ŝ)²) with c > 0), chosen with the prior by the lowest bound on 128
   training sentences at K = 10.
4. The learned proposal r(z|x) (`load_or_fit_proposal`, `proposal`): an amortised Gaussian that
   starts at that widened proposal and is trained on the training sentences (a held-out part
   stops it), with the decoder and the prior frozen.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mimtext.evaluation import flow_prior
from mimtext.evaluation import posthoc_prior
from mimtext.evaluation import progress as progress_lib
from mimtext.evaluation import proposal as proposal_lib

# A fitted post-hoc prior density.
Prior = posthoc_prior.GaussianMixture | flow_prior.FlowPrior

FILE_NAME = "posthoc_prior.json"
# Numbers of mixture components tried, ascending, until one scores worse on held-out codes than
# the one before it, and only those with at least MIN_CODES_PER_COMPONENT training codes each
# (`fit`).
DEFAULT_CANDIDATES = (1, 4, 16, 64)
MIN_CODES_PER_COMPONENT = 20
FITTED_TO = ("aggregate posterior samples; prior and proposal chosen by the bound on training "
             "sentences")
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
  from mimtext.evaluation import encoding  # pylint: disable=g-import-not-at-top
  post = encoding.encode_sentences(run.params, run.model_cfg, split.ids, progress=progress,
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


def posthoc_nll(run, split, gmm: Prior, std: np.ndarray | None, *,
                iw_samples: int, seed: int = 0, batch_size: int = 64) -> float:
  """Mean over `split` of the post-hoc importance-weighted bound −log p̂(x) (nats per sentence)
  with K = iw_samples draws of the proposal of s = `std` (None: q(z|x))."""
  from mimtext.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from mimtext.evaluation import bounds  # pylint: disable=g-import-not-at-top
  pipe = pipeline_lib.evaluation_pipeline(split.ids, batch_size, seed=seed)
  key, total, count = jax.random.PRNGKey(seed), 0.0, 0
  for i, batch in enumerate(pipe.epoch(0)):
    terms = bounds.sentence_terms(run.params, batch, jax.random.fold_in(key, i), run.obj_cfg, 1,
                                  iw_samples, prior_fn=prior_log_prob_fn(gmm), prior_params=gmm,
                                  proposal_std=None if std is None else jax.numpy.asarray(std))
    valid = np.asarray(batch["valid"]) > 0
    total -= float(np.sum(np.asarray(terms["posthoc_iw_log_px"], np.float64)[valid]))
    count += int(valid.sum())
  return total / count


def select_proposal_scale(run, split, gmm: Prior, spread: np.ndarray, *,
                          scales: tuple[float, ...], num_sentences: int = 128,
                          iw_samples: int = 10, seed: int = 0, progress: bool = False,
                          desc: str = "") -> tuple[float, dict[str, float]]:
  """The c of `scales` whose proposal N(μ, diag max(σ, c·ŝ)²) gives the lowest post-hoc bound on
  the first `num_sentences` sentences of `split` (training sentences), and the bound per c
  (c = 0: q itself, the only proposal of a family that is not Gaussian)."""
  head = split.head(num_sentences)
  scores = {}
  for c in progress_lib.bar(scales, total=len(scales),
                            desc=f"post-hoc prior: proposal width {desc}".rstrip(),
                            enabled=progress):
    std = None if c == 0 else np.float32(c) * spread
    scores[c] = posthoc_nll(run, head, gmm, std, iw_samples=iw_samples, seed=seed)
  best = min(scores, key=scores.get)
  return best, {str(c): v for c, v in scores.items()}


def fit(run, train_split, *, candidates=DEFAULT_CANDIDATES, max_codes: int = 20_000,
        seed: int = 0, progress: bool = False, flow: bool = False,
        proposal_kwargs: dict[str, Any] | None = None) -> tuple[Prior, dict[str, Any]]:
  """Fits the post-hoc prior to aggregate-posterior draws of `train_split` (a `CorpusSplit`).

  The candidates are Gaussian mixtures of K components, K from `candidates` in ascending order
  until one scores worse than the one before it, and, with `flow`, a masked autoregressive flow
  (`flow_prior`): all fitted to the same 90 % of the draws and scored by their mean
  log-likelihood on the other 10 % ("scores", "flow"). The prior kept is the candidate whose
  post-hoc bound on training sentences is lowest ("bound_scores"; for a Gaussian posterior or an
  AE with the widened proposal whose c `select_proposal_scale` chose for the mixture that scores
  best on held-out codes): the held-out likelihood of codes
  alone misleads, since a density that hugs the codes (the flow on an sMIM's codes: 218 nats per
  code against the mixture's 79) can make the bound far looser (172 against 62 nats on the
  quickstart's training sentences) when no Gaussian proposal can follow it.

  Returns the prior and what describes the fit: {"prior_kind" ("mixture" or "flow"),
  "num_components", "scores", "flow", "bound_scores", "num_codes", "num_fit_codes" (the 90 %),
  "step", "fitted_to",
  "seconds", "ae_proposal_std" (the AE's fit noise), and for a Gaussian posterior or an AE the
  bound's widened proposal: "proposal_scale" (c), "proposal_scores" (the bound per c on training
  sentences), "proposal_spread" (ŝ, [d]); see `proposal_std`}. `progress`: bars (stderr) over
  the encoding, the EM fits and the widths. `proposal_kwargs` go to `select_proposal_scale`
  (num_sentences, iw_samples).
  """
  start = time.time()
  codes, fit_std, means = aggregate_posterior_samples(run, train_split.head(max_codes),
                                                      seed=seed, progress=progress)
  train, held = posthoc_prior.holdout_split(codes, seed=seed)
  held_z = jnp.asarray(held, jnp.float32)
  ks = sorted(k for k in candidates if k * MIN_CODES_PER_COMPONENT <= len(train)) or [1]
  priors: dict[str, Prior] = {}
  scores: dict[str, float] = {}
  for k in progress_lib.bar(ks, desc="post-hoc prior: EM per K", unit="K", enabled=progress):
    priors[str(k)] = posthoc_prior.fit_gaussian_mixture(train, k, seed=seed)
    scores[str(k)] = float(jnp.mean(posthoc_prior.log_prob(priors[str(k)], held_z)))
    if len(scores) > 1 and scores[str(k)] < list(scores.values())[-2]:
      break
  info: dict[str, Any] = {"scores": scores, "num_codes": int(len(codes)),
                          "num_fit_codes": int(len(train)), "step": int(run.step),
                          "fitted_to": FITTED_TO}
  if flow:
    priors["flow"], info["flow"] = flow_prior.fit(train, seed=seed)
    info["flow"]["score"] = float(jnp.mean(flow_prior.log_prob(priors["flow"], held_z)))
  if fit_std is not None:
    info["ae_proposal_std"] = fit_std
  # The widths are searched with the mixture that fits the held-out codes best; the other
  # candidates are scored at the width it chose (one bound each, not one per width).
  scales = proposal_scales(run) or (0.0,)
  spread = code_spread(means)
  first = max(scores, key=scores.get)
  choices = {first: select_proposal_scale(run, train_split, priors[first], spread, scales=scales,
                                          seed=seed, progress=progress, desc=f"K={first}",
                                          **(proposal_kwargs or {}))}
  width = choices[first][0]
  for name in progress_lib.bar([n for n in priors if n != first], desc="post-hoc prior: bound "
                               "per candidate", enabled=progress):
    choices[name] = select_proposal_scale(run, train_split, priors[name], spread, scales=(width,),
                                          seed=seed, **(proposal_kwargs or {}))
  info["bound_scores"] = {name: scores_c[str(c)] for name, (c, scores_c) in choices.items()}
  name = min(info["bound_scores"], key=info["bound_scores"].get)
  info["prior_kind"] = "flow" if name == "flow" else "mixture"
  if name != "flow":
    info["num_components"] = int(name)
  if proposal_scales(run):
    scale, proposal_scores = choices[name]
    info.update(proposal_scale=float(scale), proposal_scores=proposal_scores,
                proposal_spread=[float(v) for v in spread])
  info["seconds"] = time.time() - start
  return priors[name], info


def describe_prior(info: dict[str, Any]) -> str:
  """The post-hoc prior and how it was chosen, in words, from a fit's `info`."""
  flow = info.get("flow")
  if info.get("prior_kind") == "flow":
    chosen = f"a masked autoregressive flow of {flow['layers']} layers of {flow['width']} units"
  else:
    chosen = f"a {info['num_components']}-component Gaussian mixture"
  held = ", ".join(f"K={k}: {v:.1f}" for k, v in info["scores"].items())
  if flow:
    held += f", flow: {flow['score']:.1f}"
  bound = ", ".join(f"{'K=' + k if k != 'flow' else k}: {v:.1f}"
                    for k, v in info.get("bound_scores", {}).items())
  return (f"{chosen} fitted to {info['num_fit_codes']} draws z ~ q(z|x) of training "
          f"sentences, chosen by the post-hoc bound on training sentences ({bound} nats) among "
          f"candidates scored by held-out draws ({held} nats per code)")


def prior_log_prob_fn(prior: Prior):
  """The module-level density function (`bounds.PriorFn`) of a fitted post-hoc prior."""
  if isinstance(prior, flow_prior.FlowPrior):
    return flow_prior.log_prob
  return posthoc_prior.log_prob


_flow_sample = jax.jit(flow_prior.sample, static_argnames="n")


def prior_sampler(prior: Prior):
  """sample(key, n) → [n,d] draws of a fitted post-hoc prior."""
  if isinstance(prior, flow_prior.FlowPrior):
    return lambda key, n: _flow_sample(prior, key, n)
  return lambda key, n: posthoc_prior.sample(prior, key, n)


def load_or_fit(run, train_split, *, refit: bool = False, seed: int = 0,
                save_dir: str | None = None, **fit_kwargs) -> tuple[Prior, dict[str, Any]]:
  """The run's saved post-hoc prior when it was fitted at the same step, else a new fit (saved);
  `fit_kwargs` go to `fit` (e.g. progress=True).

  The saved prior (`FILE_NAME`, and `flow_prior.FILE_NAME` for a flow) is looked for in
  `save_dir` (default: the run's workdir), then in the workdir, and a new fit is saved in
  `save_dir`. A fit that cannot be saved (a read-only directory) is used all the same, with a
  warning: it is refitted next time.
  """
  save_dir = save_dir or run.workdir
  for directory in dict.fromkeys((save_dir, run.workdir)):
    path = os.path.join(directory, FILE_NAME)
    if not refit and os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        saved = json.load(f)
      info = saved.get("info", {})
      if info.get("step") == run.step and info.get("fitted_to") == FITTED_TO:
        if info.get("prior_kind") == "mixture":
          return posthoc_prior.from_json(saved["mixture"]), info
        flow_density = flow_prior.load(directory)
        if flow_density is not None:
          return flow_density, info
  prior, info = fit(run, train_split, seed=seed, **fit_kwargs)
  from mimtext import checkpoint  # pylint: disable=g-import-not-at-top
  try:
    if isinstance(prior, flow_prior.FlowPrior):
      flow_prior.save(save_dir, prior, info["flow"])
      saved = {"info": info}
    else:
      saved = {"mixture": posthoc_prior.to_json(prior), "info": info}
    checkpoint.save_json(save_dir, FILE_NAME, saved)
  except OSError as e:
    logging.warning("could not save the post-hoc prior in %s (%s); it is used now and refitted "
                    "next time", save_dir, e)
  return prior, info


# ------------------------------------------------------------------------- learned proposal


def learns_proposal(run) -> bool:
  """Whether the run's post-hoc bound gets a learned Gaussian proposal: an AE or a Gaussian
  posterior (the families with a widened proposal, `proposal_scales`)."""
  return bool(proposal_scales(run))


def prior_fingerprint(prior: Prior) -> str:
  """A short hash of the prior's parameters: a proposal trained under another p̂ is retrained."""
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(prior):
    digest.update(np.asarray(leaf, np.float32).tobytes())
  return digest.hexdigest()[:16]


def fallback_std(info: dict[str, Any], deterministic_z: bool) -> np.ndarray | float | None:
  """s of the widened proposal of a fit's `info` (the AE's N(μ, s² I) when it has no c), or None
  for q(z|x) itself."""
  std = proposal_std(info)
  if std is None and deterministic_z:
    return info["ae_proposal_std"]
  return std


def load_or_fit_proposal(run, train_split, gmm: Prior,
                         info: dict[str, Any], *, refit: bool = False, seed: int = 0,
                         save_dir: str | None = None, progress: bool = False, max_sentences:
                         int = 20_000, **train_kwargs) -> tuple[Any, dict[str, Any]]:
  """The learned proposal r(z|x) of the post-hoc bound under `gmm` (`proposal.train`), and what
  describes its training ("start_bound", "best_bound", "steps", "seconds", ...).

  Loaded from `save_dir` (default: the run's workdir), then the workdir, when it was trained at
  the run's step under this mixture; else trained on the first `max_sentences` sentences of
  `train_split`, starting from the fit's widened proposal, and saved in `save_dir` (a directory
  that cannot be written is warned about; the proposal is used all the same).
  """
  from mimtext import objectives  # pylint: disable=g-import-not-at-top
  save_dir = save_dir or run.workdir
  want = {"step": int(run.step), "prior": prior_fingerprint(gmm)}
  for directory in dict.fromkeys((save_dir, run.workdir)):
    saved = None if refit else proposal_lib.load(directory)
    if saved is not None and all(saved[1].get(k) == v for k, v in want.items()):
      return saved
  det = objectives.common.scoring(run.obj_cfg).deterministic_z
  std = fallback_std(info, det)
  params, train_info = proposal_lib.train(
      run, train_split.head(max_sentences).ids, prior_log_prob_fn(gmm), gmm,
      None if std is None else np.broadcast_to(np.asarray(std, np.float32),
                                               (run.model_cfg.latent_dim,)),
      seed=seed, progress=progress, **train_kwargs)
  train_info.update(want)
  try:
    proposal_lib.save(save_dir, params, train_info)
  except OSError as e:
    logging.warning("could not save the post-hoc proposal in %s (%s); it is used now and "
                    "retrained next time", save_dir, e)
  return params, train_info


def describe_learned_proposal(info: dict[str, Any]) -> str:
  """The learned proposal and its training, in words, from `load_or_fit_proposal`'s info."""
  density = ("N(μ_r(x), diag σ_r²(x))" if not info.get("rank") else
             f"N(μ_r(x), Λ⁻¹), Λ = diag σ_r⁻²(x) + U(x)U(x)ᵀ with U of rank {info['rank']},")
  return (f"r(z|x) = {density} learned on {info['num_train']:,} training sentences "
          f"(DReG, K = {info['num_draws']}; {info['steps']} steps, best at {info['best_step']}, "
          f"{info['stopped']}; {info['seconds']:.0f} s): held-out bound at K = "
          f"{info['eval_draws']} {info['start_bound']:.2f} → {info['best_bound']:.2f} nats on "
          f"{info['num_holdout']} held-out training sentences")


def bound_inputs(gmm: Prior, info: dict[str, Any],
                 deterministic_z: bool, proposal_params: Any = None) -> dict[str, Any]:
  """The `bounds.sentence_terms` arguments of the post-hoc bound: the prior, the widened
  proposal's s (the AE's N(μ, s² I)), and the learned proposal when there is one."""
  out = {"prior_fn": prior_log_prob_fn(gmm), "prior_params": gmm,
         "proposal_std": fallback_std(info, deterministic_z)}
  if proposal_params is not None:
    out["proposal_params"] = proposal_params
  return out
