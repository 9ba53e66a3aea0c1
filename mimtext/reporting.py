"""What a training run tells: progress lines with throughput and ETA, validation lines, the records
of `metrics.jsonl`, and the same records as TensorBoard scalars in `WORKDIR/tensorboard`.

`Reporter` owns the log window (the metrics of the steps since the last progress line), the clock
behind the ETA and `max_minutes`, and both writers; the training loop hands it metrics and asks it
to log. Only process 0 writes files; every process logs.

Epochs are numbered from 1 in everything a run writes: a progress line says `epoch E/N` for the
epoch its step belongs to (E-th of N = max_epochs; "/N" is left out when no max_epochs is set), and
the validation line and record after the last step of an epoch name that same epoch E.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# Set to 0 to write no TensorBoard event files (a switch outside the config: it changes nothing of
# what is trained, so a resume never compares it).
TENSORBOARD_ENV = "MIMTEXT_TENSORBOARD"


def format_duration(seconds: float) -> str:
  """"1h05m" from an hour on, "4m07s" below (negative durations read as 0)."""
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _model_terms(metrics: dict[str, float]) -> str:
  """"rec R (r/tok) kl K | σ S floor F%" of a progress or validation line; a model without a
  posterior (the language model, objective "lm") has no KL, σ or floor to print."""
  text = f"rec {metrics['rec']:.3f} ({metrics['rec_per_token']:.3f}/tok)"
  if "kl" in metrics:
    text += (f" kl {metrics['kl']:.3f} | σ {metrics['post_std']:.3g} floor "
             f"{100 * metrics['frac_at_floor']:.0f}%")
  return text


def plural(n: int, word: str, words: str | None = None) -> str:
  """"1 epoch", "2 epochs" (`words` for an irregular plural)."""
  return f"{n} {word if n == 1 else (words or word + 's')}"


def _json_value(value: Any) -> Any:
  """Integers stay integers (step, epoch), other numbers become floats, non-finite floats None."""
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else None
  return value


class MetricsWriter:
  """Appends one JSON object per line to `workdir/metrics.jsonl` (process 0 only).

  Each record is one complete line written by a single `os.write` on an `O_APPEND` descriptor and
  fsynced, so a kill leaves at most a partial last line, never two records merged on one line.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, METRICS_FILE)

  def truncate_after(self, step: int) -> int:
    """Keeps only the complete records with `step <= step` (a resume from that step); returns how
    many lines were dropped. A partial (unterminated or unparsable) line is dropped too. The file
    is rewritten atomically (temporary file + rename)."""
    if jax.process_index() != 0 or not os.path.exists(self.path):
      return 0
    with open(self.path, "rb") as f:
      lines = f.read().split(b"\n")
    kept, dropped = [], 0
    for i, line in enumerate(lines):
      if not line.strip():
        continue
      try:
        record = json.loads(line) if i < len(lines) - 1 else None  # last piece lacks its "\n"
      except ValueError:
        record = None
      if isinstance(record, dict) and int(record.get("step", 0)) <= step:
        kept.append(line + b"\n")
      else:
        dropped += 1
    if dropped:
      tmp = f"{self.path}.{os.getpid()}.tmp"
      with open(tmp, "wb") as f:
        f.write(b"".join(kept))
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
    return dropped

  def write(self, record: dict) -> None:
    if jax.process_index() != 0:
      return
    clean = {k: _json_value(v) for k, v in record.items()}
    line = (json.dumps(clean, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      written = os.write(fd, line)
      if written != len(line):  # a regular file takes it whole; a full disk must not go unseen
        raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
      os.fsync(fd)
    finally:
      os.close(fd)


# TensorBoard event files come from tensorboardX: pure Python on protobuf and numpy (both already
# here), so live curves need neither TensorFlow nor torch. Its synchronous `EventsWriter` is used,
# not `SummaryWriter` and its background thread, so a flush puts every record of the line on disk.
_tensorboard_warned = False
_file_counter = itertools.count()


def _import_tensorboardx():
  """tensorboardX's event writer and protos, or None (with one warning per process)."""
  global _tensorboard_warned
  try:
    from tensorboardX import event_file_writer  # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    if not _tensorboard_warned:
      logging.warning("no TensorBoard event files: tensorboardX cannot be imported (%s); "
                      "metrics.jsonl is written as usual", e)
      _tensorboard_warned = True
    return None
  return event_file_writer, event_pb2, summary_pb2


class TensorBoardWriter:
  """Every numeric field of a record as a scalar `SPLIT/FIELD` at the record's step.

  The event file is opened at the first record; it starts with a `SessionLog.START` at
  `start_step + 1`, so TensorBoard drops what an earlier (killed) run wrote after the step this run
  resumes from, as `MetricsWriter.truncate_after` does for metrics.jsonl. Every record is flushed
  (and fsynced) at once: the curves are live.
  """

  def __init__(self, logdir: str, start_step: int = 0):
    self.logdir, self.start_step = logdir, start_step
    self._lib = _import_tensorboardx()
    self._events = None

  @property
  def enabled(self) -> bool:
    return self._lib is not None

  def _open(self):
    event_file_writer, event_pb2, _ = self._lib
    os.makedirs(self.logdir, exist_ok=True)
    # The file name holds the second it was opened; the pid and a counter keep two runs of one
    # second (a quick resume) from overwriting each other's file, and sort them in order.
    suffix = f".{os.getpid()}.{next(_file_counter):06d}"
    self._events = event_file_writer.EventsWriter(os.path.join(self.logdir, "events"), suffix)
    self._events.write_event(event_pb2.Event(
        wall_time=time.time(), step=self.start_step + 1,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

  def write(self, record: dict) -> None:
    if self._lib is None:
      return
    _, event_pb2, summary_pb2 = self._lib
    split = record.get("split", "train")
    values = [summary_pb2.Summary.Value(tag=f"{split}/{key}", simple_value=float(value))
              for key, value in record.items()
              if key not in ("split", "step", "wall_time")
              and not isinstance(value, (bool, np.bool_))
              and isinstance(value, (int, float, np.integer, np.floating))]
    if not values:
      return
    if self._events is None:
      self._open()
    self._events.write_event(event_pb2.Event(
        wall_time=time.time(), step=int(record["step"]), summary=summary_pb2.Summary(value=values)))
    self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None


def tensorboard_enabled() -> bool:
  """Whether this process writes event files: process 0, unless MIMTEXT_TENSORBOARD=0."""
  flag = os.environ.get(TENSORBOARD_ENV, "1").strip().lower()
  return jax.process_index() == 0 and flag not in ("0", "false", "no", "off")


class Window(NamedTuple):
  means: dict[str, float]   # mean of each metric over the window's steps ("finite" left out)
  non_finite: list[int]     # the steps whose update was skipped as not finite (empty: none)


class Reporter:
  """The log window, the run clock, the progress and validation lines and both writers.

  Nothing is written before `start` (called once every resume condition has been checked).
  """

  def __init__(self, workdir: str, *, max_epochs: int = 0, max_minutes: float = 0,
               planned_steps: int | None = None, tensorboard: bool | None = None):
    self.workdir = workdir
    self.planned_steps, self.max_epochs, self.max_minutes = planned_steps, max_epochs, max_minutes
    self.metrics = MetricsWriter(workdir)
    self.tensorboard_on = tensorboard_enabled() if tensorboard is None else (
        tensorboard and jax.process_index() == 0)
    self.tensorboard: TensorBoardWriter | None = None
    self._window: list[dict] = []
    self._window_tokens = 0
    self._window_start = time.perf_counter()
    # The run clock (ETA, tokens/s, max_minutes) restarts after the first, compiling step.
    self.run_start, self.run_start_step, self.compiled = time.perf_counter(), 0, False

  # ----------------------------------------------------------------------------- lifecycle

  def start(self, step: int, planned_steps: int | None = None) -> int:
    """Training continues from `step` (of `planned_steps`, when known): drops the records written
    after it (returns how many metrics.jsonl lines), opens the TensorBoard writer and starts the
    clocks."""
    if planned_steps is not None:
      self.planned_steps = planned_steps
    self.run_start = self._window_start = time.perf_counter()
    self.run_start_step = step
    dropped = self.metrics.truncate_after(step)
    if dropped:
      logging.info("dropped %s written after step %d (or cut short)",
                   plural(dropped, "metrics.jsonl line"), step)
    if self.tensorboard_on:
      self.tensorboard = TensorBoardWriter(os.path.join(self.workdir, TENSORBOARD_DIR), step)
    return dropped

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()

  def __enter__(self) -> "Reporter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def write(self, record: dict) -> None:
    """One record to metrics.jsonl and TensorBoard."""
    self.metrics.write(record)
    if self.tensorboard is not None:
      self.tensorboard.write(record)

  # ----------------------------------------------------------------------------- the clock

  def elapsed(self) -> float:
    """Seconds on the run clock (since the first step finished compiling, once it has)."""
    return time.perf_counter() - self.run_start

  def mark_compiled(self, step: int) -> None:
    """The first step (and its compilation) is done: the run clock starts now."""
    self.run_start, self.run_start_step, self.compiled = time.perf_counter(), step, True

  def eta(self, step: int) -> float | None:
    """Seconds until `planned_steps` at the rate so far, or until max_minutes, whichever is
    first; None when neither bounds the run."""
    rate = (step - self.run_start_step) / max(self.elapsed(), 1e-9)
    remaining = [(self.planned_steps - step) / rate] if self.planned_steps and rate > 0 else []
    if self.max_minutes:
      remaining.append(60 * self.max_minutes - self.elapsed())
    return min(remaining) if remaining else None

  # ----------------------------------------------------------------------------- the window

  def add_step(self, metrics: dict, tokens: int) -> None:
    """The (device) metrics of one train step and the tokens its global batch predicted."""
    self._window.append(metrics)
    self._window_tokens += tokens

  @property
  def pending(self) -> bool:
    return bool(self._window)

  def window_state(self) -> dict:
    """The steps of the window not yet logged, as JSON (host floats): saved with a checkpoint
    taken mid-window (an interruption), so that the resumed run logs the same records as an
    uninterrupted one."""
    host = jax.device_get(self._window)
    return {"steps": [{k: float(v) for k, v in m.items()} for m in host],
            "tokens": int(self._window_tokens)}

  def restore_window(self, state: dict | None) -> None:
    """Continues the window saved by `window_state` (nothing when `state` is None or empty)."""
    if state and state.get("steps"):
      self._window = [dict(m) for m in state["steps"]]
      self._window_tokens = int(state.get("tokens", 0))

  def summarize_window(self, step: int) -> Window:
    """Means over the steps since the last progress line, the last of them being `step`."""
    host = jax.device_get(self._window)
    means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
    non_finite = []
    if means.pop("finite") < 1.0:
      non_finite = [step - len(host) + i + 1 for i, m in enumerate(host) if m["finite"] < 1.0]
    return Window(means, non_finite)

  # ----------------------------------------------------------------------------- lines

  def epoch_label(self, epoch: int) -> str:
    """"3/12": the 1-based `epoch` of max_epochs ("3" when max_epochs is 0)."""
    return f"{epoch}/{self.max_epochs}" if self.max_epochs else str(epoch)

  def log_train(self, step: int, epoch: int, learning_rate: float, means: dict[str, float],
                compile_seconds: float | None = None) -> None:
    """The progress line and train record of the window ending at `step` (in the 1-based
    `epoch`); `compile_seconds` marks the first step, logged alone. Empties the window."""
    tok_s = self._window_tokens / max(time.perf_counter() - self._window_start, 1e-9)
    if compile_seconds is not None:
      speed = f"first step (compilation) {compile_seconds:.1f} s"
    else:
      eta = self.eta(step)
      speed = f"{tok_s:,.0f} tok/s" + ("" if eta is None else f" | ETA {format_duration(eta)}")
    of = f"/{self.planned_steps}" if self.planned_steps else ""
    logging.info("step %d%s epoch %s | loss %.3f %s | lr %.3g | %s", step, of,
                 self.epoch_label(epoch), means["loss"], _model_terms(means), learning_rate,
                 speed)
    # wall_time (Unix seconds; not a TensorBoard scalar): step rates for launch.reproduce's
    # estimates, from the records alone.
    record = {"split": "train", "step": step, "epoch": epoch, "learning_rate": learning_rate,
              "wall_time": time.time(), **means}
    if compile_seconds is None:
      record["tokens_per_sec"] = tok_s
    else:
      record["compile_seconds"] = compile_seconds
    self.write(record)
    self._window, self._window_tokens, self._window_start = [], 0, time.perf_counter()

  def log_validation(self, step: int, epoch: int, metrics: dict[str, float],
                     end_of_epoch: bool) -> None:
    """The validation line and record after `step`, in the 1-based `epoch` (the epoch just
    finished when `end_of_epoch`, else the one training stopped in)."""
    where = "end of epoch" if end_of_epoch else "in epoch"
    logging.info("validation after step %d (%s %s): criterion %.3f %s", step, where,
                 self.epoch_label(epoch), metrics["criterion"], _model_terms(metrics))
    self.write({"split": "valid", "step": step, "epoch": epoch, **metrics})
