"""Orbax checkpoints of a training run: the latest and the best-by-validation step.

This is the only module of mimtext that imports orbax. A run directory (`workdir`) looks like::

  workdir/
    config.json              # save_json(workdir, "config.json", ...)
    checkpoints/
      1200/                  # latest step
        params/ opt_state/ data_state/ integrity/ metrics/
      800/                   # best step so far (when it is not also the latest)

Every step holds five orbax items: "params" and "opt_state" (pytrees of arrays, `StandardSave`),
"data_state" (the input pipeline and schedules, JSON), "integrity" (a SHA-256 of each array item,
JSON, verified on restore) and "metrics" (JSON, written by orbax's CheckpointManager itself).

Which steps stay on disk is orbax's decision, not ours: the manager ranks steps by
`metrics[best_metric]` (`best_fn`) and keeps the union of two preservation policies, the latest
step (`LatestN(1)`) and the best one (`BestN(n=1)`), so at most two steps stay on disk. A NaN or
absent metric ranks last and never becomes best. Ties go to the newer step. Every saved step has
finite parameters (`save` refuses others), so pruning never leaves only a bad checkpoint behind.

Multi-host: every process calls `save`, `restore` and `close` (orbax synchronises them); metrics
must be the same on every process (global means are), so every process takes the same decisions.
Small JSON files (`save_json`) are written by process 0 only, onto a shared workdir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any

CHECKPOINT_DIR = "checkpoints"
_ARRAY_ITEMS = ("params", "opt_state")

_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt, or does not fit the template it is restored into."""


class StepNotFoundError(CheckpointError):
  """The requested step ("latest", "best" or N) is not on disk (a usage error, not damage)."""


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
    CheckpointError: naming the file, when it does not exist or is not valid JSON.
  """
  path = _json_path(workdir, name)
  if not path.exists():
    raise CheckpointError(f"no {name!r} in run directory {workdir!s}")
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path} is corrupt (not valid JSON: {e}); restore it from a copy or "
                          "start a new run directory") from None


# ---------------------------------------------------------------------------------------------
# Templates: abstract targets, structure / shape checks, finiteness and checksums.


def _key_name(key: Any) -> str:
  """One path entry as a plain string, so dict keys, namedtuple fields and indices compare equal
  whether they come from a live pytree or from orbax metadata (which stores namedtuples as dicts
  and tuples as lists)."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _path_name(path) -> str:
  return "/".join(_key_name(k) for k in path)


def _shapes_by_path(tree: PyTree) -> dict[str, tuple[int, ...]]:
  """Maps "a/b/0/c" paths of the array leaves of `tree` to their shapes, in flattening order."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves}


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


def _host_value(leaf: Any) -> np.ndarray:
  """This process's copy of a leaf as numpy (replicated arrays: the first addressable shard)."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    leaf = leaf.addressable_data(0)
  return np.asarray(jax.device_get(leaf))


def _first_non_finite(tree: PyTree) -> str | None:
  """The path of the first floating leaf of `tree` holding a NaN or an infinity, or None."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = _host_value(leaf)
    if np.issubdtype(value.dtype, np.inexact) and not np.all(
        np.isfinite(value.astype(np.float32))):
      return _path_name(path)
  return None


def tree_checksum(tree: PyTree) -> str:
  """SHA-256 over the path, dtype, shape and bytes of every leaf of `tree`, in flattening order.

  Saved beside every step ("integrity") and recomputed on restore, so flipped bytes in the stored
  arrays are caught instead of restored silently. Namedtuple and dict nodes hash alike (paths are
  plain names), so a restored optax state hashes like the one that was saved.
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = np.ascontiguousarray(_host_value(leaf))
    digest.update(f"{_path_name(path)}|{value.dtype.str}|{value.shape}|".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _abstract_leaf(leaf: Any) -> jax.ShapeDtypeStruct:
  """A restore target for one template leaf; jax arrays keep their sharding."""
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return leaf
  sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
  return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)


def _abstract_tree(template: PyTree) -> PyTree:
  return jax.tree.map(_abstract_leaf, template)


@contextlib.contextmanager
def _stderr_captured():
  """Within the block, file descriptor 2 (what C++ threads print too) goes to a temporary file;
  yields a function that returns what was written there (read after the block)."""
  sys.stderr.flush()
  saved = os.dup(2)
  tmp = tempfile.TemporaryFile()
  text: list[str] = []
  os.dup2(tmp.fileno(), 2)
  try:
    yield lambda: "".join(text)
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    tmp.seek(0)
    text.append(tmp.read().decode("utf-8", "replace"))
    tmp.close()


def _one_line(error: BaseException) -> str:
  """"Type: first line of the message", without TensorStore's multi-line spec dump."""
  text = str(error).strip().splitlines()
  first = (text[0] if text else "").split(" See full TensorStore details")[0]
  return f"{type(error).__name__}: {first}"[:300]


# ---------------------------------------------------------------------------------------------
# Ranking for orbax's best-by-metric policy.


# A key of every step's metrics written since checksums (the "integrity" item) exist: a step that
# has it but no integrity item lost its checksums. Left out of `Checkpointer.metrics`.
FORMAT_KEY = "checkpoint_format"
# Where training moves a step whose metrics cannot be read (`Checkpointer`), beside checkpoints/.
CORRUPT_DIR = "corrupt_checkpoints"
CHECKSUMMED_FORMAT = 2


def _metric_value(metrics: Mapping[str, Any] | None, name: str) -> float:
  """The tracked metric as a float; NaN when it is absent."""
  if not metrics or name not in metrics:
    return math.nan
  try:
    return float(metrics[name])
  except (TypeError, ValueError):
    return math.nan


def _ranker(name: str, mode: str):
  """`best_fn` for orbax: the metric, with NaN / absent mapped to the worst possible value."""
  worst = math.inf if mode == "min" else -math.inf

  def rank(metrics: Mapping[str, Any]) -> float:
    value = _metric_value(metrics, name)
    return worst if math.isnan(value) else value

  return rank


class Checkpointer:
  """Keeps the latest and the best-by-validation checkpoint of a run under `workdir/checkpoints`.

  Example::

    ckpt = Checkpointer(workdir, best_metric="valid_loss", best_mode="min")
    ckpt.save(step, params=params, opt_state=opt_state, data_state={"epoch": 3},
              metrics={"valid_loss": 4.2})
    out = ckpt.restore("best", params_template=params)
    ckpt.close()
  """

  def __init__(self, workdir: str, *, best_metric: str = "valid_loss", best_mode: str = "min",
               read_only: bool = False):
    """Opens (creating if needed, unless `read_only`) `workdir/checkpoints`.

    Args:
      workdir: the run directory.
      best_metric: key of `metrics` that ranks checkpoints.
      best_mode: "min" (lower is better) or "max".
      read_only: open for restoring only (evaluation): nothing is created or deleted.

    Raises:
      CheckpointError: one line naming the directory when orbax cannot read it.
    """
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
    self.workdir = str(workdir)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.directory = epath.Path(workdir) / CHECKPOINT_DIR
    self._closed = False
    self._warned_unverified = False
    if jax.process_index() == 0:
      self._set_aside_unreadable_metrics(read_only)
    try:
      self._manager = self._make_manager(read_only)
    except (OSError, ValueError) as e:
      raise CheckpointError(f"cannot open checkpoints in {self.directory}: {_one_line(e)}"
                            ) from None

  def _set_aside_unreadable_metrics(self, read_only: bool) -> None:
    """A step whose metrics file is not valid JSON keeps orbax from opening any step. Training
    moves such a step to `workdir/CORRUPT_DIR/STEP` and goes on from the newest intact one,
    saying so; read-only (evaluation) it is an error naming the step and the file."""
    if not self.directory.exists():
      return
    for step_dir in sorted(self.directory.iterdir(), key=lambda p: p.name):
      path = step_dir / "metrics" / "metrics"
      if not step_dir.name.isdigit() or not path.exists():
        continue
      try:
        json.loads(path.read_text())
        continue
      except (OSError, ValueError) as e:
        problem = (f"checkpoint step {step_dir.name} is corrupt: {path} is unreadable "
                   f"({_one_line(e)})")
      if read_only:
        raise CheckpointError(f"{problem}; move that step directory away to use the others")
      target = epath.Path(self.workdir) / CORRUPT_DIR / step_dir.name
      target.parent.mkdir(parents=True, exist_ok=True)
      if target.exists():
        target = target.parent / f"{step_dir.name}.{int(time.time())}"
      step_dir.rename(target)
      _log.warning("%s: moved it to %s; training goes on from the newest intact step", problem,
                   target)

  def _make_manager(self, read_only: bool) -> ocp.CheckpointManager:
    rank = _ranker(self.best_metric, self.best_mode)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=1),
        ocp.checkpoint_managers.BestN(get_metric_fn=rank, reverse=self.best_mode == "min", n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        best_fn=rank, best_mode=self.best_mode, preservation_policy=policy,
        create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only,
        save_interval_steps=0 if read_only else 1, enable_async_checkpointing=False)
    handlers = {
        "params": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(),
        "data_state": ocp.JsonCheckpointHandler(),
        "integrity": ocp.JsonCheckpointHandler(),
    }  # "metrics" is the manager's own item (written from `save(..., metrics=)`).
    if not read_only:
      return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    # orbax warns that a read-only directory is read only: expected here, so not shown.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
      return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    finally:
      absl_logger.setLevel(level)

  # --- queries ------------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    """The newest saved step, or None when there is none."""
    return self._manager.latest_step()

  def metrics(self, step: int) -> dict[str, Any]:
    """The metrics saved with `step` ({} when it has none), without the format marker."""
    saved = dict(self._manager.metrics(step) or {})
    saved.pop(FORMAT_KEY, None)
    return saved

  def best_step(self) -> int | None:
    """The step with the best `best_metric` (orbax's ranking), or None when no step has one."""
    step = self._manager.best_step()
    if step is None or math.isnan(_metric_value(self.metrics(step), self.best_metric)):
      return None
    return step

  def best_value(self) -> float | None:
    """The value of `best_metric` at `best_step()`, or None."""
    step = self.best_step()
    return None if step is None else _metric_value(self.metrics(step), self.best_metric)

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
      resolved = self.best_step()
    elif isinstance(step, (int, np.integer)) and not isinstance(step, bool):
      resolved = int(step) if int(step) in available else None
    else:
      raise CheckpointError(f"step must be 'latest', 'best' or an int, got {step!r}")
    if resolved is None:
      raise StepNotFoundError(
          f"no checkpoint {step!r} in {self.directory} (workdir {self.workdir}); "
          f"available steps: {available or 'none'}")
    return resolved

  # --- save ---------------------------------------------------------------------------------

  def save(self, step: int, *, params: PyTree, opt_state: PyTree, data_state: dict,
           metrics: dict[str, float]) -> bool:
    """Saves a step, makes it the latest, and the best when `metrics[best_metric]` improves.

    Blocks until the step is committed on disk; orbax then deletes every step that is neither
    the latest nor the best. Every process must call it with the same step and metrics.

    Args:
      step: the training step; must be larger than every saved step.
      params: pytree of arrays.
      opt_state: optimizer state pytree (e.g. an optax state of namedtuples).
      data_state: JSON-serialisable input pipeline state.
      metrics: scalar metrics; values are converted to float (NaN is allowed, and never best).

    Returns:
      True when this step became the new best.

    Raises:
      CheckpointError: when `step` is not newer than the latest saved step, or when a floating
        parameter is NaN or infinite (nothing is written then, so every checkpoint on disk, and
        in particular the latest one that is always kept, has finite parameters).
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
    previous_best = self.best_step()
    # Orbax refuses leafless items (e.g. the EmptyState of a stateless optimizer): skip them;
    # `restore` gives such a template back as it is.
    trees = {"params": params, "opt_state": opt_state}
    args = {name: ocp.args.StandardSave(t) for name, t in trees.items() if jax.tree.leaves(t)}
    integrity = {name: tree_checksum(t) for name, t in trees.items() if jax.tree.leaves(t)}
    args.update(data_state=ocp.args.JsonSave(data_state),
                integrity=ocp.args.JsonSave(integrity))
    self._manager.save(step, args=ocp.args.Composite(**args),
                       metrics={**metrics, FORMAT_KEY: float(CHECKSUMMED_FORMAT)}, force=True)
    self._manager.wait_until_finished()
    return self.best_step() == step and previous_best != step

  # --- restore ------------------------------------------------------------------------------

  def _step_path(self, step: int, item: str) -> epath.Path:
    return self.directory / str(step) / item

  def saved_shapes(self, step: int, item: str) -> dict[str, tuple]:
    """{"path/of/leaf": shape} of an array item of `step`, from its metadata alone.

    Raises CheckpointError (one line) when the item, or its metadata file, is missing or
    unreadable.
    """
    if not self._step_path(step, item).exists():
      raise CheckpointError(f"checkpoint step {step} is incomplete: "
                            f"{self._step_path(step, item)} is missing")
    if not (self._step_path(step, item) / "_METADATA").exists():
      raise CheckpointError(f"checkpoint step {step} is corrupt: "
                            f"{self._step_path(step, item) / '_METADATA'}, the {item} item's "
                            "metadata (tree structure and shapes), is missing")
    try:
      metadata = self._manager.item_metadata(step).get(item)
    except Exception as e:  # noqa: BLE001 — any unreadable metadata is a corrupt checkpoint.
      raise CheckpointError(f"cannot read the metadata of {self._step_path(step, item)}: "
                            f"{_one_line(e)}") from None
    if metadata is None:
      raise CheckpointError(f"checkpoint step {step} is corrupt: the metadata of "
                            f"{self._step_path(step, item)} is empty")
    return _shapes_by_path(getattr(metadata, "tree", metadata))

  def _check_template(self, step: int, item: str, template: PyTree) -> None:
    saved = self.saved_shapes(step, item)
    problem = _first_mismatch(saved, _shapes_by_path(template))
    if problem is not None:
      raise CheckpointError(
          f"{item} template does not match checkpoint step {step} in {self.directory}: {problem} "
          "(a checkpoint of another configuration?)")

  def _verify(self, step: int, trees: dict[str, PyTree], recorded: dict | None) -> None:
    """Recomputes each restored item's checksum and compares it with the one saved beside it.

    A step without checksums restores unverified only when it was written before checksums
    existed (its metrics lack `FORMAT_KEY`; said once per Checkpointer); one written since has
    lost its integrity item, and is corrupt.
    """
    if recorded is None:
      saved = self._manager.metrics(step)
      if not saved or FORMAT_KEY in saved:
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} is corrupt: "
            f"{self._step_path(step, 'integrity')}, the checksums it was saved with, is missing"
            + ("" if saved else f", and so is {self._step_path(step, 'metrics')}")
            + " (restore the directory from a copy, or evaluate another step)")
      if not self._warned_unverified:
        _log.warning("checkpoint step %d in %s was written before checksums; restored "
                     "unverified (said once)", step, self.directory)
        self._warned_unverified = True
      return
    for name, tree in trees.items():
      if name in recorded and tree_checksum(tree) != recorded[name]:
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} is corrupt: the {name} arrays differ "
            "from the checksum recorded when they were saved (restore the directory from a copy, "
            "or evaluate another step)")

  def _unreadable(self, step: int, args: dict, error: Exception) -> CheckpointError:
    """The error of a step orbax could not read, naming the item that fails (e.g.
    `.../checkpoints/1/data_state`): each item is read alone to find it (only on this failure
    path). Falls back to the step when every item reads alone."""
    for name, arg in args.items():
      try:
        self._manager.restore(step, args=ocp.args.Composite(**{name: arg}))
      except Exception as e:  # noqa: BLE001 — as in `restore`.
        return CheckpointError(
            f"cannot read {self._step_path(step, name)} ({name} of checkpoint step {step}; "
            f"corrupt?): {_one_line(e)}; restore the directory from a copy, or use another step")
    return CheckpointError(f"cannot read checkpoint step {step} in {self.directory} "
                           f"(corrupt?): {_one_line(error)}")

  def restore(self, step: str | int = "latest", *, params_template: PyTree,
              opt_state_template: PyTree | None = None, data_state: bool = True
              ) -> dict[str, Any]:
    """Restores a step into the given templates and verifies its checksums.

    Args:
      step: "latest", "best" or an integer step.
      params_template: pytree of arrays or `jax.ShapeDtypeStruct` giving the structure, shapes,
        dtypes and (for sharded arrays) the shardings the parameters are restored onto.
      opt_state_template: the same for the optimizer state (e.g. `tx.init(params)`), so the
        optax namedtuple types come back; None restores the parameters only, without reading
        the optimizer state.
      data_state: also read the input pipeline state (training resumes need it; evaluation
        does not, and a checkpoint without one still evaluates).

    Returns:
      {"step", "params", "opt_state" (None without a template), "data_state" (None when not
      read), "metrics"}.

    Raises:
      CheckpointError: one line, when the step is absent, an item is missing or unreadable, a
        checksum differs from the saved one, or a template's structure or shapes differ from the
        checkpoint (naming the first mismatching path and both shapes).
    """
    resolved = self.resolve_step(step)
    items = {"params": params_template}
    if opt_state_template is not None:
      items["opt_state"] = opt_state_template
    for name, template in items.items():
      if jax.tree.leaves(template):
        self._check_template(resolved, name, template)
    args = {name: ocp.args.StandardRestore(_abstract_tree(t))
            for name, t in items.items() if jax.tree.leaves(t)}
    json_items = ["data_state"] if data_state else []
    if self._step_path(resolved, "integrity").exists():
      json_items.append("integrity")
    for name in json_items:
      if not self._step_path(resolved, name).exists():
        raise CheckpointError(f"checkpoint step {resolved} is incomplete: "
                              f"{self._step_path(resolved, name)} is missing")
    args.update({name: ocp.args.JsonRestore() for name in json_items})
    error = None
    with _stderr_captured() as captured:
      try:
        restored = dict(self._manager.restore(resolved, args=ocp.args.Composite(**args)).items())
      except Exception as e:  # noqa: BLE001 — tensorstore / JSON decoding of damaged files.
        error = self._unreadable(resolved, args, e)
    if error is not None:
      # What tensorstore's threads printed while the damaged reads failed ("Event loop is
      # closed" tracebacks, one per aborted read) is dropped: the error says it in one line.
      raise error from None
    sys.stderr.write(captured())
    trees = {name: restored.get(name, template) for name, template in items.items()}
    self._verify(resolved, {n: restored[n] for n in items if n in restored},
                 restored.get("integrity"))
    return {
        "step": resolved,
        "params": trees["params"],
        "opt_state": trees.get("opt_state"),
        "data_state": restored.get("data_state"),
        "metrics": self.metrics(resolved),
    }

  # --- lifecycle ----------------------------------------------------------------------------

  def close(self) -> None:
    """Waits for pending work and releases orbax resources (a second call does nothing)."""
    if not self._closed:
      self._closed = True
      self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()
