"""Paper tables as data: which runs to train, what to evaluate, and the paper's numbers beside ours.

A `Table` is a declarative definition that `launch.reproduce` executes: each `Row` is a flagfile
with overrides and seeds (one training run per seed), the table's `evaluate` flags say what
`launch.evaluate` computes for every finished run, and each `Column` names one number of the
evaluation report (`metric`: "KEY" of the bounds, or "SECTION.KEY" of another section) that the
rendered table shows. `Row.paper` holds the paper's value for a column with its source (table, row,
page) and the convention it was measured in, so that the difference is always shown beside it.

Adding a table means adding a definition to `TABLES`; nothing else changes. Row names are run
directory names under `--runs_dir`: two tables may share a row (the same name must then mean the
same training: `launch.reproduce` refuses a row whose flagfile, overrides or seeds differ from those
of a run already there).

Paper keys: sMIM: Livne et al. 2020 ("seed 000" in the shared papers); Bowman et al. 2016
("seed 001").
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

# The paper quoted most below: Livne et al. 2020, "SentenceMIM: A Latent Variable Language Model".
SMIM_PAPER = "Livne et al. 2020 (sentenceMIM)"
# Its Table 2 counts NLL per sentence without the <eos> term and perplexity over tokens with
# <eos> (the official test script); our "_no_eos" NLL and "_smim" PPL are that convention (the
# paper tokenises with NLTK's TweetTokenizer: 22.70 tokens per test sentence with <eos>, 21.92
# whitespace tokens here, so compare NLL first).
SMIM_CONVENTION = "NLL without <eos>; PPL: <eos> out of the NLL, in the token count"


@dataclasses.dataclass(frozen=True)
class Paper:
  """One number of a paper: its value, where it is printed, and how it was measured."""
  value: float
  source: str
  convention: str = ""
  note: str = ""


@dataclasses.dataclass(frozen=True)
class Column:
  """A number of the rendered table: `metric` of the evaluation report (`results.metric_value`).

  metric: "elbo_nll_no_eos" (bounds, the top level of eval_SPLIT.json), "info.mutual_information"
  (another section), "NAME/KEY" (of the table's extra evaluation NAME) or "train.KEY" (the
  training records); stderr: the metric of its standard error, shown as "value ± stderr";
  digits: decimals shown.
  """
  key: str
  label: str
  metric: str
  digits: int = 2
  doc: str = ""
  stderr: str = ""


@dataclasses.dataclass(frozen=True)
class Row:
  """One model of a table: a flagfile, its overrides (`--config.FIELD=VALUE` or short flags) and
  the seeds to train (one run each, `RUNS_DIR/name/seed<S>`); `paper` maps column keys to the
  paper's values."""
  name: str
  label: str
  flagfile: str
  overrides: tuple[str, ...] = ()
  seeds: tuple[int, ...] = (0,)
  paper: Mapping[str, Paper] = dataclasses.field(default_factory=dict)
  must_converge: bool = False  # the rule: reach the stopping criterion, not the cap

  def train_flags(self, table: "Table") -> tuple[str, ...]:
    """Flags every run of this row trains with (the table's, then the row's own)."""
    return (f"--flagfile={self.flagfile}", *table.train_overrides, *self.overrides)


@dataclasses.dataclass(frozen=True)
class Table:
  """A paper table (or figure) to reproduce: rows, columns, evaluation flags and prose.

  train_overrides: applied to every row before its own (the stopping rule of the table);
  evaluate: the flags of `launch.evaluate` for every run (suite, K, split): the main
    evaluation, eval_SPLIT.json;
  extra_evaluations: more evaluations of every run, {name: flags}, each written to NAME.json
    (`--report_name`) and read by the columns whose metric is "NAME/KEY" (a K sweep);
  generate: text to generate for every run, {name: `launch.generate` flags}, written to NAME.json
    (`--output_json`) and rendered as text blocks (reconstructions, samples, interpolations);
  notes: markdown paragraphs rendered under the table (what differs from the paper and why);
  steps_per_epoch, seconds_per_step: for the dry run's estimate before a row has logged its own
    rate: training steps per epoch, and measured seconds per step {matmul dtype: (seconds, how
    it was measured)};
  spread_check: {"candidate": row, "reference": row, "columns": (keys), "accept": text,
    "reject": text}: the rendered verdict whether each candidate run differs from the reference
    run of its seed by no more than the reference's seed-to-seed spread (`render.verdict_text`);
  truth_gaps: keys of columns that are an estimate minus a known truth, with a standard error:
    the rendered document says, per row, which stay at or above 0 within 2 standard errors
    (consistent with a valid bound) and which fall below it (`render.truth_gap_lines`).
  """
  name: str
  title: str
  source: str
  rows: tuple[Row, ...]
  columns: tuple[Column, ...]
  evaluate: tuple[str, ...] = ("--suite=bounds",)
  extra_evaluations: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  generate: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  train_overrides: tuple[str, ...] = ()
  notes: str = ""
  steps_per_epoch: int = 0
  seconds_per_step: Mapping[str, tuple[float, str]] = dataclasses.field(default_factory=dict)
  spread_check: Mapping[str, object] | None = None
  truth_gaps: tuple[str, ...] = ()

  def row(self, name: str) -> Row:
    for row in self.rows:
      if row.name == name:
        return row
    raise KeyError(f"table {self.name} has no row {name!r}; its rows: "
                   f"{', '.join(r.name for r in self.rows)}")


# ------------------------------------------------------------------------------------ columns

_NLL_DOC = "nats per sentence"
BOUND_COLUMNS = (
    Column("elbo_nll", "ELBO NLL", "elbo_nll_no_eos", doc="ELBO bound, " + _NLL_DOC + ", no <eos>"),
    Column("kl", "KL", "kl", doc="KL(q(z|x) ‖ p(z)) per sentence"),
    Column("iw_nll", "IW NLL (N(0, I))", "iw_nll_no_eos",
           doc="importance-weighted bound under the model's prior N(0, I)"),
    Column("posthoc_nll", "IW NLL (post-hoc prior)", "posthoc_iw_nll_no_eos",
           doc="importance-weighted bound under the post-hoc Gaussian-mixture prior: valid for "
               "sMIM and the AE too"),
    Column("melbo_nll", "MELBO NLL", "melbo_nll_no_eos",
           doc="MELBO (sMIM's Eq. 16): not a bound on the model's NLL; grows with log N"),
    Column("melbo_n", "MELBO N", "N", digits=0,
           doc="the number of test sentences N of the MELBO (its log N term)"),
    Column("exact_nll", "exact NLL (LM)", "exact_nll_no_eos",
           doc="the language model's exact NLL"),
)
PPL_COLUMNS = (
    Column("ppl_plus_eos", "PPL +eos", "best_ppl", digits=1,
           doc="the tightest valid bound's perplexity, <eos> in the NLL and the count"),
    Column("ppl_no_eos", "PPL -eos", "best_ppl_no_eos", digits=1, doc="<eos> in neither"),
    Column("ppl_smim", "PPL smim", "best_ppl_smim", digits=1,
           doc="<eos> out of the NLL, in the count (sMIM's Table 2)"),
    Column("melbo_ppl_smim", "MELBO PPL smim", "melbo_ppl_smim", digits=1,
           doc="the paper's sMIM PPL: MELBO, smim convention"),
    Column("elbo_ppl_smim", "ELBO PPL smim", "elbo_ppl_smim", digits=1,
           doc="the paper's sVAE PPL*: ELBO, smim convention"),
)
LATENT_COLUMNS = (
    Column("bleu1", "BLEU-1", "bleu1", digits=3, doc="greedy reconstruction from the mean"),
    Column("active_units", "AU", "active_units", digits=0, doc="active units (cov > 0.01)"),
    Column("mi", "MI", "info.mutual_information", digits=2,
           doc="I_q(x; z) estimate, nats (≤ log N)"),
    Column("frac_at_floor", "at floor", "frac_at_floor", digits=3,
           doc="fraction of dimensions with the log-variance at its floor"),
)


def _smim_table2(value: float, row: str, what: str) -> Paper:
  return Paper(value, f"{SMIM_PAPER}, Table 2, row {row}, {what} (p. 6)", SMIM_CONVENTION)


def _svae_paper(dim: int, elbo_nll: float, kl: float, elbo_ppl: float, melbo_nll: float,
                melbo_ppl: float, bleu: float) -> dict[str, Paper]:
  row = f"sVAE ({dim})"
  return {"elbo_nll": _smim_table2(elbo_nll, row, "NLL* (ELBO)"),
          "kl": _smim_table2(kl, row, "[KLD]"),
          "elbo_ppl_smim": _smim_table2(elbo_ppl, row, "PPL* (ELBO)"),
          "melbo_nll": _smim_table2(melbo_nll, row, "NLL (MELBO)"),
          "melbo_ppl_smim": _smim_table2(melbo_ppl, row, "PPL (MELBO)"),
          "bleu1": _smim_table2(bleu, row, "BLEU")}


def _smim_paper(dim: int, melbo_nll: float, melbo_ppl: float, bleu: float) -> dict[str, Paper]:
  row = f"sMIM ({dim})"
  return {"melbo_nll": _smim_table2(melbo_nll, row, "NLL (MELBO)"),
          "melbo_ppl_smim": _smim_table2(melbo_ppl, row, "PPL (MELBO)"),
          "bleu1": _smim_table2(bleu, row, "BLEU")}


# ------------------------------------------------------------------------------------ tables

# Stopping: the configs' own schedule (lr × 0.25 after 2 validations without improvement, seed 000
# §4.2) ends training after 4 validations without a new best, i.e. two learning-rate cuts that
# brought nothing (the official code's "until lr < 1e-8" would add ~6 more cuts of a rate already
# 16x smaller); 40 epochs (mimtext/config.py) is the cap.
#
# Precision: bfloat16 matmuls (parameters, gates, softmax and accumulation stay float32), accepted
# by the `precision_ab` table (docs/results/precision_ab.md): after 2 epochs of ptb_smim_128 its
# validation criterion, reconstruction and test BLEU-1 differ from float32's at the same seed by
# 0.24, 0.25 and 0.003, within the float32 seed-to-seed spread (1.93, 1.70, 0.031); 2x faster.
PTB_STOPPING = ("--config.early_stopping_patience=4", "--config.model.matmul_dtype=bfloat16")
# Measured here (2 cores, 2 trainings side by side, 1 thread each: launch.train
# ptb_smim_128.flags, 2026-12-07): the steady rate of the progress lines.
PTB_SECONDS_PER_STEP = {
    "float32": (0.375, "1,177 tok/s, ptb_smim_128 f32, 1 thread, 2 runs side by side"),
    "bfloat16": (0.19, "2,296 tok/s, ptb_smim_128 bf16, 1 thread, 2 runs side by side"),
}
PTB_STEPS_PER_EPOCH = 2104  # 42,068 training sentences at batch 20

SEED000_TABLE2 = Table(
    name="seed000_table2",
    title="sentenceMIM Table 2: Penn Treebank, sMIM against sVAE, the AE and a language model",
    source=f"{SMIM_PAPER}, Table 2 (PTB), Table 7 (AE BLEU)",
    rows=(
        Row("smim_16", "sMIM (16)", "launch/configs/ptb_smim_16.flags",
            paper=_smim_paper(16, 98.35, 76.3, 0.35)),
        Row("smim_128", "sMIM (128)", "launch/configs/ptb_smim_128.flags", seeds=(0, 1, 2),
            paper=_smim_paper(128, 75.58, 27.93, 0.61), must_converge=True),
        Row("smim_512", "sMIM (512)", "launch/configs/ptb_smim_512.flags",
            paper=_smim_paper(512, 67.46, 19.53, 0.679)),
        Row("svae_16", "sVAE (16)", "launch/configs/ptb_svae_16.flags",
            paper=_svae_paper(16, 106.84, 1.6, 110.72, 113.46, 148.18, 0.124)),
        Row("svae_128", "sVAE (128)", "launch/configs/ptb_svae_128.flags", seeds=(0, 1, 2),
            paper=_svae_paper(128, 107.36, 0.64, 113.3, 114.96, 158.31, 0.118),
            must_converge=True),
        Row("svae_512", "sVAE (512)", "launch/configs/ptb_svae_512.flags",
            paper=_svae_paper(512, 108.93, 0.41, 121.44, 116.76, 171.37, 0.116)),
        Row("svae_kl_16", "sVAE (16) + kl", "launch/configs/ptb_svae_kl_16.flags"),
        Row("svae_kl_128", "sVAE (128) + kl", "launch/configs/ptb_svae_kl_128.flags"),
        Row("svae_kl_512", "sVAE (512) + kl", "launch/configs/ptb_svae_kl_512.flags"),
        Row("ae_512", "AE (512)", "launch/configs/ptb_ae_512.flags",
            paper={"bleu1": Paper(0.637, f"{SMIM_PAPER}, Table 7, row PTB, AE (L) (p. 7)")}),
        Row("lm", "GRU language model", "launch/configs/ptb_lm.flags", must_converge=True),
    ),
    columns=BOUND_COLUMNS + PPL_COLUMNS + LATENT_COLUMNS,
    # K = 100 (with the sweep 1, 10, 30 from the same draws, so each row shows how far its bound
    # still moves); seed000_ksweep measures K up to 1,000 on sMIM (128) and sVAE (128).
    evaluate=("--suite=bounds,info", "--iw_samples=100", "--iw_sweep=1,10,30", "--split=test"),
    train_overrides=PTB_STOPPING,
    steps_per_epoch=PTB_STEPS_PER_EPOCH,
    seconds_per_step=PTB_SECONDS_PER_STEP,
    notes="""\
The paper averages 10 runs and trains up to 200 epochs on a GPU; here one run per row (three for
sMIM (128) and sVAE (128)) on a 2-core CPU, each until 4 validations bring no new best (two
learning-rate cuts without improvement) or 40 epochs, with bfloat16 matmuls (accepted by the A/B
of docs/results/precision_ab.md). The paper's sMIM NLL and PPL are MELBO
(its Eq. 16), which the library measures below the true entropy on the built-in corpus: MELBO is
not a bound on the model's likelihood. The valid bounds of every latent model are the ELBO, the
importance-weighted bound under N(0, I), and the importance-weighted bound under the post-hoc
prior (a Gaussian mixture fitted to the training codes), which also bounds sMIM and the AE. The
language model (the same decoder without z) gives the exact NLL every bound is measured against.
""")

# Seed 000's text blocks, from the rows of its Table 2 (the same runs: the rows are shared by name):
# the best sMIM of the paper's Table 2 (512), the sVAE of its lowest NLL* (16) and the AE (512).
SEED000_SAMPLES = Table(
    name="seed000_samples",
    title="sentenceMIM's text: reconstructions, prior samples and interpolations on Penn Treebank",
    source=f"{SMIM_PAPER}, Tables 11-12 (reconstructions D/M/R/P), 15 (interpolations), 18 "
           "(samples), section 4.7 and appendix D",
    rows=tuple(dataclasses.replace(SEED000_TABLE2.row(name), paper={}, must_converge=False)
               for name in ("smim_512", "svae_16", "ae_512")),
    columns=(),
    evaluate=(),
    generate={"samples": ("--mode=reconstruct,sample,interpolate", "--split=test",
                          "--num_reconstructions=6", "--num_samples=10", "--num_points=7",
                          "--seed=0")},
    train_overrides=PTB_STOPPING,
    steps_per_epoch=PTB_STEPS_PER_EPOCH,
    seconds_per_step=PTB_SECONDS_PER_STEP,
    notes="""The runs are those of `seed000_table2` (rows shared by name: one training serves both
tables).
Every block is greedy decoding. Reconstructions of the first test sentences: (D) the data, (M)
decoded from the posterior mean, (R) from a posterior sample, (P) from a sample with 10 times the
posterior standard deviation (seed 000 appendix D.1); the AE has D and M only. Prior samples decode
z ~ N(0, 0.1² I) for sMIM (seed 000 appendix D.3) and z ~ N(0, I) for the sVAE and the AE.
Interpolations decode 7 equally spaced points between the posterior means of two test sentences
chosen by --seed=0, the same pair for every model.
""")

# The K of seed000_table2's importance-weighted bounds, chosen from a sweep on its two main rows
# (the same runs), on the first 500 test sentences: K = 1,000 costs 10x the table's K = 100.
SEED000_KSWEEP = Table(
    name="seed000_ksweep",
    title="How many importance samples: the K sweep of the bounds on sMIM (128) and sVAE (128)",
    source=f"not a paper table: the K of seed000_table2's bounds ({SMIM_PAPER} reports none)",
    rows=tuple(dataclasses.replace(SEED000_TABLE2.row(name), paper={}, seeds=(0,),
                                   must_converge=False) for name in ("smim_128", "svae_128")),
    columns=tuple(
        Column(f"{bound}{k}", f"{label} K={k}", f"iw_sweep.{i}.{bound}_nll",
               stderr=f"iw_sweep.{i}.{bound}_step_stderr",
               doc=f"{label} at K = {k} (± the standard error of its step from the previous K)")
        for bound, label in (("iw", "IW"), ("posthoc_iw", "post-hoc IW"))
        for i, k in enumerate((1, 10, 100, 300, 1000))),
    evaluate=("--suite=bounds", "--iw_samples=1000", "--iw_sweep=1,10,100,300",
              "--max_sentences=500", "--split=test", "--noplot"),
    train_overrides=PTB_STOPPING,
    steps_per_epoch=PTB_STEPS_PER_EPOCH,
    seconds_per_step=PTB_SECONDS_PER_STEP,
    notes="""\
The first 500 test sentences, K = 1,000 draws per sentence, the smaller K from the first K of the
same draws. A bound has converged at K when its step to the next K is within its standard error;
seed000_table2 uses K = 100 and prints its own sweep (1, 10, 30, 100) for every row.
""")

# The bfloat16 A/B that decides whether the PTB reproductions may use bfloat16 matmuls: the same
# config and seeds in float32 and bfloat16 for the same number of epochs; bfloat16 is accepted when
# its final validation criterion and test BLEU-1 lie within the float32 seed-to-seed spread.
PRECISION_AB = Table(
    name="precision_ab",
    title="float32 against bfloat16 matmuls on Penn Treebank (sMIM 128, 2 epochs)",
    source="not a paper table: the A/B that the seed 000 reproduction requires before bfloat16",
    rows=(
        Row("ab_smim_128_f32", "sMIM (128), float32", "launch/configs/ptb_smim_128.flags",
            overrides=("--config.max_epochs=2",), seeds=(0, 1)),
        Row("ab_smim_128_bf16", "sMIM (128), bfloat16", "launch/configs/ptb_smim_128.flags",
            overrides=("--config.max_epochs=2", "--config.model.matmul_dtype=bfloat16"),
            seeds=(0,)),
    ),
    columns=(
        Column("valid_criterion", "final validation criterion", "train.valid_criterion",
               digits=3, doc="the A-MIM loss on the validation split after the last epoch"),
        Column("valid_rec", "validation reconstruction", "train.valid_rec", digits=3,
               doc="−E log p(x|z) per sentence on the validation split"),
        Column("bleu1", "test BLEU-1", "bleu1", digits=4),
        Column("tokens_per_sec", "training tok/s", "train.tokens_per_sec", digits=0,
               doc="median of the progress lines after the first epoch's compilations"),
    ),
    evaluate=("--suite=bounds", "--iw_samples=10", "--noposthoc", "--split=test"),
    steps_per_epoch=PTB_STEPS_PER_EPOCH,
    seconds_per_step=PTB_SECONDS_PER_STEP,
    spread_check={"candidate": "ab_smim_128_bf16", "reference": "ab_smim_128_f32",
                  "columns": ("valid_criterion", "valid_rec", "bleu1"),
                  "accept": "bfloat16 accepted for the PTB reproductions: its final validation "
                            "numbers and test BLEU-1 lie within the float32 seed-to-seed spread.",
                  "reject": "bfloat16 not accepted: at least one number lies outside the float32 "
                            "seed-to-seed spread; the PTB reproductions train in float32."},
    notes="""\
Both precisions train the same config from seed 0 for the same 2 epochs, float32 also from seed 1
for the seed-to-seed spread. bfloat16 rounds only the operands of the RNN and output-layer matmuls
(accumulation, gates, softmax and parameters stay float32). The runs shared the 2 cores with other
trainings and test runs (and were paused 5 minutes for a benchmark), so their wall times and
tokens per second are not speed measurements: benchmarks/README.md has those.
""")

# The smallest table: two rows on the built-in corpus for a few steps. The test of
# `launch.reproduce` (tests/test_reproduce.py) runs it end to end, killed and resumed.
BUILTIN_TINY = Table(
    name="builtin_tiny",
    title="Smoke table: a tiny sMIM and a tiny language model on the built-in corpus",
    source="no paper: the end-to-end test of launch.reproduce",
    rows=(
        Row("tiny_smim", "sMIM (8)", "launch/configs/quickstart.flags",
            overrides=("--config.model.latent_dim=8",)),
        Row("tiny_lm", "language model", "launch/configs/quickstart.flags",
            overrides=("--config.objective.name=lm", "--config.model.condition=none")),
    ),
    columns=(*(c for c in BOUND_COLUMNS if c.key in ("elbo_nll", "posthoc_nll", "exact_nll")),
             *(c for c in LATENT_COLUMNS if c.key == "bleu1"),
             Column("iw_k2", "IW K = 2", "iw_nll", stderr="iw_nll_stderr"),
             Column("iw_k1", "IW K = 1", "k1/iw_nll", stderr="k1/iw_nll_stderr")),
    evaluate=("--suite=bounds", "--iw_samples=2", "--num_z_samples=2", "--max_sentences=40",
              "--noposthoc", "--noplot"),
    extra_evaluations={"k1": ("--suite=bounds", "--iw_samples=1", "--num_z_samples=1",
                              "--max_sentences=40", "--noposthoc", "--noplot")},
    generate={"samples": ("--mode=reconstruct,sample,interpolate", "--num_reconstructions=2",
                          "--num_samples=2", "--num_points=3")},
    train_overrides=("--config.model.embed_dim=16", "--config.model.hidden_dim=32",
                     "--config.max_steps=60", "--config.log_every_steps=20",
                     "--config.data.builtin_train_size=400", "--config.eval.max_valid_sentences=40",
                     "--config.data.builtin_eval_size=40"),
)


def _sweep_gap(key: str, label: str, index: int, bound: str, doc: str) -> Column:
  """The gap to the truth of `bound` at the K of row `index` of the report's K sweep."""
  return Column(key, label, f"iw_sweep.{index}.{bound}_gap",
                stderr=f"iw_sweep.{index}.{bound}_gap_stderr", doc=doc)


def _gap(key: str, label: str, metric: str, doc: str) -> Column:
  """The paired gap of a bound to the true −log p(x), ± its standard error (`bounds.nll_bounds`)."""
  name, _, bound = metric.rpartition("/")
  prefix = f"{name}/" if name else ""
  return Column(key, label, f"{prefix}{bound}_gap", stderr=f"{prefix}{bound}_gap_stderr", doc=doc)


# The built-in corpus knows its own log p(x): every estimator is checked against the truth. The
# quickstart's sMIM (quickstart.flags) and its twins differ from it in one field each.
BUILTIN_TRUTH = Table(
    name="builtin_truth",
    title="Which likelihood estimators stay above the truth: the built-in corpus of known entropy",
    source="no paper: the built-in grammar's exact log p(x) (mimtext.data.grammar) against the "
           "bounds of sMIM (Livne et al. 2020), the sentence VAE (Bowman et al. 2016), the AE and "
           "the language model",
    rows=(
        Row("builtin_smim_clamp", "sMIM, hard clamp", "launch/configs/quickstart.flags"),
        Row("builtin_smim_softplus", "sMIM, smooth floor", "launch/configs/quickstart.flags",
            overrides=("--config.model.floor_mode=softplus",)),
        Row("builtin_svae", "sVAE", "launch/configs/quickstart.flags",
            overrides=("--config.objective.name=vae",)),
        Row("builtin_ae", "AE", "launch/configs/quickstart.flags",
            overrides=("--config.objective.name=ae",)),
        Row("builtin_lm", "language model", "launch/configs/quickstart.flags",
            overrides=("--config.objective.name=lm", "--config.model.condition=none")),
    ),
    columns=(
        Column("true_nll", "true H", "true_nll", stderr="true_nll_stderr",
               doc="the corpus's exact entropy per sentence, −(1/N) Σ log p(x_i), +eos"),
        Column("exact_nll", "LM exact NLL", "exact_nll", stderr="exact_nll_stderr",
               doc="the language model's exact NLL (+eos)"),
        Column("elbo_nll", "ELBO", "elbo_nll", stderr="elbo_nll_stderr", doc="ELBO bound (+eos)"),
        Column("iw500_nll", "IW K=500", "iw_nll", stderr="iw_nll_stderr",
               doc="importance-weighted bound under the model's prior, K = 500"),
        Column("posthoc500_nll", "post-hoc K=500", "posthoc_iw_nll",
               stderr="posthoc_iw_nll_stderr",
               doc="importance-weighted bound under the post-hoc prior, K = 500"),
        _gap("elbo_gap", "ELBO − H", "elbo", "paired gap to the truth, ± its standard error"),
        _sweep_gap("iw1_gap", "IW K=1 − H", 0, "iw", "IW with K = 1 (one-draw ELBO estimate)"),
        _sweep_gap("iw10_gap", "IW K=10 − H", 1, "iw", "IW, K = 10"),
        _sweep_gap("iw100_gap", "IW K=100 − H", 2, "iw", "IW, K = 100"),
        _gap("iw500_gap", "IW K=500 − H", "iw", "IW, K = 500"),
        _sweep_gap("posthoc1_gap", "post-hoc K=1 − H", 0, "posthoc_iw", "post-hoc IW, K = 1"),
        _sweep_gap("posthoc10_gap", "post-hoc K=10 − H", 1, "posthoc_iw", "post-hoc IW, K = 10"),
        _sweep_gap("posthoc100_gap", "post-hoc K=100 − H", 2, "posthoc_iw",
                   "post-hoc IW, K = 100"),
        _gap("posthoc500_gap", "post-hoc K=500 − H", "posthoc_iw", "post-hoc IW, K = 500"),
        Column("melbo10", "MELBO N=10", "melbo.mean.0", digits=2,
               doc="MELBO over random subsets of 10 test sentences (the mean of 20 subsets): "
                   "compare with true H; log N grows with N"),
        _gap("melbo_gap", "MELBO N=1000 − H", "melbo", "MELBO over the whole test split (N = "
             "1,000): not a bound on the model's NLL"),
        _gap("exact_gap", "LM − H", "exact", "the language model's exact NLL minus the truth"),
        Column("probe", "topic probe", "probe_accuracy", digits=3,
               doc="accuracy of a linear probe of the latent topic on the codes"),
    ),
    truth_gaps=("elbo_gap", "iw1_gap", "iw10_gap", "iw100_gap", "iw500_gap", "posthoc1_gap",
                "posthoc10_gap", "posthoc100_gap", "posthoc500_gap", "melbo_gap", "exact_gap"),
    # One pass of K = 500 draws gives every K of the sweep (`launch.evaluate --iw_sweep`).
    evaluate=("--suite=bounds,melbo", "--iw_samples=500", "--iw_sweep=1,10,100",
              "--num_z_samples=10", "--noplot"),
    train_overrides=("--config.max_epochs=40", "--config.early_stopping_patience=6"),
    steps_per_epoch=313,  # 10,000 sentences at batch 32
    notes="""\
Five models of the quickstart's size (GRU 256, embeddings 64, latent 128) on the built-in corpus,
whose exact log p(x) is known, each trained until 6 validations bring no new best (two
learning-rate cuts ×0.25 without improvement, quickstart.flags' plateau patience 3) or 40 epochs.
Every number is per sentence, in nats, with <eos>, on the 1,000 test sentences. A gap column is
the mean over sentences of (estimate − true −log p(x)), paired, ± its standard error: a valid
bound has a gap ≥ 0 up to Monte Carlo noise, and a gap below −2 standard errors proves an
estimator is not a bound. The post-hoc prior is a Gaussian mixture fitted to the training codes
(the same fitted prior for every K). The bounds at K = 1, 10 and 100 are those of the first K of
the 500 draws (`launch.evaluate --iw_sweep`).

Why each estimator lands where it does (the numbers are in the tables below):
- MELBO (sMIM's Eq. 16) is a bound only under a prior equal to the evaluation set's own aggregate
  posterior. sMIM's encoder is nearly deterministic (σ at its floor), so that prior is a mixture
  of near point masses on the test sentences themselves, and MELBO falls below the true entropy:
  it is no bound on the likelihood of any model that could generate new sentences. For the sVAE,
  whose posteriors overlap, MELBO is its reconstruction term plus log N and lies above the truth.
- The ELBO and the importance-weighted bounds under N(0, I) are valid but loose for sMIM by
  hundreds of nats: A-MIM never asks q(z|x) to match N(0, I), so the KL to it is huge.
- The post-hoc bound (a prior fitted to the training codes, a proposal widened from q) is valid
  for sMIM and the AE, and is the one usable likelihood bound they have. It still falls with K
  at K = 500 (the K columns): the proposal is far from the posterior under p̂, so it has not
  converged, and the gap to the truth is an upper limit on how far the model is from it.
- The sVAE's bounds are tight (its posterior is close to its prior: the topic probe is near the
  majority rate, a collapsed code), and the language model, the same decoder without z, is the
  yardstick: its exact NLL sits about a nat above the truth, as does the sVAE's bound.
""")

TABLES: dict[str, Table] = {t.name: t for t in (SEED000_TABLE2, SEED000_SAMPLES, SEED000_KSWEEP,
                                                PRECISION_AB, BUILTIN_TRUTH, BUILTIN_TINY)}


def get_table(name: str) -> Table:
  if name not in TABLES:
    raise KeyError(f"--table={name!r}: no such table; choose one of {', '.join(sorted(TABLES))}")
  return TABLES[name]
