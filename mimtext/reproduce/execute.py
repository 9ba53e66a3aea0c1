"""Runs a table: trains its runs side by side, evaluates each as it finishes, writes the results.

Every training and evaluation is a child process of the entry points a user would run
(`launch.train`, `launch.evaluate`), so what runs here is exactly the command recorded in the
results. `--parallel=N` keeps N children going, each with the CPU threads split between them
($NPROC, which XLA's CPU client sizes its thread pool by). Children are niced (`nice`) and receive
SIGTERM when this process dies (Linux), so a killed `launch.reproduce` leaves no orphan training:
each saves its step and stops, and the next invocation resumes it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Callable

from mimtext.reproduce import render
from mimtext.reproduce import results as results_lib
from mimtext.reproduce import runs as runs_lib
from mimtext.reproduce import tables as tables_lib

POLL_SECONDS = 2.0
# How often a running invocation's elapsed time is written to its record (what a kill can lose).
RECORD_EVERY_SECONDS = 30.0
# How long children get to save and stop after SIGTERM before they are killed.
STOP_GRACE_SECONDS = 180.0


@dataclasses.dataclass
class Options:
  runs_dir: str
  results_dir: str
  docs_dir: str
  parallel: int = 1
  threads_per_run: int = 0  # 0: the CPU count split between the parallel runs
  max_hours_per_run: float | None = None
  nice: int = 10
  rows: tuple[str, ...] = ()
  python: str = sys.executable or "python"

  def threads(self) -> int:
    return self.threads_per_run or max(1, (os.cpu_count() or 1) // max(self.parallel, 1))


def _child_setup(nice: int) -> Callable[[], None]:
  def setup():
    if nice:
      os.nice(nice)
    try:  # SIGTERM to the child when this process dies, however it dies (Linux only)
      import ctypes
      libc = ctypes.CDLL("libc.so.6", use_errno=True)
      libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      pass
  return setup


def queue_rank(spec: runs_lib.RunSpec, st: runs_lib.Status) -> tuple:
  """The order runs start in: those that got furthest first (evaluations, then resumptions, the
  most steps first), then new runs: every row's first seed before any second seed, rows that must
  reach their stopping rule (`Row.must_converge`) first, then the table's order."""
  state = {"trained": 0, "training": 1, "absent": 2}[st.state]
  rows = [row.name for row in spec.table.rows]
  return (state, -st.step, spec.row.seeds.index(spec.seed), not spec.row.must_converge,
          rows.index(spec.row.name))


@dataclasses.dataclass
class Job:
  spec: runs_lib.RunSpec
  phase: str  # "train", or "evaluate:NAME" for the evaluation NAME (`RunSpec.evaluations`)
  process: subprocess.Popen
  record: dict
  started: float
  log_file: object
  last_saved: float = 0.0


class Runner:
  """Schedules the runs of one table (see the module docstring)."""

  def __init__(self, table: tables_lib.Table, options: Options,
               log: Callable[[str], None] = print):
    self.table, self.o, self.log = table, options, log
    self.specs = runs_lib.run_specs(table, options.runs_dir, options.rows or None)
    self.json_path = os.path.join(options.results_dir, f"{table.name}.json")
    self.previous = runs_lib.read_json(self.json_path)
    self.in_json = results_lib.done_in_json(self.previous)
    self.jobs: list[Job] = []
    self.failed: list[str] = []
    self.stopping: str | None = None

  # --------------------------------------------------------------------------- planning

  def state(self, spec: runs_lib.RunSpec) -> runs_lib.Status:
    return runs_lib.status(spec, self.o.max_hours_per_run)

  def committed(self, spec: runs_lib.RunSpec, st: runs_lib.Status) -> bool:
    """Done in the committed JSON and not present here: nothing to do (a fresh clone)."""
    return st.state == "absent" and (spec.row.name, spec.seed) in self.in_json

  def plan_lines(self) -> list[str]:
    """The dry run: every run, its state, and the training time left at most, in the order the
    runs would start (`queue_rank`; done runs first)."""
    measured = runs_lib.measured_rates(self.specs)
    lines = [f"table {self.table.name}: {self.table.title}",
             f"runs directory {self.o.runs_dir}; {self.o.parallel} at a time, "
             f"{self.o.threads()} thread(s) each; in the order they start:"]
    total = 0.0
    unknown = False
    states = {spec.name: self.state(spec) for spec in self.specs}
    done = lambda spec: self.committed(spec, states[spec.name]) or states[spec.name].state == "done"
    for spec in sorted(self.specs, key=lambda s: (not done(s), queue_rank(s, states[s.name]))):
      st = states[spec.name]
      if self.committed(spec, st) or st.state == "done":
        where = "the committed JSON" if self.committed(spec, st) else "the runs directory"
        lines.append(f"  {spec.name:<28} done ({where})")
        continue
      seconds, how = runs_lib.estimate_seconds(spec, st, measured)
      if seconds is None:
        unknown = True
      else:
        total += seconds
      what = {"absent": "to train", "training": f"resume at step {st.step:,}",
              "trained": "trained, to evaluate"}[st.state]
      lines.append(f"  {spec.name:<28} {what}; training left ≤ {runs_lib.format_hours(seconds)} "
                   f"({how})")
    wall = total / max(self.o.parallel, 1)
    known = total > 0 or not unknown
    lines.append(f"training left ≤ {runs_lib.format_hours(total if known else None)} of run "
                 f"time, about {runs_lib.format_hours(wall if known else None)} of wall time at "
                 f"--parallel={self.o.parallel}"
                 + (" (plus runs without an estimate)" if unknown else "")
                 + "; early stopping usually ends sooner; evaluations come on top")
    return lines

  # --------------------------------------------------------------------------- running

  def run(self) -> int:
    """Trains and evaluates every unfinished run; returns the number of runs that failed."""
    queue = []
    for spec in self.specs:
      st = self.state(spec)
      runs_lib.load_record(spec)  # a directory holding another run fails here, before any work
      if self.committed(spec, st):
        self.log(f"{spec.name}: done in {self.json_path}; skipped")
      elif st.state == "done":
        self.log(f"{spec.name}: done; collected")
      else:
        queue.append((spec, st))
    queue = [spec for spec, st in sorted(queue, key=lambda item: queue_rank(*item))]
    self.collect()
    previous_handlers = {s: signal.signal(s, self._on_signal)
                         for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      while (queue or self.jobs) and not self.stopping:
        while queue and len(self.jobs) < self.o.parallel and not self.stopping:
          self._start(queue.pop(0))
        self._poll()
        time.sleep(POLL_SECONDS)
      if self.stopping:
        self._stop_children()
    finally:
      for s, handler in previous_handlers.items():
        signal.signal(s, handler)
    if self.stopping:
      raise KeyboardInterrupt(self.stopping)
    return len(self.failed)

  def _on_signal(self, signum, frame):
    del frame
    if self.stopping:
      return
    self.stopping = (f"{signal.Signals(signum).name} received: the running trainings save their "
                     "step and stop; rerun the same command to resume")
    self.log(self.stopping)

  def _stop_children(self) -> None:
    for job in self.jobs:
      if job.process.poll() is None:
        job.process.send_signal(signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_SECONDS
    while self.jobs and time.time() < deadline:
      self._poll(final=True)
      time.sleep(POLL_SECONDS)
    for job in self.jobs:
      job.process.kill()
    self._poll(final=True)

  def _start(self, spec: runs_lib.RunSpec) -> None:
    st = self.state(spec)
    if st.finished_training:
      self._start_evaluation(spec, st)
      return
    os.makedirs(spec.workdir, exist_ok=True)
    record = runs_lib.load_record(spec)
    budget = None
    if self.o.max_hours_per_run is not None:
      budget = max(self.o.max_hours_per_run * 60 - st.train_seconds / 60, 0.01)
    args = [self.o.python, "-m", "launch.train", *spec.train_args(budget)]
    record["hardware"] = results_lib.hardware(self.o.threads())
    record["invocations"].append({"start": time.time(), "threads": self.o.threads(),
                                  "git_commit": results_lib.git_commit(), "args": args[3:]})
    runs_lib.save_record(spec, record)
    self.log(f"{spec.name}: training " + (f"resumes at step {st.step:,}" if st.step else "starts")
             + f" ({self.o.threads()} thread(s)); log {spec.path(runs_lib.TRAIN_LOG)}")
    self._launch(spec, "train", args, record, runs_lib.TRAIN_LOG)

  def _start_evaluation(self, spec: runs_lib.RunSpec, st: runs_lib.Status) -> None:
    """Starts the run's first evaluation still to make (`runs.pending_evaluations`)."""
    record = runs_lib.load_record(spec)
    pending = runs_lib.pending_evaluations(spec, record, st.step)
    if not pending:
      self.collect()
      return
    name, eval_args = pending[0]
    args = [self.o.python, "-m", *eval_args]
    self.log(f"{spec.name}: evaluation {name} starts (step {st.step:,}); log "
             f"{spec.path(runs_lib.EVAL_LOG)}")
    self._launch(spec, f"evaluate:{name}", args, record, runs_lib.EVAL_LOG)

  def _launch(self, spec, phase, args, record, log_name) -> None:
    log_file = open(spec.path(log_name), "ab")
    log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args)}\n".encode())
    log_file.flush()
    env = dict(os.environ, NPROC=str(self.o.threads()))
    process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                               stdin=subprocess.DEVNULL, preexec_fn=_child_setup(self.o.nice))
    self.jobs.append(Job(spec, phase, process, record, time.time(), log_file, time.time()))

  def _poll(self, final: bool = False) -> None:
    for job in list(self.jobs):
      rc = job.process.poll()
      now = time.time()
      if job.phase == "train" and (rc is not None or now - job.last_saved > RECORD_EVERY_SECONDS):
        job.record["invocations"][-1]["seconds"] = round(now - job.started, 1)
        if rc is not None:
          job.record["invocations"][-1]["exit_code"] = rc
        runs_lib.save_record(job.spec, job.record)
        job.last_saved = now
      if rc is None:
        continue
      job.log_file.close()
      self.jobs.remove(job)
      if job.phase == "train":
        self._training_ended(job, rc, final)
      else:
        self._evaluation_ended(job, rc)

  def _last_line(self, spec: runs_lib.RunSpec, log_name: str) -> str:
    try:
      with open(spec.path(log_name), encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
      fatal = [line for line in lines if line.startswith("FATAL")]
      return (fatal or lines or ["(empty log)"])[-1]
    except OSError:
      return "(no log)"

  def _training_ended(self, job: Job, rc: int, final: bool) -> None:
    spec = job.spec
    if rc != 0:
      if final or self.stopping:
        self.log(f"{spec.name}: training stopped (exit {rc}); it resumes next time")
        return
      self.failed.append(spec.name)
      self.log(f"{spec.name}: training FAILED (exit {rc}): {self._last_line(spec, 'train.log')}")
      return
    st = self.state(spec)
    if not st.finished_training:
      if not final and not self.stopping:
        # Stopped by the invocation's budget without reaching the run's: go on.
        self._start(spec)
      return
    stop = st.stop or {}
    self.log(f"{spec.name}: training finished at step {st.step:,} ({stop.get('reason')}; "
             f"{runs_lib.format_hours(st.train_seconds)} of training)")
    if not final and not self.stopping:
      self._start_evaluation(spec, st)

  def _evaluation_ended(self, job: Job, rc: int) -> None:
    spec, name = job.spec, job.phase.split(":", 1)[1]
    seconds = time.time() - job.started
    if rc != 0:
      if self.stopping:
        self.log(f"{spec.name}: evaluation {name} stopped (exit {rc}); it runs again next time")
        return
      self.failed.append(spec.name)
      self.log(f"{spec.name}: evaluation {name} FAILED (exit {rc}): "
               f"{self._last_line(spec, runs_lib.EVAL_LOG)}")
      return
    st = self.state(spec)
    record = runs_lib.load_record(spec)
    record.setdefault("evaluations", {})[name] = {
        "command": dict(spec.evaluations())[name], "train_step": st.step,
        "seconds": round(seconds, 1), "git_commit": results_lib.git_commit(),
        "date": results_lib.today()}
    runs_lib.save_record(spec, record)
    self.log(f"{spec.name}: evaluation {name} done in {runs_lib.format_hours(seconds)}")
    if self.stopping:
      return
    if runs_lib.pending_evaluations(spec, record, st.step):
      self._start_evaluation(spec, self.state(spec))
    else:
      self.collect()

  # --------------------------------------------------------------------------- results

  def collect(self) -> None:
    """Writes the table's JSON from every evaluated run here (and the committed JSON's others),
    then renders its markdown and the index."""
    finished = {}
    for spec in runs_lib.run_specs(self.table, self.o.runs_dir):
      st = self.state(spec)
      if st.state != "done":
        continue
      reports = {name: runs_lib.read_json(spec.report_file(name))
                 for name, _ in spec.evaluations()}
      if any(report is None for report in reports.values()):
        continue
      finished[(spec.row.name, spec.seed)] = results_lib.run_result(
          spec, runs_lib.load_record(spec), reports, st)
    if not finished and self.previous is None:
      return
    data = results_lib.table_json(self.table, finished, self.previous)
    runs_lib.write_json(self.json_path, data)
    render.render_all(self.o.results_dir, self.o.docs_dir)
