"""Training: the train state, one jitted data-parallel train step, and the loop around it.

Data parallelism is `jax.jit` over a `Mesh` with one "data" axis: the batch is sharded along its
rows, parameters and optimiser state are replicated, and the loss is a plain mean over the global
batch, so XLA inserts the gradient all-reduce (DESIGN §1, §6). No flags live here: `launch/train.py`
parses them and calls `train_and_evaluate(config, workdir)`.

Along the data flow: `build_training_setup` turns a config into a mesh, an optimiser
(`mimtext.optim`) and a replicated initial state; `make_train_step` / `make_eval_step` jit the
steps; `train_and_evaluate` runs the loop, which steers the learning rate and stopping with
`mimtext.optim`'s schedules and tells what happens through a `mimtext.reporting.Reporter` (log
lines, metrics.jsonl, TensorBoard). The run holds its workdir's lock and turns SIGTERM / SIGINT
into a saved stop through `mimtext.run_control`.

The loop's helpers take its state explicitly: a `LoopContext` (what the loop uses but never
replaces: config, checkpointer, reporter, pipelines, schedules, jitted steps) and a `LoopState`
(what it changes: train state, step, epoch, input iterator, fallback snapshots).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
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
from mimtext import run_control
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


# ----------------------------------------------------------------------------- mesh and steps


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh with axis "data" over the first `num_devices` devices (default: all)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise experiment.ConfigError(f"--config.num_devices={num_devices}: asked for {num_devices} "
                                   f"devices but only {len(devices)} are visible")
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
  step, save it and raise `TrainingInterrupted`; a second trainer on the same workdir is refused
  (the workdir lock and the signals: `mimtext.run_control`).
  """
  with run_control.held_workdir(workdir, cleanup=(checkpoint_lib.CHECKPOINT_DIR,)), \
      run_control.stop_signals() as signals:
    return _train_and_evaluate(config, workdir, signals)


def _train_and_evaluate(config, workdir: str, signals: list[str]) -> dict[str, float]:
  # Closed on every exit, errors included, so orbax's thread pool never outlives the run (an
  # unclosed manager prints a second traceback at interpreter exit), and the event file is closed.
  with checkpoint_lib.Checkpointer(workdir, best_metric="valid_criterion") as ckpt, \
      reporting.Reporter(workdir, max_epochs=config.max_epochs,
                         max_minutes=config.max_minutes) as reporter:
    return _train_loop(config, workdir, signals, ckpt, reporter)


# A state the loop may fall back to: (step, a copy of the train state, the data state to save).
Snapshot = tuple[int, TrainState, dict]


@dataclasses.dataclass(frozen=True)
class LoopContext:
  """What the training loop uses but never replaces, built once before the first step.

  `plateau` and `early` change as they are updated (their own state), `signals` as signals arrive
  (`run_control.stop_signals`); the fields themselves stay the same objects for the whole run.
  """
  config: ml_collections.ConfigDict
  workdir: str
  signals: list[str]            # names of the stop signals received so far
  ckpt: checkpoint_lib.Checkpointer
  reporter: reporting.Reporter
  mesh: Mesh
  objective: str                # the objective's name, for error messages
  train_pipe: pipeline_lib.BatchPipeline
  valid_pipe: pipeline_lib.BatchPipeline
  plateau: optim.PlateauSchedule
  early: optim.EarlyStopping
  train_step: Callable
  eval_step: Callable
  key: Array                    # the train steps' key (each step folds its step number in)
  eval_key: Array
  resuming: bool                # whether the run started from a checkpoint


@dataclasses.dataclass
class LoopState:
  """The variables the training loop changes; every helper of the loop reads and writes them here.

  `epoch` counts the epochs finished (the 0-based index of the one running); what is logged and
  recorded numbers them from 1 (see mimtext.reporting). `data_iter` is the input iterator of the
  running epoch, None between epochs (the next save or epoch opens it). `snapshots` holds the
  states at the start of the previous and the current log window (copies: the train step donates
  its input): the last states known to have a finite loss and finite parameters.
  """
  state: TrainState
  step: int
  epoch: int
  data_iter: Any = None
  snapshots: list[Snapshot] = dataclasses.field(default_factory=list)


def _train_loop(config, workdir: str, signals: list[str], ckpt: checkpoint_lib.Checkpointer,
                reporter: reporting.Reporter) -> dict[str, float]:
  """Trains from a fresh or resumed state until a stopping rule holds; returns the last
  validation metrics ({} if a rule holds before the first step).

  Each round trains to the end of the epoch (or to a stopping rule), then validates and saves
  (`_validate`). Stopping by a rule writes `stopped.json`; a stop signal raises
  `TrainingInterrupted` after saving.
  """
  ctx, loop = _start_loop(config, workdir, signals, ckpt, reporter)
  last_valid: dict[str, float] = {}
  _snapshot(ctx, loop)
  reason = _round_stop_reason(ctx, loop)
  while reason is None:
    reason = _train_epoch(ctx, loop)
    last_valid = _validate(ctx, loop, reason)
    if reason is None:
      reason = _round_stop_reason(ctx, loop)
  logging.info("training stopped at step %d: %s", loop.step, reason)
  checkpoint_lib.save_json(workdir, STOP_FILE, stop_record(loop.step, loop.epoch, reason))
  return last_valid


def _round_stop_reason(ctx: LoopContext, loop: LoopState) -> str | None:
  """Why no further round of training starts: a step, epoch or time limit, or early stopping."""
  return (_stop_reason(loop.step, loop.epoch, ctx.config, ctx.reporter.elapsed())
          or ctx.early.stop_reason())


def _start_loop(config, workdir: str, signals: list[str], ckpt: checkpoint_lib.Checkpointer,
                reporter: reporting.Reporter) -> tuple[LoopContext, LoopState]:
  """Builds everything the loop needs, fresh or resumed from the latest checkpoint of `ckpt`.

  Every resume condition is checked and the checkpoint restored before anything is written; only
  then the reporter starts and process 0 removes `stopped.json` and writes `vocab.txt` and
  `config.json`.

  Returns:
    The loop's fixed context and its state at the step training continues from.
  """
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
  mesh, state, opt = setup.mesh, setup.state, config.optimizer
  logging.info("model: %s parameters; corpus %s: %s",
               f"{sentence_ae.count_params(state.params):,}", corpus.name,
               {k: len(s.ids) for k, s in corpus.splits.items()})

  train_pipe = make_pipeline(corpus.splits["train"], config, train=True, seed=config.seed)
  valid_split = corpus.splits["valid"]
  if config.eval.max_valid_sentences:
    valid_split = valid_split.head(config.eval.max_valid_sentences)
  valid_pipe = make_pipeline(valid_split, config, train=False, seed=config.seed)
  plateau = optim.PlateauSchedule(opt.plateau_factor, opt.plateau_patience)
  early = optim.EarlyStopping(config.get("early_stopping_patience", 0))
  epoch, data_iter = 0, None
  if resuming:
    experiment.check_vocabulary_matches(ckpt, "latest", corpus.vocab.size, vocab_path)
    state, data_iter, epoch, plateau, early = _resume(config, workdir, saved_config, ckpt,
                                                      reporter, state, mesh, train_pipe, early)
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
  ctx = LoopContext(
      config=config, workdir=workdir, signals=signals, ckpt=ckpt, reporter=reporter, mesh=mesh,
      objective=setup.obj_cfg.name, train_pipe=train_pipe, valid_pipe=valid_pipe,
      plateau=plateau, early=early, train_step=train_step, eval_step=eval_step,
      key=jax.random.PRNGKey(config.seed + 1), eval_key=jax.random.PRNGKey(config.seed + 2),
      resuming=resuming)
  return ctx, LoopState(state=state, step=step, epoch=epoch, data_iter=data_iter)


def _resume(config, workdir: str, saved_config: dict, ckpt: checkpoint_lib.Checkpointer,
            reporter: reporting.Reporter, template: TrainState, mesh: Mesh,
            train_pipe: pipeline_lib.BatchPipeline, early: optim.EarlyStopping
            ) -> tuple[TrainState, Any, int, optim.PlateauSchedule, optim.EarlyStopping]:
  """Restores the latest checkpoint: the train state (replicated over `mesh`, shaped as
  `template`), the position of `train_pipe`, the schedules (with `early`'s patience, this
  invocation's) and the reporter's open log window. A learning rate or schedule that `config`
  changes from `saved_config` (the run's config.json) is applied and logged.

  Returns:
    (state, data_iter, epoch, plateau, early): the replicated train state, the input iterator and
    0-based index of the epoch to go on with, and the schedules with their restored counts.

  Raises:
    experiment.ConfigError: the pipeline state does not fit this invocation's data flags.
    checkpoint_lib.CheckpointError: the checkpoint's data state is unreadable.
  """
  opt = config.optimizer
  restored = ckpt.restore("latest", params_template=template.params,
                          opt_state_template=template.opt_state)
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
  return state, data_iter, epoch, plateau, early


def _train_epoch(ctx: LoopContext, loop: LoopState) -> str | None:
  """Trains on the rest of the running epoch, or until a stopping rule holds; returns the rule's
  reason, or None at the end of the epoch.

  Logs a progress line every `log_every_steps` steps, saves every `checkpoint_every_steps`
  (except at the epoch's last step, which the validation saves), and stops at once on a signal.
  """
  config = ctx.config
  if loop.data_iter is None:
    loop.data_iter = ctx.train_pipe.epoch(loop.epoch)
  for batch in loop.data_iter:
    _train_step(ctx, loop, batch)
    if ctx.signals:
      _interrupted(ctx, loop)
    if loop.step % config.log_every_steps == 0:
      _flush_window(ctx, loop)
    reason = _stop_reason(loop.step, loop.epoch, config, ctx.reporter.elapsed())
    if reason:
      return reason
    # A validation (and its save) follows at once at the end of the epoch: the periodic save
    # is left to it, since one step is saved once.
    if (config.checkpoint_every_steps and loop.step % config.checkpoint_every_steps == 0
        and not _iterator_exhausted(loop.data_iter)):
      _flush_window(ctx, loop)
      _save(ctx, loop, {"valid_criterion": float("nan")})
  return None


def _train_step(ctx: LoopContext, loop: LoopState, batch: dict[str, np.ndarray]) -> None:
  """Runs one train step on `batch` (this process's rows) and adds its metrics to the window."""
  tokens = int(np.sum((batch["lengths"] - 1) * batch["valid"])) * jax.process_count()
  step_start = time.perf_counter()
  loop.state, metrics = ctx.train_step(loop.state, shard_batch(batch, ctx.mesh), ctx.key)
  loop.step += 1
  ctx.reporter.add_step(metrics, tokens)
  if not ctx.reporter.compiled:
    # The first step compiles: leave it out of the throughput and ETA clocks. A fresh run logs
    # it alone at once; a resumed one keeps it in its window, so that metrics.jsonl holds the
    # same records as a run that never stopped.
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - step_start
    if ctx.resuming:
      logging.info("step %d: first step after resuming (compilation) %.1f s", loop.step,
                   compile_seconds)
    else:
      _flush_window(ctx, loop, compile_seconds=compile_seconds)
    ctx.reporter.mark_compiled(loop.step)


def _validate(ctx: LoopContext, loop: LoopState, reason: str | None) -> dict[str, float]:
  """Ends a round of training: logs the open window, validates, steps the plateau schedule and
  early stopping, and saves the step with its criterion; returns the validation metrics.

  Args:
    ctx: the loop's context.
    loop: the loop's state; the epoch counts as finished (`loop.epoch` + 1) if `reason` is None
      or its input is exhausted.
    reason: why training stopped within the epoch (`_train_epoch`), or None at its end.
  """
  _flush_window(ctx, loop)
  epoch_done = reason is None or _iterator_exhausted(loop.data_iter)
  if epoch_done:
    loop.epoch += 1
    loop.data_iter = None
  valid = validation_metrics(ctx.eval_step, loop.state.params, ctx.valid_pipe, ctx.mesh,
                             ctx.eval_key)
  if ctx.plateau.update(valid["criterion"]):
    new_lr = optim.learning_rate(loop.state.opt_state) * ctx.plateau.factor
    loop.state = loop.state._replace(opt_state=optim.with_learning_rate(loop.state.opt_state,
                                                                        new_lr))
    logging.info("no validation improvement for %s: learning rate → %.3g",
                 reporting.plural(ctx.plateau.patience, "epoch"), new_lr)
  # 1-based: the epoch just finished (`epoch` after the increment), or the one stopped in.
  ctx.reporter.log_validation(loop.step, loop.epoch if epoch_done else loop.epoch + 1, valid,
                              end_of_epoch=epoch_done)
  if ctx.early.update(valid["criterion"]):
    logging.info("early stopping: no validation improvement for %s (best criterion %.4f)",
                 reporting.plural(ctx.early.bad_validations, "validation"), ctx.early.best)
  _save(ctx, loop, {"valid_criterion": valid["criterion"]})
  if loop.snapshots and loop.snapshots[-1][0] == loop.step:
    loop.snapshots.pop()  # the plateau may have changed the learning rate: take a fresh snapshot
  _snapshot(ctx, loop)
  if ctx.signals:
    _interrupted(ctx, loop)
  return valid


def _data_state(ctx: LoopContext, loop: LoopState) -> dict:
  """The data state a checkpoint of the current step holds: the input pipeline's position (the
  next epoch's iterator is opened if none is), the schedules and the open log window."""
  if loop.data_iter is None:
    loop.data_iter = ctx.train_pipe.epoch(loop.epoch)
  return {"pipeline": ctx.train_pipe.state(loop.data_iter, loop.epoch),
          "plateau": ctx.plateau.state(), "early_stopping": ctx.early.state(),
          "window": ctx.reporter.window_state()}


def _snapshot(ctx: LoopContext, loop: LoopState) -> None:
  """Keeps a copy of the current state (and its data state) as the newest of two snapshots."""
  loop.snapshots.append((loop.step, _copy_tree(loop.state), _data_state(ctx, loop)))
  del loop.snapshots[:-2]


def _save(ctx: LoopContext, loop: LoopState, metrics: dict[str, float]) -> int:
  """Saves the current state at `loop.step` (the loop saves each step at most once: a periodic
  save that a validation follows at the same step is left to the validation); returns the step.

  Raises:
    NonFiniteLossError: the parameters are not all finite (nothing is saved).
  """
  if not _tree_all_finite(loop.state.params):
    raise NonFiniteLossError(f"parameters at step {loop.step} are not all finite; not saved")
  ctx.ckpt.save(loop.step, params=loop.state.params, opt_state=loop.state.opt_state,
                data_state=_data_state(ctx, loop), metrics=metrics)
  return loop.step


def _save_last_good(ctx: LoopContext, loop: LoopState, bad_first: int) -> str:
  """Saves the newest snapshot whose own loss was finite (one taken before `bad_first`); returns
  what is on disk now, in words for the error message."""
  good = [s for s in loop.snapshots if s[0] < bad_first - 1]
  if not good:
    return "nothing was saved"
  good_step, good_state, good_data = good[-1]
  latest = ctx.ckpt.latest_step()
  if latest is not None and good_step <= latest:
    return f"the newest checkpoint on disk is step {latest}"
  if not _tree_all_finite(good_state.params):
    return "nothing was saved (the last kept state is not finite)"
  ctx.ckpt.save(good_step, params=good_state.params, opt_state=good_state.opt_state,
                data_state=good_data, metrics={"valid_criterion": float("nan")})
  return f"the last good state was saved at step {good_step}"


def _flush_window(ctx: LoopContext, loop: LoopState, compile_seconds: float | None = None
                  ) -> None:
  """Logs the mean metrics of the steps since the last line (the first step alone, with its
  compile time, so a first progress line appears as soon as training runs); a non-finite step
  among them saves the last good state and raises.

  Raises:
    NonFiniteLossError: a step of the window had a non-finite loss, gradient or parameters.
  """
  reporter = ctx.reporter
  if not reporter.pending:
    return
  window = reporter.summarize_window(loop.step)
  if window.non_finite:
    where = _save_last_good(ctx, loop, window.non_finite[0])
    raise NonFiniteLossError(
        f"non-finite loss, gradient or parameters at step(s) {window.non_finite[:5]} (objective "
        f"{ctx.objective}); those updates were skipped and {where} in {ctx.workdir}. "
        "Lower the learning rate, set optimizer.clip_norm, or check the data.")
  # Inside the loop `epoch` is the 0-based index of the epoch the step belongs to.
  reporter.log_train(loop.step, loop.epoch + 1, optim.learning_rate(loop.state.opt_state),
                     window.means, compile_seconds)
  _snapshot(ctx, loop)


def _interrupted(ctx: LoopContext, loop: LoopState) -> None:
  """Saves the current step (unless it is already the newest checkpoint) and stops.

  Raises:
    run_control.TrainingInterrupted: always, naming the signal and the step saved.
    NonFiniteLossError: a step since the last progress line was not finite.
  """
  # The steps since the last progress line are saved with the checkpoint, not logged: the
  # resumed run logs the same records (same windows) as an uninterrupted one. A non-finite
  # step among them is reported now, as at any progress line.
  if ctx.reporter.pending and ctx.reporter.summarize_window(loop.step).non_finite:
    _flush_window(ctx, loop)
  latest = ctx.ckpt.latest_step()
  if latest == loop.step:
    saved_step = latest
  else:
    saved_step = _save(ctx, loop, {"valid_criterion": float("nan")})
  message = (f"{ctx.signals[0]} received: stopped after step {saved_step} and saved it in "
             f"{ctx.ckpt.directory}; rerun the same command to resume")
  logging.warning("%s", message)
  raise run_control.TrainingInterrupted(message)


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
