"""Training: the train state, one jitted data-parallel train step, and the loop around it.

Data parallelism is `jax.jit` over a `Mesh` with one "data" axis: the batch is sharded along its
rows, parameters and optimiser state are replicated, and the loss is a plain mean over the global
batch, so XLA inserts the gradient all-reduce (DESIGN §1, §6). No flags live here: `launch/train.py`
parses them and calls `train_and_evaluate(config, workdir)`.

Along the data flow: `build_training_setup` turns a config into a mesh, an optimiser
(`mimtext.optim`) and a replicated initial state; `make_train_step` / `make_eval_step` jit the
steps; `train_and_evaluate` runs the loop, which steers the learning rate and stopping with
`mimtext.optim`'s schedules and tells what happens through a `mimtext.reporting.Reporter` (log
lines, metrics.jsonl, TensorBoard).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from mimtext import checkpoint as checkpoint_lib
from mimtext import experiment
from mimtext import objectives
from mimtext import optim
from mimtext import reporting
from mimtext import resources
from mimtext.data import corpus as corpus_lib
from mimtext.data import pipeline as pipeline_lib
from mimtext.data import vocab as vocab_lib
from mimtext.models import sentence_ae

# Kept here too: notebooks, benchmarks and test workers build their optimiser this way.
make_optimizer = optim.make_optimizer

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]


class TrainState(NamedTuple):
  step: Array           # scalar int32: optimiser steps taken
  params: Any           # model parameters (nested dicts of arrays)
  opt_state: Any        # optax state (with injected hyper-parameters)


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/inf; the offending update was not applied."""


class TrainingInterrupted(RuntimeError):
  """SIGTERM or SIGINT arrived; the current step was finished and saved before this was raised."""


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the lock file of the workdir."""


class WorkdirError(OSError):
  """The workdir cannot hold a run: it is a file, or it cannot be created or written."""


def prepare_workdir(workdir: str) -> bool:
  """Creates `workdir` (and its parents) if needed and checks it can be written; returns whether
  it was created. Raises WorkdirError in one line naming the path and the cause."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory; pass a directory (it is "
                       "created if absent)")
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w", encoding="utf-8"):
      pass
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"--workdir={workdir} cannot be written ({e.strerror or e}); a training "
                       "run writes its checkpoints there: pass a writable directory") from None
  return created


# ----------------------------------------------------------------------------- mesh and steps


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh with axis "data" over the first `num_devices` devices (default: all)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise experiment.ConfigError(f"--config.num_devices={num_devices}: asked for {num_devices} devices but only {len(devices)} are visible")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), ("data",))


def check_batch_size(global_batch_size: int, mesh: Mesh, flag: str = "--batch_size") -> None:
  """Refuses a global batch the mesh's devices (and processes) cannot split evenly; the error
  names `flag`, the field that holds the batch (e.g. --config.eval_batch_size)."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise experiment.ConfigError(
        f"{flag}={global_batch_size} (a global batch) must be divisible by the number of "
        f"devices in the mesh ({n}); use a multiple of {n}")
  if global_batch_size % jax.process_count():
    raise experiment.ConfigError(f"{flag}={global_batch_size} must be divisible by the number of "
                     f"processes ({jax.process_count()})")


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, Array]:
  """This process's rows of a global batch → global arrays sharded along "data"."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def _all_finite(*trees) -> Array:
  leaves = [x for t in trees for x in jax.tree_util.tree_leaves(t)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def make_train_step(loss_fn: LossFn, optimizer, cfg, mesh: Mesh):
  """A jitted, donated `train_step(state, batch, key) -> (state, metrics)` over `mesh`.

  The step's randomness is `fold_in(key, state.step)`. A step whose loss or gradient norm is not
  finite, or whose optimiser hyper-parameters (the learning rate) are not, leaves the state
  unchanged (not even the step counter) and reports `metrics["finite"] = 0`. Otherwise the update
  is finite (Adam's step is bounded by a multiple of the learning rate, SGD's is lr · g), so the
  state it returns has finite parameters unless they overflow float32 (|θ| > 3.4e38); the
  checkpointer refuses non-finite parameters as a second line (`checkpoint`).

  The update runs inside `lax.cond` on that test, in place on the donated state: selecting
  between the old and the new state afterwards (`where` over parameters and Adam moments) cost
  25 ms of a 137 ms step on the PTB model (benchmarks/README.md).
  """

  def apply_update(state: TrainState, grads) -> TrainState:
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)

  def keep(state: TrainState, grads) -> TrainState:
    del grads
    return state

  def train_step(state: TrainState, batch, key):
    step_key = jax.random.fold_in(key, state.step)
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, cfg=cfg), has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, batch, key=step_key, step=state.step)
    grad_norm = optax.tree.norm(grads)
    # One pass over the gradients for both: ‖g‖ is finite iff every entry is (or ‖g‖² overflows,
    # |g| > 1.8e19, a step worth skipping as well).
    finite = _all_finite(loss, grad_norm, getattr(state.opt_state, "hyperparams", {}))
    state = jax.lax.cond(finite, apply_update, keep, state, grads)
    metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
    return state, metrics

  replicated = NamedSharding(mesh, P())
  return jax.jit(train_step, in_shardings=(replicated, NamedSharding(mesh, P("data")), replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_eval_step(loss_fn: LossFn, cfg, mesh: Mesh):
  """A jitted `eval_step(params, batch, key) -> sums` without dropout.

  Returns each metric multiplied by the number of valid sentences (so batches can be summed),
  plus "num_sentences" and "num_tokens" (<eos> included).
  """

  def eval_step(params, batch, key):
    _, metrics = loss_fn(params, batch, key=key, step=jnp.asarray(10**9), cfg=cfg,
                         deterministic=True)
    n = jnp.sum(batch["valid"])
    sums = {k: v * n for k, v in metrics.items() if k != "rec_per_token"}
    sums["num_sentences"] = n
    sums["num_tokens"] = objectives.common.num_target_tokens(batch).astype(jnp.float32)
    return sums

  replicated = NamedSharding(mesh, P())
  return jax.jit(eval_step, in_shardings=(replicated, NamedSharding(mesh, P("data")), replicated),
                 out_shardings=replicated)


def validation_metrics(eval_step, params, pipeline: pipeline_lib.BatchPipeline, mesh: Mesh,
                   key: Array) -> dict[str, float]:
  """Means of every metric over one pass of an unshuffled pipeline (no batch dropped)."""
  totals: dict[str, float] = {}
  for i, batch in enumerate(pipeline.epoch(0)):
    sums = jax.device_get(eval_step(params, shard_batch(batch, mesh), jax.random.fold_in(key, i)))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  n = max(totals.pop("num_sentences", 0.0), 1.0)
  tokens = max(totals.pop("num_tokens", 0.0), 1.0)
  means = {k: v / n for k, v in totals.items()}
  means["rec_per_token"] = totals.get("rec", 0.0) / tokens
  means["num_sentences"] = n
  return means


# ----------------------------------------------------------------------------- data


def make_pipeline(split: corpus_lib.CorpusSplit, config, *, train: bool, seed: int
                  ) -> pipeline_lib.BatchPipeline:
  return pipeline_lib.BatchPipeline(
      split.ids, global_batch_size=config.batch_size if train else config.eval_batch_size,
      seed=seed, shuffle=train, bucket_batches=config.data.bucket_batches if train else 0,
      drop_remainder=False, process_index=jax.process_index(),
      process_count=jax.process_count())


# ----------------------------------------------------------------------------- stopping


def _stop_reason(step: int, epoch: int, config, elapsed_s: float = 0.0) -> str | None:
  if config.max_minutes and elapsed_s >= 60 * config.max_minutes:
    return f"max_minutes={config.max_minutes} reached"
  if config.max_steps and step >= config.max_steps:
    return f"max_steps={config.max_steps} reached"
  if config.max_epochs and epoch >= config.max_epochs:
    return f"max_epochs={config.max_epochs} reached"
  return None


def total_steps(config, batches_per_epoch: int) -> int | None:
  bounds = []
  if config.max_steps:
    bounds.append(config.max_steps)
  if config.max_epochs:
    bounds.append(config.max_epochs * batches_per_epoch)
  return min(bounds) if bounds else None


# ----------------------------------------------------------------------------- setup


def init_state(config, model_cfg, optimizer, mesh) -> TrainState:
  params = sentence_ae.init_params(jax.random.PRNGKey(config.seed), model_cfg)
  state = TrainState(jnp.asarray(0, jnp.int32), params, optimizer.init(params))
  return replicate(state, mesh)


@dataclasses.dataclass
class TrainingSetup:
  """Everything a config builds before the first step, for a given vocabulary size."""
  mesh: Mesh
  model_cfg: sentence_ae.ModelConfig
  obj_cfg: objectives.ObjectiveConfig
  loss_fn: LossFn
  optimizer: Any
  state: TrainState

  def make_train_step(self):
    """A new jitted train step (`make_train_step`); it compiles at its first call."""
    return make_train_step(self.loss_fn, self.optimizer, self.obj_cfg, self.mesh)

  def make_eval_step(self):
    """A new jitted evaluation step (`make_eval_step`); it compiles at its first call."""
    return make_eval_step(self.loss_fn, self.obj_cfg, self.mesh)


def build_training_setup(config: ml_collections.ConfigDict, vocab_size: int,
                         max_tokens: int | None = None) -> TrainingSetup:
  """Mesh, static configs, loss, optimiser and the replicated initial train state.

  Refuses (ValueError, before allocating) a model whose training step cannot fit in memory
  (`resources.check_training_fits`); `max_tokens` is the longest sentence with <sos>/<eos>
  (default: data.max_len + 2).
  """
  mesh = make_mesh(config.num_devices or None)
  check_batch_size(config.batch_size, mesh)
  check_batch_size(config.eval_batch_size, mesh, "--config.eval_batch_size")
  model_cfg = experiment.model_config(config, vocab_size)
  resources.check_training_fits(model_cfg, config.batch_size // mesh.devices.size,
                                max_tokens or (config.data.max_len or 100) + 2)
  obj_cfg = experiment.objective_config(config, model_cfg)
  opt = config.optimizer
  optimizer = optim.make_optimizer(opt.name, opt.learning_rate, opt.clip_norm)
  return TrainingSetup(mesh, model_cfg, obj_cfg, objectives.get_loss(obj_cfg.name), optimizer,
                       init_state(config, model_cfg, optimizer, mesh))


# ----------------------------------------------------------------------------- workdir lock, signals


LOCK_FILE = "train.lock"


class WorkdirLock:
  """An exclusive lock file `workdir/train.lock` holding the owner's pid and hostname.

  `acquire` creates it with O_EXCL. A lock left by a dead process of this host is taken over (with
  a warning); a lock of a live process, or of another host (whose pid cannot be checked), is
  refused with `WorkdirLockedError`. `release` removes it only while it is still ours.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.owner = {"pid": os.getpid(), "hostname": socket.gethostname()}
    self.held = False

  def _read(self) -> dict | None:
    try:
      with open(self.path, encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def acquire(self) -> None:
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      except FileExistsError:
        holder = self._read()
        if holder is not None and not self._is_stale(holder):
          raise WorkdirLockedError(
              f"{os.path.dirname(self.path)} is in use by another trainer (pid {holder.get('pid')} "
              f"on {holder.get('hostname')}, lock file {self.path}); wait for it, use another "
              "--workdir, or delete the lock file if that process is gone") from None
        logging.warning("taking over the stale lock %s of %s (that process is gone)", self.path,
                        holder or "an unreadable owner")
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(self.owner, f)
      self.held = True
      return
    raise WorkdirLockedError(f"could not take the lock file {self.path}; another trainer races")

  def _is_stale(self, holder: dict) -> bool:
    if holder.get("hostname") != self.owner["hostname"]:
      return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
      return True
    if pid == self.owner["pid"]:
      return False
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    except PermissionError:
      return False
    return False

  def release(self) -> None:
    if self.held and self._read() == self.owner:
      os.remove(self.path)
    self.held = False


@contextlib.contextmanager
def _stop_signals():
  """Within the block, SIGTERM and SIGINT only record their name in the yielded list (main thread
  only; elsewhere the list stays empty): the loop finishes its step, saves and stops. A second
  signal is acknowledged ("already stopping"), a third raises TrainingInterrupted at once. The
  previous handlers come back on exit."""
  received: list[str] = []
  if threading.current_thread() is not threading.main_thread():
    yield received
    return

  def handler(signum, frame):
    del frame
    name = signal.Signals(signum).name
    received.append(name)
    if len(received) == 1:
      logging.warning("%s received: finishing the current step, then saving and stopping", name)
    elif len(received) == 2:  # e.g. a second Ctrl-C, or SIGTERM sent to a whole process group
      logging.warning("%s received: already stopping (the step is being saved); a third signal "
                      "stops at once without saving", name)
    else:
      raise TrainingInterrupted(f"{name} received a third time: stopped at once without saving; "
                                "rerun the same command to resume from the newest checkpoint")

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


# ----------------------------------------------------------------------------- the loop


def _tree_all_finite(tree) -> bool:
  return bool(_all_finite(tree))


def _copy_tree(tree):
  return jax.tree_util.tree_map(jnp.copy, tree)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the experiment in `workdir`; returns the last validation metrics.

  Writes `config.json`, `vocab.txt`, `metrics.jsonl` and orbax checkpoints (latest and best by
  validation criterion) under `workdir`; resumes from the latest checkpoint when one exists.
  Guarantees: a refused resume writes nothing (every condition is checked and the checkpoint is
  restored before `config.json` is written); the last validation is always a checkpoint with its
  criterion; every saved checkpoint has finite parameters; SIGTERM / SIGINT finish the current
  step, save it and raise `TrainingInterrupted`; a second trainer on the same workdir is refused.
  """
  created = prepare_workdir(workdir)
  lock = WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  failed = True
  try:
    with _stop_signals() as signals:
      result = _train_and_evaluate(config, workdir, signals)
    failed = False
    return result
  finally:
    lock.release()
    if failed and jax.process_index() == 0:
      _remove_if_empty(os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR))
      if created:
        _remove_if_empty(workdir)


def _remove_if_empty(directory: str) -> None:
  """A run that fails before its first save leaves no empty directories behind."""
  try:
    os.rmdir(directory)
  except OSError:  # absent, or not empty: it holds something worth keeping
    pass


def _train_and_evaluate(config, workdir: str, signals: list[str]) -> dict[str, float]:
  # Closed on every exit, errors included, so orbax's thread pool never outlives the run (an
  # unclosed manager prints a second traceback at interpreter exit), and the event file is closed.
  with checkpoint_lib.Checkpointer(workdir, best_metric="valid_criterion") as ckpt, \
      reporting.Reporter(workdir, max_epochs=config.max_epochs,
                         max_minutes=config.max_minutes) as reporter:
    return _train_loop(config, workdir, signals, ckpt, reporter)


def _train_loop(config, workdir: str, signals: list[str], ckpt: checkpoint_lib.Checkpointer,
                reporter: reporting.Reporter) -> dict[str, float]:
  vocab_path = os.path.join(workdir, "vocab.txt")
  resuming = ckpt.latest_step() is not None
  saved_config = None
  if resuming:
    saved_config = checkpoint_lib.load_json(workdir, "config.json")
    experiment.check_resumable_config(config, saved_config, workdir)
  vocab = vocab_lib.Vocabulary.load(vocab_path) if resuming else None
  corpus = experiment.load_corpus(config, vocab)

  setup = build_training_setup(config, corpus.vocab.size,
                               max(len(ids) for ids in corpus.splits["train"].ids))
  mesh, obj_cfg, state, opt = setup.mesh, setup.obj_cfg, setup.state, config.optimizer
  logging.info("model: %s parameters; corpus %s: %s", f"{sentence_ae.count_params(state.params):,}",
               corpus.name, {k: len(s.ids) for k, s in corpus.splits.items()})

  train_pipe = make_pipeline(corpus.splits["train"], config, train=True, seed=config.seed)
  valid_split = corpus.splits["valid"]
  if config.eval.max_valid_sentences:
    valid_split = valid_split.head(config.eval.max_valid_sentences)
  valid_pipe = make_pipeline(valid_split, config, train=False, seed=config.seed)
  plateau = optim.PlateauSchedule(opt.plateau_factor, opt.plateau_patience)
  early = optim.EarlyStopping(config.get("early_stopping_patience", 0))
  # `epoch` counts the epochs finished (0-based index of the one running); what is logged and
  # recorded numbers them from 1 (see mimtext.reporting).
  epoch, data_iter = 0, None
  if resuming:
    experiment.check_vocabulary_matches(ckpt, "latest", corpus.vocab.size, vocab_path)
    restored = ckpt.restore("latest", params_template=state.params,
                            opt_state_template=state.opt_state)
    state = replicate(TrainState(jnp.asarray(restored["step"], jnp.int32), restored["params"],
                                 restored["opt_state"]), mesh)
    data_state = restored["data_state"]
    try:
      data_iter, epoch = train_pipe.restore(data_state["pipeline"])
    except ValueError as e:
      raise experiment.ConfigError(f"cannot resume {workdir}: {e}; resume with the flags in its "
                       "config.json or use another --workdir") from None
    except (KeyError, TypeError, AttributeError, IndexError) as e:
      raise checkpoint_lib.CheckpointError(
          f"checkpoint step {restored['step']} is corrupt: its data_state "
          f"({ckpt.directory}/{restored['step']}/data_state) holds no input pipeline state this "
          f"run can resume ({type(e).__name__}: {e}); restore the directory from a copy or use "
          "another --workdir") from None
    plateau = optim.PlateauSchedule.from_state(opt.plateau_factor, opt.plateau_patience,
                                               data_state.get("plateau"))
    early = optim.EarlyStopping.from_state(early.patience, data_state.get("early_stopping"),
                                           best=plateau.best)
    reporter.restore_window(data_state.get("window"))
    saved_lr = experiment.saved_value(saved_config, "optimizer.learning_rate")
    if saved_lr is not None and saved_lr != opt.learning_rate:
      state = state._replace(opt_state=optim.with_learning_rate(state.opt_state,
                                                                opt.learning_rate))
      logging.info("--config.optimizer.learning_rate=%.3g differs from the run's %.3g: the "
                   "learning rate is now %.3g (it was %.3g at step %d)", opt.learning_rate,
                   saved_lr, opt.learning_rate,
                   float(restored["opt_state"].hyperparams["learning_rate"]), restored["step"])
    _log_changed_schedules(config, saved_config, plateau, early, restored["step"])
    logging.info("resumed from step %d in %s; training goes on in epoch %s", restored["step"],
                 workdir, reporter.epoch_label(epoch + 1))
  step = int(state.step)
  # Only now, with every resume condition checked, write: metrics.jsonl and the event files keep
  # the records up to the step training continues from (a fresh run: none), config.json describes
  # what runs.
  reporter.start(step, planned_steps=total_steps(config, train_pipe.num_batches))
  if jax.process_index() == 0:
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(workdir, STOP_FILE))
    corpus.vocab.save(vocab_path)
    checkpoint_lib.save_json(workdir, "config.json", config.to_dict())

  train_step, eval_step = setup.make_train_step(), setup.make_eval_step()
  key = jax.random.PRNGKey(config.seed + 1)
  eval_key = jax.random.PRNGKey(config.seed + 2)
  last_valid: dict[str, float] = {}

  def data_state_now() -> dict:
    nonlocal data_iter
    if data_iter is None:
      data_iter = train_pipe.epoch(epoch)
    return {"pipeline": train_pipe.state(data_iter, epoch), "plateau": plateau.state(),
            "early_stopping": early.state(), "window": reporter.window_state()}

  # The states at the start of the previous and the current log window (copies: the train step
  # donates its input): the last states known to have a finite loss and finite parameters.
  snapshots: list[tuple[int, TrainState, dict]] = []

  def snapshot():
    snapshots.append((step, _copy_tree(state), data_state_now()))
    del snapshots[:-2]

  def save(metrics: dict[str, float]) -> int:
    """Saves the current state at `step` (the loop saves each step at most once: a periodic save
    that a validation follows at the same step is left to the validation); returns the step."""
    if not _tree_all_finite(state.params):
      raise NonFiniteLossError(f"parameters at step {step} are not all finite; not saved")
    ckpt.save(step, params=state.params, opt_state=state.opt_state, data_state=data_state_now(),
              metrics=metrics)
    return step

  def save_last_good(bad_first: int) -> str:
    """Saves the newest snapshot whose own loss was finite (one taken before `bad_first`)."""
    good = [s for s in snapshots if s[0] < bad_first - 1]
    if not good:
      return "nothing was saved"
    good_step, good_state, good_data = good[-1]
    latest = ckpt.latest_step()
    if latest is not None and good_step <= latest:
      return f"the newest checkpoint on disk is step {latest}"
    if not _tree_all_finite(good_state.params):
      return "nothing was saved (the last kept state is not finite)"
    ckpt.save(good_step, params=good_state.params, opt_state=good_state.opt_state,
              data_state=good_data, metrics={"valid_criterion": float("nan")})
    return f"the last good state was saved at step {good_step}"

  def flush_window(compile_seconds: float | None = None):
    """Logs the mean metrics of the steps since the last line (the first step alone, with its
    compile time, so a first progress line appears as soon as training runs); a non-finite step
    among them saves the last good state and raises."""
    if not reporter.pending:
      return
    window = reporter.summarize_window(step)
    if window.non_finite:
      where = save_last_good(window.non_finite[0])
      raise NonFiniteLossError(
          f"non-finite loss, gradient or parameters at step(s) {window.non_finite[:5]} (objective "
          f"{obj_cfg.name}); those updates were skipped and {where} in {workdir}. "
          "Lower the learning rate, set optimizer.clip_norm, or check the data.")
    # Inside the loop `epoch` is the 0-based index of the epoch the step belongs to.
    reporter.log_train(step, epoch + 1, optim.learning_rate(state.opt_state), window.means,
                       compile_seconds)
    snapshot()

  def interrupted():
    # The steps since the last progress line are saved with the checkpoint, not logged: the
    # resumed run logs the same records (same windows) as an uninterrupted one. A non-finite
    # step among them is reported now, as at any progress line.
    if reporter.pending and reporter.summarize_window(step).non_finite:
      flush_window()
    latest = ckpt.latest_step()
    saved_step = latest if latest == step else save({"valid_criterion": float("nan")})
    message = (f"{signals[0]} received: stopped after step {saved_step} and saved it in "
               f"{ckpt.directory}; rerun the same command to resume")
    logging.warning("%s", message)
    raise TrainingInterrupted(message)

  snapshot()
  reason = _stop_reason(step, epoch, config, reporter.elapsed()) or early.stop_reason()
  while reason is None:
    if data_iter is None:
      data_iter = train_pipe.epoch(epoch)
    for batch in data_iter:
      tokens = int(np.sum((batch["lengths"] - 1) * batch["valid"])) * jax.process_count()
      step_start = time.perf_counter()
      state, metrics = train_step(state, shard_batch(batch, mesh), key)
      step += 1
      reporter.add_step(metrics, tokens)
      if not reporter.compiled:
        # The first step compiles: leave it out of the throughput and ETA clocks. A fresh run logs
        # it alone at once; a resumed one keeps it in its window, so that metrics.jsonl holds the
        # same records as a run that never stopped.
        jax.block_until_ready(metrics)
        compile_seconds = time.perf_counter() - step_start
        if resuming:
          logging.info("step %d: first step after resuming (compilation) %.1f s", step,
                       compile_seconds)
        else:
          flush_window(compile_seconds=compile_seconds)
        reporter.mark_compiled(step)
      if signals:
        interrupted()
      if step % config.log_every_steps == 0:
        flush_window()
      reason = _stop_reason(step, epoch, config, reporter.elapsed())
      if reason:
        break
      # A validation (and its save) follows at once at the end of the epoch: the periodic save
      # is left to it, since one step is saved once.
      if (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
          and not _iterator_exhausted(data_iter)):
        flush_window()
        save({"valid_criterion": float("nan")})
    flush_window()
    epoch_done = reason is None or _iterator_exhausted(data_iter)
    if epoch_done:
      epoch += 1
      data_iter = None
    last_valid = validation_metrics(eval_step, state.params, valid_pipe, mesh, eval_key)
    if plateau.update(last_valid["criterion"]):
      new_lr = optim.learning_rate(state.opt_state) * plateau.factor
      state = state._replace(opt_state=optim.with_learning_rate(state.opt_state, new_lr))
      logging.info("no validation improvement for %s: learning rate → %.3g",
                   reporting.plural(plateau.patience, "epoch"), new_lr)
    # 1-based: the epoch just finished (`epoch` after the increment), or the one stopped in.
    reporter.log_validation(step, epoch if epoch_done else epoch + 1, last_valid,
                            end_of_epoch=epoch_done)
    if early.update(last_valid["criterion"]):
      logging.info("early stopping: no validation improvement for %s (best criterion %.4f)",
                   reporting.plural(early.bad_validations, "validation"), early.best)
    save({"valid_criterion": last_valid["criterion"]})
    if snapshots and snapshots[-1][0] == step:
      snapshots.pop()  # the plateau may have changed the learning rate: take a fresh snapshot
    snapshot()
    if signals:
      interrupted()
    if reason is None:
      reason = _stop_reason(step, epoch, config, reporter.elapsed()) or early.stop_reason()
  logging.info("training stopped at step %d: %s", step, reason)
  checkpoint_lib.save_json(workdir, STOP_FILE, stop_record(step, epoch, reason))
  return last_valid


# Why the last invocation of training stopped (`stop_record`), written when it stops by a rule
# (not on an interruption or an error) and removed when training starts again: a run holding it
# is not training.
STOP_FILE = "stopped.json"
# The kinds of stop, from the rule that stopped training: the first three end a run, max_minutes
# is the budget of one invocation (rerunning goes on).
STOP_KINDS = ("early_stopping", "max_epochs", "max_steps", "max_minutes")


def stop_record(step: int, epoch: int, reason: str) -> dict:
  """{"step", "epochs" (finished), "reason" (the log's words), "kind" (one of STOP_KINDS)}."""
  kind = reason.split("=", 1)[0]
  if kind == "early_stopping_patience":
    kind = "early_stopping"
  return {"step": step, "epochs": epoch, "reason": reason, "kind": kind}


# Schedule fields a resume may change (the flag that sets each): they apply from the resumed step
# on, with the counts saved in the checkpoint.
_RESUME_CHANGEABLE_SCHEDULES = (
    ("optimizer.plateau_factor", "--config.optimizer.plateau_factor"),
    ("optimizer.plateau_patience", "--config.optimizer.plateau_patience"),
    ("early_stopping_patience", "--config.early_stopping_patience"))


def _log_changed_schedules(config, saved_config: dict, plateau: optim.PlateauSchedule,
                           early: optim.EarlyStopping, step: int) -> None:
  """One log line for each schedule field of `_RESUME_CHANGEABLE_SCHEDULES` whose value differs
  from the resumed run's (as the learning rate's), so a change is never applied silently."""
  counts = {"optimizer.plateau_patience": ("epoch", plateau.bad_epochs),
            "early_stopping_patience": ("validation", early.bad_validations)}
  for field, flag in _RESUME_CHANGEABLE_SCHEDULES:
    was = experiment.saved_value(saved_config, field)
    now = experiment.saved_value(config, field)
    if was is None or now is None or was == now:
      continue
    count = ""
    if field in counts:
      unit, value = counts[field]
      count = f"; {reporting.plural(value, unit)} without improvement so far"
    logging.info("%s=%r differs from the run's %r: %r applies from step %d on%s", flag, now, was,
                 now, step, count)


def _iterator_exhausted(it) -> bool:
  """Whether a grain iterator has no batch left (peeking restores its state)."""
  state = it.get_state()
  try:
    next(it)
  except StopIteration:
    return True
  it.set_state(state)
  return False
