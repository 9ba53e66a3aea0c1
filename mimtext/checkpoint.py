"""Orbax checkpoints of a training run: the latest and the best-by-validation step.

This is the only module of mimtext that imports orbax. A run directory (`workdir`) looks like::

  workdir/
    config.json              # save_json(workdir, "config.json", ...)
    checkpoints/
      checkpointer_index.json  # best step and value, written by the primary process
      1200/                  # latest step
        params/ opt_state/ data_state/ metrics/
      800/                   # best step so far (when it is not also the latest)

Every step holds four orbax items: "params" and "opt_state" (pytrees of arrays, `StandardSave`)
and "data_state" and "metrics" (JSON). `Checkpointer.save` blocks until the step is committed, then
deletes every step that is neither the new latest nor the best, so at most two steps stay on disk.

Multi-host: every process calls `save`, `restore` and `close` (orbax synchronises them); metrics
must be the same on every process (global means are), so every process takes the same decisions.
Small JSON files (the index, `save_json`) are written by process 0 only, onto a shared workdir.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any

CHECKPOINT_DIR = "checkpoints"
INDEX_FILE = "checkpointer_index.json"
_JSON_ITEMS = ("data_state", "metrics")

_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """A checkpoint is missing, or does not fit the template it is restored into."""


# ---------------------------------------------------------------------------------------------
# JSON files beside the checkpoints.


def _is_primary() -> bool:
  return jax.process_index() == 0


def _json_path(workdir: str | epath.Path, name: str) -> epath.Path:
  return epath.Path(workdir) / name


def _write_json_atomic(path: epath.Path, obj: Any) -> None:
  """Writes `obj` as JSON to a unique temporary file beside `path`, then renames it onto `path`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)


def save_json(workdir: str, name: str, obj: Any) -> None:
  """Atomically writes `obj` as JSON to `workdir/name` (process 0 only).

  Args:
    workdir: the run directory (created if absent).
    name: file name inside `workdir`, e.g. "config.json" or "vocab.json".
    obj: a JSON-serialisable object.
  """
  if _is_primary():
    _write_json_atomic(_json_path(workdir, name), obj)


def load_json(workdir: str, name: str) -> Any:
  """Reads the JSON file `workdir/name` written by `save_json`.

  Raises:
    CheckpointError: when the file does not exist.
  """
  path = _json_path(workdir, name)
  if not path.exists():
    raise CheckpointError(f"no {name!r} in run directory {workdir!s}")
  return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# Templates: abstract targets and structure / shape checks.


def _key_name(key: Any) -> str:
  """One path entry as a plain string, so dict keys, namedtuple fields and indices compare equal
  whether they come from a live pytree or from orbax metadata (which stores namedtuples as dicts
  and tuples as lists)."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes_by_path(tree: PyTree) -> dict[str, tuple[int, ...]]:
  """Maps "a/b/0/c" paths of the array leaves of `tree` to their shapes, in flattening order."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _first_mismatch(saved: dict[str, tuple], template: dict[str, tuple]) -> str | None:
  """Describes the first path whose presence or shape differs, or returns None when all agree."""
  for path, shape in template.items():
    if path not in saved:
      return f"'{path}' is in the template (shape {shape}) but not in the checkpoint"
    if saved[path] != shape:
      return f"'{path}' has shape {saved[path]} in the checkpoint but {shape} in the template"
  for path, shape in saved.items():
    if path not in template:
      return f"'{path}' is in the checkpoint (shape {shape}) but not in the template"
  return None


def _first_non_finite(tree: PyTree) -> str | None:
  """The path of the first floating leaf of `tree` holding a NaN or an infinity, or None."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      leaf = leaf.addressable_data(0)  # replicated parameters: this process's copy
    value = np.asarray(jax.device_get(leaf))
    if jax.numpy.issubdtype(value.dtype, jax.numpy.inexact) and not np.all(
        np.isfinite(value.astype(np.float32))):
      return "/".join(_key_name(k) for k in path)
  return None


def _abstract_leaf(leaf: Any) -> jax.ShapeDtypeStruct:
  """A restore target for one template leaf; jax arrays keep their sharding."""
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return leaf
  sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
  return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)


def _abstract_tree(template: PyTree) -> PyTree:
  return jax.tree.map(_abstract_leaf, template)


# ---------------------------------------------------------------------------------------------
# Best-so-far bookkeeping.


def _metric_value(metrics: Mapping[str, Any] | None, name: str) -> float:
  """The tracked metric as a float; NaN when it is absent."""
  if not metrics or name not in metrics:
    return math.nan
  return float(metrics[name])


def _improves(value: float, best: float | None, mode: str) -> bool:
  """Whether `value` is strictly better than `best` (NaN never is; anything beats no best)."""
  if math.isnan(value):
    return False
  if best is None:
    return True
  return value < best if mode == "min" else value > best


class Checkpointer:
  """Keeps the latest and the best-by-validation checkpoint of a run under `workdir/checkpoints`.

  Example::

    ckpt = Checkpointer(workdir, best_metric="valid_loss", best_mode="min")
    ckpt.save(step, params=params, opt_state=opt_state, data_state={"epoch": 3},
              metrics={"valid_loss": 4.2})
    out = ckpt.restore("best", params_template=params)
    ckpt.close()
  """

  def __init__(self, workdir: str, *, best_metric: str = "valid_loss", best_mode: str = "min"):
    """Opens (creating if needed) `workdir/checkpoints` and recovers the latest and best steps.

    Args:
      workdir: the run directory.
      best_metric: key of `metrics` that ranks checkpoints.
      best_mode: "min" (lower is better) or "max".
    """
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
    self.workdir = str(workdir)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.directory = epath.Path(workdir) / CHECKPOINT_DIR
    self._manager = self._make_manager()
    self._best_step, self._best_value = self._recover_best()

  # --- construction -------------------------------------------------------------------------

  def _make_manager(self) -> ocp.CheckpointManager:
    # Nothing is deleted by orbax itself (max_to_keep=None); `save` prunes to latest + best.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=False)
    handlers = {
        "params": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(),
        "data_state": ocp.JsonCheckpointHandler(),
    }  # "metrics" is registered by the manager itself (a JSON item of that name).
    return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def _index_path(self) -> epath.Path:
    return self.directory / INDEX_FILE

  def _read_index(self) -> dict | None:
    path = self._index_path()
    return json.loads(path.read_text()) if path.exists() else None

  def _recover_best(self) -> tuple[int | None, float | None]:
    """Best step and value from the index, or recomputed from the metrics of the steps on disk
    when the index is missing, stale (its step was deleted) or tracks another metric / mode."""
    index = self._read_index()
    steps = self.all_steps()
    if (index is not None and index.get("best_metric") == self.best_metric
        and index.get("best_mode") == self.best_mode
        and (index.get("best_step") is None or index["best_step"] in steps)):
      return index.get("best_step"), index.get("best_value")
    best_step, best_value = None, None
    for step in steps:
      value = _metric_value(self._read_metrics(step), self.best_metric)
      if _improves(value, best_value, self.best_mode):
        best_step, best_value = step, value
    return best_step, best_value

  def _read_metrics(self, step: int) -> dict:
    restored = self._manager.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))
    return dict(restored["metrics"] or {})

  # --- queries ------------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    """The newest saved step, or None when there is none."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best `best_metric` so far, or None (no save, or every value was NaN)."""
    return self._best_step

  def best_value(self) -> float | None:
    """The value of `best_metric` at `best_step()`, or None."""
    return self._best_value

  def all_steps(self) -> list[int]:
    """The steps on disk, ascending."""
    return sorted(self._manager.all_steps())

  def resolve_step(self, step: str | int) -> int:
    """Turns "latest", "best" or an integer step into a step that exists on disk.

    Raises:
      CheckpointError: naming the workdir and the available steps, when there is no such step.
    """
    available = self.all_steps()
    if step == "latest":
      resolved = self.latest_step()
    elif step == "best":
      resolved = self._best_step
    elif isinstance(step, (int, np.integer)) and not isinstance(step, bool):
      resolved = int(step) if int(step) in available else None
    else:
      raise CheckpointError(f"step must be 'latest', 'best' or an int, got {step!r}")
    if resolved is None:
      raise CheckpointError(
          f"no checkpoint {step!r} in {self.directory} (workdir {self.workdir}); "
          f"available steps: {available or 'none'}")
    return resolved

  # --- save ---------------------------------------------------------------------------------

  def save(self, step: int, *, params: PyTree, opt_state: PyTree, data_state: dict,
           metrics: dict[str, float]) -> bool:
    """Saves a step, makes it the latest, and the best when `metrics[best_metric]` improves.

    Blocks until the step is committed on disk. Afterwards only the new latest and the best step
    remain. Every process must call it with the same step and metrics.

    Args:
      step: the training step; must be larger than every saved step.
      params: pytree of arrays.
      opt_state: optimizer state pytree (e.g. an optax state of namedtuples).
      data_state: JSON-serialisable input pipeline state.
      metrics: scalar metrics; values are converted to float (NaN is allowed).

    Returns:
      True when this step became the new best.

    Raises:
      CheckpointError: when `step` is not newer than the latest saved step, or when a floating
        parameter is NaN or infinite (nothing is written then, so every checkpoint on disk, and
        in particular the latest one that pruning always keeps, has finite parameters).
    """
    step = int(step)
    latest = self.latest_step()
    if latest is not None and step <= latest:
      raise CheckpointError(
          f"cannot save step {step} in {self.directory}: step {latest} is already saved")
    bad = _first_non_finite(params)
    if bad is not None:
      raise CheckpointError(
          f"refusing to save step {step} in {self.directory}: parameter '{bad}' is not finite "
          f"(the latest checkpoint, step {latest}, is kept)")
    metrics = {str(k): float(v) for k, v in metrics.items()}
    if self.best_metric not in metrics:
      _log.warning("metric %r absent from the metrics of step %d; it cannot become best",
                   self.best_metric, step)
    # Orbax refuses leafless items (e.g. the EmptyState of a stateless optimizer): skip them;
    # `restore` gives such a template back as it is.
    trees = {"params": params, "opt_state": opt_state}
    args = {name: ocp.args.StandardSave(t) for name, t in trees.items() if jax.tree.leaves(t)}
    args.update(data_state=ocp.args.JsonSave(data_state), metrics=ocp.args.JsonSave(metrics))
    self._manager.save(step, args=ocp.args.Composite(**args), force=True)
    self._manager.wait_until_finished()
    value = _metric_value(metrics, self.best_metric)
    improved = _improves(value, self._best_value, self.best_mode)
    if improved:
      self._best_step, self._best_value = step, value
    self._write_index()
    self._prune(keep={step, self._best_step})
    return improved

  def _write_index(self) -> None:
    if _is_primary():
      _write_json_atomic(self._index_path(), {
          "best_metric": self.best_metric,
          "best_mode": self.best_mode,
          "best_step": self._best_step,
          "best_value": self._best_value,
      })

  def _prune(self, keep: set[int | None]) -> None:
    """Deletes every step on disk that is not in `keep` (a collective call of orbax)."""
    for old in self.all_steps():
      if old not in keep:
        self._manager.delete(old)

  # --- restore ------------------------------------------------------------------------------

  def _check_template(self, step: int, item: str, template: PyTree) -> None:
    metadata = self._manager.item_metadata(step).get(item)
    saved = {} if metadata is None else _shapes_by_path(getattr(metadata, "tree", metadata))
    problem = _first_mismatch(saved, _shapes_by_path(template))
    if problem is not None:
      raise CheckpointError(
          f"{item} template does not match checkpoint step {step} in {self.directory}: {problem} "
          "(a checkpoint of another configuration?)")

  def restore(self, step: str | int = "latest", *, params_template: PyTree,
              opt_state_template: PyTree | None = None) -> dict[str, Any]:
    """Restores a step into the given templates.

    Args:
      step: "latest", "best" or an integer step.
      params_template: pytree of arrays or `jax.ShapeDtypeStruct` giving the structure, shapes,
        dtypes and (for sharded arrays) the shardings the parameters are restored onto.
      opt_state_template: the same for the optimizer state (e.g. `tx.init(params)`), so the
        optax namedtuple types come back; None restores the parameters only, without reading
        the optimizer state.

    Returns:
      {"step", "params", "opt_state" (None without a template), "data_state", "metrics"}.

    Raises:
      CheckpointError: when the step is absent, or a template's structure or shapes differ
        from the checkpoint (naming the first mismatching path and both shapes).
    """
    resolved = self.resolve_step(step)
    items = {"params": params_template}
    if opt_state_template is not None:
      items["opt_state"] = opt_state_template
    for name, template in items.items():
      self._check_template(resolved, name, template)
    args = {name: ocp.args.StandardRestore(_abstract_tree(t))
            for name, t in items.items() if jax.tree.leaves(t)}
    args.update({name: ocp.args.JsonRestore() for name in _JSON_ITEMS})
    restored = dict(self._manager.restore(resolved, args=ocp.args.Composite(**args)).items())
    trees = {name: restored.get(name, template) for name, template in items.items()}
    return {
        "step": resolved,
        "params": trees["params"],
        "opt_state": trees.get("opt_state"),
        "data_state": restored["data_state"],
        "metrics": restored["metrics"],
    }

  # --- lifecycle ----------------------------------------------------------------------------

  def close(self) -> None:
    """Waits for pending work and releases orbax resources."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()
