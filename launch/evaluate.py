r"""Evaluates a checkpoint written by `launch.train`: bounds, information measures, figures, tasks.

  python -m launch.evaluate --workdir=W [--step=best|latest|N] [--split=test]
      [--suite=bounds,info,histograms,melbo,qa,classify | all] [--num_z_samples=10]
      [--iw_samples=500] [--iw_sweep=1,10,100,1000] [--data_root=DIR]

Restores the parameters only (no optimiser or data state), reads the run's saved config and
vocabulary and scores the model as it was trained (inputless decoders without inputs,
hidden-averaging decoders on L latents, AEs from z = μ). Sections (`mimtext.evaluation.suite`):
bounds (ELBO, IW, MELBO and the IW bound under a post-hoc Gaussian-mixture prior fitted to the
training codes, saved as W/posthoc_prior.json), info (mutual information, KL per dimension, active
units, Kraskov entropy, Hoyer), histograms (seed 000 Figure 3), melbo (MELBO against the
evaluation-set size, seed 000 Figure 5), qa (answer ranking on Yahoo) and classify (a frozen-encoder
classifier on yahoo_topic and dbpedia). A section that does not apply is skipped with its reason.
Writes W/eval_SPLIT.json (the bounds at the top level, every other section under its name),
W/report_SPLIT.md embedding the PNGs (--report_name=NAME: W/NAME.json and W/NAME.md), and
W/curves.png from metrics.jsonl. Exits 1 when a result is not finite.
"""

import math
import os
import sys

from absl import app
from absl import flags

from launch import common

from mimtext import checkpoint as checkpoint_lib
from mimtext import experiment
from mimtext.evaluation import plots
from mimtext.evaluation import runner
from mimtext.evaluation import suite as suite_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a training run.", required=True)
_STEP = flags.DEFINE_string("step", "best",
                            "Checkpoint to evaluate: best, latest or a step number.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate (train, valid or test).")
_NUM_Z = flags.DEFINE_integer("num_z_samples", None,
                              "z draws per sentence for the ELBO and MELBO (default: the config's "
                              "eval.num_z_samples).")
_IW = flags.DEFINE_integer("iw_samples", None,
                           "K of the importance-weighted bound (default: the config's "
                           "eval.iw_samples).")
_IW_SWEEP = flags.DEFINE_list(
    "iw_sweep", ["1"], "K values of a sweep of the importance-weighted bounds (e.g. "
    "1,10,100,1000): each bound at every K, with the standard error of its step from the previous "
    "K and whether the last step is within two of them (converged), as a table and "
    "k_sweep_SPLIT.png, all from the draws of the largest K (which then replaces --iw_samples when "
    "larger). The default 1 costs nothing: K = 1 and --iw_samples from the same draws.")
_BATCH = flags.DEFINE_integer("batch_size", 50, "Sentences per evaluation batch.")
_MAX_SENTENCES = flags.DEFINE_integer(
    "max_sentences", 0, "Evaluate only the first N sentences of the split (0: all of them).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override the run's data directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the z samples.")
_REPORT_NAME = flags.DEFINE_string(
    "report_name", None, "Base name of the reports in the workdir: NAME.json and NAME.md "
    "(default eval_SPLIT and report_SPLIT), so that several evaluations of one run (a K sweep) "
    "keep their own.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where the reports, figures and the post-hoc prior are written (default: "
    "the workdir; when the workdir is not writable, a new temporary directory, said at the "
    "start).")
_PLOT = flags.DEFINE_bool("plot", True, "Also draw the run's training curves into W/curves.png.")
_PROGRESS = flags.DEFINE_bool(
    "progress", None, "Progress bars on stderr (default: when stderr is a terminal, so a log file "
    "gets no carriage-return lines).")

_SUITE = flags.DEFINE_string(
    "suite", ",".join(suite_lib.DEFAULT_SUITE),
    f"Comma-separated sections of {', '.join(suite_lib.SECTIONS)}, or 'all'.")
_POSTHOC = flags.DEFINE_bool("posthoc", True,
                             "Fit (or reuse) the post-hoc prior and report its IW bound.")
_POSTHOC_REFIT = flags.DEFINE_bool("posthoc_refit", False,
                                   "Refit the post-hoc prior even when W/posthoc_prior.json fits "
                                   "this step.")
_LEARNED_PROPOSAL = flags.DEFINE_bool(
    "learned_proposal", True,
    "Train an amortised Gaussian proposal r(z|x) on training sentences for the post-hoc bound "
    "(saved as W/posthoc_proposal.msgpack and reused at the same step), and report the widened "
    "proposal's bound beside it; --nolearned_proposal keeps only the widened one.")
_POSTHOC_FLOW = flags.DEFINE_bool(
    "posthoc_flow", False,
    "Also fit a masked autoregressive flow (flowjax) to the training codes as a candidate post-hoc "
    "prior, kept when its bound on training sentences beats the best Gaussian mixture's (off by "
    "default: on the quickstart sMIM it costs about 2 minutes and loses, 172 against 62 nats).")
_HIST = flags.DEFINE_integer("histogram_sentences", 100, "Sentences of the Figure 3 histograms.")
_MELBO_SUBSETS = flags.DEFINE_integer("melbo_subsets", 20, "Random subsets per size (melbo).")
_QA_QUESTIONS = flags.DEFINE_integer("qa_questions", 1000, "Questions of the QA ranking set.")
_CLASSIFY_MAX = flags.DEFINE_integer("classify_max_sentences", 5000,
                                     "Sentences per labelled corpus (classify).")
_DATA_ROOT = flags.DEFINE_string("data_root", None,
                                 "Parent of yahoo/, yahoo_topic/, dbpedia/ (default "
                                 "$MIMTEXT_DATA, else ../shared/data).")

def non_finite_fields(report, prefix: str = "") -> list[str]:
  """The (dotted) names of the numbers in `report` that are NaN or infinite."""
  if isinstance(report, dict):
    return [name for k, v in report.items() for name in non_finite_fields(v, f"{prefix}{k}.")]
  if isinstance(report, (list, tuple)):
    return [name for i, v in enumerate(report) for name in non_finite_fields(v, f"{prefix}{i}.")]
  if isinstance(report, (int, float)) and not isinstance(report, bool):
    return [] if math.isfinite(report) else [prefix.rstrip(".")]
  if hasattr(report, "dtype") and getattr(report, "shape", None) == ():
    return non_finite_fields(float(report), prefix)
  return []


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  common.prepare_host()
  common.setup_logging()
  if _REPORT_NAME.value is not None and (not _REPORT_NAME.value or os.sep in _REPORT_NAME.value):
    raise app.UsageError(f"--report_name={_REPORT_NAME.value!r}: a file name without '/'")
  if _BATCH.value <= 0 or _MAX_SENTENCES.value < 0:
    raise app.UsageError("--batch_size must be positive and --max_sentences >= 0")
  for flag in (_HIST, _MELBO_SUBSETS, _QA_QUESTIONS, _CLASSIFY_MAX):
    if flag.value <= 0:
      raise app.UsageError(f"--{flag.name}={flag.value}: must be positive")
  for flag in (_NUM_Z, _IW):
    if flag.value is not None and flag.value <= 0:
      raise app.UsageError(f"--{flag.name}={flag.value}: must be positive")
  try:
    sweep = tuple(sorted({int(k) for k in _IW_SWEEP.value}))
  except ValueError:
    raise app.UsageError(f"--iw_sweep={','.join(_IW_SWEEP.value)}: a comma list of integers, e.g. "
                         "1,10,100,1000") from None
  if sweep and sweep[0] < 1:
    raise app.UsageError(f"--iw_sweep={','.join(_IW_SWEEP.value)}: every K must be >= 1")
  try:  # before any work: a bad --suite fails at once, without loading the run
    sections = suite_lib.parse_suite(_SUITE.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  run = common.load_run(_WORKDIR.value, _STEP.value)
  out_dir = common.output_directory(run.workdir, _OUTPUT_DIR.value)
  if _DATA_DIR.value:
    with run.config.unlocked():
      run.config.data.data_dir = _DATA_DIR.value
  corpus = experiment.load_corpus(run.config, run.vocab)
  if _SPLIT.value not in corpus.splits:
    raise app.UsageError(f"--split={_SPLIT.value!r}: the corpus has {sorted(corpus.splits)}")
  split = corpus.splits[_SPLIT.value]
  if _MAX_SENTENCES.value:
    split = split.head(_MAX_SENTENCES.value)
  options = suite_lib.Options(
      num_z_samples=_NUM_Z.value or run.config.eval.num_z_samples,
      iw_samples=_IW.value or run.config.eval.iw_samples, batch_size=_BATCH.value,
      seed=_SEED.value, max_decode_len=run.config.eval.max_decode_len, posthoc=_POSTHOC.value,
      posthoc_refit=_POSTHOC_REFIT.value, learned_proposal=_LEARNED_PROPOSAL.value,
      posthoc_flow=_POSTHOC_FLOW.value,
      histogram_sentences=_HIST.value,
      melbo_subsets=_MELBO_SUBSETS.value, qa_questions=_QA_QUESTIONS.value,
      classify_max_sentences=_CLASSIFY_MAX.value, data_root=_DATA_ROOT.value,
      progress=sys.stderr.isatty() if _PROGRESS.value is None else _PROGRESS.value,
      iw_sweep=sweep)
  results = suite_lib.run_suite(run, corpus, _SPLIT.value, split, sections, options,
                                out_dir=out_dir, log=lambda line: print(line, file=sys.stderr))
  failed = suite_lib.failures(results)
  report = dict(results.pop("bounds", {}))
  report.update(results, split=_SPLIT.value, corpus=corpus.name, workdir=run.workdir,
                suite=list(sections))
  if "N" in report and "failed" not in report:
    print(runner.format_report(report, _SPLIT.value, corpus.name))
  for name in sections:
    if name != "bounds":
      print(f"\n{name}: " + suite_lib.one_line_summary(name, report[name]))
  json_name = f"{_REPORT_NAME.value or 'eval_' + _SPLIT.value}.json"
  md_name = f"{_REPORT_NAME.value or 'report_' + _SPLIT.value}.md"
  path = os.path.join(out_dir, json_name)
  checkpoint_lib.save_json(out_dir, json_name, report)
  print(f"\nwrote {path}")
  md = suite_lib.write_markdown({"bounds": report if "N" in report and "failed" not in report
                                           else None, **results},
                                os.path.join(out_dir, md_name),
                                split=_SPLIT.value, corpus=corpus.name, workdir=run.workdir)
  print(f"wrote {md}")
  if _PLOT.value and os.path.exists(os.path.join(run.workdir, "metrics.jsonl")):
    print(f"wrote {plots.plot_training_curves(run.workdir, os.path.join(out_dir, 'curves.png'))}")
  bad = non_finite_fields(report)
  if bad:
    failed.append(f"non-finite evaluation results ({', '.join(bad[:8])}) for step "
                  f"{report.get('step', run.step)} of {run.workdir}")
  for line in failed:
    print(f"error: {line}", file=sys.stderr)
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  common.run(main)
