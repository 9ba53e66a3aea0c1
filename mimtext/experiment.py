"""From an experiment config (`ml_collections.ConfigDict`) to the library's static pieces.

The launch layer holds configs as ConfigDicts; this module turns one into the frozen dataclasses
the model and objectives take, loads its corpus, and checks it before any work: invalid values
name their `--config.` flag, and a resumed or evaluated run is matched against its saved config.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from mimtext import objectives
from mimtext.data import corpus as corpus_lib
from mimtext.data import vocab as vocab_lib
from mimtext.models import sentence_ae


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> sentence_ae.ModelConfig:
  """The static model configuration from the experiment config's `model` block.

  Every field of `sentence_ae.ModelConfig` is read from `config.model` under the same name; the
  MI criterion's q_MI head is added when the objective needs it.
  """
  fields = {f.name for f in dataclasses.fields(sentence_ae.ModelConfig)} - {"vocab_size", "mi_head"}
  return sentence_ae.ModelConfig(vocab_size=vocab_size, mi_head=config.objective.name == "mi",
                                 **{k: config.model[k] for k in fields if k in config.model})


def objective_config(config: ml_collections.ConfigDict,
                     model_cfg: sentence_ae.ModelConfig) -> objectives.ObjectiveConfig:
  """The static objective configuration from the experiment config's `objective` block."""
  fields = {f.name for f in dataclasses.fields(objectives.ObjectiveConfig)} - {"model"}
  return objectives.ObjectiveConfig(
      model=model_cfg, **{k: config.objective[k] for k in fields if k in config.objective})


def load_corpus(config: ml_collections.ConfigDict,
                vocab: vocab_lib.Vocabulary | None = None) -> corpus_lib.Corpus:
  """The experiment's corpus: the built-in grammar, or a directory of text splits."""
  d = config.data
  data_dir = d.data_dir or None
  if data_dir is None and d.corpus != "builtin":
    data_dir = corpus_lib.resolve_data_dir(None, d.corpus) or _shared_data_dir(d.corpus)
    if data_dir is None:
      raise FileNotFoundError(
          f"corpus {d.corpus!r} not found: pass --data_dir=DIR (a directory with train.txt, "
          f"valid.txt, test.txt) or set MIMTEXT_DATA to the folder that holds {d.corpus}/")
  corpus = corpus_lib.load_corpus(
      data_dir, vocab=vocab, min_count=d.min_count, max_vocab=d.max_vocab or None,
      max_len=d.max_len or None, overflow=d.overflow, blank_lines=d.blank_lines,
      tfds_dir=d.tfds_dir or None, use_tfds=d.use_tfds, builtin_seed=d.builtin_seed,
      builtin_sizes={"train": d.builtin_train_size, "valid": d.builtin_eval_size,
                     "test": d.builtin_eval_size},
      vocab_split=d.vocab_split)
  if d.train_from_valid:
    corpus.splits.update(holdout_split(corpus.splits["valid"], d.holdout, seed=d.builtin_seed))
  return corpus


def holdout_split(split: corpus_lib.CorpusSplit, holdout: int, *, seed: int
                  ) -> dict[str, corpus_lib.CorpusSplit]:
  """{"train", "valid"} from one split: a seeded shuffle, the last `holdout` sentences held out."""
  n = len(split.ids)
  if not 0 < holdout < n:
    raise ValueError(f"--config.data.holdout={holdout} must be in (0, {n}) for a split of {n}")
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
    if os.path.isfile(os.path.join(candidate, "train.txt")):
      return candidate
  return None


# Config fields that change the shapes or meaning of saved parameters: a resumed run must match.
_STRUCTURAL_FIELDS = ("model", "objective.name", "data.corpus", "data.min_count",
                      "data.max_vocab")


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
  """
  current = config.to_dict()
  saved = dict(saved, model=_with_dataclass_defaults(saved.get("model"), sentence_ae.ModelConfig))
  current["model"] = _with_dataclass_defaults(current.get("model"), sentence_ae.ModelConfig)
  for field in _STRUCTURAL_FIELDS:
    a, b = current, saved
    for part in field.split("."):
      a, b = (a or {}).get(part), (b or {}).get(part)
    if a != b:
      raise ValueError(
          f"{workdir} holds a run with {field}={b!r} but this config has {field}={a!r}; "
          "use another --workdir or the saved config")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails before any work on a config value that cannot run, naming its `--config.` flag."""

  def fail(field, message):
    raise ValueError(f"--config.{field}={config_value(config, field)!r}: {message}")

  for field in ("batch_size", "eval_batch_size", "log_every_steps", "data.builtin_train_size",
                "data.builtin_eval_size", "model.embed_dim",
                "model.hidden_dim", "model.latent_dim", "eval.num_z_samples",
                "eval.iw_samples"):
    if config_value(config, field) <= 0:
      fail(field, "must be positive")
  for field in ("max_steps", "max_epochs", "max_minutes", "checkpoint_every_steps", "num_devices",
                "data.max_len", "data.max_vocab", "data.bucket_batches",
                "eval.max_valid_sentences"):
    if config_value(config, field) < 0:
      fail(field, "must be >= 0 (0 means no limit / default)")
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
  if config.optimizer.learning_rate <= 0:
    fail("optimizer.learning_rate", "must be positive")
  if not 0.0 < config.optimizer.plateau_factor <= 1.0:
    fail("optimizer.plateau_factor", "must be in (0, 1]")
  if config.data.data_dir and not os.path.isdir(config.data.data_dir):
    fail("data.data_dir", "is not a directory")


def merge_config(defaults: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """`saved` (a run's config.json) laid over `defaults`, so a run saved before a field existed
  gets that field's default."""
  merged = ml_collections.ConfigDict(defaults.to_dict())
  with merged.unlocked():
    def lay(target, values):
      for key, value in values.items():
        if isinstance(value, dict) and key in target and isinstance(target[key],
                                                                   ml_collections.ConfigDict):
          lay(target[key], value)
        else:
          target[key] = value
    lay(merged, saved)
  return merged


def field_exists(config, field: str) -> bool:
  try:
    config_value(config, field)
  except (KeyError, AttributeError):
    return False
  return True


def config_value(config, field: str):
  value = config
  for part in field.split("."):
    value = value[part]
  return value
