r"""Evaluates a checkpoint written by `launch.train`: NLL/PPL bounds, BLEU-1, reconstructions.

  python -m launch.evaluate --workdir=W [--step=best|latest|N] [--split=test] [--num_z_samples=10]
      [--iw_samples=500]

Restores the parameters only (no optimiser state), reads the run's saved config and vocabulary,
scores the model as it was trained (inputless decoders without inputs, hidden-averaging decoders
on L latents, AEs from z = μ without bounds),
prints a table and writes it as JSON to W/eval_SPLIT.json, and draws the training curves of
metrics.jsonl into W/curves.png. Logic lives in `mimtext.evaluation`.
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

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a training run.", required=True)
_STEP = flags.DEFINE_string("step", "best", "Checkpoint to evaluate: best, latest or a step number.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate (train, valid or test).")
_NUM_Z = flags.DEFINE_integer("num_z_samples", None,
                              "z draws per sentence for the ELBO and MELBO (default: the config's "
                              "eval.num_z_samples).")
_IW = flags.DEFINE_integer("iw_samples", None,
                           "K of the importance-weighted bound (default: the config's "
                           "eval.iw_samples).")
_BATCH = flags.DEFINE_integer("batch_size", 50, "Sentences per evaluation batch.")
_MAX_SENTENCES = flags.DEFINE_integer(
    "max_sentences", 0, "Evaluate only the first N sentences of the split (0: all of them).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override the run's data directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the z samples.")
_PLOT = flags.DEFINE_bool("plot", True, "Also draw the run's training curves into W/curves.png.")


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
  common.setup_logging()
  if _BATCH.value <= 0 or _MAX_SENTENCES.value < 0:
    raise app.UsageError("--batch_size must be positive and --max_sentences >= 0")
  for flag in (_NUM_Z, _IW):
    if flag.value is not None and flag.value <= 0:
      raise app.UsageError(f"--{flag.name}={flag.value}: must be positive")
  run = common.load_run(_WORKDIR.value, _STEP.value)
  if _DATA_DIR.value:
    with run.config.unlocked():
      run.config.data.data_dir = _DATA_DIR.value
  corpus = experiment.load_corpus(run.config, run.vocab)
  if _SPLIT.value not in corpus.splits:
    raise app.UsageError(f"--split={_SPLIT.value!r}: the corpus has {sorted(corpus.splits)}")
  split = corpus.splits[_SPLIT.value]
  if _MAX_SENTENCES.value:
    split = split.head(_MAX_SENTENCES.value)
  num_z = _NUM_Z.value or run.config.eval.num_z_samples
  iw = _IW.value or run.config.eval.iw_samples
  report = runner.evaluate_split(run, split, num_z_samples=num_z, iw_samples=iw, seed=_SEED.value,
                                 batch_size=_BATCH.value,
                                 max_decode_len=run.config.eval.max_decode_len,
                                 probe_split=corpus.splits.get("train"))
  report.update(split=_SPLIT.value, corpus=corpus.name, workdir=run.workdir)
  print(runner.format_report(report, _SPLIT.value, corpus.name))
  path = os.path.join(run.workdir, f"eval_{_SPLIT.value}.json")
  checkpoint_lib.save_json(run.workdir, f"eval_{_SPLIT.value}.json", report)
  print(f"\nwrote {path}")
  if _PLOT.value and os.path.exists(os.path.join(run.workdir, "metrics.jsonl")):
    print(f"wrote {plots.plot_training_curves(run.workdir)}")
  bad = non_finite_fields(report)
  if bad:
    print(f"error: non-finite evaluation results ({', '.join(bad[:8])}) for step "
          f"{report.get('step', _STEP.value)} of {run.workdir}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  common.run(main)
