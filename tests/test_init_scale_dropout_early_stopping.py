"""Seed 003 as published (§5.1): U(−0.1, 0.1) init, early stopping, independent decoder dropout."""

import dataclasses
import glob
import json
import logging
import math
import os

import jax
import numpy as np
import pytest

from mimtext import config as config_lib
from mimtext import experiment
from mimtext import optim
from mimtext import train as train_lib
from mimtext.models import sentence_ae

CFG = sentence_ae.ModelConfig(vocab_size=13, embed_dim=6, hidden_dim=8, latent_dim=3,
                              embed_dropout=0.5, output_dropout=0.5, cell="lstm")
TOKENS = np.array([[1, 4, 5, 6, 2, 0, 0], [1, 7, 8, 2, 0, 0, 0], [1, 9, 10, 11, 12, 5, 2]],
                  np.int32)
LENGTHS = np.array([5, 4, 7], np.int32)
# Embedding / output dropout and word dropout all on.
KEYS = {"dropout_key": jax.random.PRNGKey(3), "word_key": jax.random.PRNGKey(4),
        "word_keep_rate": 0.5}


# ----------------------------------------------------------------------------- init U(−s, s)


def test_init_scale_draws_every_parameter_from_a_uniform():
  cfg = dataclasses.replace(CFG, encoder_highway=1, decoder_highway=1, summary="attention",
                            vocab_size=200, embed_dim=32, init_scale=0.1)
  default = sentence_ae.init_params(jax.random.PRNGKey(0), dataclasses.replace(cfg, init_scale=0))
  params = sentence_ae.init_params(jax.random.PRNGKey(0), cfg)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(default)
  for (path, leaf), before in zip(jax.tree_util.tree_leaves_with_path(params),
                                 jax.tree_util.tree_leaves(default)):
    leaf = np.asarray(leaf)
    # Redrawn (highway gate biases, embeddings and all), inside the interval, filling it.
    assert leaf.dtype == np.float32 and not np.array_equal(leaf, before), path
    assert np.all(np.abs(leaf) <= 0.1), path
    if leaf.size >= 8:
      assert np.abs(leaf).max() > 0.05, path
  table = np.asarray(params["embed"]["table"])  # N(0, 1) by default
  np.testing.assert_allclose(table.std(), 0.1 / math.sqrt(3), rtol=0.05)
  # init_scale = 0 keeps the library's per-layer defaults.
  plain = sentence_ae.init_params(jax.random.PRNGKey(0), dataclasses.replace(CFG, init_scale=0.0))
  for a, b in zip(jax.tree_util.tree_leaves(plain),
                  jax.tree_util.tree_leaves(sentence_ae.init_params(jax.random.PRNGKey(0), CFG))):
    np.testing.assert_array_equal(a, b)


def test_init_scale_is_validated_and_names_its_flag():
  with pytest.raises(ValueError, match="init_scale"):
    dataclasses.replace(CFG, init_scale=-0.1)
  config = config_lib.get_config()
  config.model.init_scale = -0.1
  with pytest.raises(ValueError, match=r"--config\.model\.init_scale"):
    experiment.validate_config(config)


# ----------------------------------------------------------------------------- L decoders


def test_the_l_decoders_draw_independent_dropout_masks():
  params = sentence_ae.init_params(jax.random.PRNGKey(0), CFG)
  z = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
  zs = np.stack([z, z])  # identical z's: only the dropout masks can tell the two terms apart
  # One sample keeps the keys as they are: the single-sample likelihood, dropout included.
  single = sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG, **KEYS)
  for average in ("loss", "hidden"):
    np.testing.assert_allclose(sentence_ae.multi_sample_log_likelihood(
        params, zs[:1], TOKENS, LENGTHS, CFG, average=average, **KEYS), single, rtol=1e-6)
  fold = lambda j: {"dropout_key": jax.random.fold_in(KEYS["dropout_key"], j),
                    "word_key": jax.random.fold_in(KEYS["word_key"], j), "word_keep_rate": 0.5}
  terms = [sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG, **fold(j))
           for j in range(2)]
  assert np.all(np.abs(terms[0] - terms[1]) > 1e-3), terms
  got = sentence_ae.multi_sample_log_likelihood(params, zs, TOKENS, LENGTHS, CFG, average="loss",
                                                **KEYS)
  np.testing.assert_allclose(got, np.mean(terms, axis=0), rtol=1e-5)
  # Shared masks would make the two terms equal, i.e. the mean equal to the one-sample value.
  assert np.all(np.abs(got - single) > 1e-3)
  # Averaged states (AVG): with shared masks the k identical decoders average to one of them.
  two = sentence_ae.multi_sample_log_likelihood(params, zs, TOKENS, LENGTHS, CFG,
                                                average="hidden", **KEYS)
  assert np.all(np.abs(two - single) > 1e-3)
  # Without dropout the k identical decoders are one decoder again.
  for average in ("loss", "hidden"):
    np.testing.assert_allclose(
        sentence_ae.multi_sample_log_likelihood(params, zs, TOKENS, LENGTHS, CFG, average=average),
        sentence_ae.sentence_log_likelihood(params, z, TOKENS, LENGTHS, CFG), rtol=1e-5)


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_counts_validations_without_a_new_best():
  s = optim.EarlyStopping(patience=3)
  values = [5.0, 4.0, 4.5, 4.0, 3.0, 3.1, 3.2, 3.0]
  assert [s.update(v) for v in values] == [False] * 7 + [True]
  assert s.bad_validations == 3 and s.best == 3.0 and "early_stopping_patience=3" in s.stop_reason()
  restored = optim.EarlyStopping.from_state(3, json.loads(json.dumps(s.state())))
  assert restored.should_stop() and restored.best == 3.0
  # A non-finite criterion is no improvement; patience 0 never stops.
  s = optim.EarlyStopping(patience=1, best=2.0)
  assert s.update(float("nan"))
  off = optim.EarlyStopping(patience=0)
  assert not any(off.update(v) for v in [1.0] + [2.0] * 10) and off.stop_reason() is None
  # A checkpoint saved before early stopping existed: the count starts at 0 from the given best.
  old = optim.EarlyStopping.from_state(3, None, best=2.5)
  assert old.bad_validations == 0 and old.best == 2.5 and not old.update(2.6)


def test_early_stopping_patience_is_validated_and_names_its_flag():
  config = config_lib.get_config()
  config.early_stopping_patience = -1
  with pytest.raises(ValueError, match=r"--config\.early_stopping_patience"):
    experiment.validate_config(config)


def _frozen_config(patience):
  """A tiny run on the built-in corpus whose criterion cannot improve: the learning rate is so
  small that no parameter moves, and validation uses the same key every time."""
  config = config_lib.get_config()
  config.num_devices = 1
  config.batch_size = 16
  config.eval_batch_size = 16
  config.max_epochs = 12
  config.early_stopping_patience = patience
  config.log_every_steps = 1000
  config.data.builtin_train_size = 32   # 2 steps per epoch
  config.data.builtin_eval_size = 16
  config.model.embed_dim = 8
  config.model.hidden_dim = 8
  config.model.latent_dim = 4
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e-30
  experiment.validate_config(config)
  return config


def _valid_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if r["split"] == "valid"]


def test_training_stops_early_and_the_count_survives_resume(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  caplog.set_level(logging.INFO)
  train_lib.train_and_evaluate(_frozen_config(patience=2), workdir)
  # Validation 1 sets the best; 2 and 3 do not improve on it: stop after epoch 3 of 12.
  records = _valid_records(workdir)
  assert [r["epoch"] for r in records] == [1, 2, 3]
  assert len({r["criterion"] for r in records}) == 1
  assert "training stopped at step 6: early_stopping_patience=2 reached" in caplog.text
  assert "early stopping: no validation improvement for 2 validations" in caplog.text

  # Resumed with a patience of 3, the saved count (2) needs one more stale validation, not three.
  caplog.clear()
  train_lib.train_and_evaluate(_frozen_config(patience=3), workdir)
  assert "resumed from step 6" in caplog.text
  assert [r["epoch"] for r in _valid_records(workdir)] == [1, 2, 3, 4]
  assert "training stopped at step 8: early_stopping_patience=3 reached" in caplog.text

  # A checkpoint written before the counter existed still resumes (its count starts at 0).
  [data_state_file] = [p for p in glob.glob(os.path.join(workdir, "checkpoints", "8", "data_state",
                                                         "*"))
                       if "early_stopping" in open(p, encoding="utf-8").read()]
  with open(data_state_file, encoding="utf-8") as f:
    data_state = json.load(f)
  del data_state["early_stopping"]
  with open(data_state_file, "w", encoding="utf-8") as f:
    json.dump(data_state, f)
  caplog.clear()
  train_lib.train_and_evaluate(_frozen_config(patience=1), workdir)
  assert "resumed from step 8" in caplog.text
  assert [r["epoch"] for r in _valid_records(workdir)] == [1, 2, 3, 4, 5]
  assert "training stopped at step 10: early_stopping_patience=1 reached" in caplog.text
