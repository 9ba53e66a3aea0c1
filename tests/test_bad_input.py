"""Bad input and bad values are refused before any work, with one line naming the input or flag.

In-process tests of `experiment.validate_config` (what `--dry_run` runs) and of corpus loading; a
few subprocess tests check what the command lines print: one line, no traceback, no --help dump,
and nothing written to the workdir.
"""

import logging
import os
import pathlib
import sys
import time

import pytest

from conftest import run_subprocess, subprocess_timeout
from launch import common
from mimtext import config as config_lib
from mimtext import experiment
from mimtext.data import corpus as corpus_lib
from mimtext.data import text_files
from mimtext.data import vocab as vocab_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**fields):
  """The base config with dotted `fields` ("optimizer__clip_norm" for optimizer.clip_norm) set."""
  config = config_lib.get_config()
  for name, value in fields.items():
    experiment.set_config_value(config, name.replace("__", "."), value)
  return config


def _corpus_dir(tmp_path, files: dict[str, bytes]) -> pathlib.Path:
  directory = tmp_path / "corpus"
  directory.mkdir()
  for name, data in files.items():
    (directory / name).write_bytes(data)
  return directory


# Item 1: values that used to pass --dry_run (and fail later, or never).
@pytest.mark.parametrize("field,value,reason", [
    ("seed", -1, "must be >= 0"),
    ("data.min_count", 0, "must be positive"),
    ("data.max_vocab", 2, "the 4 special tokens"),
    ("data.max_vocab", 4, "plus a word"),
    ("num_devices", 5, "only 4 device(s) are visible"),
    ("batch_size", 10, "divisible by the number of devices used (4)"),
    ("eval_batch_size", 30, "divisible by the number of devices used (4)"),
    ("optimizer.clip_norm", -1.0, "must be >= 0"),
    ("optimizer.plateau_patience", -1, "must be >= 0"),
    ("objective.kl_weight", -1.0, "must be >= 0"),
    ("objective.mi_weight", -0.5, "must be >= 0"),
    ("objective.mmd_weight", -1.0, "must be >= 0"),
    ("optimizer.learning_rate", float("nan"), "finite"),
    ("optimizer.learning_rate", float("inf"), "finite"),
    ("eval.max_decode_len", -1, "must be >= 0"),
])
def test_validate_config_refuses_bad_values(field, value, reason):
  config = _config(**{field.replace(".", "__"): value})
  with pytest.raises(ValueError) as info:
    experiment.validate_config(config)
  message = str(info.value)
  assert message.startswith(f"--config.{field}={value!r}: "), message
  assert reason in message and "\n" not in message


def test_validate_config_accepts_the_defaults_and_a_batch_for_the_devices_asked():
  experiment.validate_config(config_lib.get_config())  # batch 20 and eval batch 100 on 4 devices
  experiment.validate_config(_config(num_devices=2, batch_size=10, eval_batch_size=30))


def test_validate_config_skips_device_checks_when_distributed():
  experiment.validate_config(_config(distributed=True, num_devices=64, batch_size=128))


@pytest.mark.parametrize("field,suggestion", [
    ("model.latent", "model.latent_dim"),
    ("model.latnet_dim", "model.latent_dim"),
    ("optimizer.learning_rat", "optimizer.learning_rate"),
    ("objectiv.kl_weight", "objective.kl_weight"),
])
def test_unknown_field_gets_a_did_you_mean(field, suggestion):
  message = experiment.unknown_field_message(config_lib.get_config(), field)
  assert message == (f"--config.{field}: no such config field; did you mean "
                     f"--config.{suggestion}?")


def test_unknown_field_message_is_none_for_known_fields():
  assert experiment.unknown_field_message(config_lib.get_config(), "model.latent_dim") is None
  assert experiment.unknown_field_message(config_lib.get_config(), "seed") is None


def test_vocabulary_needs_room_for_a_word():
  with pytest.raises(ValueError, match="specials plus a word"):
    vocab_lib.Vocabulary.build(["a b"], max_size=4)
  assert vocab_lib.Vocabulary.build(["a b a"], max_size=5).size == 5


# Item 2: data.
def test_missing_valid_split_names_directory_and_file(tmp_path):
  directory = _corpus_dir(tmp_path, {"train.txt": b"a b\n", "test.txt": b"a\n"})
  config = _config(data__data_dir=str(directory), data__use_tfds=False)
  expected = f"data directory {directory} has no 'valid' split ({directory}/valid.txt is missing)"
  for check in (experiment.validate_config, experiment.check_corpus_files,
                experiment.load_corpus):
    with pytest.raises(text_files.DataError if check is not experiment.validate_config
                       else ValueError) as info:
      check(config)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_train_from_valid_needs_only_the_valid_split(tmp_path):
  directory = _corpus_dir(tmp_path, {"valid.txt": b"a b\nb c\na c\n"})
  config = _config(data__data_dir=str(directory), data__use_tfds=False,
                   data__train_from_valid=True, data__holdout=1, data__vocab_split="valid")
  experiment.validate_config(config)
  experiment.check_corpus_files(config)
  assert len(experiment.load_corpus(config).splits["train"]) == 2


def test_byte_order_mark_is_stripped(tmp_path):
  directory = _corpus_dir(tmp_path, {"train.txt": "\ufeffhello world\nhello\n".encode("utf-8"),
                                     "valid.txt": "\ufeffworld\n".encode("utf-8")})
  assert text_files.read_lines(directory / "train.txt").lines == ["hello world", "hello"]
  corpus = corpus_lib.load_corpus(directory, use_tfds=False)
  assert "\ufeffhello" not in corpus.vocab.tokens and "hello" in corpus.vocab.tokens
  assert corpus.vocab.decode(corpus.splits["valid"].ids[0]) == ["world"]


def test_nul_byte_is_refused_with_file_and_line(tmp_path):
  directory = _corpus_dir(tmp_path, {"train.txt": b"a b\nc\x00d e\n"})
  with pytest.raises(text_files.DataError) as info:
    text_files.read_lines(directory / "train.txt")
  assert str(info.value).startswith(f"{directory / 'train.txt'}:2: NUL byte")


def test_max_len_defaults_to_100_words(tmp_path, caplog):
  # A 150-word line under the default config (max_len=100, overflow="drop") is dropped and
  # logged; a 100-word line is kept whole.
  config = config_lib.get_config()
  assert (config.data.max_len, config.data.overflow) == (100, "drop")
  long_line, kept_line = " ".join(["a"] * 150), " ".join(["b"] * 100)
  directory = _corpus_dir(tmp_path, {
      "train.txt": f"{long_line}\n{kept_line}\na b\n".encode(), "valid.txt": b"a b\n"})
  config = _config(data__data_dir=str(directory), data__use_tfds=False)
  with caplog.at_level(logging.INFO):
    corpus = experiment.load_corpus(config)
  # <sos> ... <eos>: the 2- and the 100-word lines are kept, the 150-word one is not.
  assert sorted(len(ids) for ids in corpus.splits["train"].ids) == [4, 102]
  assert "corpus/train: dropped 1 of 3 sentences longer than max_len=100 words" in caplog.text


def test_dropped_and_truncated_sentences_are_logged(tmp_path, caplog):
  directory = _corpus_dir(tmp_path, {"train.txt": b"a b c d\na b\n", "valid.txt": b"a b c\n"})
  with caplog.at_level(logging.INFO):
    corpus_lib.load_corpus(directory, use_tfds=False, max_len=2)
    corpus_lib.load_corpus(directory, use_tfds=False, max_len=2, overflow="truncate")
  text = caplog.text
  assert "corpus/train: dropped 1 of 2 sentences longer than max_len=2 words" in text
  assert "corpus/valid: dropped 1 of 1 sentences" in text
  assert "corpus/train: truncated 1 of 2 sentences to max_len=2 words" in text


# Items 2 and 3: what the command lines print.
def _run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"))
  return run_subprocess([sys.executable, "-m", module, *args], 120, cwd=REPO, env=env)


def _assert_one_line(proc, message):
  assert proc.returncode != 0
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  # No traceback and no flag listing (absl's usage dump has a "flags:" heading line).
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert not [line for line in lines if line.rstrip().endswith(" flags:")
              or line.strip() == "flags:"], proc.stderr[-3000:]
  assert lines and message in lines[0] and len(lines) <= 2, proc.stderr[-3000:]


def test_train_prints_one_line_for_an_undecodable_file_and_writes_nothing(tmp_path):
  directory = _corpus_dir(tmp_path, {"train.txt": b"a b\n\xff c\n", "valid.txt": b"a b\n"})
  workdir = tmp_path / "never"
  proc = _run("launch.train", "--flagfile=launch/configs/quickstart.flags",
              f"--workdir={workdir}", f"--data_dir={directory}")
  _assert_one_line(proc, f"{directory}/train.txt:2: not valid UTF-8")
  assert not workdir.exists()


@pytest.mark.parametrize("args,message", [
    (["--config.model.foo=3"], "--config.model.foo: no such config field; did you mean"),
    (["--config.model.latent=3"], "did you mean --config.model.latent_dim?"),
    (["--flagfile=launch/configs/no_such.flags"],
     "FATAL: --flagfile=launch/configs/no_such.flags: no such file"),
    (["--seed=-1"], "--config.seed=-1: must be >= 0"),
    (["--config.optimizer.learning_rate=nan"], "--config.optimizer.learning_rate=nan"),
    (["--batch_size=0"], "--config.batch_size=0: must be positive"),
    # Refused by the memory estimate before any work (it used to pass --dry_run).
    (["--config.model.latent_dim=100000000"], "FATAL: this model needs at least "),
])
def test_train_usage_errors_are_one_line(tmp_path, args, message):
  workdir = tmp_path / "never"
  proc = _run("launch.train", "--flagfile=launch/configs/quickstart.flags",
              f"--workdir={workdir}", "--dry_run", *args)
  _assert_one_line(proc, message)
  assert "Pass --helpshort" in proc.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("args,message", [
    (["--workdir=/nonexistent"], "--workdir=/nonexistent does not exist"),
    (["--workdir=/tmp", "--step=abc"], "--step='abc'"),
    (["--workdir=/tmp", "--flagfile=no_such.flags"],
     "FATAL: --flagfile=no_such.flags: no such file"),
])
def test_generate_usage_errors_are_one_line(args, message):
  _assert_one_line(_run("launch.generate", *args), message)


def _assert_fatal_and_hint(proc, first_line: str):
  """Exactly two lines on stderr: `first_line` (a prefix of the FATAL line) and the help hint."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 2 and lines[0].startswith(first_line) and lines[1] == common.HINT, (
      proc.stderr[-3000:])


@pytest.mark.parametrize("args,message", [
    (["--workdir=/nonexistent"], "FATAL: --workdir=/nonexistent does not exist"),
    (["--workdir=/tmp", "--suite=foo"],
     "FATAL: --suite='foo': unknown section(s) ['foo']; choose from bounds, "),
])
def test_evaluate_usage_errors_are_one_line(args, message):
  _assert_fatal_and_hint(_run("launch.evaluate", *args), message)


def test_evaluate_names_a_corrupt_config_json(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"model": {"latent_dim": 4', encoding="utf-8")
  proc = _run("launch.evaluate", f"--workdir={workdir}")
  # Damage, not a usage mistake: one line, exit 1, no help hint.
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith(
      f"FATAL: {workdir}/config.json is corrupt (not valid JSON: "), proc.stderr
  assert proc.stderr.splitlines()[0].endswith(
      "; restore it from a copy or start a new run directory"), proc.stderr


# The subprocess time limits (conftest.py) scale with MIMTEXT_TEST_TIMEOUT_SCALE, and a child
# past its limit fails the test naming the command and the limit.
def test_subprocess_timeouts_scale_with_the_environment(monkeypatch):
  monkeypatch.delenv("MIMTEXT_TEST_TIMEOUT_SCALE", raising=False)
  assert subprocess_timeout(100) == 300  # default ×3: a busy 2-core machine
  monkeypatch.setenv("MIMTEXT_TEST_TIMEOUT_SCALE", "0.5")
  assert subprocess_timeout(100) == 50
  for bad in ("fast", "0", "-1"):
    monkeypatch.setenv("MIMTEXT_TEST_TIMEOUT_SCALE", bad)
    with pytest.raises(ValueError, match="MIMTEXT_TEST_TIMEOUT_SCALE"):
      subprocess_timeout(100)


def test_a_subprocess_past_its_limit_fails_naming_the_command(monkeypatch):
  monkeypatch.setenv("MIMTEXT_TEST_TIMEOUT_SCALE", "1")
  code = "import sys, time; print('still here', file=sys.stderr, flush=True); time.sleep(60)"
  start = time.monotonic()
  with pytest.raises(pytest.fail.Exception) as info:
    run_subprocess([sys.executable, "-c", code], 2)
  assert time.monotonic() - start < 30
  message = str(info.value)
  assert message.startswith(f"{sys.executable} -c {code} took more than 2 s (killed)"), message
  assert "MIMTEXT_TEST_TIMEOUT_SCALE (now 1)" in message and "still here" in message
  assert run_subprocess([sys.executable, "-c", "print(7)"], 60).stdout == "7\n"


# Every field of the config, with a value outside its domain: `validate_config` (so --dry_run)
# refuses each, naming that field. A field that has no invalid value is listed with the reason.
_OUT_OF_DOMAIN = {
    "seed": -1, "batch_size": 0, "eval_batch_size": 0, "max_epochs": -1, "max_steps": -1,
    "max_minutes": -1.0, "early_stopping_patience": -1, "num_devices": -1, "log_every_steps": 0,
    "checkpoint_every_steps": -1, "host_allocator": "nope",
    "data.corpus": "nope", "data.data_dir": "/no/such/directory", "data.vocab_split": "nope",
    "data.holdout": -1, "data.tokenizer": "nope", "data.min_count": 0, "data.max_vocab": -1,
    "data.max_len": -1, "data.overflow": "nope", "data.blank_lines": "nope",
    "data.bucket_batches": -1, "data.builtin_seed": -1, "data.builtin_train_size": 0,
    "data.builtin_eval_size": 0,
    "model.embed_dim": 0, "model.hidden_dim": 0, "model.latent_dim": 0, "model.cell": "nope",
    "model.summary": "nope", "model.attention_dim": -1, "model.encoder_highway": -1,
    "model.decoder_highway": -1, "model.condition": "nope", "model.embed_dropout": 1.0,
    "model.output_dropout": -0.1, "model.embed_dropout_scope": "nope", "model.posterior": "nope",
    "model.log_var_floor": float("inf"), "model.floor_mode": "nope", "model.log_var_init": "nope",
    "model.concentration_floor": 0.0, "model.init_scale": -1.0, "model.matmul_dtype": "nope",
    "objective.name": "nope", "objective.kl_weight": -1.0, "objective.kl_schedule": "nope",
    "objective.kl_anneal_steps": 0, "objective.kl_logistic_k": -1.0, "objective.free_bits": -1.0,
    "objective.num_samples": 0, "objective.sample_average": "nope",
    "objective.word_keep_rate": 1.5, "objective.word_keep_schedule": "nope",
    "objective.word_keep_start_rate": -0.1, "objective.word_keep_end_rate": 1.1,
    "objective.word_keep_start_step": -1, "objective.word_keep_end_step": -1,
    "objective.l1_weight": -1.0, "objective.l2_weight": -1.0, "objective.mi_weight": -1.0,
    "objective.mi_max_len": 0, "objective.kl_z_weight": -1.0, "objective.kl_gamma_weight": -1.0,
    "objective.prior_alpha": 0.0, "objective.prior_beta": 0.0,
    "objective.concrete_temperature": 0.0, "objective.spike_scale": 0.0,
    "objective.prior_gamma": 1.0, "objective.mmd_weight": -1.0, "objective.mmd_kernel": "nope",
    "optimizer.name": "nope", "optimizer.learning_rate": 0.0, "optimizer.clip_norm": -1.0,
    "optimizer.plateau_factor": 0.0, "optimizer.plateau_patience": -1,
    "eval.num_z_samples": 0, "eval.iw_samples": 0, "eval.max_decode_len": -1,
    "eval.max_valid_sentences": -1,
}
_NO_INVALID_VALUE = {
    "distributed": "a boolean", "data.use_tfds": "a boolean", "data.train_from_valid": "a boolean",
    "model.bidirectional": "a boolean", "model.reverse_encoder_input": "a boolean",
    "model.encoder_reads_sos": "a boolean", "objective.concrete_hard": "a boolean",
    "objective.mim_batch_constant": "a boolean",
    "data.tfds_dir": "any path: created when absent",
    "objective.kl_logistic_x0": "any step: a negative midpoint starts the curve past its middle",
}


def test_every_config_field_is_classified():
  assert set(_OUT_OF_DOMAIN) | set(_NO_INVALID_VALUE) == set(config_lib.field_docs())
  assert not set(_OUT_OF_DOMAIN) & set(_NO_INVALID_VALUE)


@pytest.mark.parametrize("field", sorted(_OUT_OF_DOMAIN))
def test_every_out_of_domain_config_value_is_refused_naming_its_field(field, tmp_path,
                                                                      monkeypatch):
  monkeypatch.setenv("MIMTEXT_DATA", str(tmp_path))  # no corpus named "nope" there
  value = _OUT_OF_DOMAIN[field]
  config = _config(**{field.replace(".", "__"): value})
  with pytest.raises(experiment.ConfigError) as info:
    experiment.validate_config(config)
  message = str(info.value)
  assert message.startswith(f"--config.{field}="), message
  assert "\n" not in message


def test_launch_encode_reads_its_input_as_training_reads_a_corpus(tmp_path):
  """One reader for both: a NUL byte (refused by training) is refused by launch.encode, in one
  line naming the file and line, before the model is loaded."""
  text = tmp_path / "in.txt"
  text.write_bytes(b"the cat\nthe \x00 dog\n")
  proc = _run("launch.encode", f"--workdir={tmp_path}", f"--input={text}",
              f"--output={tmp_path / 'out.npy'}")
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(f"FATAL: {text}:2: NUL byte"), lines
  text.write_bytes(b"a  b\n\n  \nc\n")  # what launch.encode reads: every line, blank ones too
  assert text_files.read_lines(text, blank_lines="keep").lines == ["a b", "", "", "c"]


def test_a_corpus_without_a_test_split_trains_with_a_warning(tmp_path, caplog):
  directory = _corpus_dir(tmp_path, {"train.txt": b"a b\nb c\n", "valid.txt": b"a c\n"})
  config = _config(data__data_dir=str(directory), data__use_tfds=False)
  with caplog.at_level(logging.WARNING):
    experiment.check_corpus_files(config)
  assert any(f"{directory} has no test split (test.txt)" in r.getMessage()
             for r in caplog.records)


def test_a_signal_after_the_work_is_saved_exits_cleanly_with_a_message():
  code = ("import os, signal, time\n"
          "from launch import common\n"
          "common.exit_cleanly_on_signals('training had finished and saved in W; exiting')\n"
          "os.kill(os.getpid(), signal.SIGTERM)\n"
          "time.sleep(30)\n")
  proc = run_subprocess([sys.executable, "-c", code], 60, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr.strip() == ("SIGTERM received: training had finished and saved in W; "
                                 "exiting")


def test_orbax_shutdown_races_are_not_printed_other_thread_errors_are():
  import threading  # pylint: disable=g-import-not-at-top
  printed = []

  def hook_args(error):
    return threading.ExceptHookArgs((type(error), error, None, None))

  common.quiet_shutdown_races(hook_args(RuntimeError("cannot schedule new futures after "
                                                     "shutdown")), default=printed.append)
  assert not printed
  common.quiet_shutdown_races(hook_args(ValueError("a real bug")), default=printed.append)
  assert len(printed) == 1
