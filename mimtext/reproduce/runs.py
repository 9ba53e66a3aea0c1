"""The runs of a table on disk: where each lives, its commands, how far it got, what is left.

Layout under `--runs_dir` (outside the repository, so that runs survive from one session to the
next on the same machine):

  RUNS_DIR/ROW/seedS/            the work directory of `launch.train` (checkpoints, metrics.jsonl,
                                 stopped.json, eval_SPLIT.json)
  RUNS_DIR/ROW/seedS/train.log   what every training invocation printed (appended)
  RUNS_DIR/ROW/seedS/eval.log    what the evaluations printed
  RUNS_DIR/ROW/seedS/reproduce.json
                                 this module's record: the row's flags, every training invocation
                                 (start, seconds, exit status) and each evaluation's command

A run is trained until `launch.train` stops it by a rule (stopped.json: early stopping, an epoch
or step cap) or its training wall time, summed over invocations, reaches `--max_hours_per_run`;
then evaluated once. A run killed in between resumes from its latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import statistics
import sys
import time
from typing import Any

from mimtext.reproduce import tables as tables_lib

RECORD_FILE = "reproduce.json"
MAIN_EVALUATION = "main"
TRAIN_LOG = "train.log"
EVAL_LOG = "eval.log"
STOP_FILE = "stopped.json"  # mimtext.train.STOP_FILE (not imported: this module loads no jax)
METRICS_FILE = "metrics.jsonl"
# Stop kinds (mimtext.train.STOP_KINDS) that end a run; "max_minutes" ends one invocation only.
FINAL_STOPS = ("early_stopping", "max_epochs", "max_steps")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run of a table: a row at one seed."""
  table: tables_lib.Table
  row: tables_lib.Row
  seed: int
  runs_dir: str

  @property
  def name(self) -> str:
    return f"{self.row.name}/seed{self.seed}"

  @property
  def workdir(self) -> str:
    return os.path.join(self.runs_dir, self.row.name, f"seed{self.seed}")

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def train_args(self, max_minutes: float | None = None) -> list[str]:
    """`launch.train`'s arguments; `max_minutes` bounds this invocation (what is left of the
    run's time budget)."""
    args = [*self.row.train_flags(self.table), f"--workdir={self.workdir}",
            f"--seed={self.seed}"]
    if max_minutes is not None:
      args.append(f"--config.max_minutes={max_minutes:.2f}")
    return args

  def evaluations(self) -> list[tuple[str, list[str]]]:
    """(name, arguments after `python -m`) of every evaluation of the run: "main" (the table's
    `evaluate`, writing eval_SPLIT.json; none when it is empty), each extra evaluation (writing
    NAME.json), then each text generation (`launch.generate --output_json=NAME.json`)."""
    workdir = f"--workdir={self.workdir}"
    out = []
    if self.table.evaluate:
      out.append((MAIN_EVALUATION, ["launch.evaluate", workdir, *self.table.evaluate,
                                    "--noprogress"]))
    for name, flags in self.table.extra_evaluations.items():
      out.append((name, ["launch.evaluate", workdir, *flags, "--noprogress",
                         f"--report_name={name}"]))
    for name, flags in self.table.generate.items():
      out.append((name, ["launch.generate", workdir, *flags,
                         f"--output_json={self.path(name + '.json')}"]))
    return out

  def report_file(self, name: str) -> str:
    """The JSON report of the evaluation `name`."""
    if name != MAIN_EVALUATION:
      return self.path(f"{name}.json")
    split = "test"
    for flag in self.table.evaluate:
      if flag.startswith("--split="):
        split = flag.split("=", 1)[1]
    return self.path(f"eval_{split}.json")

  def train_command(self, python: str = "python") -> str:
    """The command as a user would type it (without the per-invocation time budget)."""
    return shlex.join([python, "-m", "launch.train", *self.train_args()])

  def evaluate_commands(self, python: str = "python") -> list[str]:
    return [shlex.join([python, "-m", *args]) for _, args in self.evaluations()]

  def identity(self) -> dict[str, Any]:
    """What makes two runs the same run: a run directory holding another is refused."""
    return {"flags": list(self.row.train_flags(self.table)), "seed": self.seed}


def run_specs(table: tables_lib.Table, runs_dir: str,
              rows: tuple[str, ...] | None = None) -> list[RunSpec]:
  """Every run of `table` (rows in order, seeds in order), restricted to `rows` when given."""
  if rows:
    for name in rows:
      table.row(name)  # raises KeyError naming the table's rows
  return [RunSpec(table, row, seed, runs_dir) for row in table.rows
          if not rows or row.name in rows for seed in row.seeds]


# ----------------------------------------------------------------------------- records


def read_json(path: str) -> Any:
  """The JSON of `path`, or None when it is absent or unreadable (a kill mid-write)."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` atomically (a temporary file renamed over `path`)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def load_record(spec: RunSpec) -> dict[str, Any]:
  """The run's record (a fresh one when absent); raises ValueError when the directory holds a
  different run (other flags or seed)."""
  record = read_json(spec.path(RECORD_FILE))
  if record is None:
    return {"identity": spec.identity(), "invocations": []}
  if record.get("identity") != spec.identity():
    raise ValueError(
        f"{spec.workdir} holds a run of other flags ({record.get('identity')}), not "
        f"{spec.identity()}: two tables define row {spec.row.name!r} differently; rename one row "
        "or use another --runs_dir")
  return record


def save_record(spec: RunSpec, record: dict[str, Any]) -> None:
  write_json(spec.path(RECORD_FILE), record)


def training_seconds(record: dict[str, Any]) -> float:
  """Wall time of every training invocation so far, summed (a running one up to now)."""
  total = 0.0
  for inv in record.get("invocations", []):
    total += inv.get("seconds", time.time() - inv["start"]) if "start" in inv else 0.0
  return total


# ----------------------------------------------------------------------------- metrics


def metric_records(workdir: str) -> list[dict[str, Any]]:
  """The complete records of `metrics.jsonl` (a partial last line is skipped)."""
  out = []
  try:
    with open(os.path.join(workdir, METRICS_FILE), encoding="utf-8") as f:
      for line in f:
        try:
          out.append(json.loads(line))
        except ValueError:
          continue
  except OSError:
    pass
  return out


def seconds_per_step(records: list[dict[str, Any]]) -> float | None:
  """The median seconds per step between consecutive progress records (their `wall_time`),
  leaving out windows that start at a first step (compilation) or span a resume; None when there
  are fewer than two such windows."""
  train = [r for r in records if r.get("split") == "train" and "wall_time" in r]
  rates = []
  for a, b in zip(train, train[1:]):
    steps, seconds = b["step"] - a["step"], b["wall_time"] - a["wall_time"]
    if steps > 0 and 0 < seconds < 3600 and "compile_seconds" not in b:
      rates.append(seconds / steps)
  return statistics.median(rates) if len(rates) >= 2 else None


def checkpoint_step(workdir: str) -> int:
  """The newest step with a committed orbax checkpoint (its commit_success.txt or
  _CHECKPOINT_METADATA written), 0 when none: where a rerun resumes."""
  directory = os.path.join(workdir, "checkpoints")
  try:
    names = os.listdir(directory)
  except OSError:
    return 0
  steps = [int(n) for n in names if n.isdigit() and any(
      os.path.exists(os.path.join(directory, n, marker))
      for marker in ("commit_success.txt", "_CHECKPOINT_METADATA"))]
  return max(steps, default=0)


# ----------------------------------------------------------------------------- status


@dataclasses.dataclass
class Status:
  """How far a run got: "absent" (no checkpoint), "training" (unfinished: resumes at `step`, its
  newest checkpoint), "trained" (stopped by a rule or its time budget, not yet evaluated) or
  "done" (evaluated)."""
  state: str
  step: int = 0
  stop: dict[str, Any] | None = None
  train_seconds: float = 0.0

  @property
  def finished_training(self) -> bool:
    return self.state in ("trained", "done")


def status(spec: RunSpec, max_hours: float | None = None) -> Status:
  """The run's state on disk; see `Status`."""
  if not os.path.isdir(spec.workdir):
    return Status("absent")
  record = load_record(spec)
  seconds = training_seconds(record)
  step = checkpoint_step(spec.workdir)
  stop = read_json(spec.path(STOP_FILE))
  by_rule = stop is not None and stop.get("kind") in FINAL_STOPS
  by_budget = (max_hours is not None and step > 0 and seconds >= 3600 * max_hours)
  if not (by_rule or by_budget):
    return Status("training" if step else "absent", step, stop, seconds)
  if by_budget and not by_rule:
    stop = {"kind": "time_budget", "step": step,
            "reason": f"--max_hours_per_run={max_hours:g} reached ({seconds / 3600:.2f} h)",
            "epochs": (stop or {}).get("epochs")}
  pending = pending_evaluations(spec, record, step)
  return Status("trained" if pending else "done", step, stop, seconds)


def pending_evaluations(spec: RunSpec, record: dict[str, Any], step: int
                        ) -> list[tuple[str, list[str]]]:
  """The evaluations of `spec` not yet made with today's arguments on the checkpoint `step`."""
  made = record.get("evaluations", {})
  return [(name, args) for name, args in spec.evaluations()
          if made.get(name, {}).get("command") != args or made[name].get("train_step") != step]


def remaining_steps(spec: RunSpec, done_steps: int) -> int | None:
  """Steps left to the row's caps (max_steps, max_epochs × steps_per_epoch); early stopping can
  end sooner. None when the table gives no steps per epoch and the row no step cap."""
  caps = []
  flags = dict(_flag_values(expanded_flags(spec)))
  if "--config.max_steps" in flags and int(flags["--config.max_steps"]) > 0:
    caps.append(int(flags["--config.max_steps"]))
  epochs = int(flags.get("--config.max_epochs", flags.get("--max_epochs", 40)))
  if spec.table.steps_per_epoch and epochs > 0:
    caps.append(epochs * spec.table.steps_per_epoch)
  return max(min(caps) - done_steps, 0) if caps else None


def _flag_values(flags) -> list[tuple[str, str]]:
  return [tuple(f.split("=", 1)) for f in flags if "=" in f]


def expanded_flags(spec: RunSpec) -> list[str]:
  """The row's flags with its flagfile's lines in place of `--flagfile=` (later flags win)."""
  out = []
  for flag in spec.row.train_flags(spec.table):
    if flag.startswith("--flagfile="):
      try:
        with open(flag.split("=", 1)[1], encoding="utf-8") as f:
          out += [line.strip() for line in f if line.strip().startswith("--")]
      except OSError:
        pass
    else:
      out.append(flag)
  return out


def precision(spec: RunSpec) -> str:
  """The matmul dtype the row trains with (flags, else the default float32)."""
  values = dict(_flag_values(expanded_flags(spec)))
  return values.get("--config.model.matmul_dtype", "float32")


def estimate_seconds(spec: RunSpec, st: Status, measured: dict[str, float]) -> tuple[float | None,
                                                                                       str]:
  """Seconds of training left at most (to the caps), and where the step rate comes from: the
  run's own progress records, another run of the same precision in the runs directory
  (`measured`), or the table's measured reference."""
  if st.finished_training:
    return 0.0, "finished"
  steps = remaining_steps(spec, st.step)
  if steps is None:
    return None, "no step cap and no steps per epoch"
  own = seconds_per_step(metric_records(spec.workdir))
  if own is not None:
    return steps * own, "its own progress lines"
  dtype = precision(spec)
  if dtype in measured:
    return steps * measured[dtype], f"other {dtype} runs here"
  if dtype in spec.table.seconds_per_step:
    rate, how = spec.table.seconds_per_step[dtype]
    return steps * rate, how
  return None, "no measured rate yet"


def measured_rates(specs: list[RunSpec]) -> dict[str, float]:
  """Median seconds per step of the runs on disk, by precision."""
  by_dtype: dict[str, list[float]] = {}
  for spec in specs:
    rate = seconds_per_step(metric_records(spec.workdir))
    if rate is not None:
      by_dtype.setdefault(precision(spec), []).append(rate)
  return {k: statistics.median(v) for k, v in by_dtype.items()}


def format_hours(seconds: float | None) -> str:
  if seconds is None or not math.isfinite(seconds):
    return "?"
  return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def python_executable() -> str:
  return sys.executable or "python"
