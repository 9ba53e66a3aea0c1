"""Evaluate a trained checkpoint on a split: bounds, perplexities, BLEU and reconstructions.

`launch/evaluate.py` is a thin wrapper over `load_run` + `evaluate_split` + `format_report`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np

from mimtext import checkpoint as checkpoint_lib
from mimtext import config as config_lib
from mimtext import experiment
from mimtext import objectives
from mimtext.data import corpus as corpus_lib
from mimtext.data import grammar
from mimtext.data import pipeline as pipeline_lib
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import bounds
from mimtext.evaluation import encoding
from mimtext.evaluation import generation
from mimtext.evaluation import information
from mimtext.evaluation import probe
from mimtext.evaluation import progress as progress_lib
from mimtext.evaluation import reconstruction
from mimtext.models import sentence_ae


@dataclasses.dataclass
class Run:
  """A trained model restored from a work directory (parameters only, no optimiser state)."""
  workdir: str
  config: ml_collections.ConfigDict
  vocab: vocab_lib.Vocabulary
  model_cfg: sentence_ae.ModelConfig
  params: Any
  step: int

  @property
  def obj_cfg(self):
    return experiment.objective_config(self.config, self.model_cfg)


def load_run(workdir: str, step: str | int = "best",
             defaults: ml_collections.ConfigDict | None = None) -> Run:
  """Restores the config, vocabulary and parameters of `workdir` at `step` (best|latest|N).

  `defaults` (None: the library's default config, `mimtext.config.get_config()`) fills fields
  that the saved config predates.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir={workdir} does not exist")
  saved = checkpoint_lib.load_json(workdir, "config.json")
  if defaults is None:
    defaults = config_lib.get_config()
  config = experiment.merge_config(defaults, saved)
  vocab = vocab_lib.Vocabulary.load(os.path.join(workdir, "vocab.txt"))
  model_cfg = experiment.model_config(config, vocab.size)
  template = jax.eval_shape(lambda: sentence_ae.init_params(jax.random.PRNGKey(0), model_cfg))
  with checkpoint_lib.Checkpointer(workdir, best_metric="valid_criterion", read_only=True) as ckpt:
    experiment.check_vocabulary_matches(ckpt, step, vocab.size,
                                        os.path.join(workdir, "vocab.txt"))
    restored = ckpt.restore(step, params_template=template, data_state=False)
  return Run(workdir, config, vocab, model_cfg, restored["params"], int(restored["step"]))


def describe_scoring(scoring: objectives.common.Scoring) -> dict[str, Any]:
  """How the model is scored, in words for the report (DESIGN §7: as it was trained)."""
  if scoring.word_keep == 0.0:
    inputs = ("none: the decoder was trained inputless (word keep rate 0) and is scored without "
              "its inputs")
  elif scoring.trained_with_word_dropout:
    inputs = ("every word: trained with word dropout (0 < keep < 1), evaluated with full inputs "
              "as seed 001 §3.2 does")
  else:
    inputs = "every word"
  if scoring.latent_free:
    latent = "none: a language model (the decoder ignores z), its NLL exact"
  elif scoring.deterministic_z:
    latent = "z = μ(x) (AE): reconstruction and BLEU only, no likelihood bound"
  elif scoring.num_latents > 1:
    latent = (f"{scoring.num_latents} latents per sentence decoded jointly (decoder states "
              "averaged before the softmax, seed 003 Eq. 7-8)")
  else:
    latent = "one latent sample per decode"
  return {"decoder_inputs": inputs, "latents": latent, "num_latents": scoring.num_latents,
          "word_keep": scoring.word_keep, "deterministic_z": scoring.deterministic_z,
          "latent_free": scoring.latent_free}


def posterior_codes(run: Run, split: corpus_lib.CorpusSplit, *, batch_size: int = 200,
                    progress: bool = False, desc: str = "encode") -> np.ndarray:
  """The deterministic code (`sentence_ae.posterior_code`) of every sentence of `split`: [n,d]
  (`encoding.encode_sentences`, lengths padded to multiples of 8)."""
  post = encoding.encode_sentences(run.params, run.model_cfg, split.ids, batch_size=batch_size,
                                   pad_multiple=8, progress=progress, desc=desc)
  return encoding.deterministic_code(post)


def label_probe(run: Run, train: corpus_lib.CorpusSplit, test: corpus_lib.CorpusSplit,
                test_codes: np.ndarray, *, max_train: int = 20_000, progress: bool = False
                ) -> dict[str, Any]:
  """Accuracy of a linear probe of the labels (topic, class) on the codes, fitted on `train`."""
  train = train.head(max_train)
  train_codes = posterior_codes(run, train, progress=progress,
                                desc="linear probe: encode training sentences")
  accuracy = probe.probe_accuracy(train_codes, train.labels, test_codes, test.labels)
  counts = np.bincount(np.asarray(test.labels))
  return {"probe_accuracy": accuracy, "probe_train_size": len(train.ids),
          "probe_majority_rate": float(counts.max() / counts.sum())}


def prior_sample_report(run: Run, *, num: int = 100, seed: int = 0, max_len: int = 40,
                        posthoc: "PosthocPrior | None" = None) -> dict[str, Any]:
  """Greedy decodes of `num` prior draws: the fraction of distinct sentences and a few of them.

  The prior is the model's own (`generation.model_prior`: N(0, 0.1² I) for sMIM, exact draws of
  p(z) otherwise). An AE has none: with `posthoc` (a Gaussian-mixture prior) its draws come from
  the post-hoc prior, said so in "prior"; without one the samples are skipped with the reason
  ("prior_samples_skipped").
  """
  sampler, description = generation.model_prior(run.obj_cfg)
  out: dict[str, Any] = {}
  if sampler is None:
    if posthoc is None:
      return {"prior_samples_skipped": description + " (and no post-hoc prior was fitted)"}
    from mimtext.evaluation import posthoc as posthoc_lib  # pylint: disable=g-import-not-at-top
    sampler = posthoc_lib.prior_sampler(posthoc.params)
    description = ("the post-hoc prior (a density fitted to the training set's aggregate "
                   "posterior: an AE has no prior of its own)")
  std = objectives.latent_family(run.obj_cfg).generation_prior_std
  if std is not None:
    out["prior_std"] = float(std)
  texts = generation.prior_samples(run.params, run.model_cfg, run.vocab,
                                   jax.random.PRNGKey(seed), num=num, max_len=max_len,
                                   prior=sampler,
                                   scoring=objectives.common.scoring(run.obj_cfg))
  out.update(prior=description, prior_distinct=len(set(texts)) / num, prior_samples=texts[:5],
             prior_num=num)
  return out


# What the post-hoc bound bounds, in the words of every report and of docs/metrics.md (a test
# holds them to the same sentence).
POSTHOC_BOUND_MEANING = (
    "it bounds −log p̂(x), the negative log-likelihood of the model made of the trained decoder "
    "p(x|z) and the fitted prior p̂(z), not of the decoder with its training prior")


class PosthocPrior(NamedTuple):
  """A density fitted after training, used as the prior of an extra importance-weighted bound.

  log_prob: a module-level pure function (params, z [..., d]) -> [...] (e.g.
  `posthoc_prior.log_prob`, `flow_prior.log_prob`); params: its traced parameters (a
  `GaussianMixture` or a `FlowPrior`);
  proposal_std: s of the bound's proposal (scalar or [d]): the AE's N(μ(x), diag s²), a
  Gaussian posterior widened to N(μ(x), diag max(σ(x), s)²); None: q(z|x) itself
  (`bounds.sentence_terms`, `posthoc.proposal_std`); proposal_params: a learned proposal r(z|x)
  (`proposal.train`): the bound "posthoc_iw" is then under r, and the widened one is reported
  beside it as "posthoc_widened_iw".
  """
  log_prob: Callable[[Any, jax.Array], jax.Array]
  params: Any
  proposal_std: Any = None
  proposal_params: Any = None


def evaluate_split(run: Run, split: corpus_lib.CorpusSplit, *, num_z_samples: int,
                   iw_samples: int | None = None, seed: int = 0, batch_size: int = 50,
                   max_decode_len: int = 0, num_examples: int = 5,
                   probe_split: corpus_lib.CorpusSplit | None = None,
                   progress: bool = True, posthoc: PosthocPrior | None = None,
                   iw_chunk: int = 10, return_terms: bool = False,
                   iw_sweep: tuple[int, ...] = ()):
  """Every metric of DESIGN §4 implemented so far, over all sentences of `split` (none dropped).

  The model is scored as it was trained (`objectives.common.scoring`); `iw_samples` is K of the
  importance-weighted bound (default: num_z_samples), drawn `iw_chunk` at a time. With `posthoc`,
  the importance-weighted bound under that prior is reported too ("posthoc_iw"). With
  `probe_split` (training sentences) and labels on both splits, a linear probe of the label on
  the codes is fitted and scored. Returns the report, and with `return_terms` also the
  per-sentence terms of `bounds.sentence_terms` ({name: [N, ...]}). With `iw_sweep` (K values)
  the importance-weighted bounds are also reported at each K ("iw_sweep", `bounds.k_sweep`), all
  from the draws of the largest K.
  """
  n = len(split.ids)
  if n == 0:
    raise ValueError("the evaluation split is empty")
  obj_cfg = run.obj_cfg
  scoring = objectives.common.scoring(obj_cfg)
  iw_samples = max((iw_samples or num_z_samples, *iw_sweep))
  sweep = tuple(sorted({k for k in iw_sweep if k < iw_samples}))
  num_words = np.asarray([len(ids) - 2 for ids in split.ids])
  max_len = max_decode_len or int(num_words.max()) + 5
  key = jax.random.PRNGKey(seed)
  terms: dict[str, np.ndarray] = {}
  hypotheses: list[str | None] = [None] * n
  batches = progress_lib.bar(pipeline_lib.inference_batches(split.ids, batch_size, pad_multiple=8),
                             total=pipeline_lib.num_batches(n, batch_size), desc="evaluate",
                             enabled=progress)
  for i, batch in enumerate(batches):
    extra = {} if posthoc is None else dict(prior_fn=posthoc.log_prob,
                                            prior_params=posthoc.params,
                                            proposal_std=posthoc.proposal_std,
                                            proposal_params=posthoc.proposal_params)
    out = jax.device_get(bounds.sentence_terms(run.params, batch, jax.random.fold_in(key, i),
                                               obj_cfg, num_z_samples, iw_samples,
                                               iw_chunk=iw_chunk, iw_sweep=sweep, **extra))
    rows = batch["valid"] > 0
    index = batch["index"][rows]
    for name, value in out.items():
      if name not in terms:
        terms[name] = np.zeros((n,) + value.shape[1:], value.dtype)
      terms[name][index] = value[rows]
    recon = reconstruction.reconstruct_batch(run.params, batch, run.model_cfg, run.vocab,
                                             max_len=max_len, inputless=scoring.word_keep == 0.0,
                                             code=out["code"])
    for j, text in zip(index, recon):
      hypotheses[j] = text
  references = [" ".join(run.vocab.decode(ids)) for ids in split.ids]
  true_nll = None if split.log_probs is None else -np.asarray(split.log_probs, np.float64)
  report: dict[str, Any] = bounds.nll_bounds(terms, num_words, scoring, true_nll=true_nll)
  if iw_sweep and not scoring.latent_free:
    report["iw_sweep"] = bounds.k_sweep(terms, sweep, iw_samples, true_nll)
  bleu, signature = reconstruction.bleu1(hypotheses, references)
  report.update({"scoring": describe_scoring(scoring), "bleu1": bleu,
                 "bleu_signature": signature, "step": run.step,
                 "examples": [{"data": references[i], "mean_reconstruction": hypotheses[i]}
                              for i in range(min(num_examples, n))]})
  if split.log_probs is not None:
    report.update(true_entropy(split.log_probs, num_words))
  if scoring.latent_free:  # no code, posterior or prior: the exact NLL, and BLEU of its one decode
    return (report, terms) if return_terms else report
  report.update({
      "num_z_samples": 1 if scoring.deterministic_z else num_z_samples,
      "iw_samples": None if scoring.deterministic_z else iw_samples,
      "active_units": information.active_units(terms["code"]),
      "average_hoyer": information.average_hoyer(terms["z_sample"]),
      "average_hoyer_mean_code": information.average_hoyer(terms["code"]),
      "latent_dim": run.model_cfg.latent_dim,
  })
  if not scoring.deterministic_z:  # an AE never trains its σ head: no σ, no floor to report
    report.update(post_std=float(np.mean(terms["post_std"])),
                  frac_at_floor=float(np.mean(terms["frac_at_floor"])))
  report.update(prior_sample_report(run, seed=seed, max_len=max_len, posthoc=posthoc))
  if probe_split is not None and probe_split.labels is not None and split.labels is not None:
    report.update(label_probe(run, probe_split, split, terms["code"], progress=progress))
  return (report, terms) if return_terms else report


def true_entropy(log_probs: np.ndarray, num_words: np.ndarray) -> dict[str, float]:
  """The built-in corpus's exact −log p(x), averaged: an MC estimate of H[p(x)] (nats/sentence;
  `grammar.entropy_per_sentence`), with the perplexities it implies.

  No valid upper bound on the held-out NLL can fall below it beyond its standard error. The exact
  log p(x) includes the length (the <eos> step); its PPL is given per word + <eos> ("+eos") and
  per word ("-eos", the same NLL over fewer tokens).
  """
  estimate = grammar.entropy_per_sentence(log_probs)
  out = {"true_nll": estimate.nats, "true_nll_stderr": estimate.stderr}
  total = estimate.nats * len(num_words)
  for suffix, extra in (("", 1), ("_no_eos", 0)):
    out["true_ppl" + suffix] = float(np.exp(total / np.sum(num_words + extra)))
  return out


def _ppl(value: float) -> str:
  """A perplexity in a 12-wide column: fixed point, or scientific when it is huge."""
  return f"{value:>12.3f}" if value < 1e7 else f"{value:>12.3e}"


def format_report(report: dict[str, Any], split: str, corpus: str) -> str:
  """A plain-text table of the report, with the N and token counts the bounds depend on."""
  scoring = report["scoring"]
  samples = ("no latent" if scoring.get("latent_free") else
             "z = μ" if scoring["deterministic_z"] else
             f"{report['num_z_samples']} draws for ELBO/MELBO, K = {report['iw_samples']} for IW")
  lines = [f"{corpus} / {split}: N = {int(report['N'])} sentences, "
           f"{int(report['num_tokens'])} tokens with <eos> "
           f"({int(report['num_tokens_no_eos'])} without); step {report['step']}; {samples}",
           f"scored as trained: decoder inputs: {scoring['decoder_inputs']}; {scoring['latents']}",
           ""]
  ppl_columns = list(bounds.PPL_LABELS.items())
  header = (f"{'bound':<16}{'NLL +eos':>10}{'NLL -eos':>10}"
            + "".join(f"{label:>12}" for _, label in ppl_columns))

  def row(label, name):
    return (f"{label:<16}{report[name + '_nll']:>10.3f}{report[name + '_nll_no_eos']:>10.3f}"
            + "".join(_ppl(report[f"{name}_ppl{suffix}"]) for suffix, _ in ppl_columns))

  proposal = report.get("posthoc_prior", {}).get("proposal")
  posthoc_note = ("‡ importance-weighted bound under a Gaussian mixture fitted after training to "
                  "draws of the training set's aggregate posterior (the post-hoc prior): "
                  + POSTHOC_BOUND_MEANING + (f"; proposal {proposal}" if proposal else "")
                  + ("; 'IW p-h widened': the same bound under the widened proposal the learned "
                     "one started from" if "posthoc_widened_iw_nll" in report else ""))
  if scoring.get("latent_free"):
    lines += [header, row("exact NLL", "exact")]
    if "true_nll" in report:
      lines.append(f"{'true H[p]':<16}{report['true_nll']:>10.3f}{'':>10}"
                   f"{_ppl(report['true_ppl'])}{_ppl(report['true_ppl_no_eos'])}")
    lines += [f"{report['bounds_skipped']}",
              f"BLEU-1 of its greedy decode (the same sentence for every input): "
              f"{report['bleu1']:.4f}"]
    return "\n".join(lines)
  if "bounds_skipped" in report:
    lines.append(f"no bounds of the model's own: {report['bounds_skipped']}")
    lines.append(f"reconstruction −log p(x|μ): {report['rec']:.3f} nats/sentence "
                 f"({report['rec_no_eos']:.3f} without the <eos> term)")
    if "posthoc_iw_nll" in report:
      lines += [header, row("IW post-hoc ‡", "posthoc_iw")]
      if "posthoc_widened_iw_nll" in report:
        lines.append(row("IW p-h widened", "posthoc_widened_iw"))
      lines.append(posthoc_note)
  else:
    lines.append(header)
    rows = [("ELBO", "elbo")]
    if "elbo_one_kl_nll" in report:
      rows.append(("ELBO, one KL *", "elbo_one_kl"))
    rows.append(("IW", "iw"))
    if "posthoc_iw_nll" in report:
      rows.append(("IW post-hoc ‡", "posthoc_iw"))
    if "posthoc_widened_iw_nll" in report:
      rows.append(("IW p-h widened", "posthoc_widened_iw"))
    rows.append(("MELBO †", "melbo"))
    lines += [row(label, name) for label, name in rows]
    if "true_nll" in report:
      lines.append(f"{'true H[p]':<16}{report['true_nll']:>10.3f}{'':>10}"
                   f"{_ppl(report['true_ppl'])}{_ppl(report['true_ppl_no_eos'])}")
    lines += [
        "PPL +eos: <eos> in the NLL and the token count; -eos: in neither; smim: not in the NLL "
        "but in the count (the official sMIM test script, seed 000 Table 2).",
        f"reconstruction −E log p(x|z): {report['rec']:.3f} nats/sentence; KL(q‖p) per latent: "
        f"{report['kl']:.3f}" + (f" (× {report['num_latents']} latents = {report['kl_total']:.3f})"
                                 if report['num_latents'] > 1 else ""),
    ]
    if "elbo_one_kl_nll" in report:
      lines.append(f"* the quantity seed 003 reports for its AVG models: the averaged decoder "
                   f"with one KL term. The decoder conditions on {report['num_latents']} "
                   "independent latents, so only the ELBO with all their KL terms (row ELBO) and "
                   "IW over the tuples are bounds on this model's NLL.")
    lines.append("† MELBO grows with N (log N) and bounds NLL only under the prior equal to "
                 "this set's aggregate posterior (seed 000 §3); it is not a bound on the model's "
                 "own NLL.")
    if "posthoc_iw_nll" in report:
      lines.append(posthoc_note)
  lines += k_sweep_lines(report.get("iw_sweep"))
  lines += [
      f"average Hoyer (seed 004 §4.1.3, one sampled z per sentence): "
      f"{report['average_hoyer']:.4f}; of the mean codes: {report['average_hoyer_mean_code']:.4f}",
      f"active units: {report['active_units']}/{report['latent_dim']}"
      + (f"; mean posterior σ {report['post_std']:.4g}; dimensions with the raw log-variance at "
         f"the floor {100 * report['frac_at_floor']:.1f}%" if "post_std" in report else ""),
      f"BLEU-1 of greedy reconstructions from the posterior mean: {report['bleu1']:.4f}",
      f"  sacrebleu {report['bleu_signature']}",
  ]
  if "probe_accuracy" in report:
    lines.append(f"linear probe of the label on the codes: accuracy {report['probe_accuracy']:.3f} "
                 f"(fitted on {report['probe_train_size']} training codes; majority class "
                 f"{report['probe_majority_rate']:.3f})")
  if "posthoc_skipped" in report:
    lines.append(f"post-hoc prior skipped: {report['posthoc_skipped']}")
  if "posthoc_failed" in report:
    lines.append(f"post-hoc prior FAILED: {report['posthoc_failed']}")
  lines.append(prior_samples_line(report))
  if "true_nll" in report:
    lines.append(f"true per-sentence entropy of the corpus: {report['true_nll']:.3f} ± "
                 f"{report['true_nll_stderr']:.3f} nats (a valid bound cannot go below it)")
    if "melbo_nll" in report:
      lines.append(melbo_gap_line(report["melbo_nll"], report["true_nll"],
                                  report["true_nll_stderr"]))
  lines += ["", "reconstructions (D data, M greedy from the posterior mean):"]
  for ex in report["examples"]:
    lines += [f"  D: {ex['data']}", f"  M: {ex['mean_reconstruction']}"]
  if "prior_samples" in report:
    lines += ["", "prior samples:"] + [f"  {text}" for text in report["prior_samples"]]
  return "\n".join(lines)


def k_sweep_lines(rows: list[dict[str, Any]] | None) -> list[str]:
  """The K sweep as a text table: each importance-weighted bound at each K (nats per sentence,
  +eos), its step from the previous K ± the step's standard error, and the gap to the truth where
  the corpus has one."""
  if not rows:
    return []
  bounds_present = [b for b in bounds.IW_BOUNDS if f"{b}_nll" in rows[0]]
  lines = ["K sweep of the importance-weighted bounds (nats/sentence, +eos; step: the change from "
           "the previous K ± its standard error):"]
  for row in rows:
    parts = []
    for b in bounds_present:
      text = f"{b} {row[f'{b}_nll']:.3f}"
      if f"{b}_step" in row:
        text += f" (step {row[f'{b}_step']:+.3f} ± {row[f'{b}_step_stderr']:.3f})"
      if f"{b}_gap" in row:
        text += f" [− H {row[f'{b}_gap']:+.3f} ± {row[f'{b}_gap_stderr']:.3f}]"
      parts.append(text)
    lines.append(f"  K = {row['K']:>5}: " + "; ".join(parts))
  return lines + [convergence_line(rows, b) for b in bounds_present if len(rows) > 1]


def convergence_line(rows: list[dict[str, Any]], bound: str) -> str:
  """Whether `bound` has converged in a K sweep: its last step (from the previous K to the
  largest) within two of its standard errors of 0."""
  last, previous = rows[-1], rows[-2]
  step, stderr = last[f"{bound}_step"], last[f"{bound}_step_stderr"]
  verdict = ("converged" if abs(step) <= 2 * stderr else
             "not converged: raise --iw_samples for a tighter bound")
  return (f"{bound} at K = {last['K']}: {last[f'{bound}_nll']:.3f}; it moved {step:+.3f} ± "
          f"{stderr:.3f} from K = {previous['K']}: {verdict}")


def prior_samples_line(report: dict[str, Any]) -> str:
  """What the prior samples of a report show, or why there are none (an AE without a post-hoc
  prior)."""
  if "prior_samples_skipped" in report:
    return f"prior samples skipped: {report['prior_samples_skipped']}"
  return (f"prior samples z ~ {report['prior']}, greedy: {100 * report['prior_distinct']:.0f}% "
          f"distinct of {report.get('prior_num', 100)}")


def melbo_gap_line(melbo_nll: float, true_nll: float, true_stderr: float) -> str:
  """MELBO − the built-in corpus's true entropy, always with the caveat that MELBO is no bound on
  the model's NLL; below the truth by more than 2 standard errors is said so."""
  gap = melbo_nll - true_nll
  below = gap < -2 * true_stderr
  return (f"MELBO − true entropy = {gap:+.3f} nats per sentence (± {true_stderr:.3f})"
          + (": below the truth, so visibly not a bound on this model's NLL" if below else
             "; MELBO is not a bound on the model's NLL, so its position proves nothing") + ".")
