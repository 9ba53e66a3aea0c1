"""Issue 7: nothing a training run writes is ever lost or wrong (checkpoints, config.json,
metrics.jsonl, signals, locks, resumed hyper-parameters, evaluation exit status)."""

import json
import logging
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import checkpoint as checkpoint_lib
from mimtext import config as config_lib
from mimtext import experiment
from mimtext import optim
from mimtext import reporting
from mimtext import run_control
from mimtext import train as train_lib
from conftest import run_subprocess, subprocess_timeout, timeout_message

REPO = pathlib.Path(__file__).resolve().parents[1]
_TINY = {"model.embed_dim": 8, "model.hidden_dim": 16, "model.latent_dim": 4,
         "data.builtin_train_size": 64, "data.builtin_eval_size": 20, "batch_size": 16,
         "eval_batch_size": 20, "log_every_steps": 2, "num_devices": 1, "max_epochs": 0}


def _config(**fields):
  """The base config at a toy size; `fields` uses "__" for "." (e.g. optimizer__name)."""
  config = config_lib.get_config()
  for field, value in {**_TINY, **{k.replace("__", "."): v for k, v in fields.items()}}.items():
    experiment.set_config_value(config, field, value)
  return config


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _params_template(workdir):
  config = _config()
  return train_lib.build_training_setup(config, _vocab_size(workdir)).state.params


def _vocab_size(workdir):
  with open(os.path.join(workdir, "vocab.txt"), encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


def _all_finite(tree):
  return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------------------------------------- 1


def test_periodic_saves_at_epoch_ends_and_at_max_steps_keep_the_validation(tmp_path):
  # 64 sentences at batch 16: 4 steps an epoch; a periodic save every 2 steps falls on the epoch
  # end (step 4) and on max_steps (6), where a validation saves the same step.
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(_config(max_steps=6, checkpoint_every_steps=2), workdir)
  with checkpoint_lib.Checkpointer(workdir, best_metric="valid_criterion") as ckpt:
    assert ckpt.latest_step() == 6
    assert ckpt.best_step() in (4, 6) and ckpt.best_value() is not None
    metrics = ckpt.restore("latest", params_template=_params_template(workdir))["metrics"]
  assert np.isfinite(metrics["valid_criterion"])
  valid = [r["step"] for r in _records(workdir) if r["split"] == "valid"]
  assert valid == [4, 6]


# ------------------------------------------------------------------------------------------- 2


def test_checkpointer_refuses_non_finite_parameters_and_keeps_the_last_sound_step(tmp_path):
  params = {"w": jnp.ones((2, 3))}
  with checkpoint_lib.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(1, params=params, opt_state={}, data_state={}, metrics={"valid_loss": 1.0})
    bad = {"w": params["w"].at[0, 1].set(jnp.inf)}
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"parameter 'w' is not finite"):
      ckpt.save(2, params=bad, opt_state={}, data_state={}, metrics={"valid_loss": 0.5})
    assert ckpt.all_steps() == [1]


def test_train_step_rejects_an_update_that_makes_parameters_non_finite():
  from mimtext import objectives
  from mimtext.models import sentence_ae
  model = sentence_ae.ModelConfig(vocab_size=20, embed_dim=8, hidden_dim=16, latent_dim=4)
  mesh = train_lib.make_mesh(1)
  cfg = objectives.ObjectiveConfig(model=model, name="ae")
  opt = optim.make_optimizer("sgd", float("inf"))  # finite loss and gradients, inf update
  params = sentence_ae.init_params(jax.random.PRNGKey(0), model)
  state = train_lib.replicate(train_lib.TrainState(jnp.asarray(0), params, opt.init(params)), mesh)
  step_fn = train_lib.make_train_step(objectives.get_loss("ae"), opt, cfg, mesh)
  rows = 4
  tokens = np.tile(np.array([[1, 5, 6, 7, 2, 0]], np.int32), (rows, 1))
  batch = {"tokens": tokens, "lengths": np.full(rows, 5, np.int32),
           "index": np.arange(rows, dtype=np.int32), "valid": np.ones(rows, np.float32)}
  state, metrics = step_fn(state, train_lib.shard_batch(batch, mesh), jax.random.PRNGKey(1))
  assert float(metrics["finite"]) == 0.0 and int(state.step) == 0
  assert _all_finite(state.params)


def test_a_diverging_run_saves_only_finite_parameters_whose_loss_was_finite(tmp_path):
  workdir = str(tmp_path / "run")
  # SGD at lr 30 diverges within the first epoch of 10 steps (step 5 here).
  config = _config(max_steps=40, log_every_steps=1, optimizer__name="sgd",
                   optimizer__learning_rate=30.0, objective__name="ae",
                   data__builtin_train_size=160)
  with pytest.raises(train_lib.NonFiniteLossError, match="non-finite") as info:
    train_lib.train_and_evaluate(config, workdir)
  message = str(info.value)
  with checkpoint_lib.Checkpointer(workdir, best_metric="valid_criterion") as ckpt:
    steps = ckpt.all_steps()
    for step in steps:
      assert _all_finite(ckpt.restore(step, params_template=_params_template(workdir))["params"])
  assert steps, message
  first_bad = int(message.split("step(s) [")[1].split("]")[0].split(",")[0])
  # The state kept in memory whose own loss was finite, i.e. taken before the first bad step.
  assert "the last good state was saved at step" in message, message
  saved = int(message.split("saved at step ")[1].split()[0])
  assert saved == steps[-1] and saved < first_bad - 1, message
  assert not os.path.exists(os.path.join(workdir, run_control.LOCK_FILE))


# ------------------------------------------------------------------------------------------- 3


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
  """A finished 4-step run (one epoch), copied by the tests that resume it."""
  workdir = str(tmp_path_factory.mktemp("four") / "run")
  train_lib.train_and_evaluate(_config(max_steps=4), workdir)
  return workdir


def _copy(src, tmp_path):
  dst = str(tmp_path / "copy")
  subprocess.run(["cp", "-a", src, dst], check=True)
  return dst


@pytest.mark.parametrize("fields,flag", [
    ({"batch_size": 8}, "--batch_size=8"),
    ({"seed": 3}, "--seed=3"),
    ({"data__data_dir": "/no/such/corpus"}, "--data_dir='/no/such/corpus'"),
    ({"optimizer__name": "sgd"}, "--config.optimizer.name='sgd'"),
    ({"optimizer__clip_norm": 1.0}, "--config.optimizer.clip_norm=1.0"),
])
def test_a_refused_resume_names_the_flag_and_leaves_config_json_alone(four_steps, tmp_path,
                                                                      fields, flag):
  workdir = _copy(four_steps, tmp_path)
  before = pathlib.Path(workdir, "config.json").read_bytes()
  with pytest.raises(ValueError, match="^" + re.escape(flag)) as info:
    train_lib.train_and_evaluate(_config(max_steps=8, **fields), workdir)
  assert "\n" not in str(info.value)
  assert pathlib.Path(workdir, "config.json").read_bytes() == before
  assert not os.path.exists(os.path.join(workdir, run_control.LOCK_FILE))


# ------------------------------------------------------------------------------------------- 4


def test_resume_drops_metrics_written_after_the_checkpoint_and_a_partial_line(four_steps,
                                                                              tmp_path):
  workdir = _copy(four_steps, tmp_path)
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, "a", encoding="utf-8") as f:  # written after step 4 by a run killed later
    f.write(json.dumps({"split": "train", "step": 6, "loss": 99.0}) + "\n")
    f.write('{"split": "train", "step": 7, "lo')
  train_lib.train_and_evaluate(_config(max_steps=8), workdir)
  records = _records(workdir)  # every line parses
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 8
  assert all(r.get("loss") != 99.0 for r in records)
  assert [r["step"] for r in records if r["split"] == "valid"] == [4, 8]


def test_metrics_writer_writes_whole_lines(tmp_path):
  writer = reporting.MetricsWriter(str(tmp_path))
  writer.write({"step": 1, "loss": np.float32(2.5), "bad": float("nan")})
  writer.write({"step": 2, "loss": 2.0})
  text = pathlib.Path(writer.path).read_text()
  assert text.endswith("\n") and [json.loads(l)["step"] for l in text.splitlines()] == [1, 2]
  assert writer.truncate_after(1) == 1
  assert [json.loads(l)["step"] for l in pathlib.Path(writer.path).read_text().splitlines()] == [1]


# ------------------------------------------------------------------------------------------- 6


def test_a_live_lock_is_refused_and_a_stale_one_taken_over(four_steps, tmp_path):
  workdir = _copy(four_steps, tmp_path)
  lock = os.path.join(workdir, run_control.LOCK_FILE)
  import socket
  with open(lock, "w", encoding="utf-8") as f:
    json.dump({"pid": os.getppid(), "hostname": socket.gethostname()}, f)
  before = pathlib.Path(workdir, "config.json").read_bytes()
  with pytest.raises(run_control.WorkdirLockedError, match=f"pid {os.getppid()}") as info:
    train_lib.train_and_evaluate(_config(max_steps=6), workdir)
  assert "\n" not in str(info.value) and os.path.exists(lock)
  assert pathlib.Path(workdir, "config.json").read_bytes() == before
  dead = subprocess.Popen(["true"])
  dead.wait()
  with open(lock, "w", encoding="utf-8") as f:
    json.dump({"pid": dead.pid, "hostname": socket.gethostname()}, f)
  train_lib.train_and_evaluate(_config(max_steps=6), workdir)
  assert not os.path.exists(lock)
  assert [r["step"] for r in _records(workdir) if r["split"] == "valid"][-1] == 6


# ------------------------------------------------------------------------------------------- 7


def test_a_new_learning_rate_and_schedules_apply_on_resume_and_are_logged(four_steps, tmp_path,
                                                                          caplog):
  workdir = _copy(four_steps, tmp_path)
  config = _config(max_steps=8, optimizer__plateau_factor=0.5, optimizer__plateau_patience=5,
                   early_stopping_patience=7)
  config.optimizer.learning_rate = 0.5
  with caplog.at_level(logging.INFO, logger="absl"):
    train_lib.train_and_evaluate(config, workdir)
  lrs = {r["step"]: r["learning_rate"] for r in _records(workdir) if r["split"] == "train"}
  assert lrs[2] == pytest.approx(1e-3) and lrs[8] == pytest.approx(0.5)
  saved = json.loads(pathlib.Path(workdir, "config.json").read_text())
  assert saved["optimizer"]["learning_rate"] == 0.5
  assert saved["optimizer"]["plateau_patience"] == 5 and saved["early_stopping_patience"] == 7
  messages = [r.getMessage() for r in caplog.records]
  assert ("--config.optimizer.learning_rate=0.5 differs from the run's 0.001: the learning rate "
          "is now 0.5 (it was 0.001 at step 4)") in messages, messages
  assert ("--config.optimizer.plateau_factor=0.5 differs from the run's 0.25: 0.5 applies from "
          "step 4 on") in messages, messages
  # One validation (step 4, the first) so far: no count without improvement yet.
  assert ("--config.optimizer.plateau_patience=5 differs from the run's 2: 5 applies from step 4 "
          "on; 0 epochs without improvement so far") in messages, messages
  assert ("--config.early_stopping_patience=7 differs from the run's 0: 7 applies from step 4 "
          "on; 0 validations without improvement so far") in messages, messages


def test_an_unchanged_resume_logs_no_schedule_change(four_steps, tmp_path, caplog):
  workdir = _copy(four_steps, tmp_path)
  with caplog.at_level(logging.INFO, logger="absl"):
    train_lib.train_and_evaluate(_config(max_steps=6), workdir)
  messages = [r.getMessage() for r in caplog.records]
  assert any(m.startswith("resumed from step 4 in ") for m in messages), messages
  assert not [m for m in messages if "differs from the run's" in m], messages


# ------------------------------------------------------------------------------------------- 8


def test_evaluation_reports_its_non_finite_results():
  from launch import evaluate as evaluate_launch  # defines absl flags: imported only here
  report = {"elbo_nll": 3.0, "iw_nll": float("nan"), "ppl": {"melbo": float("inf")},
            "examples": [{"bleu": 0.5}], "iw_samples": None, "ok": True}
  assert evaluate_launch.non_finite_fields(report) == ["iw_nll", "ppl.melbo"]
  assert evaluate_launch.non_finite_fields({"a": 1.0, "b": [np.float32(2.0)]}) == []


def test_evaluation_exits_non_zero_on_non_finite_results(four_steps, tmp_path, monkeypatch,
                                                         capsys):
  from launch import evaluate as evaluate_launch
  workdir = _copy(four_steps, tmp_path)
  monkeypatch.setattr(evaluate_launch.suite_lib, "run_suite", lambda *a, **k: {
      "bounds": {"elbo_nll": float("nan"), "bleu1": 0.5}, "timings": {"bounds": 0.0}})
  assert _evaluate_main(evaluate_launch, workdir, "--suite=bounds") == 1
  assert "non-finite evaluation results (elbo_nll)" in capsys.readouterr().err


def _evaluate_main(evaluate_launch, workdir, *args) -> int:
  """Runs launch.evaluate's main in process on `workdir` (valid split, latest step); its exit
  status."""
  flags = evaluate_launch.flags.FLAGS
  # Parsing and unparsing absl's flags sets the "absl" logger's level (its --verbosity flag), and
  # other tests on this worker read INFO records: give the logger back its level.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  flags(["evaluate", f"--workdir={workdir}", "--split=valid", "--step=latest", "--noplot", *args])
  try:
    with pytest.raises(SystemExit) as info:
      evaluate_launch.main(["evaluate"])
  finally:
    flags.unparse_flags()
    absl_logger.setLevel(level)
  return info.value.code


_INFO = {"mi_skipped": "-", "kl_skipped": "-", "active_units": 2, "latent_dim": 4,
         "kraskov_entropy": 1.0, "standard_normal_entropy": 5.7}


def test_evaluation_finishes_its_sections_and_names_what_failed(four_steps, tmp_path,
                                                                monkeypatch, capsys):
  """A diverged checkpoint whose codes are not finite: the post-hoc fit fails, every other
  section is still written, and the command ends with one error line per failure, exit 1."""
  from launch import evaluate as evaluate_launch
  workdir = _copy(four_steps, tmp_path)
  failed_fit = ("the post-hoc prior could not be fitted to the codes of step 4: codes contain "
                "NaN or infinite values")
  monkeypatch.setattr(evaluate_launch.suite_lib, "run_suite", lambda *a, **k: {
      "bounds": {"elbo_nll": 3.0, "bleu1": 0.5, "posthoc_failed": failed_fit},
      "info": _INFO, "timings": {"bounds": 0.0, "info": 0.0}})
  assert _evaluate_main(evaluate_launch, workdir, "--suite=bounds,info") == 1
  captured = capsys.readouterr()
  assert captured.err.strip().splitlines()[-1] == f"error: {failed_fit}"
  assert "info: " in captured.out  # the other section was reported
  report = json.loads((pathlib.Path(workdir) / "eval_valid.json").read_text())
  assert report["posthoc_failed"] == failed_fit and report["info"] == _INFO


# ------------------------------------------------------------------------------------------- 5


class _StderrReader:
  """Reads a child's stderr on a thread, so that waiting for a line or for the end is bounded."""

  def __init__(self, proc: subprocess.Popen):
    self.lines: list[str] = []
    self._queue: queue.Queue = queue.Queue()
    self._thread = threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True)
    self._thread.start()

  def _pump(self, stream):
    for line in stream:
      self._queue.put(line)
    self._queue.put(None)

  def wait_for(self, marker: str, timeout: float) -> bool:
    """True once a line holding `marker` was read; False at the end of the stream or after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
      try:
        line = self._queue.get(timeout=left)
      except queue.Empty:
        return False
      if line is None:
        return False
      self.lines.append(line)
      if marker in line:
        return True
    return False

  def text(self) -> str:
    """Everything read so far (call after the child ended to have all of it)."""
    self._thread.join(timeout=10)
    while not self._queue.empty():
      line = self._queue.get()
      if line is not None:
        self.lines.append(line)
    return "".join(self.lines)


def test_sigterm_finishes_the_step_saves_and_exits_non_zero(tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"), JAX_PLATFORMS="cpu")
  args = [sys.executable, "-m", "launch.train", "--flagfile=launch/configs/quickstart.flags",
          f"--workdir={workdir}", "--max_steps=100000", "--max_epochs=0",
          "--config.model.embed_dim=8", "--config.model.hidden_dim=16",
          "--config.model.latent_dim=4", "--config.data.builtin_train_size=96",
          "--config.data.builtin_eval_size=40", "--batch_size=16", "--config.eval_batch_size=20",
          "--config.log_every_steps=1"]
  # About 15 s to the first step and 1 s to stop on an idle machine (scaled for a busy one).
  first_step_s, stop_s = subprocess_timeout(60), subprocess_timeout(30)
  proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
  reader = _StderrReader(proc)
  try:
    if not reader.wait_for("first step (compilation)", first_step_s):
      if proc.poll() is None:
        proc.kill()
        pytest.fail(timeout_message(args, first_step_s, "to log its first step") +
                    f"; stderr ended with:\n{reader.text()[-2000:]}", pytrace=False)
      proc.wait()
      pytest.fail(f"the trainer exited ({proc.returncode}) before its first step:\n"
                  f"{reader.text()[-3000:]}", pytrace=False)
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=stop_s)
    except subprocess.TimeoutExpired:
      proc.kill()
      pytest.fail(timeout_message(args, stop_s, "to stop after SIGTERM") +
                  f"; stderr ended with:\n{reader.text()[-2000:]}", pytrace=False)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  stderr = reader.text()
  assert proc.returncode != 0, stderr[-3000:]
  assert "SIGTERM received: stopped after step" in stderr and str(workdir) in stderr
  with checkpoint_lib.Checkpointer(str(workdir), best_metric="valid_criterion") as ckpt:
    latest = ckpt.latest_step()
  assert latest is not None and latest >= 1
  assert f"stopped after step {latest} and saved it" in stderr
  assert not (workdir / run_control.LOCK_FILE).exists()


def test_sigint_finishes_the_step_saves_and_raises(tmp_path, monkeypatch):
  # In process (the SIGTERM test above covers the command line): Ctrl-C right after the first
  # step. The handlers are installed on the main thread, where pytest runs the test.
  workdir = str(tmp_path / "run")
  mark_compiled = reporting.Reporter.mark_compiled

  def mark_compiled_then_interrupt(self, step):
    mark_compiled(self, step)
    os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(reporting.Reporter, "mark_compiled", mark_compiled_then_interrupt)
  handler = signal.getsignal(signal.SIGINT)
  with pytest.raises(run_control.TrainingInterrupted) as info:
    train_lib.train_and_evaluate(_config(max_steps=100_000), workdir)
  assert str(info.value) == (f"SIGINT received: stopped after step 1 and saved it in {workdir}/"
                             "checkpoints; rerun the same command to resume")
  assert signal.getsignal(signal.SIGINT) is handler  # pytest's own handler is back
  with checkpoint_lib.Checkpointer(workdir, best_metric="valid_criterion") as ckpt:
    assert ckpt.latest_step() == 1
  assert not os.path.exists(os.path.join(workdir, run_control.LOCK_FILE))


# ------------------------------------------------------------------------------------------- 9
# Exact resume after SIGKILL, also inside a checkpoint write: the resumed run ends bit for bit
# where an uninterrupted one does.

_KILL_ARGS = ["--flagfile=launch/configs/quickstart.flags", "--max_steps=12", "--max_epochs=0",
              "--config.checkpoint_every_steps=4", "--config.model.embed_dim=8",
              "--config.model.hidden_dim=16", "--config.model.latent_dim=4",
              "--config.data.builtin_train_size=96", "--config.data.builtin_eval_size=20",
              "--batch_size=16", "--config.eval_batch_size=20", "--config.log_every_steps=2"]


def _train_process(workdir, kill=None):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"), JAX_PLATFORMS="cpu")
  head = [str(REPO / "tests" / "kill_worker.py"), kill] if kill else ["-m", "launch.train"]
  return run_subprocess([sys.executable, *head, *_KILL_ARGS, f"--workdir={workdir}"], 300,
                        cwd=REPO, env=env)


def _final_state(workdir):
  template = _params_template(str(workdir))
  with checkpoint_lib.Checkpointer(str(workdir), best_metric="valid_criterion") as ckpt:
    out = ckpt.restore("latest", params_template=template)
  records = _records(workdir)
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == sorted(set(train_steps))  # no step logged twice
  return out["step"], out["params"], [(r["step"], r["criterion"]) for r in records
                                      if r["split"] == "valid"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  proc = _train_process(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return _final_state(workdir)


@pytest.mark.parametrize("kill,latest_before_resume", [("batch:9", 6), ("save:8", 6)],
                         ids=["between_saves", "inside_a_save"])
def test_sigkill_then_resume_is_bit_exact(uninterrupted, tmp_path, kill, latest_before_resume):
  workdir = tmp_path / "run"
  killed = _train_process(workdir, kill)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  with checkpoint_lib.Checkpointer(str(workdir), best_metric="valid_criterion") as ckpt:
    assert ckpt.latest_step() == latest_before_resume  # the half-written step 8 does not count
  resumed = _train_process(workdir)  # also takes over the dead process's lock
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "stale lock" in resumed.stderr
  step, params, validations = _final_state(workdir)
  ref_step, ref_params, ref_validations = uninterrupted
  assert step == ref_step == 12
  assert validations == ref_validations  # once each, with the same criterion
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


# ------------------------------------------------------------------------------------------ 10


def test_a_model_that_cannot_fit_is_refused_before_allocating(tmp_path):
  config = _config(model__latent_dim=100_000_000)
  with pytest.raises(experiment.ConfigError, match=r"needs about [\d,.]+ GiB .*decoder/") as info:
    train_lib.train_and_evaluate(config, str(tmp_path / "never"))
  assert "\n" not in str(info.value)
  assert not (tmp_path / "never").exists()  # a run that failed before its first save leaves nothing
  # The same config is refused before any work (launch.train's validation, --dry_run too) by
  # the lower bound at the smallest vocabulary and sentences.
  from mimtext import resources  # pylint: disable=g-import-not-at-top
  with pytest.raises(experiment.ConfigError, match=r"^this model needs at least [\d,.]+ GiB "
                     r".*decoder/.*, the smallest vocabulary and sentences \(a lower bound\); "):
    resources.check_config_fits(config)
  resources.check_config_fits(_config())  # the toy model fits
  assert resources.check_config_fits(_config(distributed=True)) is None  # devices unknown yet


def test_memory_estimate_against_the_parameter_count():
  from mimtext import resources
  config = _config()
  model_cfg = experiment.model_config(config, 50)
  params = train_lib.build_training_setup(config, 50).state.params
  estimate = resources.estimate_training_memory(model_cfg, per_device_batch=16, max_tokens=12)
  assert estimate.num_params == sum(x.size for x in jax.tree_util.tree_leaves(params))
  assert estimate.params_bytes == 16 * estimate.num_params
  resources.check_training_fits(model_cfg, 16, 12, available=2**30)
  with pytest.raises(experiment.ConfigError, match=r"device has 0.0 GiB"):
    resources.check_training_fits(model_cfg, 16, 12, available=estimate.total_bytes)


def test_an_evaluation_batch_the_devices_cannot_split_names_its_field():
  config = _config(num_devices=4, batch_size=16, eval_batch_size=10)
  with pytest.raises(experiment.ConfigError, match=r"^--config.eval_batch_size=10 "):
    train_lib.build_training_setup(config, 50)


# ------------------------------------------------------------------------------------------ 11
# A run interrupted mid-window and resumed writes the metrics.jsonl of a run that never stopped.


def _train_records_without_clocks(workdir):
  clocks = ("wall_time", "tokens_per_sec", "compile_seconds")
  return [{k: v for k, v in r.items() if k not in clocks} for r in _records(workdir)]


def test_an_interrupted_and_resumed_run_logs_the_records_of_an_uninterrupted_one(tmp_path,
                                                                                monkeypatch):
  fields = dict(max_steps=14, max_epochs=0, log_every_steps=4)
  straight = str(tmp_path / "straight")
  train_lib.train_and_evaluate(_config(**fields), straight)

  stopped = str(tmp_path / "stopped")
  add_step, calls = reporting.Reporter.add_step, []

  def add_step_then_interrupt(self, metrics, tokens):  # SIGINT during step 6, mid-window
    add_step(self, metrics, tokens)
    calls.append(1)
    if len(calls) == 6:
      os.kill(os.getpid(), signal.SIGINT)

  with monkeypatch.context() as m:
    m.setattr(reporting.Reporter, "add_step", add_step_then_interrupt)
    with pytest.raises(run_control.TrainingInterrupted, match="stopped after step 6"):
      train_lib.train_and_evaluate(_config(**fields), stopped)
  assert [r["step"] for r in _records(stopped) if r["split"] == "train"] == [1, 4]
  train_lib.train_and_evaluate(_config(**fields), stopped)
  ours, reference = _train_records_without_clocks(stopped), _train_records_without_clocks(straight)
  assert [(r["split"], r["step"]) for r in ours] == [(r["split"], r["step"]) for r in reference]
  for a, b in zip(ours, reference):
    assert a.keys() == b.keys()
    for key in a:
      if isinstance(a[key], str):
        assert a[key] == b[key]
      else:
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)


# ------------------------------------------------------------------------------------------ 12
# A workdir that cannot hold a run, and an evaluation that cannot write beside the run: one line
# before any work, nothing computed lost.


def test_a_workdir_that_is_a_file_or_not_writable_is_refused_in_one_line(tmp_path, monkeypatch):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  with pytest.raises(run_control.WorkdirError, match=r"is a file, not a directory"):
    train_lib.train_and_evaluate(_config(max_steps=1), str(a_file))
  real_open = open

  def read_only_open(path, *args, **kwargs):
    if ".write_test_" in str(path):
      raise PermissionError(13, "Permission denied", str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr("builtins.open", read_only_open)
  with pytest.raises(run_control.WorkdirError, match=r"cannot be written \(Permission denied\)"):
    train_lib.train_and_evaluate(_config(max_steps=1), str(tmp_path / "ro"))
  monkeypatch.undo()
  # The command line prints it in one line (launch.train is not imported here: its absl flags
  # would clash with those of launch.evaluate, which other tests of this module import).
  proc = run_subprocess([sys.executable, "-m", "launch.train",
                         "--flagfile=launch/configs/quickstart.flags", f"--workdir={a_file}"],
                        120, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  lines = [line for line in proc.stderr.splitlines() if line.startswith(("FATAL", "Traceback"))]
  assert proc.returncode == 1 and lines == [
      f"FATAL: --workdir={a_file} is a file, not a directory; pass a directory (it is created "
      "if absent)"], proc.stderr[-3000:]


def test_evaluation_of_a_read_only_run_writes_elsewhere_and_says_so(tmp_path, monkeypatch,
                                                                   capsys):
  import tempfile  # pylint: disable=g-import-not-at-top
  from launch import common  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  real = tempfile.NamedTemporaryFile

  def read_only(*args, dir=None, **kwargs):  # pylint: disable=redefined-builtin
    if dir == str(run_dir):
      raise PermissionError(13, "Permission denied")
    return real(*args, dir=dir, **kwargs)

  monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
  out = common.output_directory(str(run_dir), None)
  assert out != str(run_dir) and os.path.isdir(out)
  assert f"{run_dir} is not writable (Permission denied)" in capsys.readouterr().err
  assert common.output_directory(str(tmp_path), None) == str(tmp_path)
  assert common.output_directory(str(run_dir), str(tmp_path / "o")) == str(tmp_path / "o")


def test_a_post_hoc_prior_that_cannot_be_saved_is_used_all_the_same(tmp_path, monkeypatch,
                                                                   caplog):
  from mimtext.evaluation import posthoc  # pylint: disable=g-import-not-at-top

  def unwritable(*args, **kwargs):
    raise PermissionError(13, "Permission denied")

  monkeypatch.setattr(posthoc, "fit", lambda run, split, **k: ("the mixture", {"step": 3}))
  monkeypatch.setattr(checkpoint_lib, "save_json", unwritable)
  monkeypatch.setattr(posthoc.posthoc_prior, "to_json", lambda gmm: gmm)
  run = type("Run", (), {"workdir": str(tmp_path), "step": 3})()
  with caplog.at_level("WARNING"):
    assert posthoc.load_or_fit(run, None) == ("the mixture", {"step": 3})
  assert any("could not save the post-hoc prior" in r.getMessage() for r in caplog.records)


def test_a_second_signal_while_stopping_is_acknowledged_and_the_step_is_saved(tmp_path,
                                                                             monkeypatch, caplog):
  workdir = str(tmp_path / "run")
  mark_compiled = reporting.Reporter.mark_compiled

  def mark_compiled_then_interrupt_twice(self, step):
    mark_compiled(self, step)
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(reporting.Reporter, "mark_compiled", mark_compiled_then_interrupt_twice)
  with pytest.raises(run_control.TrainingInterrupted, match="stopped after step 1 and saved it"):
    train_lib.train_and_evaluate(_config(max_steps=100_000), workdir)
  assert any("SIGTERM received: already stopping" in r.getMessage() for r in caplog.records)
  with checkpoint_lib.Checkpointer(workdir, best_metric="valid_criterion") as ckpt:
    assert ckpt.latest_step() == 1
  assert not [p for p in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in p]


# ------------------------------------------------------------------------------------------ 13
# A damaged run directory is reported in one FATAL line that says what is wrong (exit 1, no usage
# hint, no traceback from orbax's abandoned reads).


def _damage_params_file(workdir):
  params = pathlib.Path(workdir) / "checkpoints" / "4" / "params"
  biggest = max((p for p in params.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  data = biggest.read_bytes()
  biggest.write_bytes(data[:len(data) // 2])


def _cut_vocabulary(workdir, keep):
  path = pathlib.Path(workdir) / "vocab.txt"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines[:keep if keep >= 0 else len(lines) + keep]))


@pytest.mark.parametrize("damage,message", [
    (_damage_params_file, "FATAL: cannot read {w}/checkpoints/4/params (params of checkpoint step "
                          "4; corrupt?): "),
    (lambda w: (pathlib.Path(w) / "checkpoints" / "4" / "params" / "_METADATA").unlink(),
     "FATAL: checkpoint step 4 is corrupt: {w}/checkpoints/4/params/_METADATA, the params item's "
     "metadata"),
    (lambda w: _cut_vocabulary(w, -3), "FATAL: {w}/vocab.txt holds "),
    (lambda w: _cut_vocabulary(w, 0), "FATAL: vocabulary file {w}/vocab.txt is empty"),
], ids=["truncated_params", "params_metadata_deleted", "vocab_three_lines_short", "empty_vocab"])
def test_a_damaged_run_is_one_fatal_line_for_evaluate_and_train(four_steps, tmp_path, damage,
                                                                message):
  workdir = _copy(four_steps, tmp_path)
  damage(workdir)
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"))
  flags = [f"--config.{k}={v}" for k, v in _TINY.items()]
  for args in (["launch.evaluate", f"--workdir={workdir}", "--suite=bounds", "--noposthoc"],
               ["launch.train", f"--workdir={workdir}", "--max_steps=8", *flags]):
    proc = run_subprocess([sys.executable, "-m", *args], 120, cwd=REPO, env=env)
    stderr = proc.stderr
    if damage is _damage_params_file:
      # Known and left: on a loaded machine, tensorstore's C++ threads can still print an
      # "Event loop is closed" traceback for a failed read before the FATAL line (no longer
      # after it, and no longer one per read: they were 3 to 17). Only those may precede it.
      head = stderr[:stderr.find("FATAL:")]
      known = ("Traceback", "  ", "I1", "W1", "E1", "RuntimeError")
      assert all(not line.strip() or "Event loop is closed" in line or line.startswith(known)
                 for line in head.splitlines()), head
      stderr = stderr[stderr.find("FATAL:"):]
    lines = [line for line in stderr.splitlines() if line.strip() and
             not line.startswith(("I1", "W1", "E1"))]  # absl log lines of the trainer
    assert proc.returncode == 1, (args[0], proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, (
        args[0], proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(message.format(w=workdir)), (args[0], lines)
  if "vocab.txt holds" in message:
    assert "but the checkpoint's word embedding has" in lines[0]


def test_a_data_state_of_the_wrong_shape_is_named_as_corrupt(four_steps, tmp_path):
  workdir = _copy(four_steps, tmp_path)
  path = pathlib.Path(workdir) / "checkpoints" / "4" / "data_state" / "metadata"
  state = json.loads(path.read_text())
  path.write_text(json.dumps({**state, "pipeline": [1, 2, 3]}))
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"checkpoint step 4 is corrupt: its data_state .* holds no input "
                           r"pipeline state this run can resume \(AttributeError"):
    train_lib.train_and_evaluate(_config(max_steps=8), workdir)


def test_a_refused_resume_on_the_command_line_is_one_line_without_thread_tracebacks(four_steps,
                                                                                    tmp_path):
  """Refused after orbax has opened the checkpoints: its threads must not print a traceback
  after the FATAL line (it happened intermittently)."""
  workdir = _copy(four_steps, tmp_path)
  flags = [f"--config.{k}={v}" for k, v in _TINY.items()]
  proc = run_subprocess([sys.executable, "-m", "launch.train", f"--workdir={workdir}",
                         "--max_steps=8", "--config.objective.name=vae", *flags], 120, cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 1, proc.stderr[-3000:]
  tail = proc.stderr[proc.stderr.index("FATAL: "):]
  assert tail.startswith("FATAL: --config.objective.name='vae': ") and tail.count("\n") == 1, tail
