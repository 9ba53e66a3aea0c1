"""From an experiment config (`ml_collections.ConfigDict`) to the library's static pieces.

The launch layer holds configs as ConfigDicts; this module turns one into the frozen dataclasses
the model and objectives take, loads its corpus, and checks it before any work: invalid values
name their `--config.` flag, and a resumed or evaluated run is matched against its saved config.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os

from absl import logging
import ml_collections
import numpy as np

from mimtext import host_allocator
from mimtext import objectives
from mimtext.data import corpus as corpus_lib
from mimtext.data import text_files
from mimtext.data import vocab as vocab_lib
from mimtext.models import sentence_ae



class ConfigError(ValueError):
  """A config value, flag or workdir the run cannot use: a user's mistake, reported by the launch
  scripts as one line naming the flag (no traceback)."""


# Old dotted config names → new, so that a run saved under an old name (its config.json) still
# loads (`merge_config`, `check_resumable_config`, `objective_config`); a flag with an old name is
# refused with the new name (`unknown_field_message`). Seed 004 Eq. 2's ψ and λ.
RENAMED_FIELDS = {"objective.psi": "objective.kl_z_weight",
                  "objective.lam": "objective.kl_gamma_weight"}


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> sentence_ae.ModelConfig:
  """The static model configuration from the experiment config's `model` block.

  Every field of `sentence_ae.ModelConfig` is read from `config.model` under the same name, except
  the two marked `derived` in its metadata, which are no config fields: `vocab_size` (the run's
  vocabulary) and `mi_head`, True exactly for `objective.name="mi"` (the q_MI head of the MI
  criterion, seed 002 §4). No other model field depends on the objective: the hsvae posterior head
  is not chosen by the objective's name but checked against it (`validate_config`).
  """
  fields = {f.name for f in dataclasses.fields(sentence_ae.ModelConfig)
            if "derived" not in f.metadata}
  return sentence_ae.ModelConfig(vocab_size=vocab_size, mi_head=config.objective.name == "mi",
                                 **{k: config.model[k] for k in fields if k in config.model})


def objective_config(config: ml_collections.ConfigDict,
                     model_cfg: sentence_ae.ModelConfig) -> objectives.ObjectiveConfig:
  """The static objective configuration from the experiment config's `objective` block (a field
  under its old name, `RENAMED_FIELDS`, read as the new one)."""
  fields = {f.name for f in dataclasses.fields(objectives.ObjectiveConfig)
            if "derived" not in f.metadata}
  block = upgrade_saved_config({"objective": dict(config.objective)})["objective"]
  return objectives.ObjectiveConfig(
      model=model_cfg, **{k: block[k] for k in fields if k in block})


def upgrade_saved_config(saved: dict) -> dict:
  """A copy of a saved config (a run's config.json, nested dicts) with every field of
  `RENAMED_FIELDS` under its new name.

  Raises:
    ConfigError: the config holds both names of a field, with different values.
  """
  out = dict(saved)
  for old, new in RENAMED_FIELDS.items():
    block, old_leaf = old.rsplit(".", 1)
    new_block, new_leaf = new.rsplit(".", 1)
    assert block == new_block, (old, new)  # renames stay within a block
    values = out.get(block)
    if not isinstance(values, dict) or old_leaf not in values:
      continue
    values = dict(values)
    value = values.pop(old_leaf)
    if new_leaf in values and values[new_leaf] != value:
      raise ConfigError(f"--config.{new}={values[new_leaf]!r}: the config also holds the same "
                        f"field under its old name, {old}={value!r}; keep only {new}")
    values[new_leaf] = value
    out[block] = values
  return out


def load_corpus(config: ml_collections.ConfigDict,
                vocab: vocab_lib.Vocabulary | None = None, *,
                splits: tuple[str, ...] | None = None) -> corpus_lib.Corpus:
  """The experiment's corpus: the built-in grammar, or a directory of text splits.

  Args:
    config: the experiment config (its `data` block).
    vocab: the vocabulary to encode with; None builds one.
    splits: the splits a corpus directory must hold, checked before any file is read; default
      `required_splits(config)` (what training reads). Evaluation passes the split it scores.

  Raises:
    text_files.DataError: a required split is missing (the message names the directory and the
      file) or a file is malformed (named with its line).
    FileNotFoundError: `data.corpus` names a corpus that is nowhere to be found.
  """
  d = config.data
  data_dir = corpus_dir(config)
  corpus = corpus_lib.load_corpus(
      data_dir, vocab=vocab,
      required_splits=required_splits(config) if splits is None else splits,
      min_count=d.min_count, max_vocab=d.max_vocab or None, max_len=d.max_len or None,
      overflow=d.overflow, blank_lines=d.blank_lines,
      tfds_dir=d.tfds_dir or None, use_tfds=d.use_tfds, builtin_seed=d.builtin_seed,
      builtin_sizes={"train": d.builtin_train_size, "valid": d.builtin_eval_size,
                     "test": d.builtin_eval_size},
      vocab_split=d.vocab_split, tokenizer=tokenizer(config))
  if d.train_from_valid:
    corpus.splits.update(holdout_split(corpus.splits["valid"], d.holdout, seed=d.builtin_seed))
  return corpus


def tokenizer(config) -> str:
  """The run's tokeniser, `data.tokenizer` (a ConfigDict or a saved config.json's dicts): how every
  text of the run becomes tokens (`vocab_lib.tokenize`). A config that predates the field (an old
  config.json) means "whitespace", the only behaviour before it existed."""
  data = config["data"] if "data" in config else None
  if data is None or "tokenizer" not in data:
    return vocab_lib.DEFAULT_TOKENIZER
  return data["tokenizer"]


def corpus_dir(config: ml_collections.ConfigDict) -> str | None:
  """The corpus directory of the config (`data.data_dir`, else `data.corpus` found under
  $MIMTEXT_DATA or ../shared/data); None for the built-in corpus.

  Raises:
    FileNotFoundError: `data.corpus` is found nowhere.
  """
  d = config.data
  data_dir = d.data_dir or None
  if data_dir is None and d.corpus != "builtin":
    data_dir = corpus_lib.resolve_data_dir(None, d.corpus) or _shared_data_dir(d.corpus)
    if data_dir is None:
      raise FileNotFoundError(
          f"corpus {d.corpus!r} not found: pass --data_dir=DIR (a directory with train.txt, "
          f"valid.txt, test.txt) or set MIMTEXT_DATA to the folder that holds {d.corpus}/")
  return data_dir


def check_corpus_files(config: ml_collections.ConfigDict) -> None:
  """Reads the split files a training run needs, so that a missing, undecodable or malformed file
  fails before the run writes anything (a few MB of text: well under a second).

  Raises:
    text_files.DataError: naming the directory and file, or the file and line.
    FileNotFoundError: `data.corpus` is found nowhere.
  """
  data_dir = corpus_dir(config)
  if data_dir is None:
    return
  for split in required_splits(config):
    text_files.read_lines(text_files.check_split_file(data_dir, split),
                          blank_lines=config.data.blank_lines)
  if "test" not in text_files.available_splits(data_dir):
    logging.warning("%s has no test split (test.txt): training goes on, and launch.evaluate will "
                    "need --split=valid (or a test.txt added before evaluating)", data_dir)


def required_splits(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The splits a training run reads: `valid` (and `train` unless it trains from `valid`)."""
  return ("valid",) if config.data.train_from_valid else ("train", "valid")


def holdout_split(split: corpus_lib.CorpusSplit, holdout: int, *, seed: int
                  ) -> dict[str, corpus_lib.CorpusSplit]:
  """{"train", "valid"} from one split: a seeded shuffle, the last `holdout` sentences held out."""
  n = len(split.ids)
  if not 0 < holdout < n:
    raise ConfigError(f"--config.data.holdout={holdout} must be in (0, {n}) for a split of {n}")
  order = np.random.default_rng(seed).permutation(n)

  def take(indices):
    pick = lambda a: None if a is None else np.asarray(a)[indices]
    return dataclasses.replace(split, lines=[split.lines[i] for i in indices],
                               ids=[split.ids[i] for i in indices],
                               log_probs=pick(split.log_probs), labels=pick(split.labels))

  return {"train": take(order[:n - holdout]), "valid": take(order[n - holdout:])}


def _shared_data_dir(corpus: str) -> str | None:
  """`../shared/data/CORPUS` beside the working directory or beside the repository, if present."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for parent in (os.getcwd(), repo):
    candidate = os.path.join(os.path.dirname(parent), "shared", "data", corpus)
    if text_files.available_splits(candidate):  # yahoo_topic, dbpedia: no train.txt
      return candidate
  return None


# Config fields that change the shapes or meaning of saved parameters: a resumed run must match.
_STRUCTURAL_FIELDS = ("model", "objective.name", "data.corpus", "data.min_count",
                      "data.max_vocab", "data.tokenizer")
# Config fields a resume must keep (the flag that sets each): the pipeline state and the random
# streams are only valid for the values they were saved with.
_RESUME_FIXED = (("batch_size", "--batch_size"), ("seed", "--seed"),
                 ("data.data_dir", "--data_dir"), ("data.corpus", "--config.data.corpus"),
                 *((f"data.{f}", f"--config.data.{f}") for f in (
                     "vocab_split", "train_from_valid", "holdout", "max_len", "overflow",
                     "bucket_batches", "builtin_seed", "builtin_train_size")),
                 ("optimizer.name", "--config.optimizer.name"),
                 ("optimizer.clip_norm", "--config.optimizer.clip_norm"))


def _with_dataclass_defaults(block: dict | None, cls) -> dict | None:
  """A saved config block with the fields it predates filled in with the dataclass defaults."""
  if not isinstance(block, dict):
    return block
  defaults = {f.name: f.default for f in dataclasses.fields(cls)
              if f.default is not dataclasses.MISSING}
  return {**defaults, **block}


def check_resumable_config(config, saved: dict, workdir: str) -> None:
  """Refuses to resume `workdir` with a config whose model or vocabulary differs from the saved.

  Fields that a saved config predates count as their library default, so a run saved before a
  model option existed resumes under a config that leaves the option at its default.
  Then the fields the saved data pipeline state, random streams and optimiser state depend on
  (`_RESUME_FIXED`) must be kept too; that message names the flag that sets the field.
  """
  current = config.to_dict()
  saved = upgrade_saved_config(saved)
  saved = dict(saved, model=_with_dataclass_defaults(saved.get("model"), sentence_ae.ModelConfig))
  current["model"] = _with_dataclass_defaults(current.get("model"), sentence_ae.ModelConfig)
  # A config that predates data.tokenizer tokenised on whitespace.
  for tree in (saved, current):
    if isinstance(tree.get("data"), dict):
      tree["data"] = {**tree["data"], "tokenizer": tokenizer(tree)}
  for field in _STRUCTURAL_FIELDS:
    a, b = saved_value(current, field), saved_value(saved, field)
    if a != b:
      field, b, a = _first_difference(field, b, a)
      raise ConfigError(
          f"--config.{field}={a!r}: {workdir} holds a run with {field}={b!r}; pass "
          f"--config.{field}={b!r} (or the saved config) or use another --workdir")
  for field, flag in _RESUME_FIXED:
    was, now = saved_value(saved, field), saved_value(current, field)
    if was is not None and was != now:
      raise ConfigError(
          f"{flag}={now!r}: {workdir} holds a run with {field}={was!r}, and a resume must keep "
          f"it; pass {flag}={was!r} or use another --workdir")


def _first_difference(field: str, saved, current) -> tuple[str, object, object]:
  """The first dotted sub-field where two config values (dicts or leaves) differ."""
  if isinstance(saved, dict) and isinstance(current, dict):
    for key in sorted(set(saved) | set(current), key=str):
      if saved.get(key) != current.get(key):
        return _first_difference(f"{field}.{key}", saved.get(key), current.get(key))
  return field, saved, current


def saved_value(tree, field: str):
  """The entry of a (saved) config at the dotted path `field`, or None where it has none."""
  return config_value(tree, field) if field_exists(tree, field) else None


# The four special tokens (<pad> <sos> <eos> <unk>) plus at least one word.
_MIN_VOCAB = len(vocab_lib.SPECIAL_TOKENS) + 1
# Weights of loss terms: negative values would reward the penalty they stand for.
_NON_NEGATIVE_FLOATS = ("objective.kl_weight", "objective.l1_weight", "objective.l2_weight",
                        "objective.mi_weight", "objective.kl_z_weight", "objective.kl_gamma_weight",
                        "objective.mmd_weight", "objective.free_bits", "objective.kl_logistic_k",
                        "optimizer.clip_norm", "max_minutes", "model.embed_dropout",
                        "model.output_dropout", "model.init_scale")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails before any work on a config value that cannot run, naming its `--config.` flag.

  Every message has the form `--config.FIELD=VALUE: reason`. Checks the values themselves
  (signs, ranges, choices, NaN / inf), the device count and the batch sizes against the visible
  devices (skipped under `distributed`, where devices are known only after initialisation), and
  that a `data.data_dir` holds the splits a training run reads.

  Raises:
    ValueError: the first invalid field.
  """

  def fail(field, message):
    raise ConfigError(f"--config.{field}={config_value(config, field)!r}: {message}")

  for field, value in flatten_config(config).items():
    if isinstance(value, float) and not math.isfinite(value):
      fail(field, "must be a finite number")
  if config.get("host_allocator", "auto") not in host_allocator.CONFIG_CHOICES:
    fail("host_allocator", "must be auto, reuse or default")
  for field in ("batch_size", "eval_batch_size", "log_every_steps", "data.builtin_train_size",
                "data.builtin_eval_size", "model.embed_dim",
                "model.hidden_dim", "model.latent_dim", "eval.num_z_samples",
                "eval.iw_samples", "data.min_count"):
    if config_value(config, field) <= 0:
      fail(field, "must be positive")
  for field in ("max_steps", "max_epochs", "max_minutes", "checkpoint_every_steps", "num_devices",
                "data.max_len", "data.max_vocab", "data.bucket_batches",
                "eval.max_valid_sentences", "eval.max_decode_len"):
    if config_value(config, field) < 0:
      fail(field, "must be >= 0 (0 means no limit / default)")
  for field in ("seed", "data.builtin_seed", "optimizer.plateau_patience", *_NON_NEGATIVE_FLOATS):
    if field_exists(config, field) and config_value(config, field) < 0:
      fail(field, "must be >= 0")
  if 0 < config.data.max_vocab < _MIN_VOCAB:
    fail("data.max_vocab", f"must be 0 (no limit) or >= {_MIN_VOCAB}: the "
         f"{len(vocab_lib.SPECIAL_TOKENS)} special tokens "
         f"{list(vocab_lib.SPECIAL_TOKENS)} plus a word")
  if field_exists(config, "early_stopping_patience") and config.early_stopping_patience < 0:
    fail("early_stopping_patience", "must be >= 0 (validations without improvement; 0 = off)")
  if not (config.max_steps or config.max_epochs or config.max_minutes):
    fail("max_epochs", "max_steps, max_epochs and max_minutes are all 0: training would never stop")
  choices = {"objective.name": tuple(objectives.LOSSES),
             "optimizer.name": ("adam", "sgd"),
             "data.overflow": ("drop", "truncate"),
             "data.blank_lines": ("skip", "error")}
  for field, allowed in choices.items():
    if config_value(config, field) not in allowed:
      fail(field, f"must be one of {list(allowed)}")
  if field_exists(config, "data.tokenizer") and config.data.tokenizer not in vocab_lib.TOKENIZERS:
    fail("data.tokenizer", f"must be one of {list(vocab_lib.TOKENIZERS)}")
  # The model and objective dataclasses check their own fields; name the flag in their errors.
  for block, build in (("model", lambda: model_config(config, vocab_size=1)),
                       ("objective", lambda: objective_config(config, model_config(config, 1)))):
    try:
      build()
    except ValueError as e:
      field = f"{block}.{str(e).split()[0]}"
      fail(field if field_exists(config, field) else block, str(e))
  hsvae_objective = config.objective.name == "hsvae"
  if hsvae_objective != (config.model.posterior == "hsvae"):
    fail("model.posterior", "the hsvae objective and the hsvae posterior go together")
  if (config.objective.name == "lm") != (config.model.condition == "none"):
    fail("model.condition", 'the lm objective (a language model) and condition "none" (a decoder '
         "that ignores z) go together")
  _check_corpus_fields(config, fail)
  if config.data.holdout < 0 or (config.data.train_from_valid and config.data.holdout < 1):
    fail("data.holdout", "must be >= 0, and >= 1 with data.train_from_valid (the sentences of "
         "valid held out for validation)")
  objective = config.objective
  for field in ("word_keep_start_step", "word_keep_end_step"):
    if objective[field] < 0:
      fail(f"objective.{field}", "must be >= 0 (a training step)")
  if (objective.word_keep_schedule == "linear"
      and objective.word_keep_end_step <= objective.word_keep_start_step):
    fail("objective.word_keep_end_step", "must be after objective.word_keep_start_step")
  if objective.kl_logistic_k <= 0:
    fail("objective.kl_logistic_k", "must be positive (the slope of the logistic KL schedule)")
  if config.optimizer.learning_rate <= 0:
    fail("optimizer.learning_rate", "must be positive")
  if not 0.0 < config.optimizer.plateau_factor <= 1.0:
    fail("optimizer.plateau_factor", "must be in (0, 1]")
  if not config.get("distributed", False):
    _check_devices(config, fail)
  if config.data.data_dir:
    if not os.path.isdir(config.data.data_dir):
      fail("data.data_dir", "is not a directory")
    for split in required_splits(config):
      try:
        text_files.check_split_file(config.data.data_dir, split)
      except text_files.DataError as e:
        fail("data.data_dir", str(e))


# Corpora the flagfiles name: accepted by validate_config even where they are absent (a flagfile
# checked with --dry_run on a machine without the data); any other name must be found.
KNOWN_CORPORA = ("builtin", "ptb", "yahoo", "yahoo_topic", "dbpedia")


def _check_corpus_fields(config: ml_collections.ConfigDict, fail) -> None:
  """data.corpus names a corpus that exists (or one the flagfiles use), and data.vocab_split a
  split of it (train / valid / test when the corpus is not at hand to look)."""
  d = config.data
  found = None
  if not d.data_dir and d.corpus != "builtin":
    try:
      found = corpus_dir(config)
    except (FileNotFoundError, text_files.DataError) as e:
      if d.corpus not in KNOWN_CORPORA:
        fail("data.corpus", str(e))
  elif d.data_dir and os.path.isdir(d.data_dir):
    found = d.data_dir
  splits = (text_files.available_splits(found) if found else ()) or text_files.SPLIT_NAMES
  if d.vocab_split not in splits:
    fail("data.vocab_split", f"must be a split of the corpus: one of {list(splits)}")


def _check_devices(config: ml_collections.ConfigDict, fail) -> None:
  """`num_devices` fits the visible devices and every batch divides by the devices used."""
  import jax  # pylint: disable=g-import-not-at-top  (only here: the rest needs no backend)

  visible = jax.device_count()
  if config.num_devices > visible:
    fail("num_devices", f"only {visible} device(s) are visible ({jax.default_backend()})")
  used = config.num_devices or visible
  for field in ("batch_size", "eval_batch_size"):
    if config_value(config, field) % used:
      fail(field, f"must be divisible by the number of devices used ({used}); "
           "set --config.num_devices or another batch size")


def unknown_field_message(config: ml_collections.ConfigDict, field: str) -> str | None:
  """None if `field` ("model.latent_dim") names a config field, else a one-line error with the
  closest existing field as a suggestion."""
  if field_exists(config, field):
    return None
  if field in RENAMED_FIELDS and field_exists(config, RENAMED_FIELDS[field]):
    return f"--config.{field}: renamed; use --config.{RENAMED_FIELDS[field]}"
  fields = list(flatten_config(config))
  blocks = sorted({f.rsplit(".", 1)[0] for f in fields if "." in f})
  candidates = difflib.get_close_matches(field, fields + blocks, n=1, cutoff=0.6)
  if not candidates:  # e.g. model.latent -> model.latent_dim: compare the last part only
    leaf = field.rsplit(".", 1)[-1]
    candidates = [f for f in fields if f.rsplit(".", 1)[-1].startswith(leaf)][:1] or (
        difflib.get_close_matches(leaf, fields, n=1, cutoff=0.5))
  hint = f"; did you mean --config.{candidates[0]}?" if candidates else ""
  return f"--config.{field}: no such config field{hint}"


def flatten_config(config) -> dict:
  """{"model.latent_dim": 128, ...}: every leaf of a ConfigDict (or dict) by its dotted path."""
  flat = {}

  def walk(prefix, block):
    for key, value in block.items():
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(f"{prefix}{key}.", value)
      else:
        flat[f"{prefix}{key}"] = value

  walk("", config)
  return flat


def merge_config(defaults: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """`saved` (a run's config.json) laid over `defaults`, so a run saved before a field existed
  gets that field's default (and a field saved under an old name, `RENAMED_FIELDS`, is read under
  its new one)."""
  merged = ml_collections.ConfigDict(defaults.to_dict())
  with merged.unlocked():
    def lay(target, values):
      for key, value in values.items():
        if isinstance(value, dict) and key in target and isinstance(target[key],
                                                                   ml_collections.ConfigDict):
          lay(target[key], value)
        else:
          target[key] = value
    lay(merged, upgrade_saved_config(saved))
  return merged


def field_exists(config, field: str) -> bool:
  """Whether the dotted path `field` names an entry of `config`."""
  try:
    config_value(config, field)
  except (KeyError, AttributeError, TypeError):
    return False
  return True


def set_config_value(config, field: str, value) -> None:
  """Sets the entry of `config` at the dotted path `field` ("model.latent_dim") to `value`."""
  *parents, leaf = field.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = value


def config_value(config, field: str):
  """The entry of `config` at the dotted path `field` ("model.latent_dim")."""
  value = config
  for part in field.split("."):
    value = value[part]
  return value


# The parameter whose first dimension is the vocabulary size (`sentence_ae.init_params`).
_VOCAB_ROWS = "embed/table"


def check_vocabulary_matches(ckpt, step: int | str, vocab_size: int, vocab_path: str) -> None:
  """Refuses, in one line, a vocabulary file whose size is not the one the checkpoint was trained
  with (a vocab.txt edited or cut short), before the restore would report a shape mismatch.

  Raises:
    checkpoint.CheckpointError: the sizes differ (or the checkpoint's metadata is unreadable).
  """
  from mimtext import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  shapes = ckpt.saved_shapes(ckpt.resolve_step(step), "params")
  rows = shapes.get(_VOCAB_ROWS, (None,))[0]
  if rows is not None and rows != vocab_size:
    raise checkpoint_lib.CheckpointError(
        f"{vocab_path} holds {vocab_size:,} tokens but the checkpoint's word embedding has "
        f"{rows:,} rows: the vocabulary file was changed or cut short (it must be the one the run "
        "wrote)")
