"""Bounds on the negative log-likelihood of sentences, and the perplexities they imply.

Every model is scored as it was trained (`objectives.common.scoring`): an inputless decoder without
its inputs, a hidden-averaging decoder (seed 003 Eq. 7-8) on L jointly drawn latents, an AE from
z = μ with no bound under its own (absent) prior. Latents are drawn, and the prior evaluated, by
the objective's latent family (`objectives.latent_family`: N(0, I), MAT-VAE's spike-and-slab,
HSVAE's p(z|γ) p(γ)), the same functions its loss uses. Per sentence x_i (with T_i target tokens)
and draws z_ij = (z_ij1..z_ijL), z_ijl ~ q(z|x_i), j = 1..k:
- ELBO bound (seed 001 Eq. 2):
  −log p(x_i) ≤ −(1/k) Σ_j log p(x_i|z_ij) + L · KL(q(z|x_i) ‖ p(z)).
  (seed 003 reports its AVG models with one KL term: `elbo_one_kl`, labelled, not a bound.)
- Importance-weighted bound (Burda et al. 2016), over the L-tuples:
  −log p(x_i) ≤ −log (1/K) Σ_j p(x_i|z_ij) Π_l p(z_ijl) / q(z_ijl|x_i), p(z) the model's prior.
  With K = 1 it is the one-draw ELBO estimate log p(x|z) + log p(z) − log q(z|x); it tightens
  in expectation as K grows. For HSVAE p(z) and q(z|x) are the closed-form marginals over γ
  (`objectives.hsvae`), so even K = 1 is at least as tight as its ELBO over (z, γ). The K draws
  are taken `iw_chunk` at a time (vmap within a chunk, `lax.scan` over chunks) and reduced by a
  streaming float32 logsumexp, so memory does not grow with K (K = 500 and more).
- Post-hoc importance-weighted bound: the same with p(z) replaced by a density p̂(z) fitted after
  training (e.g. `posthoc_prior.log_prob` of a Gaussian mixture): it bounds −log p̂(x_i),
  p̂(x) = ∫ p(x|z) p̂(z) dz, the likelihood of the decoder under the fitted prior. Any proposal
  with full support gives a valid bound, and its tightness depends on the proposal: the model's
  posterior by default; for the AE (no trained σ) N(μ(x), diag s²); for a Gaussian posterior,
  optionally q widened to N(μ(x), diag max(σ(x), s)²) (`widened_proposal`). s (`proposal_std`)
  is chosen before the evaluation split is seen (`posthoc.select_proposal_scale`): an sMIM whose σ
  sits at its floor has a posterior far narrower than p̂(z|x) ∝ p(x|z) p̂(z), and its bound from q
  pays log q for that (377 nats against a true entropy of 27.5 on the built-in corpus; 58 with
  the proposal widened to the spread of the codes). For HSVAE p̂ replaces
  the marginal p(z) = ∫ p(z|γ) p(γ) dγ, and q(z|x) is the marginal over γ (closed form: the
  spike-and-slab is linear in γ), so the bound is on ∫ p(x|z) p̂(z) dz as for the other models.
- MELBO bound on the test-set NLL (seed 000 Eq. 16):
  NLL ≤ −(1/N) Σ_i (1/k) Σ_j log p(x_i|z_ij) + log N, a bound only for the prior equal to the
  evaluation set's own aggregate posterior; it grows with N, which is always reported beside it.
- PPL bound: exp(Σ_i NLL_i / Σ_i T_i) (for MELBO: exp(N · NLL / Σ_i T_i)), in three conventions
  (`PPL_CONVENTIONS`): <eos> in numerator and denominator ("+eos", seed 001, seed 003); in neither
  ("-eos"); out of the numerator but in the denominator ("smim", the official sMIM test script,
  seed 000 Table 2).

Notation: b batch, t time, d latent, k samples, c draws per chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import objectives
from mimtext.models import sentence_ae
from mimtext.objectives import latents

Array = jax.Array
# A post-hoc prior density: prior_fn(prior_params, z [..., d]) -> log p̂(z) [...], pure jnp.
PriorFn = Callable[[Any, Array], Array]

# Per-sentence importance-weighted bounds and the log-weight each one adds to log p(x|z).
_IW_WEIGHTS = {"iw": "log_w", "posthoc_iw": "posthoc_log_w"}
# Every importance-weighted bound a report can hold: the fallback proposal's post-hoc bound is
# renamed from "posthoc_iw" after its draws are reduced (`sentence_terms`).
IW_BOUNDS = ("iw", "posthoc_iw", "posthoc_widened_iw")
# The draws of the post-hoc bounds' own proposals come from fold_in(key, _PROPOSAL_STREAM − i)
# (i-th proposal), apart from q's draws fold_in(key, j), j < K.
_PROPOSAL_STREAM = 2**31 - 1
_MEANS = ("log_px", "log_px_no_eos", "kl")


def log_likelihood_terms(params, zs: Array, tokens: Array, lengths: Array,
                          cfg: objectives.ObjectiveConfig, scoring: objectives.common.Scoring):
  """log p(x | z_1..L) with and without its <eos> term, scored as the model was trained: [b], [b].

  zs: [L,b,d]. L = 1 is the one-latent decoder; L > 1 averages the L decoder states before the
  softmax (seed 003 Eq. 7-8). The decoder reads its words, or only <unk>s when it was trained
  inputless (`scoring.word_keep` = 0).
  """
  model = cfg.model
  hidden = jax.vmap(lambda z: sentence_ae.decoder_hidden(
      params, z, tokens, lengths, model, word_keep_rate=scoring.word_keep))(zs)
  per_token = sentence_ae.target_log_likelihoods(params, hidden.mean(axis=0), tokens, lengths,
                                                 model)
  log_eos = jnp.take_along_axis(per_token, (lengths - 2)[:, None], axis=1)[:, 0]
  return per_token.sum(axis=1), log_eos


def fixed_std_proposal(post: sentence_ae.Posterior, std: float | Array) -> sentence_ae.Posterior:
  """r(z|x) = N(μ(x), diag s²): a proposal for a model without a trained σ (the AE): [b,d] fields.

  std: s, a scalar or [d].
  """
  log_var = jnp.broadcast_to(2.0 * jnp.log(jnp.asarray(std, post.mean.dtype)), post.mean.shape)
  return sentence_ae.Posterior(post.mean, log_var, log_var)


def widened_proposal(post: sentence_ae.Posterior, std: float | Array) -> sentence_ae.Posterior:
  """r(z|x) = N(μ(x), diag max(σ(x), s)²): q(z|x) with each σ_d raised to at least s_d: [b,d].

  std: s, a scalar or [d]. s = 0 leaves q unchanged (log σ² is raised to at least log s² = −∞).
  """
  floor = 2.0 * jnp.log(jnp.asarray(std, post.mean.dtype))
  log_var = jnp.maximum(post.log_var, floor)
  return sentence_ae.Posterior(post.mean, log_var, log_var)


def draw_terms(params, post: sentence_ae.Posterior, key: Array, batch,
               cfg: objectives.ObjectiveConfig, family: latents.LatentFamily, *,
               model_prior: bool = True, prior_fn: PriorFn | None = None,
               prior_params: Any = None) -> dict[str, Array]:
  """One draw: an L-tuple z_1..L ~ q(z|x) and what every bound needs of it: dict of [b].

  log_px, log_px_no_eos: log p(x | z_1..L) with and without the <eos> term;
  with `model_prior`: kl (`family.kl`, one latent's KL averaged over the L) and
    log_w = Σ_l [log p(z_l) − log q(z_l|x)], the model's importance log-weight;
  with `prior_fn`: posthoc_log_w = Σ_l [log p̂(z_l) − log q(z_l|x)], p̂ the post-hoc prior.
  L = `scoring(cfg).num_latents`.
  """
  scoring = objectives.common.scoring(cfg)
  draw = family.sample(key, post, cfg, scoring.num_latents)
  log_px, log_eos = log_likelihood_terms(params, draw.z, batch["tokens"], batch["lengths"], cfg,
                                          scoring)
  terms = {"log_px": log_px, "log_px_no_eos": log_px - log_eos}
  if model_prior:
    terms["kl"] = family.kl(post, draw, cfg)
    terms["log_w"] = (family.log_prior(draw.z, cfg) - draw.log_q).sum(0)
  if prior_fn is not None:
    terms["posthoc_log_w"] = (prior_fn(prior_params, draw.z) - draw.log_q).sum(0)
  return terms


def _is_logsumexp(name: str) -> bool:
  return name.startswith(tuple(f"{bound}_log_px" for bound in _IW_WEIGHTS))


def chunk_statistics(terms: dict[str, Array], index: Array, num_samples: int,
                     iw_samples: int, sweep: tuple[int, ...] = ()) -> dict[str, Array]:
  """Reduces the draws of one chunk: terms [c,b] of the draws numbered `index` [c] → dict of [b].

  log_px, log_px_no_eos, kl: sums over the draws j < num_samples (none when num_samples = 0);
  B_log_px, B_log_px_no_eos for B in iw, posthoc_iw (where its log-weight is in `terms`):
  logsumexp_j (log p(x|z_j) + log w_j) over the draws j < iw_samples, in float32; and for each K
  of `sweep` the same over the draws j < K, named "B_log_px@K" (a K sweep from one set of draws).
  """
  stats = {}
  if num_samples:
    in_mean = (index < num_samples)[:, None]
    for name in _MEANS:
      if name in terms:
        stats[name] = jnp.sum(jnp.where(in_mean, terms[name], 0.0), axis=0)
  limits = {"": iw_samples, **{f"@{k}": k for k in sweep}}
  for bound, weight in _IW_WEIGHTS.items():
    if weight not in terms:
      continue
    for suffix in ("", "_no_eos"):
      values = (terms["log_px" + suffix] + terms[weight]).astype(jnp.float32)
      for tag, limit in limits.items():
        stats[f"{bound}_log_px{suffix}{tag}"] = jax.nn.logsumexp(
            jnp.where((index < limit)[:, None], values, -jnp.inf), axis=0)
  return stats


def merge_statistics(total: dict[str, Array], chunk: dict[str, Array]) -> dict[str, Array]:
  """Running reduction: sums add, logsumexps combine by logaddexp (the streaming logsumexp)."""
  return {name: (jnp.logaddexp if _is_logsumexp(name) else jnp.add)(total[name], chunk[name])
          for name in total}


def stream_draws(draw_fn: Callable[[Array], dict[str, Array]], key: Array, num_draws: int,
                 chunk: int, num_samples: int, iw_samples: int,
                 sweep: tuple[int, ...] = ()) -> dict[str, Array]:
  """Reduces draws j = 0..num_draws−1 of `draw_fn` (key fold_in(key, j)) with bounded memory.

  The draws go c at a time, c = ⌈num_draws / n⌉ ≤ chunk with n = ⌈num_draws / chunk⌉ chunks:
  vmap over the c draws of a chunk, `lax.scan` over the n chunks carrying the running sums and
  logsumexps (`chunk_statistics`, `merge_statistics`); the < n padding draws past num_draws are
  masked out. Draw j has the key fold_in(key, j) whatever the chunking, so the result does not
  depend on `chunk` beyond float rounding. Memory: one chunk's c decoder passes.
  """
  num_chunks = -(-num_draws // chunk)
  size = -(-num_draws // num_chunks)
  index = jnp.arange(num_chunks * size).reshape(num_chunks, size)

  def statistics(chunk_index):
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(chunk_index)
    return chunk_statistics(jax.vmap(draw_fn)(keys), chunk_index, num_samples, iw_samples,
                            sweep)

  shapes = jax.eval_shape(statistics, index[0])
  init = {name: jnp.full(s.shape, -jnp.inf if _is_logsumexp(name) else 0.0, s.dtype)
          for name, s in shapes.items()}
  total, _ = jax.lax.scan(lambda acc, idx: (merge_statistics(acc, statistics(idx)), None),
                          init, index)
  return total


def _finish(total: dict[str, Array], num_samples: int, iw_samples: int) -> dict[str, Array]:
  """Means over k = num_samples draws and log-means over K = iw_samples draws (over K' draws for
  a sweep's "...@K'"): dict of [b]."""
  def log_count(name):
    return math.log(int(name.rsplit("@", 1)[1]) if "@" in name else iw_samples)

  return {name: value - log_count(name) if _is_logsumexp(name) else value / num_samples
          for name, value in total.items()}


@functools.partial(jax.jit, static_argnames=("cfg", "num_samples", "iw_samples", "iw_chunk",
                                             "prior_fn", "iw_sweep"))
def sentence_terms(params, batch, key: Array, cfg: objectives.ObjectiveConfig, num_samples: int,
                   iw_samples: int | None = None, *, iw_chunk: int = 10,
                   prior_fn: PriorFn | None = None, prior_params: Any = None,
                   proposal_std: float | Array | None = None, proposal_params: Any = None,
                   iw_sweep: tuple[int, ...] = ()):
  """Per-sentence ingredients of every bound, scored as the model was trained: dict of [b] arrays.

  Draws max(num_samples, iw_samples) latent draws per sentence, at most `iw_chunk` at a time
  (`stream_draws`: memory is that of `iw_chunk` decoder passes, [c,L,b,t,h] states and [c,b,t,v]
  logits, whatever K). Each draw is an L-tuple z_1..L of independent posterior draws of the
  objective's latent family (L = `scoring(cfg).num_latents`; 1 except for hidden-state averaging),
  scored by the decoder the way it was trained (`log_likelihood_terms`). Returns:
    log_px, log_px_no_eos: (1/k) Σ_j log p(x | z_j,1..L) over the first k = num_samples draws, with
      and without the <eos> term;
    iw_log_px, iw_log_px_no_eos: log (1/K) Σ_j p(x | z_j,1..L) Π_l p(z_jl) / q(z_jl|x) over
      the first K = iw_samples draws (default num_samples), under the model's own prior
      (`family.log_prior`);
    kl: the KL term of one latent (`family.kl`: closed form where one exists, else its k-draw
      average); a valid bound for L latents carries L × kl;
    code: the deterministic code (`family.code`: μ; (1 − E γ) μ for HSVAE), for active units;
    z_sample: one posterior sample per sentence (the first draw's first latent), for the average
      Hoyer of seed 004 §4.1.3;
    post_std, frac_at_floor: `objectives.common.posterior_row_stats`;
    with `prior_fn`: posthoc_iw_log_px, posthoc_iw_log_px_no_eos, the importance-weighted bound
      over the same K draws under the post-hoc prior log p̂(z) = prior_fn(prior_params, z) (see
      the module docstring).
  For a language model (objective lm, `scoring.latent_free`) log_px is exact whatever z, and the
  same fields as an AE's are returned (no post-hoc bound). For an AE (z = μ) log_px,
  log_px_no_eos (at z = μ), code, z_sample (= μ) and the row statistics are returned, and with
  `prior_fn` the post-hoc bound over K = iw_samples (default num_samples) draws of the proposal
  N(μ(x), proposal_std² I) (required then): it has no prior of its own.

  Args:
    iw_chunk: draws per chunk (static); the result does not depend on it beyond float rounding.
    iw_sweep: K' < iw_samples (static): each importance-weighted bound also over the first K'
      of its iw_samples draws, named "B_log_px@K'" (and "B_log_px_no_eos@K'"): a K sweep at the
      cost of the largest K alone.
    prior_fn: static, a pure jnp function (prior_params, z [..., d]) -> log p̂(z) [...], e.g.
      `posthoc_prior.log_prob`; pass a module-level function (a new `functools.partial` object
      recompiles).
    prior_params: traced pytree (e.g. a fitted `GaussianMixture`): refitting does not recompile.
    proposal_std: s (scalar or [d], traced) of the post-hoc bound's proposal: for the AE
      N(μ(x), diag s²) (required), for a Gaussian posterior N(μ(x), diag max(σ(x), s)²), drawn
      apart from the K draws of q (another K decoder passes); None: q itself. Any s > 0 gives a
      valid bound, tighter when the proposal is close to p̂(z|x); rejected for other families.
    proposal_params: traced parameters of a learned proposal r(z|x) (`proposal.train`): the
      post-hoc bound "posthoc_iw" is then taken under r, and the one under the proposal of
      `proposal_std` (or q) is reported beside it as "posthoc_widened_iw"
      (`posthoc_proposals`); each proposal other than q costs another K decoder passes.
  """
  if iw_chunk < 1:
    raise ValueError(f"iw_chunk must be >= 1, got {iw_chunk}")
  tokens, lengths = batch["tokens"], batch["lengths"]
  scoring = objectives.common.scoring(cfg)
  family = objectives.latent_family(cfg)
  post = sentence_ae.encode(params, tokens, lengths, cfg.model)
  post_std, frac_at_floor = objectives.common.posterior_row_stats(post, cfg.model)
  out = {"code": family.code(post), "post_std": post_std, "frac_at_floor": frac_at_floor}
  iw_samples = iw_samples or num_samples
  if scoring.latent_free and prior_fn is not None:
    raise ValueError("a language model (objective lm) has no latent to put a prior on")
  proposals = posthoc_proposals(post, batch, cfg, family, prior_fn, proposal_std, proposal_params)
  if scoring.deterministic_z or scoring.latent_free:
    log_px, log_eos = log_likelihood_terms(params, post.mean[None], tokens, lengths, cfg,
                                            scoring)
    out.update(log_px=log_px, log_px_no_eos=log_px - log_eos, z_sample=post.mean)
  else:
    # A bound needs draws whose density log q is exact: HSVAE's relaxed (soft) spike/slab choice
    # is not scored by the mixture density, so draws are exact (hard); no-op for other families.
    cfg = dataclasses.replace(cfg, concrete_hard=True)
    on_q = prior_fn if not proposals else None
    draw_fn = lambda k: draw_terms(params, post, k, batch, cfg, family, prior_fn=on_q,
                                   prior_params=prior_params)
    draws = max(num_samples, iw_samples)
    out.update(_finish(stream_draws(draw_fn, key, draws, iw_chunk, num_samples, iw_samples,
                                    iw_sweep),
                       num_samples, iw_samples))
    first = family.sample(jax.random.fold_in(key, 0), post, cfg, scoring.num_latents)
    out["z_sample"] = first.z[0]
  for stream, (name, (proposal, proposal_family)) in enumerate(proposals.items()):
    proposal_fn = lambda k, r=proposal, f=proposal_family: draw_terms(
        params, r, k, batch, cfg, f, model_prior=False, prior_fn=prior_fn,
        prior_params=prior_params)
    total = stream_draws(proposal_fn, jax.random.fold_in(key, _PROPOSAL_STREAM - stream),
                         iw_samples, iw_chunk, 0, iw_samples, iw_sweep)
    out.update({n.replace("posthoc_iw", name, 1): v
                for n, v in _finish(total, 0, iw_samples).items() if n.startswith("posthoc")})
  return out


def posthoc_proposals(post: sentence_ae.Posterior, batch, cfg: objectives.ObjectiveConfig,
                      family: latents.LatentFamily, prior_fn: PriorFn | None,
                      proposal_std: float | Array | None,
                      proposal_params: Any) -> dict[str, tuple[Any, latents.LatentFamily]]:
  """The proposals of the post-hoc bounds that are not q(z|x) itself, by bound name: each with the
  family whose `sample` draws it (and scores log r).

  "posthoc_iw" is the learned r(z|x) (`proposal.posterior`: a Gaussian, with a low-rank
  precision term when it was trained with one) when `proposal_params` is given,
  with the fallback beside it as "posthoc_widened_iw": N(μ(x), diag s²) for an AE,
  N(μ(x), diag max(σ(x), s)²) for a Gaussian posterior (q itself without `proposal_std`).
  Without `proposal_params` the fallback is "posthoc_iw"; {} when that is q itself (its bound
  then comes from q's own draws) or there is no `prior_fn`.
  """
  if prior_fn is None:
    if proposal_std is not None or proposal_params is not None:
      raise ValueError("proposal_std and proposal_params are proposals of the post-hoc bound: "
                       "pass its prior_fn too")
    return {}
  scoring = objectives.common.scoring(cfg)
  if scoring.deterministic_z:
    if proposal_std is None:
      raise ValueError("a post-hoc bound for an AE needs proposal_std: its σ head never trained, "
                       "so the proposal is N(μ(x), proposal_std² I)")
    fallback = fixed_std_proposal(post, proposal_std)
  elif not family.gaussian_posterior and (proposal_std is not None
                                          or proposal_params is not None):
    raise ValueError("proposal_std and proposal_params replace a Gaussian posterior in the "
                     f"post-hoc bound; the {family.name} family has no Gaussian posterior")
  elif proposal_std is not None:
    fallback = widened_proposal(post, proposal_std)
  else:
    fallback = post
  if proposal_params is None:
    return {} if fallback is post else {"posthoc_iw": (fallback, latents.GAUSSIAN)}
  from mimtext.evaluation import proposal as proposal_lib  # pylint: disable=g-import-not-at-top
  learned = proposal_lib.posterior(proposal_params, batch["tokens"], batch["lengths"],
                                   cfg.model)
  return {"posthoc_iw": (learned, proposal_lib.FAMILY),
          "posthoc_widened_iw": (fallback, latents.GAUSSIAN)}



# The three perplexity conventions (DESIGN §3, §7): which of <eos> enters the numerator (the NLL)
# and the denominator (the token count). "+eos" (seed 001; Kruengkrai) counts the <eos> step in
# both; "-eos" in neither; "smim" leaves the <eos> term out of the NLL but counts <eos> in the
# tokens, as the official sMIM test script does (seed 000 Table 2).
PPL_CONVENTIONS = {"": ("", 1), "_no_eos": ("_no_eos", 0), "_smim": ("_no_eos", 1)}
PPL_LABELS = {"": "PPL +eos", "_no_eos": "PPL -eos", "_smim": "PPL smim"}


def _add_bound(out: dict, name: str, per_sentence: dict[str, np.ndarray],
               tokens: dict[str, float], n: int, offset: float = 0.0,
               truth: np.ndarray | None = None) -> None:
  """NLL per sentence (+eos, -eos) and the three PPLs of one bound, given per-sentence NLLs; also
  `name`_nll_stderr, the standard error of the +eos mean over the N sentences (std / √N), the
  spread a second test set of the same size would show."""
  for nll_suffix in ("", "_no_eos"):
    out[f"{name}_nll{nll_suffix}"] = float(np.mean(per_sentence[nll_suffix]) + offset)
  out[f"{name}_nll_stderr"] = (float(np.std(per_sentence[""], ddof=1) / math.sqrt(n)) if n > 1
                               else float("nan"))
  if truth is not None:  # the paired gap to the exact −log p(x_i): a valid bound keeps it ≥ 0
    gap = per_sentence[""] + offset - truth
    out[f"{name}_gap"] = float(np.mean(gap))
    out[f"{name}_gap_stderr"] = (float(np.std(gap, ddof=1) / math.sqrt(n)) if n > 1
                                 else float("nan"))
  for suffix, (nll_suffix, _) in PPL_CONVENTIONS.items():
    total = float(np.sum(per_sentence[nll_suffix]) + n * offset)
    out[f"{name}_ppl{suffix}"] = float(np.exp(total / tokens[suffix]))


def nll_bounds(terms: dict[str, np.ndarray], num_words: np.ndarray,
               scoring: objectives.common.Scoring | None = None,
               true_nll: np.ndarray | None = None) -> dict[str, float]:
  """Dataset-level NLL and PPL bounds from per-sentence terms of N sentences.

  Args:
    terms: "log_px", "log_px_no_eos" and, unless `scoring.deterministic_z`, "iw_log_px",
      "iw_log_px_no_eos", "kl", each [N] (see `sentence_terms`); optionally
      "posthoc_iw_log_px", "posthoc_iw_log_px_no_eos" (a post-hoc prior, also for an AE).
    num_words: [N] words per sentence (without <sos>/<eos>).
    scoring: how the model was trained (default: one latent, stochastic z).
  Returns:
    A flat dict with N, rec / rec_no_eos (−E log p(x|z) per sentence), num_tokens (words + <eos>),
    num_tokens_no_eos (words) and, for each bound B in elbo, iw, melbo: B_nll and B_nll_no_eos
    (nats per sentence), B_ppl, B_ppl_no_eos and B_ppl_smim (the three conventions of
    `PPL_CONVENTIONS`). With L > 1 jointly decoded latents, "elbo" is the valid bound (L × KL)
    and "elbo_one_kl" the quantity seed 003 reports (one KL term, not a bound on this model's NLL);
    kl is one latent's KL and kl_total = L × kl. An AE gets rec only and "bounds_skipped" says why.
    With post-hoc terms also the bound "posthoc_iw" (under the fitted prior p̂, not the model's).
    A language model (`scoring.latent_free`) gets "exact": its −log p(x) is no bound but the
    value itself. Every bound B also has B_nll_stderr (the standard error over sentences) and,
    given `true_nll` ([N] the exact −log p(x_i) of a corpus that has one, +eos), B_gap and
    B_gap_stderr: the mean of B_i − (−log p(x_i)) and its paired standard error (a valid bound
    has a gap ≥ 0 up to Monte Carlo noise).
  """
  truth = None if true_nll is None else np.asarray(true_nll, np.float64)
  scoring = scoring or objectives.common.Scoring(1.0, 1, False, False)
  n = len(num_words)
  if n == 0:
    raise ValueError("cannot compute bounds on an empty evaluation set")
  tokens = {suffix: float(np.sum(num_words + extra))
            for suffix, (_, extra) in PPL_CONVENTIONS.items()}
  rec = {s: -np.asarray(terms["log_px" + s], np.float64) for s in ("", "_no_eos")}
  out: dict[str, Any] = {"N": float(n), "num_tokens": tokens[""],
                         "num_tokens_no_eos": tokens["_no_eos"],
                         "rec": float(rec[""].mean()), "rec_no_eos": float(rec["_no_eos"].mean())}
  if scoring.latent_free:
    out["bounds_skipped"] = ("a language model: the decoder ignores z, so −log p(x) is computed "
                             "exactly (row exact), with no latent and no bound")
    _add_bound(out, "exact", rec, tokens, n, truth=truth)
    return out
  if scoring.deterministic_z:
    out["bounds_skipped"] = (
        "an AE decodes z = μ(x) and never trains its log-variance head, so it defines no "
        "posterior or prior to bound log p(x) with: reconstruction from z = μ and BLEU only"
        + ("; the posthoc_iw bound is under a prior fitted after training, with the proposal "
           "N(μ(x), s² I)" if "posthoc_iw_log_px" in terms else ""))
    _add_posthoc_bound(out, terms, rec, tokens, n, truth)
    return out
  kl = np.asarray(terms["kl"], np.float64)
  num_latents = scoring.num_latents
  out.update(kl=float(kl.mean()), kl_total=float(num_latents * kl.mean()),
             num_latents=num_latents)
  _add_bound(out, "elbo", {s: rec[s] + num_latents * kl for s in rec}, tokens, n,
             truth=truth)
  if num_latents > 1:
    _add_bound(out, "elbo_one_kl", {s: rec[s] + kl for s in rec}, tokens, n, truth=truth)
  _add_bound(out, "iw", {s: -np.asarray(terms["iw_log_px" + s], np.float64) for s in rec},
             tokens, n, truth=truth)
  _add_bound(out, "melbo", rec, tokens, n, offset=math.log(n), truth=truth)
  _add_posthoc_bound(out, terms, rec, tokens, n, truth)
  return out


def k_sweep(terms: dict[str, np.ndarray], ks: tuple[int, ...], iw_samples: int,
            true_nll: np.ndarray | None = None) -> list[dict[str, float]]:
  """The importance-weighted bounds at each K of a sweep (`sentence_terms(iw_sweep=...)`), nats
  per sentence with <eos>: one row per K, ascending.

  Each row has K and, for B in `IW_BOUNDS` (those present): B_nll, B_nll_stderr (over
  sentences), B_step and B_step_stderr (the paired change from the previous K: the bound has
  converged when it no longer moves by more than this standard error) and, given `true_nll`,
  B_gap and B_gap_stderr (paired, to the exact −log p(x)).
  """
  rows, previous = [], {}
  for k in sorted(set(ks) | {iw_samples}):
    row: dict[str, float] = {"K": k}
    for bound in IW_BOUNDS:
      name = f"{bound}_log_px" + ("" if k == iw_samples else f"@{k}")
      if name not in terms:
        continue
      nll = -np.asarray(terms[name], np.float64)
      n = len(nll)
      se = lambda x: float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
      row[f"{bound}_nll"], row[f"{bound}_nll_stderr"] = float(nll.mean()), se(nll)
      if bound in previous:
        step = nll - previous[bound]
        row[f"{bound}_step"], row[f"{bound}_step_stderr"] = float(step.mean()), se(step)
      if true_nll is not None:
        gap = nll - np.asarray(true_nll, np.float64)
        row[f"{bound}_gap"], row[f"{bound}_gap_stderr"] = float(gap.mean()), se(gap)
      previous[bound] = nll
    rows.append(row)
  return rows


def _add_posthoc_bound(out: dict, terms: dict[str, np.ndarray], rec: dict[str, np.ndarray],
                       tokens: dict[str, float], n: int, truth: np.ndarray | None = None) -> None:
  """The post-hoc bounds ("posthoc_iw", and "posthoc_widened_iw" beside a learned proposal), where
  `terms` has their importance-weighted log p̂(x)."""
  for bound in IW_BOUNDS[1:]:
    if f"{bound}_log_px" in terms:
      _add_bound(out, bound, {s: -np.asarray(terms[f"{bound}_log_px" + s], np.float64)
                              for s in rec}, tokens, n, truth=truth)

