r"""Prints what a trained model generates: prior samples, reconstructions, interpolations,
imputed sentence endings (with their adversarial error) and answers to questions.

  python -m launch.generate --workdir=W                        # = --mode=sample,reconstruct
  python -m launch.generate --workdir=W --mode=sample --num_samples=20 [--prior=posthoc]
  python -m launch.generate --workdir=W --mode=reconstruct
      [--num_reconstructions=5 | --sentences="a b c|d e f"]
  python -m launch.generate --workdir=W --mode=interpolate
      [--sentence_a="..." --sentence_b="..."] [--num_points=5]
  python -m launch.generate --workdir=W --mode=impute [--num_impute=100] [--impute_fraction=0.2]
  python -m launch.generate --workdir=W --mode=answer
      [--num_questions=5 | --question="how do i ... ?"]

`--mode` takes a comma list, run in the order given. Shared flags: --step (best, latest or N),
--split (the sentences reconstructed, interpolated, imputed, and the Yahoo split questions come
from), --method=greedy|sample|beam with --temperature (sample) and --beam_width (beam, and the
imputation's beam), --ban_unk (never generate <unk>; default on for answers, off otherwise),
--max_len, --seed. Long loops show a progress bar on stderr; the results go to stdout.

Modes:
  sample       decodes of z ~ N(0, s² I) (--prior=gaussian; s = --prior_std, by default 0.1 for
               sMIM, whose aggregate posterior is far narrower than N(0, I) (DESIGN §4), and 1
               otherwise) or of z ~ the post-hoc prior (a Gaussian mixture or a flow) fitted to
               the run's aggregate posterior (--prior=posthoc; fitted once and saved as
               W/posthoc_prior.json), then the fraction of distinct samples.
  reconstruct  per sentence: the data (D), decodes of its posterior mean (M), of a posterior sample
               (R) and of that sample perturbed by 10 posterior σ (P), as seed 000 Tables 11-14. An
               AE (z = μ(x)) gets D and M only. --sentences are tokenised by the run's tokeniser
               (its data.tokenizer) and read with its vocabulary; unknown words become <unk>
               (their count is printed). So are --sentence_a/--sentence_b and --question.
  interpolate  N decodes (both ends included) on the straight line between the posterior codes of
               two sentences (seed 000 Table 10): --sentence_a/--sentence_b, or two random sentences
               of --split. The ends are posterior means, or posterior samples with --method=sample.
  impute       the last --impute_fraction of the words of --num_impute sentences of --split
               imputed by approximate ICM (seed 001 §5: 3 steps of a beam search of --beam_width),
               the first 5 shown as "prefix ||| true ending ||| imputed ending", then the
               adversarial error of seed 001 Table 4 (unigram and GRU classifiers telling the true
               sentences from the imputed ones).
  answer       answers decoded from a question followed by 5 / 10 / 15 <unk> (seed 000 §4.6, D.4):
               --num_questions questions of the Yahoo corpus (each document cut after its first
               "?"; --data_dir, else the run's own Yahoo corpus, $MIMTEXT_DATA/yahoo or
               ../shared/data/yahoo) or --question="text ?" ("|" separates several questions).
"""

from __future__ import annotations

import collections
import json
import sys
from typing import Iterator, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from launch import common
from mimtext import api
from mimtext import experiment
from mimtext import objectives
from mimtext.data import corpus as corpus_lib
from mimtext.data import text_files
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import generation

MODES = ("sample", "reconstruct", "interpolate", "impute", "answer")
PRIORS = ("gaussian", "posthoc")
NUM_SHOWN_IMPUTATIONS = 5
# Rows decoded per call: a progress bar counts these chunks.
_CHUNK = 100
_IMPUTE_CHUNK = 64  # imputation.impute_endings' own batch size

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a training run.", required=True)
_MODE = flags.DEFINE_string("mode", "sample,reconstruct",
                            f"Comma list of {', '.join(MODES)} (run in the order given).")
_STEP = flags.DEFINE_string("step", "best", "Checkpoint: best, latest or a step number.")
_SPLIT = flags.DEFINE_string("split", "test",
                             "Split of the sentences reconstructed, interpolated, imputed (and of "
                             "the Yahoo questions).")
_METHOD = flags.DEFINE_string("method", "greedy", f"Decoding: {', '.join(generation.METHODS)}.")
_BEAM_WIDTH = flags.DEFINE_integer("beam_width", 5, "Beam width (--method=beam, and imputation).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Softmax temperature of --method=sample.")
_BAN_UNK = flags.DEFINE_bool("ban_unk", None,
                             "Never generate <unk> (default: on for --mode=answer, else off).")
_MAX_LEN = flags.DEFINE_integer("max_len", 40, "Longest generated sentence (tokens).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
# sample
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 10, "sample: sentences sampled from the prior.")
_PRIOR = flags.DEFINE_string("prior", "gaussian",
                             "sample: gaussian (N(0, s² I)) or posthoc "
                             "(a Gaussian mixture or a flow "
                             "fitted to the training codes, saved as WORKDIR/posthoc_prior.json).")
_PRIOR_STD = flags.DEFINE_float("prior_std", None,
                                "sample: s of the gaussian prior (default 0.1 for sMIM, else 1).")
# reconstruct
_NUM_RECON = flags.DEFINE_integer("num_reconstructions", 5,
                                  "reconstruct: sentences of --split to reconstruct.")
_SENTENCES = flags.DEFINE_string("sentences", None,
                                 "reconstruct: '|'-separated sentences to reconstruct instead.")
# interpolate
_SENTENCE_A = flags.DEFINE_string("sentence_a", None,
                                  "interpolate: first end (default: a random --split sentence).")
_SENTENCE_B = flags.DEFINE_string("sentence_b", None, "interpolate: second end.")
_NUM_POINTS = flags.DEFINE_integer("num_points", 5, "interpolate: points, both ends included.")
# impute
_NUM_IMPUTE = flags.DEFINE_integer("num_impute", 100, "impute: sentences of --split to impute.")
_IMPUTE_FRACTION = flags.DEFINE_float("impute_fraction", 0.2,
                                      "impute: fraction of final words imputed (seed 001: 0.2).")
# answer
_NUM_QUESTIONS = flags.DEFINE_integer("num_questions", 5, "answer: Yahoo questions to answer.")
_QUESTION = flags.DEFINE_string("question", None,
                                "answer: a question ('text ?'; '|' separates several) instead of "
                                "Yahoo questions.")
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Also write what every mode printed, as data, to this JSON file (for "
    "launch.reproduce's text tables).")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "answer: the Yahoo corpus directory (or its parent).")


# ------------------------------------------------------------------------------------- flags


def parse_modes(value: str) -> list[str]:
  """The modes of a `--mode` comma list, in order, duplicates dropped."""
  modes: list[str] = []
  for mode in (m.strip() for m in value.split(",")):
    if mode not in MODES:
      raise app.UsageError(f"--mode={value!r}: unknown mode {mode!r}; use a comma list of "
                           f"{', '.join(MODES)}")
    if mode not in modes:
      modes.append(mode)
  return modes


def _check_flags() -> list[str]:
  """Every flag value checked before any work; the modes to run."""
  modes = parse_modes(_MODE.value)
  if _METHOD.value not in generation.METHODS:
    raise app.UsageError(f"--method={_METHOD.value!r}: use one of {', '.join(generation.METHODS)}")
  if _PRIOR.value not in PRIORS:
    raise app.UsageError(f"--prior={_PRIOR.value!r}: use one of {', '.join(PRIORS)}")
  for flag in (_NUM_SAMPLES, _NUM_RECON, _NUM_IMPUTE, _NUM_QUESTIONS, _SEED):
    if flag.value < 0:
      raise app.UsageError(f"--{flag.name}={flag.value}: must be >= 0")
  for flag in (_BEAM_WIDTH, _MAX_LEN):
    if flag.value < 1:
      raise app.UsageError(f"--{flag.name}={flag.value}: must be >= 1")
  if _NUM_POINTS.value < 2:
    raise app.UsageError(f"--num_points={_NUM_POINTS.value}: must be >= 2 (both ends included)")
  if not _TEMPERATURE.value > 0 or not np.isfinite(_TEMPERATURE.value):
    raise app.UsageError(f"--temperature={_TEMPERATURE.value}: must be positive and finite")
  if _PRIOR_STD.value is not None and (not _PRIOR_STD.value > 0
                                       or not np.isfinite(_PRIOR_STD.value)):
    raise app.UsageError(f"--prior_std={_PRIOR_STD.value}: must be positive and finite")
  if not 0.0 < _IMPUTE_FRACTION.value <= 1.0:
    raise app.UsageError(f"--impute_fraction={_IMPUTE_FRACTION.value}: must be in (0, 1]")
  if (_SENTENCE_A.value is None) != (_SENTENCE_B.value is None):
    raise app.UsageError("--sentence_a and --sentence_b go together (or neither: two random "
                         f"--split={_SPLIT.value} sentences)")
  for flag in (_SENTENCES, _QUESTION, _SENTENCE_A, _SENTENCE_B):
    if flag.value is not None and any(not text.split() for text in flag.value.split("|")):
      raise app.UsageError(f"--{flag.name}={flag.value!r}: holds an empty sentence")
  return modes


# ----------------------------------------------------------------------------------- helpers


class _Context:
  """The restored run and what every mode shares (scoring, decoding options, the corpus)."""

  def __init__(self, run, modes: Sequence[str]):
    self.run = run
    self.scoring = objectives.common.scoring(run.obj_cfg)
    self.key = jax.random.PRNGKey(_SEED.value)
    self.modes = list(modes)
    self._corpus = None
    self.output: dict = {}  # {mode: what it printed, as data}: --output_json

  def decode_options(self, mode: str) -> dict:
    """The `generation.generate` options of the shared flags (--ban_unk defaults per mode)."""
    ban_unk = _BAN_UNK.value if _BAN_UNK.value is not None else mode == "answer"
    return {"method": _METHOD.value, "temperature": _TEMPERATURE.value,
            "beam_width": _BEAM_WIDTH.value, "ban_unk": ban_unk, "max_len": _MAX_LEN.value,
            "scoring": self.scoring}

  def describe_decoding(self, mode: str) -> str:
    options = self.decode_options(mode)
    text = {"greedy": "greedy decoding",
            "sample": f"sampled decoding (temperature {options['temperature']:g})",
            "beam": f"beam search (width {options['beam_width']})"}[options["method"]]
    return text + (", <unk> banned" if options["ban_unk"] else "")

  def mode_key(self, mode: str):
    return jax.random.fold_in(self.key, MODES.index(mode))

  def _needed_splits(self) -> tuple[str, ...]:
    splits = []
    if (("reconstruct" in self.modes and _SENTENCES.value is None)
        or ("interpolate" in self.modes and _SENTENCE_A.value is None)
        or "impute" in self.modes):
      splits.append(_SPLIT.value)
    if "sample" in self.modes and _PRIOR.value == "posthoc":
      splits.extend(s for s in experiment.required_splits(self.run.config) if s not in splits)
    return tuple(splits)

  def corpus(self):
    """The run's corpus, loaded once with every split the chosen modes read."""
    if self._corpus is None:
      splits = self._needed_splits()
      print(f"loading the corpus ({', '.join(splits)}) ...", file=sys.stderr, flush=True)
      self._corpus = experiment.load_corpus(self.run.config, self.run.vocab, splits=splits)
    return self._corpus

  def split(self, name: str | None = None) -> corpus_lib.CorpusSplit:
    name = name or _SPLIT.value
    corpus = self.corpus()
    if name not in corpus.splits:
      raise app.UsageError(f"--split={name!r}: the corpus has {sorted(corpus.splits)}")
    return corpus.splits[name]


def _chunks(n: int, size: int, desc: str) -> Iterator[tuple[int, slice]]:
  """(chunk index, rows) of n rows in chunks of `size`, with a progress bar when more than one."""
  starts = range(0, n, size)
  bar = tqdm.tqdm(starts, desc=desc, unit="batch", leave=False, file=sys.stderr,
                  disable=len(starts) <= 1)
  for i, start in enumerate(bar):
    yield i, slice(start, min(start + size, n))


def _unknown_note(unknown: collections.Counter) -> str:
  """"N unknown word(s) read as <unk>: a, b, ..." of `api.unknown_words`' counts."""
  if not unknown:
    return "no unknown words"
  distinct = list(unknown)
  shown = ", ".join(distinct[:10])
  more = ", ..." if len(distinct) > 10 else ""
  return f"{sum(unknown.values())} unknown word(s) read as <unk>: {shown}{more}"


def _text(vocab: vocab_lib.Vocabulary, ids) -> str:
  return " ".join(vocab.decode(ids))


# ------------------------------------------------------------------------------------- modes


def run_sample(ctx: _Context) -> None:
  run, num = ctx.run, _NUM_SAMPLES.value
  options = ctx.decode_options("sample")
  prior = None
  if _PRIOR.value == "posthoc":
    from mimtext.evaluation import posthoc  # pylint: disable=g-import-not-at-top
    train = ctx.split("train")
    print(f"post-hoc prior: loading or fitting {run.workdir}/{posthoc.FILE_NAME} ...",
          file=sys.stderr, flush=True)
    gmm, info = posthoc.load_or_fit(run, train)
    prior = posthoc.prior_sampler(gmm)
    header = (f"{num} samples from the post-hoc prior ({posthoc.describe_prior(info)}, on "
              f"training sentences at step {info['step']}, {run.workdir}/{posthoc.FILE_NAME})")
    std = 1.0
  else:
    std = _PRIOR_STD.value or generation.default_prior_std(run.obj_cfg)
    header = f"{num} samples from N(0, {std:g}² I)"
  print(f"{header}, {ctx.describe_decoding('sample')}:")
  if ctx.scoring.deterministic_z and prior is None:
    print("  (an AE has no prior: N(0, s² I) is an arbitrary choice; --prior=posthoc fits one "
          "to its codes)")
  texts: list[str] = []
  key = ctx.mode_key("sample")
  for i, rows in _chunks(num, _CHUNK, "sample"):
    texts += generation.prior_samples(run.params, run.model_cfg, run.vocab,
                                      jax.random.fold_in(key, i), num=rows.stop - rows.start,
                                      std=std, prior=prior, objective=run.obj_cfg, **options)
  for text in texts:
    print(f"  {text}")
  ctx.output["sample"] = {"header": f"{header}, {ctx.describe_decoding('sample')}",
                          "texts": texts}
  if texts:
    distinct = len(set(texts))
    print(f"distinct samples: {distinct}/{len(texts)} ({distinct / len(texts):.2f})")
    ctx.output["sample"]["distinct_fraction"] = distinct / len(texts)


def run_reconstruct(ctx: _Context) -> None:
  run = ctx.run
  if _SENTENCES.value is not None:
    texts = [t.strip() for t in _SENTENCES.value.split("|")]
    tokenizer = experiment.tokenizer(run.config)
    examples = api.tokenize(texts, run.vocab, tokenizer)
    unknown = api.unknown_words(texts, run.vocab, tokenizer)
    source = f"{len(examples)} sentence(s) of --sentences ({_unknown_note(unknown)})"
  else:
    examples = ctx.split().head(_NUM_RECON.value).ids
    source = f"{len(examples)} {_SPLIT.value} sentence(s)"
  tags = "D data, M posterior mean, R posterior sample, P sample + 10 posterior σ"
  if ctx.scoring.deterministic_z:
    tags = "D data, M posterior mean"
  print(f"reconstructions of {source} ({tags}), {ctx.describe_decoding('reconstruct')}:")
  if ctx.scoring.deterministic_z:
    print("  (R and P skipped: an AE has z = μ(x) and no trained posterior σ)")
  options = ctx.decode_options("reconstruct")
  key = ctx.mode_key("reconstruct")
  rows_out: list[dict[str, str]] = []
  for i, rows in _chunks(len(examples), _CHUNK, "reconstruct"):
    rows_out += generation.reconstructions(run.params, run.model_cfg, run.vocab, examples[rows],
                                           jax.random.fold_in(key, i), objective=run.obj_cfg,
                                           **options)
  for k, row in enumerate(rows_out):
    if k:
      print()
    for tag in ("D", "M", "R", "P"):
      if tag in row:
        print(f"  {tag}: {row[tag]}")
  ctx.output["reconstruct"] = {
      "header": f"reconstructions of {source} ({tags}), {ctx.describe_decoding('reconstruct')}",
      "rows": [dict(row) for row in rows_out]}


def run_interpolate(ctx: _Context) -> None:
  run, n = ctx.run, _NUM_POINTS.value
  if _SENTENCE_A.value is not None:
    texts, tokenizer = [_SENTENCE_A.value, _SENTENCE_B.value], experiment.tokenizer(run.config)
    a_ids, b_ids = api.tokenize(texts, run.vocab, tokenizer)
    unknown = api.unknown_words(texts, run.vocab, tokenizer)
    source = f"--sentence_a and --sentence_b ({_unknown_note(unknown)})"
  else:
    split = ctx.split()
    if len(split) < 2:
      print(f"interpolate skipped: --split={_SPLIT.value} has {len(split)} sentence(s), "
            "two are needed (or pass --sentence_a and --sentence_b)")
      return
    i, j = np.random.default_rng(_SEED.value).choice(len(split), size=2, replace=False)
    a_ids, b_ids = split.ids[int(i)], split.ids[int(j)]
    source = f"{_SPLIT.value} sentences {int(i)} and {int(j)} (--seed={_SEED.value})"
  sampled = _METHOD.value == "sample" and not ctx.scoring.deterministic_z
  ends = "posterior samples z ~ q(z|x)" if sampled else "posterior means E_q[z|x]"
  print(f"interpolation in {n} points between the {ends} of {source}, "
        f"{ctx.describe_decoding('interpolate')}:")
  print(f"  A: {_text(run.vocab, a_ids)}")
  print(f"  B: {_text(run.vocab, b_ids)}")
  key = ctx.mode_key("interpolate") if _METHOD.value == "sample" else None
  texts = generation.interpolate(run.params, run.model_cfg, run.vocab, a_ids, b_ids,
                                 num_points=n, key=key, objective=run.obj_cfg,
                                 **ctx.decode_options("interpolate"))
  width = len(str(n))
  for k, text in enumerate(texts, 1):
    print(f"  {k:>{width}}. {text}")
  ctx.output["interpolate"] = {
      "header": f"interpolation in {n} points between the {ends} of {source}, "
                f"{ctx.describe_decoding('interpolate')}",
      "a": _text(run.vocab, a_ids), "b": _text(run.vocab, b_ids), "texts": list(texts)}


def run_impute(ctx: _Context) -> None:
  from mimtext.evaluation import adversarial  # pylint: disable=g-import-not-at-top
  from mimtext.evaluation import imputation  # pylint: disable=g-import-not-at-top
  run = ctx.run
  head = ctx.split().head(_NUM_IMPUTE.value)
  examples = [x for x in head.ids if len(x) > 2]
  skipped = len(head) - len(examples)
  note = f" ({skipped} empty sentence(s) left out)" if skipped else ""
  fraction = _IMPUTE_FRACTION.value
  print(f"imputation of the last {fraction:.0%} of the words of {len(examples)} "
        f"{_SPLIT.value} sentence(s){note} by approximate ICM (3 steps of a beam search of width "
        f"{_BEAM_WIDTH.value}, seed 001 §5); prefix ||| true ending ||| imputed ending:")
  if not examples:
    print("  impute skipped: no sentence to impute (--num_impute or the split is empty)")
    return
  ban_unk = ctx.decode_options("impute")["ban_unk"]
  out: list = []
  for _, rows in _chunks(len(examples), _IMPUTE_CHUNK, "impute"):
    out += imputation.impute_endings(run.params, run.model_cfg, examples[rows], fraction=fraction,
                                     beam_width=_BEAM_WIDTH.value, ban_unk=ban_unk,
                                     batch_size=_IMPUTE_CHUNK, scoring=ctx.scoring)
  shown = [{"prefix": _text(run.vocab, item.prefix),
            "true_ending": _text(run.vocab, item.true_ending),
            "imputed_ending": _text(run.vocab, item.imputed_ending)}
           for item in out[:NUM_SHOWN_IMPUTATIONS]]
  for item in shown:
    print(f"  {item['prefix']} ||| {item['true_ending']} ||| {item['imputed_ending']}")
  ctx.output["impute"] = {"num_imputed": len(out), "examples": shown}
  if len(out) < 2:
    print(f"adversarial error skipped: {len(out)} imputed sentence; the classifiers need at "
          "least 2 (a training and a held-out pair)")
    return
  print("training the adversarial classifiers ...", file=sys.stderr, flush=True)
  true, imputed = imputation.completed_sentences(out)
  result = adversarial.adversarial_error(true, imputed, vocab_size=run.vocab.size,
                                         seed=_SEED.value)
  print(f"adversarial error on {result['num_test_pairs']} held-out pairs "
        f"({result['num_train_pairs']} train, {result['num_dev_pairs']} dev): "
        f"unigram {100 * result['unigram_gap']:.1f}%, RNN {100 * result['rnn_gap']:.1f}% "
        "(seed 001 Table 4: a classifier's accuracy at telling true from imputed sentences "
        "minus 50%; 0% = indistinguishable, 50% = always told apart, lower is better)")
  ctx.output["impute"]["adversarial"] = result


def _questions_from_flag(vocab: vocab_lib.Vocabulary, tokenizer: str = vocab_lib.DEFAULT_TOKENIZER
                         ) -> tuple[list[np.ndarray], str]:
  """Word ids (no <sos>/<eos>) of the --question questions (split by the run's tokeniser), each
  ending in a "?" token."""
  questions, unknown = [], collections.Counter()
  for text in _QUESTION.value.split("|"):
    tokens = vocab_lib.tokenize(text, tokenizer)
    if "?" not in tokens:
      if tokens[-1].endswith("?"):
        tokens[-1:] = [tokens[-1][:-1], "?"] if len(tokens[-1]) > 1 else ["?"]
      else:
        tokens.append("?")
    tokens = tokens[:tokens.index("?") + 1]
    unknown += api.unknown_words([" ".join(tokens)], vocab)
    questions.append(vocab.encode(tokens, add_sos_eos=False))
  return questions, f"--question ({_unknown_note(unknown)})"


def yahoo_dir(run) -> str | None:
  """The Yahoo corpus directory: --data_dir, else the run's own corpus when it is Yahoo, else
  $MIMTEXT_DATA/yahoo or ../shared/data/yahoo (`experiment.corpus_dir`); None when none exists."""
  if _DATA_DIR.value:
    return corpus_lib.resolve_data_dir(_DATA_DIR.value, "yahoo")
  if run.config.data.corpus == "yahoo":
    config = run.config
  else:
    config = ml_collections.ConfigDict(run.config.to_dict())
    config.data.corpus = "yahoo"
    config.data.data_dir = ""
  try:
    return experiment.corpus_dir(config)
  except (FileNotFoundError, text_files.DataError):
    return None


def _questions_from_yahoo(run) -> tuple[list[np.ndarray], str]:
  from mimtext.evaluation import qa  # pylint: disable=g-import-not-at-top
  data_dir = yahoo_dir(run)
  if data_dir is None:
    raise app.UsageError("--mode=answer: no Yahoo corpus found (--data_dir, $MIMTEXT_DATA/yahoo, "
                         "../shared/data/yahoo); pass --question='a question ?' or --data_dir=DIR")
  questions, unknown = [], collections.Counter()
  tokenizer = experiment.tokenizer(run.config)
  for line in qa.read_yahoo_lines(data_dir, _SPLIT.value, tokenizer=tokenizer):
    if len(questions) == _NUM_QUESTIONS.value:
      break
    split = qa.split_question(vocab_lib.tokenize(line, tokenizer))
    if split is None:
      continue
    unknown += api.unknown_words([" ".join(split[0])], run.vocab)
    questions.append(run.vocab.encode(split[0], add_sos_eos=False))
  return questions, f"{data_dir}/{_SPLIT.value}.txt ({_unknown_note(unknown)})"


def run_answer(ctx: _Context) -> None:
  from mimtext.evaluation import qa  # pylint: disable=g-import-not-at-top
  run = ctx.run
  if _QUESTION.value is not None:
    questions, source = _questions_from_flag(run.vocab, experiment.tokenizer(run.config))
  else:
    questions, source = _questions_from_yahoo(run)
  pads = qa.DEFAULT_PAD_LENGTHS
  print(f"answers to {len(questions)} question(s) of {source}, decoded from the posterior mean "
        f"of the question + {' / '.join(map(str, pads))} <unk> (seed 000 D.4), "
        f"{ctx.describe_decoding('answer')}:")
  if not questions:
    print("  answer skipped: no question (--num_questions=0, or no document with a '?')")
    return
  encode = qa.encoder_fn(run)
  options = ctx.decode_options("answer")
  key = ctx.mode_key("answer")
  answers: list[str] = []
  for i, rows in _chunks(len(questions), _CHUNK // len(pads), "answer"):
    codes = qa.answer_codes(encode, questions[rows], pads)        # [n,P,d]
    answers += generation.generate(run.params, codes.reshape(-1, codes.shape[-1]), run.model_cfg,
                                   run.vocab, key=jax.random.fold_in(key, i), **options)
  width = max(len(str(p)) for p in pads)
  ctx.output["answer"] = {"questions": []}
  for q, question in enumerate(questions):
    print(f"  Q{q + 1}: {_text(run.vocab, question)}")
    ctx.output["answer"]["questions"].append(
        {"question": _text(run.vocab, question),
         "answers": {str(pad): answers[q * len(pads) + p] for p, pad in enumerate(pads)}})
    for p, pad in enumerate(pads):
      words = answers[q * len(pads) + p].split()
      if qa.QUESTION_MARK in words:
        answer = " ".join(words[words.index(qa.QUESTION_MARK) + 1:])
      else:
        answer = "(no '?' in the decode) " + " ".join(words)
      print(f"    {pad:>{width}} <unk>: {answer}")


_RUNNERS = {"sample": run_sample, "reconstruct": run_reconstruct,
            "interpolate": run_interpolate, "impute": run_impute, "answer": run_answer}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  common.prepare_host()
  logging.set_verbosity(logging.WARNING)
  modes = _check_flags()
  ctx = _Context(common.load_run(_WORKDIR.value, _STEP.value), modes)
  for i, mode in enumerate(modes):
    if i:
      print()
    _RUNNERS[mode](ctx)
    sys.stdout.flush()
  if _OUTPUT_JSON.value:
    with open(_OUTPUT_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"workdir": ctx.run.workdir, "step": ctx.run.step, "seed": _SEED.value,
                 "modes": ctx.output}, f, indent=1, default=_json_default)
      f.write("\n")
    print(f"\nwrote {_OUTPUT_JSON.value}")


def _json_default(value):
  """numpy scalars and arrays in the results of the modes."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
  common.run(main)
