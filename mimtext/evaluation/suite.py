"""The evaluation suite of `launch.evaluate --suite=...`: every section, its JSON and its report.

Sections (`SECTIONS`), each a function `(context) -> dict` that either returns its numbers or
`{"skipped": reason}` when it does not apply to the model or the data is absent:

  bounds      ELBO, IW (K draws), MELBO and the post-hoc-prior IW bound, PPL in three conventions,
              BLEU-1, reconstructions, prior samples, a linear probe (`runner.evaluate_split`).
  info        I_q(x; z) (He et al. 2019, with and without j = i), KL per dimension, active units,
              the floor fraction, the Kraskov entropy of the codes beside that of N(0, I), Hoyer.
  histograms  seed 000 Figure 3: log p(x_i|z_j) and log q(z_i|x_j) for i = j and i != j (PNG).
  melbo       seed 000 appendix B, Figure 5: MELBO over random subsets of growing size (PNG).
  qa          seed 000 §4.6: answers ranked by latent distance, on our Yahoo ranking set.
  classify    seed 004 §4.2: a frozen-encoder classifier on yahoo_topic and dbpedia (and the
              built-in corpus's topics), with seed 004 Figure 4's per-class γ heat map for HSVAE.

`run_suite` runs the chosen sections, timing each; `write_markdown` writes `report_SPLIT.md`
embedding the PNGs. Notation: N sentences, M histogram sentences, d latent.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import experiment
from mimtext import objectives
from mimtext.data import corpus as corpus_lib
from mimtext.data import pipeline as pipeline_lib
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import bounds
from mimtext.evaluation import downstream
from mimtext.evaluation import encoding
from mimtext.evaluation import figures
from mimtext.evaluation import information
from mimtext.evaluation import posthoc
from mimtext.evaluation import qa
from mimtext.evaluation import runner
from mimtext.models import sentence_ae

SECTIONS = ("bounds", "info", "histograms", "melbo", "qa", "classify")
DEFAULT_SUITE = ("bounds", "info", "histograms", "melbo")
CLASSIFY_CORPORA = ("yahoo_topic", "dbpedia")


@dataclasses.dataclass
class Options:
  """What the sections take besides the run and the split (launch.evaluate's flags)."""
  num_z_samples: int = 10
  iw_samples: int = 10
  batch_size: int = 50
  seed: int = 0
  max_decode_len: int = 0
  posthoc: bool = True              # fit (or reuse) the post-hoc prior and report its IW bound
  posthoc_refit: bool = False
  learned_proposal: bool = True     # train r(z|x) for the post-hoc bound (widened one beside it)
  posthoc_flow: bool = False        # a flow among the post-hoc prior's candidates (posthoc.fit)
  histogram_sentences: int = 100
  melbo_subsets: int = 20
  max_info_sentences: int = 5000
  qa_questions: int = 1000
  classify_max_sentences: int = 5000
  data_root: str | None = None      # parent of yahoo/, yahoo_topic/, dbpedia/ (default: resolved)
  progress: bool = True
  iw_sweep: tuple[int, ...] = ()    # K values of a sweep of the importance-weighted bounds


@dataclasses.dataclass
class Context:
  """What every section reads: the run, its corpus, the split, and results of earlier sections."""
  run: runner.Run
  corpus: corpus_lib.Corpus
  split_name: str
  split: corpus_lib.CorpusSplit
  options: Options
  out_dir: str
  results: dict[str, Any] = dataclasses.field(default_factory=dict)
  terms: dict[str, np.ndarray] | None = None     # per-sentence bound terms (bounds section)
  # q(z|x) of the first sentences of the split, encoded once for every section that reads them.
  encoded: sentence_ae.Posterior | None = None

  @property
  def scoring(self) -> objectives.common.Scoring:
    return objectives.common.scoring(self.run.obj_cfg)

  def posteriors(self, num: int) -> tuple[corpus_lib.CorpusSplit, sentence_ae.Posterior]:
    """The first `num` sentences of the split and their q(z|x) (numpy [n,d] fields,
    `encoding.encode_sentences`, batches of 200). Encoded once: a section asking for no more
    sentences than an earlier one takes the first rows of its encoding (the same numbers: a
    sentence's posterior does not depend on which sentences share its batch)."""
    split = self.split.head(num)
    n = len(split.ids)
    if self.encoded is None or len(self.encoded.mean) < n:
      self.encoded = encoding.encode_sentences(self.run.params, self.run.model_cfg, split.ids,
                                               progress=self.options.progress,
                                               desc=f"{self.split_name}: encode")
    return split, downstream.take_rows(self.encoded, slice(0, n))

  def figure_path(self, name: str) -> str:
    return os.path.join(self.out_dir, f"{name}_{self.split_name}.png")


def _skipped(reason: str) -> dict[str, str]:
  return {"skipped": reason}


# ---------------------------------------------------------------------------------------------
# bounds


def posthoc_training_split(ctx: Context) -> tuple[str, corpus_lib.CorpusSplit] | None:
  """The split the post-hoc prior is fitted on: train, else valid when scoring another split."""
  for name in ("train", "valid"):
    if name in ctx.corpus.splits and name != ctx.split_name:
      return name, ctx.corpus.splits[name]
  return None


def section_bounds(ctx: Context) -> dict[str, Any]:
  o = ctx.options
  prior, gmm = None, None
  fit_info: dict[str, Any] = {"posthoc_skipped": "turned off (--noposthoc): no post-hoc prior "
                                                  "fitted, no IW bound under it"}
  if ctx.scoring.latent_free:
    fit_info = {"posthoc_skipped": "a language model has no latent: its NLL is exact"}
  elif o.posthoc:
    source = posthoc_training_split(ctx)
    if source is None:
      fit_info = {"posthoc_skipped": "no training split to fit the post-hoc prior on"}
    else:
      try:
        gmm, fit_info = posthoc.load_or_fit(ctx.run, source[1], refit=o.posthoc_refit,
                                            seed=o.seed, save_dir=ctx.out_dir,
                                            progress=o.progress, flow=o.posthoc_flow)
      except ValueError as e:  # e.g. a diverged run's codes are not finite
        gmm = None
        fit_info = {"posthoc_failed": f"the post-hoc prior could not be fitted to the codes of "
                                      f"step {ctx.run.step}: {one_line(e)}"}
    if gmm is not None:
      learned, learned_info = None, None
      if o.learned_proposal and posthoc.learns_proposal(ctx.run):
        learned, learned_info = posthoc.load_or_fit_proposal(
            ctx.run, source[1], gmm, fit_info, refit=o.posthoc_refit, seed=o.seed,
            save_dir=ctx.out_dir, progress=o.progress)
      inputs = posthoc.bound_inputs(gmm, fit_info, ctx.scoring.deterministic_z, learned)
      described = posthoc.describe_proposal(fit_info, ctx.scoring.deterministic_z)
      fit_info = {"posthoc_prior": {**fit_info, "fitted_on": source[0], "proposal": described}}
      if learned_info is not None:
        fit_info["posthoc_prior"].update(
            learned_proposal=learned_info, widened_proposal=described,
            proposal=posthoc.describe_learned_proposal(learned_info))
      prior = runner.PosthocPrior(inputs["prior_fn"], gmm, inputs["proposal_std"],
                                  inputs.get("proposal_params"))
  report, terms = runner.evaluate_split(
      ctx.run, ctx.split, num_z_samples=o.num_z_samples, iw_samples=o.iw_samples, seed=o.seed,
      batch_size=o.batch_size, max_decode_len=o.max_decode_len,
      probe_split=ctx.corpus.splits.get("train"), progress=o.progress, posthoc=prior,
      return_terms=True, iw_sweep=o.iw_sweep)
  ctx.terms = terms
  report.update(fit_info)
  if report.get("iw_sweep"):
    path = figures.plot_k_sweep(report["iw_sweep"], ctx.figure_path("k_sweep"),
                                true_entropy=report.get("true_nll"))
    report["iw_sweep_figure"] = os.path.basename(path)
  return report


# ---------------------------------------------------------------------------------------------
# info


def section_info(ctx: Context) -> dict[str, Any]:
  """I_q(x; z), the KL per dimension and in total, active units, entropies and Hoyer of the codes.

  z is drawn and the KL taken by the run's latent family (`objectives.latent_family`): the KL is
  that of the objective's own prior (MAT-VAE's spike-and-slab, not N(0, I)); per dimension only
  where the family has it in closed form, else the total alone (Monte Carlo) with the reason.
  """
  o = ctx.options
  split, post = ctx.posteriors(o.max_info_sentences)
  codes = encoding.deterministic_code(post)
  d = codes.shape[1]
  out: dict[str, Any] = {
      "N": len(split.ids),
      "active_units": information.active_units(codes),
      "latent_dim": d,
      "average_hoyer_mean_code": information.average_hoyer(codes),
      "kraskov_entropy": information.kraskov_entropy(codes),
      "standard_normal_entropy": information.gaussian_entropy(d),
  }
  # The Gaussian fit's entropy needs a full-rank sample covariance (N > d, no collapsed dims).
  gaussian = information.gaussian_entropy_of_sample(codes)
  if math.isfinite(gaussian):
    out["gaussian_entropy_of_codes"] = gaussian
  else:
    out["gaussian_entropy_of_codes_skipped"] = (
        f"the sample covariance of {len(codes)} codes in {d} dimensions is singular")
  if ctx.terms is not None and "frac_at_floor" in ctx.terms:
    out["frac_at_floor"] = float(np.mean(ctx.terms["frac_at_floor"]))
  if ctx.scoring.deterministic_z:
    out["mi_skipped"] = ("an AE's z = μ(x) is deterministic: I(x; z) is unbounded for a "
                         "continuous code, and its σ head is untrained")
    out["kl_skipped"] = "an AE has no prior and no KL term (z = μ(x), its σ head is untrained)"
    return out
  obj_cfg = ctx.run.obj_cfg
  family = objectives.latent_family(obj_cfg)
  # k = num_z_samples draws (key PRNGKey(seed)): the first for the MI, all k for a Monte Carlo KL.
  draw = family.sample(jax.random.PRNGKey(o.seed), post, obj_cfg, max(1, o.num_z_samples))
  out.update(information.family_kl_summary(family, post, draw, obj_cfg))
  if family.gaussian_posterior:
    z = np.asarray(draw.z[0])
    out["mutual_information"] = information.mutual_information(post.mean, post.log_var, z)
    out["mi_ceiling_log_n"] = math.log(len(z))
  else:
    out["mi_skipped"] = (f"the estimator needs a Gaussian q(z|x); the {family.name} family's is a "
                         "spike-and-slab mixture over γ")
  return out


# ---------------------------------------------------------------------------------------------
# histograms (seed 000 Figure 3)


@functools.partial(jax.jit, static_argnames=("cfg",))
def cross_log_likelihoods(params, zs: jax.Array, tokens: jax.Array, lengths: jax.Array,
                          cfg: objectives.ObjectiveConfig) -> jax.Array:
  """log p(x_i | z_j) for every pair: zs [M,L,d] (the L latents drawn for sentence j), tokens
  [M,t] → [M,M] with rows i (sentences) and columns j (codes), scored as the model was trained."""
  scoring = objectives.common.scoring(cfg)
  m = tokens.shape[0]

  def column(z_j):  # [L,d] → log p(x_i | z_j) for all i: [M]
    zs_j = jnp.broadcast_to(z_j[:, None, :], (z_j.shape[0], m, z_j.shape[-1]))
    return bounds.log_likelihood_terms(params, zs_j, tokens, lengths, cfg, scoring)[0]

  return jax.lax.map(column, zs).T


def section_histograms(ctx: Context) -> dict[str, Any]:
  o = ctx.options
  split = ctx.split.head(o.histogram_sentences)
  m = len(split.ids)
  if m < 2:
    return _skipped("fewer than two sentences")
  _, post = ctx.posteriors(m)
  (batch,) = pipeline_lib.inference_batches(split.ids, m, pad_multiple=8, sort_by_length=False)
  tokens, lengths = jnp.asarray(batch["tokens"]), jnp.asarray(batch["lengths"])
  num_latents = ctx.scoring.num_latents
  family = objectives.latent_family(ctx.run.obj_cfg)
  if ctx.scoring.deterministic_z:
    zs = jnp.broadcast_to(post.mean[:, None, :], (m, 1, post.mean.shape[-1]))
  else:
    draw = family.sample(jax.random.PRNGKey(o.seed), post, ctx.run.obj_cfg, num_latents)
    zs = jnp.swapaxes(draw.z, 0, 1)  # [M,L,d]
  log_px = np.asarray(cross_log_likelihoods(ctx.run.params, zs, tokens, lengths,
                                            ctx.run.obj_cfg))
  log_q = None
  if not ctx.scoring.deterministic_z and family.gaussian_posterior:
    log_q = information.pairwise_log_q(np.asarray(post.mean), np.asarray(post.log_var),
                                       np.asarray(zs[:, 0]))
  path = figures.plot_pairwise_histograms(log_px, log_q, ctx.figure_path("fig3_histograms"))
  off = ~np.eye(m, dtype=bool)
  out = {"M": m, "figure": os.path.basename(path),
         "log_px_same_mean": float(np.mean(np.diag(log_px))),
         "log_px_other_mean": float(np.mean(log_px[off])),
         "own_code_is_best_fraction": float(np.mean(np.argmax(log_px, axis=1) == np.arange(m)))}
  if log_q is not None:
    out.update(log_q_same_mean=float(np.mean(np.diag(log_q))),
               log_q_other_mean=float(np.mean(log_q[off])))
  else:
    out["log_q_skipped"] = ("an AE's z = μ(x) is deterministic" if ctx.scoring.deterministic_z
                            else f"no Gaussian q(z|x) to score (the {family.name} family's is a "
                                 "spike-and-slab mixture over γ)")
  return out


# ---------------------------------------------------------------------------------------------
# melbo (seed 000 appendix B, Figure 5)


MELBO_NOTE = ("MELBO is not a bound on the model's NLL: it bounds the NLL only under a prior "
              "equal to this set's own aggregate posterior, and grows with log N (seed 000 "
              "appendix B)")


def subset_sizes(n: int) -> list[int]:
  """Roughly geometric sizes 10, 20, 50, 100, ... up to and including n."""
  sizes = [s * 10 ** e for e in range(1, 8) for s in (1, 2, 5) if s * 10 ** e < n]
  return sizes + [n]


def section_melbo(ctx: Context) -> dict[str, Any]:
  if ctx.terms is None:
    return _skipped("needs the bounds section (its per-sentence reconstruction terms)")
  if ctx.scoring.deterministic_z:
    return _skipped("an AE has no posterior samples to average: MELBO is not defined for it")
  rec = -np.asarray(ctx.terms["log_px"], np.float64)
  result = information.melbo_vs_size(rec, subset_sizes(len(rec)),
                                      num_subsets=ctx.options.melbo_subsets,
                                      seed=ctx.options.seed)
  result = {"note": MELBO_NOTE, **result}
  truth = None
  if ctx.split.log_probs is not None:
    # The one definition of the built-in corpus's entropy (`runner.true_entropy`), as in bounds.
    num_words = np.asarray([len(ids) - 2 for ids in ctx.split.ids])
    entropy = runner.true_entropy(ctx.split.log_probs, num_words)
    truth = entropy["true_nll"]
    result.update(true_nll=truth, true_nll_stderr=entropy["true_nll_stderr"],
                  gap_to_true_entropy=float(result["mean"][-1] - truth))
  path = figures.plot_melbo_vs_size(result, ctx.figure_path("melbo_vs_n"), true_entropy=truth)
  result["figure"] = os.path.basename(path)
  return result


# ---------------------------------------------------------------------------------------------
# qa (seed 000 §4.6)


def _data_root(ctx: Context) -> str | None:
  if ctx.options.data_root:
    return ctx.options.data_root
  env = os.environ.get(corpus_lib.DATA_ENV_VAR)
  if env:
    return env
  default = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), os.pardir, "shared", "data")
  return default if os.path.isdir(default) else None


def _vocab_coverage(vocab, lines, tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> float:
  words = [w for line in lines for w in vocab_lib.tokenize(line, tokenizer)]
  return float(np.mean([w in vocab for w in words])) if words else 0.0


def section_qa(ctx: Context) -> dict[str, Any]:
  root = _data_root(ctx)
  directory = os.path.join(root, "yahoo") if root else None
  if directory is None or not os.path.exists(os.path.join(directory, "valid.txt")):
    return _skipped("no Yahoo corpus (set --data_root or $MIMTEXT_DATA to a directory with "
                    "yahoo/valid.txt)")
  tokenizer = experiment.tokenizer(ctx.run.config)
  lines = qa.read_yahoo_lines(directory, "valid", tokenizer=tokenizer)
  max_len = int(ctx.run.config.data.max_len or 100)
  items = qa.build_ranking_set(lines, seed=ctx.options.seed,
                               max_questions=ctx.options.qa_questions, max_len=max_len,
                               tokenizer=tokenizer)
  if not items:
    return _skipped("no Yahoo document splits into a question and an answer")
  coverage = _vocab_coverage(ctx.run.vocab, [" ".join(i.question) for i in items[:200]],
                             tokenizer)
  # An AE's σ head never trained: dividing by it would rank by noise, so σ = 1 (seed 000 §4.6's
  # AE comparison) for every deterministic-z model.
  normalise = not ctx.scoring.deterministic_z
  out = qa.evaluate_qa(qa.encoder_fn(ctx.run, progress=ctx.options.progress),
                       qa.encode_items(items, ctx.run.vocab), seed=ctx.options.seed,
                       normalise=normalise)
  note = ("our ranking set: Yahoo valid documents split at the first '?', the true answer "
          "against 3 answers of other questions (seeded); not YahooCQA")
  if not normalise:
    note += ("; distances not divided by σ (σ = 1, the paper's AE comparison): an AE's σ head is "
             "untrained")
  out.update(data=directory, vocab_coverage=coverage, note=note)
  return out


# ---------------------------------------------------------------------------------------------
# classify (seed 004 §4.2, Figure 4)


def _sampler(ctx: Context) -> Callable:
  if ctx.scoring.deterministic_z:
    return downstream.sample_mean
  return functools.partial(downstream.sample_z, cfg=ctx.run.obj_cfg)


def _labelled_splits(ctx: Context) -> dict[str, corpus_lib.CorpusSplit | str]:
  """corpus name → its labelled test split encoded with the run's vocabulary, or a skip reason."""
  out: dict[str, corpus_lib.CorpusSplit | str] = {}
  if ctx.corpus.name == "builtin":
    out["builtin"] = ctx.corpus.splits["test"]
  root = _data_root(ctx)
  for name in CLASSIFY_CORPORA:
    directory = os.path.join(root, name) if root else None
    if directory is None or not os.path.exists(os.path.join(directory, "test.labels.txt")):
      out[name] = f"no {name}/test.txt with labels under {root}"
      continue
    config = ctx.run.config.copy_and_resolve_references()
    with config.unlocked():
      config.data.data_dir = directory
      config.data.train_from_valid = False
    corpus = experiment.load_corpus(config, ctx.run.vocab, splits=("test",))
    out[name] = random_subset(corpus.splits["test"], ctx.options.classify_max_sentences,
                              ctx.options.seed)
  return out


def random_subset(split: corpus_lib.CorpusSplit, n: int, seed: int) -> corpus_lib.CorpusSplit:
  """n sentences drawn without replacement (seeded), every field kept aligned; the labelled
  corpora are sorted by class, so a head would hold one or two classes."""
  if n >= len(split.ids):
    return split
  keep = np.sort(np.random.default_rng(seed).choice(len(split.ids), n, replace=False))
  pick = lambda a: None if a is None else np.asarray(a)[keep]
  return dataclasses.replace(split, lines=[split.lines[i] for i in keep],
                             ids=[split.ids[i] for i in keep], log_probs=pick(split.log_probs),
                             labels=pick(split.labels))


def section_classify(ctx: Context) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for name, split in _labelled_splits(ctx).items():
    if isinstance(split, str):
      out[name] = _skipped(split)
      continue
    if split.labels is None:
      out[name] = _skipped("the split has no labels")
      continue
    if split is ctx.split:
      post = ctx.posteriors(len(split.ids))[1]
    else:
      post = encoding.encode_sentences(ctx.run.params, ctx.run.model_cfg, split.ids,
                                       progress=ctx.options.progress,
                                       desc=f"classify {name}: encode")
    result = downstream.classify_report(post, np.asarray(split.labels), seed=ctx.options.seed,
                                        sample=_sampler(ctx), progress=ctx.options.progress)
    result["vocab_coverage"] = _vocab_coverage(ctx.run.vocab, split.lines[:200])
    # Genuinely HSVAE-only output: seed 004 Figure 4's map of q(γ|x), which only its head has.
    if post.beta_a is not None:
      num_classes = int(result["num_classes"])
      matrix = downstream.gamma_class_matrix(post.beta_a, post.beta_b, np.asarray(split.labels),
                                             num_classes)
      path = figures.plot_class_heatmap(
          matrix, [str(c) for c in range(num_classes)],
          [str(i) for i in range(matrix.shape[1])], ctx.figure_path(f"gamma_classes_{name}"),
          f"{name}: per-class mean of binarised E[γ] (seed 004 Figure 4)")
      result["gamma_figure"] = os.path.basename(path)
    out[name] = result
  return out


_SECTION_FNS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "bounds": section_bounds, "info": section_info, "histograms": section_histograms,
    "melbo": section_melbo, "qa": section_qa, "classify": section_classify}


def parse_suite(value: str) -> tuple[str, ...]:
  """"bounds,info" → ("bounds", "info"); "all" → every section; raises ValueError naming an
  unknown section."""
  names = SECTIONS if value.strip() == "all" else tuple(
      s.strip() for s in value.split(",") if s.strip())
  unknown = [s for s in names if s not in SECTIONS]
  if unknown or not names:
    raise ValueError(f"--suite={value!r}: unknown section(s) {unknown or '(none given)'}; choose "
                     f"from {', '.join(SECTIONS)} or 'all'")
  return names


def run_suite(run: runner.Run, corpus: corpus_lib.Corpus, split_name: str,
              split: corpus_lib.CorpusSplit, sections: tuple[str, ...], options: Options,
              out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs `sections` in the order of `SECTIONS` (melbo needs bounds' terms); returns
  {"bounds": {...}, "info": {...}, ..., "timings": {section: seconds}}."""
  ctx = Context(run, corpus, split_name, split, options, out_dir or run.workdir)
  ordered = [s for s in SECTIONS if s in sections]
  if "melbo" in ordered and "bounds" not in ordered:
    ordered.insert(0, "bounds")
  timings = {}
  for name in ordered:
    start = time.perf_counter()
    log(f"[{name}] ...")
    if ctx.scoring.latent_free and name != "bounds":
      ctx.results[name] = _skipped("a language model (objective lm) has no latent code: only its "
                                   "exact NLL (bounds) applies")
    else:
      try:
        ctx.results[name] = _SECTION_FNS[name](ctx)
      except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
        # A number the section needs is undefined for this checkpoint (e.g. a diverged run's
        # non-finite codes): the other sections still run; the report says which failed and why.
        ctx.results[name] = {"failed": f"{name} could not be computed for step {ctx.run.step}: "
                                       f"{one_line(e)}"}
        log(f"[{name}] FAILED: {ctx.results[name]['failed']}")
    timings[name] = time.perf_counter() - start
    log(f"[{name}] done in {timings[name]:.1f} s")
  return {**ctx.results, "timings": timings}


def one_line(error: BaseException) -> str:
  """The first line of an error's message (its type when it has none)."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def failures(results: dict[str, Any]) -> list[str]:
  """One line for each number that could not be computed: a failed section, a failed post-hoc
  fit (`run_suite`'s results, the bounds section included)."""
  out = []
  for name, section in results.items():
    if isinstance(section, dict):
      out += [section[key] for key in ("failed", "posthoc_failed") if key in section]
  return out


def one_line_summary(name: str, section: dict[str, Any]) -> str:
  """The few numbers of a section worth a line on the console."""
  if "skipped" in section:
    return f"skipped: {section['skipped']}"
  if "failed" in section:
    return f"FAILED: {section['failed']}"
  if name == "info":
    mi = (f"MI {section['mutual_information']:.3f} nats (ceiling log N "
          f"{section['mi_ceiling_log_n']:.2f})" if "mutual_information" in section
          else f"MI skipped ({section['mi_skipped']})")
    kl = (f"KL {section['kl_total']:.3f} nats ({section['kl_estimate']})" if "kl_total" in section
          else f"KL skipped ({section.get('kl_skipped', '')})")
    return (f"{mi}; {kl}; active units {section['active_units']}/{section['latent_dim']}; Kraskov "
            f"entropy of the codes {section['kraskov_entropy']:.2f} nats vs N(0, I) "
            f"{section['standard_normal_entropy']:.2f}")
  if name == "histograms":
    return (f"mean log p(x_i|z_j): i = j {section['log_px_same_mean']:.2f}, i ≠ j "
            f"{section['log_px_other_mean']:.2f} over {section['M']} sentences; own code best "
            f"for {100 * section['own_code_is_best_fraction']:.0f}% ({section['figure']})")
  if name == "melbo":
    line = (f"MELBO (not a bound on the model's NLL) from {section['mean'][0]:.2f} (n = "
            f"{section['sizes'][0]}) to {section['mean'][-1]:.2f} (n = {section['sizes'][-1]})")
    if "true_nll" in section:
      line += "; " + runner.melbo_gap_line(section["mean"][-1], section["true_nll"],
                                           section["true_nll_stderr"]).rstrip(".")
    return line + f" ({section['figure']})"
  if name == "qa":
    return (f"P@1 {section['p_at_1']:.3f}, MRR {section['mrr']:.3f} over {section['num_items']} "
            f"questions (chance {section['chance_p_at_1']:.3f} / {section['chance_mrr']:.3f}); "
            f"vocabulary coverage {100 * section['vocab_coverage']:.0f}%")
  if name == "classify":
    parts = []
    for corpus, result in section.items():
      if "skipped" in result:
        parts.append(f"{corpus}: skipped ({result['skipped']})")
      else:
        parts.append(f"{corpus}: accuracy {result['accuracy']:.3f} (majority "
                     f"{result['majority_rate']:.3f}, {result['num_classes']} classes)")
    return "; ".join(parts)
  return ""


# ---------------------------------------------------------------------------------------------
# Markdown report


def _fmt(value: Any, digits: int = 3) -> str:
  if isinstance(value, float):
    return f"{value:.{digits}f}" if abs(value) < 1e7 else f"{value:.3e}"
  return str(value)


def headline_rows(bounds_report: dict[str, Any]) -> list[tuple[str, str]]:
  """(label, metric prefix) of every bound the report holds, in the report's order."""
  rows = [("exact NLL (language model)", "exact"), ("ELBO", "elbo"),
          ("ELBO, one KL (seed 003, not a bound)", "elbo_one_kl"),
          ("IW (model prior)", "iw"), ("IW (post-hoc prior)", "posthoc_iw"),
          ("IW (post-hoc prior, widened proposal)", "posthoc_widened_iw"),
          ("MELBO (not a bound on the model's NLL)", "melbo")]
  return [(label, key) for label, key in rows if f"{key}_nll" in bounds_report]


def write_markdown(suite: dict[str, Any], path: str, *, split: str, corpus: str,
                   workdir: str) -> str:
  """`report_SPLIT.md`: the headline table, every section's numbers and the figures."""
  lines = [f"# Evaluation of `{workdir}` on {corpus} / {split}", ""]
  b = suite.get("bounds")
  if b:
    lines += [f"Step {b['step']}; N = {int(b['N'])} sentences, {int(b['num_tokens'])} tokens with "
              f"`<eos>`; scored as trained: {b['scoring']['latents']}; decoder inputs: "
              f"{b['scoring']['decoder_inputs']}.", ""]
    rows = headline_rows(b)
    if rows:
      lines += ["| bound | NLL +eos | NLL -eos | PPL +eos | PPL -eos | PPL smim |",
                "|---|---|---|---|---|---|"]
      for label, key in rows:
        lines.append(f"| {label} | {_fmt(b[key + '_nll'])} | {_fmt(b[key + '_nll_no_eos'])} | "
                     f"{_fmt(b[key + '_ppl'])} | {_fmt(b[key + '_ppl_no_eos'])} | "
                     f"{_fmt(b[key + '_ppl_smim'])} |")
      if "true_nll" in b:
        lines.append(f"| true entropy H[p] | {_fmt(b['true_nll'])} ± {_fmt(b['true_nll_stderr'])}"
                     f" | | {_fmt(b['true_ppl'])} | {_fmt(b['true_ppl_no_eos'])} | |")
      lines += ["", "PPL +eos: `<eos>` in the NLL and the token count; -eos: in neither; smim: not "
                "in the NLL but in the count (the official sMIM test script, seed 000 Table 2). "
                "MELBO bounds the NLL only under a prior equal to this set's own aggregate "
                "posterior and grows with log N (see the melbo section)."]
      if "true_nll" in b and "melbo_nll" in b:
        lines.append(runner.melbo_gap_line(b["melbo_nll"], b["true_nll"], b["true_nll_stderr"]))
      if "posthoc_prior" in b:
        p = b["posthoc_prior"]
        lines.append(f"Post-hoc prior ({p['fitted_on']} split): {posthoc.describe_prior(p)}; "
                     f"proposal {p['proposal']}; "
                     f"{runner.POSTHOC_BOUND_MEANING}."
                     + (f" The widened proposal it started from: {p['widened_proposal']}."
                        if "widened_proposal" in p else ""))
    if b["scoring"].get("latent_free"):
      lines += ["", f"{b['bounds_skipped']}.", "",
                f"- BLEU-1 of its greedy decode (the same for every input): {_fmt(b['bleu1'], 4)}",
                ""]
      return _write_lines(lines, suite, path)
    if "bounds_skipped" in b:
      lines += ["", f"No likelihood bounds of the model's own: {b['bounds_skipped']}"]
    if "posthoc_skipped" in b:
      lines += ["", f"Post-hoc prior skipped: {b['posthoc_skipped']}"]
    if "posthoc_failed" in b:
      lines += ["", f"Post-hoc prior FAILED: {b['posthoc_failed']}"]
    lines += ["", f"- reconstruction −E log p(x|z): {_fmt(b['rec'])} nats/sentence",
              f"- BLEU-1 (greedy from the posterior mean): {_fmt(b['bleu1'], 4)}",
              f"- active units {b['active_units']}/{b['latent_dim']}"
              + (f"; mean posterior σ {_fmt(b['post_std'], 4)}; at the log-variance floor "
                 f"{100 * b['frac_at_floor']:.1f}%" if "post_std" in b else ""),
              f"- average Hoyer: {_fmt(b['average_hoyer'], 4)} (sampled z), "
              f"{_fmt(b['average_hoyer_mean_code'], 4)} (mean code)",
              f"- {runner.prior_samples_line(b)}"]
    if b.get("iw_sweep"):
      lines += ["", "K sweep of the importance-weighted bounds (nats per sentence with `<eos>`; "
                "step: the change from the previous K, ± its paired standard error: converged "
                "once it is within it):", ""]
      lines += [f"    {line}" for line in runner.k_sweep_lines(b["iw_sweep"])[1:]]
      if b.get("iw_sweep_figure"):
        lines += ["", f"![K sweep]({b['iw_sweep_figure']})", ""]
    if "probe_accuracy" in b:
      lines.append(f"- linear probe of the label: accuracy {_fmt(b['probe_accuracy'])} "
                   f"(majority {_fmt(b['probe_majority_rate'])})")
    lines += ["", "Reconstructions (D data, M greedy from the mean):", ""]
    for ex in b["examples"]:
      lines += [f"- D: {ex['data']}", f"  M: {ex['mean_reconstruction']}"]
    lines.append("")
  return _write_lines(lines, suite, path)


def _write_lines(lines: list[str], suite: dict[str, Any], path: str) -> str:
  """Appends the sections after bounds and the timings to `lines`, writes `path`, returns it."""
  for name in ("info", "histograms", "melbo", "qa", "classify"):
    section = suite.get(name)
    if section is None:
      continue
    lines += [f"## {name}", ""]
    lines += _section_lines(section)
    for key, value in sorted(section.items()):
      if isinstance(value, str) and value.endswith(".png"):
        lines += ["", f"![{key}]({value})"]
      if isinstance(value, dict):
        for sub_key, sub_value in sorted(value.items()):
          if isinstance(sub_value, str) and sub_value.endswith(".png"):
            lines += ["", f"![{key} {sub_key}]({sub_value})"]
    lines.append("")
  if "timings" in suite:
    lines += ["## time per section", "", "| section | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in suite["timings"].items()]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def _section_lines(section: dict[str, Any], indent: str = "") -> list[str]:
  lines = []
  for key, value in section.items():
    if isinstance(value, dict):
      lines.append(f"{indent}- **{key}**")
      lines += _section_lines(value, indent + "  ")
    elif isinstance(value, list):
      if len(value) > 12:
        lines.append(f"{indent}- {key}: {len(value)} values, max {_fmt(max(value))}, "
                     f"sum {_fmt(float(sum(value)))}")
      else:
        lines.append(f"{indent}- {key}: {', '.join(_fmt(v) for v in value)}")
    elif not (isinstance(value, str) and value.endswith(".png")):
      lines.append(f"{indent}- {key}: {_fmt(value)}")
  return lines
