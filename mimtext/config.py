"""The default experiment configuration; every `launch/configs/*.flags` file overrides it.

It lives in the library, so that `mimtext.api`, `mimtext.evaluation.runner` and the launch scripts
share one set of defaults. Run any experiment from the repository root:

  python -m launch.train --flagfile=launch/configs/NAME.flags --workdir=DIR [--config.FIELD=VALUE]

Every field below can be overridden on the command line as `--config.FIELD=VALUE` (e.g.
`--config.model.latent_dim=16`); the short flags `--max_steps`, `--max_epochs`, `--seed`,
`--batch_size` and `--data_dir` override the fields of the same name.

One source for every default and every field's doc: the `model` and `objective` blocks are the
fields of `sentence_ae.ModelConfig` and `objectives.ObjectiveConfig` (defaults and
`metadata["doc"]`, less the fields marked `derived`); the other blocks are the tables below.
`get_config()`, `launch.train --help` (`help_text()`) and docs/cli.md (`docs/generate_cli.py`) are
all built from `SECTIONS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import ml_collections

from mimtext import objectives
from mimtext.models import sentence_ae


class Field(NamedTuple):
  """One config field: its name in its block, its default and its one-line doc."""
  name: str
  default: Any
  doc: str


class Section(NamedTuple):
  """A block of the config ("" for the top level), what it is, and its fields in order."""
  block: str
  title: str
  fields: tuple[Field, ...]


def dataclass_fields(cls) -> tuple[Field, ...]:
  """The config fields of a config dataclass: every field not marked `derived`, with its default
  and `metadata["doc"]`."""
  return tuple(Field(f.name, f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)
               if "derived" not in f.metadata)


TOP_LEVEL = (
    Field("seed", 0, "Random seed (initialisation, shuffling, sampling)."),
    Field("batch_size", 20, "Global batch (seed 000 §4.2); must divide by the device count."),
    Field("eval_batch_size", 100, "Batch of validation and evaluation."),
    Field("max_epochs", 40, "Stop after this many epochs; 0 = no limit."),
    Field("max_steps", 0, "Stop after this many steps; 0 = no limit."),
    Field("max_minutes", 0.0, "Wall-clock budget of this invocation; 0 = no limit."),
    Field("early_stopping_patience", 0,
          "Stop after this many consecutive validations without a new best criterion (seed 003 "
          "§5.1: 3); 0 = off. The count survives resume."),
    Field("num_devices", 0, "Devices to train on; 0 = every visible device."),
    Field("log_every_steps", 100, "Log training metrics every this many steps."),
    Field("checkpoint_every_steps", 0, "Checkpoint every this many steps; 0 = only after each "
          "validation."),
    Field("distributed", False, "Call jax.distributed.initialize() (multi-host)."),
    Field("host_allocator", "auto", '"reuse": glibc keeps freed buffers for the next step '
          '(faster steps, slower compiling: mimtext.host_allocator, benchmarks/README.md); '
          '"default": glibc as it is; "auto": reuse unless the corpus is the built-in one. '
          "MIMTEXT_HOST_ALLOCATOR overrides it."),
)

DATA = (
    Field("corpus", "builtin", '"builtin" (the grammar corpus) or a folder name under '
          "MIMTEXT_DATA."),
    Field("data_dir", "", "A directory with train.txt / valid.txt / test.txt; overrides corpus."),
    Field("tfds_dir", "", 'Where TFDS prepares array_record files ("" = ~/.cache/mimtext/tfds).'),
    Field("use_tfds", True, "Read the corpus through the TFDS array_record builder; False reads "
          "the text files directly (same result)."),
    Field("vocab_split", "train", "The split the vocabulary is built from."),
    Field("train_from_valid", False,
          "Corpora without a train split (yahoo_topic, dbpedia here): train on `valid` minus a "
          "held-out part of `holdout` sentences (a seeded shuffle) used for validation; `test` "
          "stays the test set."),
    Field("holdout", 1000, "Sentences held out of `valid` for validation under train_from_valid."),
    Field("tokenizer", "whitespace", 'How text becomes tokens, everywhere (corpus, vocabulary, '
          'evaluation, generation, encoding, mimtext.api): "whitespace" (split on whitespace '
          'only), "lower" (lower-case, then whitespace) or "lower_punct" (lower-case and split '
          "punctuation off words). Part of the run: a resume must keep it."),
    Field("min_count", 1, "Minimum word count for the built vocabulary (rarer words are <unk>)."),
    Field("max_vocab", 0, "Keep the most frequent words only; 0 = no limit."),
    Field("max_len", 100, "Words per sentence (official sMIM code: 100); 0 = no limit."),
    Field("overflow", "drop", '"drop" or "truncate" sentences longer than max_len.'),
    Field("blank_lines", "skip", '"skip" (and count) or "error".'),
    Field("bucket_batches", 50, "Training batches are sorted by length within chunks of this many "
          "batches (less padding); 0 = off."),
    Field("builtin_seed", 0, "The built-in grammar corpus: seed (also of the train_from_valid "
          "holdout)."),
    Field("builtin_train_size", 10_000, "The built-in grammar corpus: training sentences."),
    Field("builtin_eval_size", 1_000, "The built-in grammar corpus: sentences per valid / test."),
)

OPTIMIZER = (
    Field("name", "adam", '"adam" (lr 1e-3) or "sgd" (lr 5.0, clip 0.25), seed 000 §4.2.'),
    Field("learning_rate", 1e-3, "Initial learning rate."),
    Field("clip_norm", 0.0, "Global-norm gradient clipping; 0 = none."),
    Field("plateau_factor", 0.25, "lr × factor after plateau_patience validations without "
          "improvement; 1 = constant lr."),
    Field("plateau_patience", 2, "Validations without improvement before lr × factor."),
)

EVAL = (
    Field("num_z_samples", 10, "z draws per sentence for the ELBO and MELBO."),
    Field("iw_samples", 10, "K of the importance-weighted bound (seed 003 Table 3: 500)."),
    Field("max_decode_len", 0, "Longest decoded sentence; 0 = the longest sentence of the split "
          "+ 5."),
    Field("max_valid_sentences", 0, "Validate during training on the first N sentences; 0 = all."),
)

SECTIONS = (
    Section("", "the run: seeds, batches, length, devices, logging", TOP_LEVEL),
    Section("data", "the corpus and its pipeline", DATA),
    Section("model", "the sentence autoencoder: sentence_ae.ModelConfig",
            dataclass_fields(sentence_ae.ModelConfig)),
    Section("objective", "the training objective: objectives.ObjectiveConfig",
            dataclass_fields(objectives.ObjectiveConfig)),
    Section("optimizer", "the optimiser and its plateau schedule", OPTIMIZER),
    Section("eval", "validation and evaluation", EVAL),
)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  for section in SECTIONS:
    block = c
    if section.block:
      c[section.block] = ml_collections.ConfigDict()
      block = c[section.block]
    for field in section.fields:
      block[field.name] = field.default
  return c


def field_docs() -> dict[str, tuple[Any, str]]:
  """{"model.latent_dim": (default, doc), ...}: every field of the config, in SECTIONS order."""
  return {(f"{s.block}.{f.name}" if s.block else f.name): (f.default, f.doc)
          for s in SECTIONS for f in s.fields}


def _default(value: Any) -> str:
  return repr(value) if isinstance(value, str) else str(value)


def help_text(summary: str) -> str:
  """`summary`, then every section of the config with its fields, defaults and one-line docs: the
  help of `--config` (absl rewraps each line to the terminal width)."""
  lines = [summary, "Its fields by section, each as `* FIELD=DEFAULT: doc`:"]
  for section in SECTIONS:
    prefix = f"{section.block}." if section.block else ""
    lines += ["", f"[{section.block or 'top level'}] {section.title}"]
    lines += [f"* {prefix}{f.name}={_default(f.default)}: {f.doc}" for f in section.fields]
  return "\n".join(lines)
