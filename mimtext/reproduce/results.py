"""A table's numbers: each finished run's result, the rows' means and spreads, the table JSON.

`results/TABLE.json` is the one record of a table: every number with the commands that made it,
the hardware, precision, wall time, epochs and steps reached, and why training stopped. The
markdown in docs/results/ is rendered from it alone (`render`), so no number there can drift from
the JSON. A run finished on an earlier machine stays in the JSON; a run finished in the runs
directory replaces it.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
from typing import Any

from mimtext.reproduce import runs as runs_lib
from mimtext.reproduce import tables as tables_lib

# Bounds that are valid upper bounds on the model's NLL (or its exact value), tightest chosen for
# the "best_ppl" columns. MELBO and the one-KL quantity of hidden-state averaging are not.
VALID_BOUNDS = ("exact", "posthoc_iw", "iw", "elbo")


def git_commit(repo: str | None = None) -> str:
  """HEAD of the repository (with "+dirty" when tracked files differ), or "unknown"."""
  repo = repo or os.getcwd()
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, timeout=30, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return head + ("+dirty" if dirty else "")


def hardware(threads: int) -> str:
  """"Intel(R) Xeon(R) ... (2 cores), 1 XLA thread": the CPU, its cores and the threads a run
  got."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return f"{model} ({os.cpu_count()} cores), {threads} XLA thread{'s' if threads != 1 else ''}"


def today() -> str:
  return datetime.date.today().isoformat()


# ----------------------------------------------------------------------------- one run


def train_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
  """From metrics.jsonl: the last validation's criterion and reconstruction, and the median
  training throughput of the progress lines after the first epoch (its lines include compiling
  each new padded length)."""
  valid = [r for r in records if r.get("split") == "valid"]
  train = [r for r in records if r.get("split") == "train" and r.get("tokens_per_sec")]
  later = [r["tokens_per_sec"] for r in train if r.get("epoch", 1) > 1] or [
      r["tokens_per_sec"] for r in train]
  out: dict[str, Any] = {}
  if valid:
    out.update(valid_criterion=valid[-1].get("criterion"), valid_rec=valid[-1].get("rec"),
               valid_epochs=valid[-1].get("epoch"))
  if later:
    out["tokens_per_sec"] = statistics.median(later)
  return out


def best_bound(report: dict[str, Any]) -> str | None:
  """The tightest valid bound of an evaluation report (lowest NLL), or None."""
  present = [b for b in VALID_BOUNDS if _finite(report.get(f"{b}_nll"))]
  return min(present, key=lambda b: report[f"{b}_nll"]) if present else None


def metric_value(reports: dict[str, dict[str, Any]], train: dict[str, Any], metric: str) -> Any:
  """`metric` of a run (`tables.Column.metric`): "train.KEY" of `train_summary`; "NAME/KEY" of
  the evaluation NAME (else the main one, `runs.MAIN_EVALUATION`); within a report "best_ppl…"
  of the tightest valid bound, "SECTION.KEY[.INDEX]" of a section (INDEX into a list), else a
  bounds key. None when the run has no such number (a section skipped for this model)."""
  if metric.startswith("train."):
    return train.get(metric[len("train."):])
  name, _, key = metric.rpartition("/")
  report = reports.get(name or runs_lib.MAIN_EVALUATION) or {}
  if key.startswith("best_ppl"):
    bound = best_bound(report)
    return None if bound is None else report.get(f"{bound}_ppl{key[len('best_ppl'):]}")
  value: Any = report
  for part in key.split("."):  # "melbo.mean.3": a section's list, by index
    if isinstance(value, dict):
      value = value.get(part)
    elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
      value = value[int(part)]
    else:
      return None
  return value


def _finite(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_result(spec: runs_lib.RunSpec, record: dict[str, Any],
               reports: dict[str, dict[str, Any]], st: runs_lib.Status) -> dict[str, Any]:
  """The JSON entry of one finished run with every evaluation made (`reports` by name)."""
  records = runs_lib.metric_records(spec.workdir)
  train = train_summary(records)
  evaluations = record.get("evaluations", {})
  evaluation = (evaluations.get(runs_lib.MAIN_EVALUATION)
                or next(iter(evaluations.values()), {}))
  report = reports.get(runs_lib.MAIN_EVALUATION, {})
  metrics = {c.key: metric_value(reports, train, c.metric) for c in spec.table.columns}
  errors = {c.key: metric_value(reports, train, c.stderr) for c in spec.table.columns
            if c.stderr}
  bound = best_bound(report)
  return {
      "seed": spec.seed,
      "workdir": spec.workdir,
      "train_command": spec.train_command(),
      "evaluate_commands": spec.evaluate_commands(),
      "git_commit": evaluation.get("git_commit", "unknown"),
      "train_git_commits": sorted({i.get("git_commit", "unknown")
                                   for i in record.get("invocations", [])}),
      "hardware": record.get("hardware", "unknown"),
      "precision": runs_lib.precision(spec),
      "train_wall_seconds": round(st.train_seconds, 1),
      "train_invocations": len(record.get("invocations", [])),
      "eval_wall_seconds": round(sum(e.get("seconds", 0.0) for e in evaluations.values()), 1),
      "steps": st.step,
      "epochs": (st.stop or {}).get("epochs", train.get("valid_epochs")),
      "stop_kind": (st.stop or {}).get("kind"),
      "stop_reason": (st.stop or {}).get("reason"),
      "evaluated_step": report.get("step"),
      "evaluated_on": evaluation.get("date"),
      "best_bound": bound,
      "metrics": metrics,
      "stderr": errors,
      "generated": {name: reports[name].get("modes", {}) for name in spec.table.generate
                    if name in reports},
  }


# ----------------------------------------------------------------------------- rows and table


def aggregate(runs: list[dict[str, Any]], columns) -> tuple[dict[str, Any], dict[str, Any]]:
  """Mean and standard deviation (n − 1; None for one run) of each column over the runs."""
  mean, std = {}, {}
  for c in columns:
    values = [r["metrics"].get(c.key) for r in runs]
    values = [v for v in values if _finite(v)]
    mean[c.key] = statistics.fmean(values) if values else None
    std[c.key] = statistics.stdev(values) if len(values) >= 2 else None
  return mean, std


def paper_json(paper: tables_lib.Paper) -> dict[str, Any]:
  return {"value": paper.value, "source": paper.source, "convention": paper.convention,
          "note": paper.note}


def table_json(table: tables_lib.Table, finished: dict[tuple[str, int], dict[str, Any]],
               previous: dict[str, Any] | None) -> dict[str, Any]:
  """The table's JSON: every row with its finished runs (`finished`, keyed by (row, seed), first;
  then runs of `previous`, the committed JSON, that this runs directory does not have)."""
  kept = {}
  for row in (previous or {}).get("rows", []):
    for run in row.get("runs", []):
      kept[(row["name"], run["seed"])] = run
  rows = []
  for row in table.rows:
    runs = []
    for seed in row.seeds:
      run = finished.get((row.name, seed)) or kept.get((row.name, seed))
      if run is not None:
        runs.append(run)
    mean, std = aggregate(runs, table.columns)
    rows.append({
        "name": row.name, "label": row.label, "flagfile": row.flagfile,
        "train_flags": list(row.train_flags(table)), "seeds": list(row.seeds),
        "must_converge": row.must_converge, "runs": runs, "mean": mean, "std": std,
        "paper": {key: paper_json(p) for key, p in row.paper.items()},
    })
  return {
      "table": table.name, "title": table.title, "source": table.source, "notes": table.notes,
      "evaluate_flags": list(table.evaluate),
      "truth_gaps": list(table.truth_gaps),
      "spread_check": (None if table.spread_check is None else
                       {k: list(v) if isinstance(v, tuple) else v
                        for k, v in table.spread_check.items()}),
      "extra_evaluations": {k: list(v) for k, v in table.extra_evaluations.items()},
      "generate": {k: list(v) for k, v in table.generate.items()},
      "columns": [{"key": c.key, "label": c.label, "metric": c.metric, "digits": c.digits,
                   "doc": c.doc, "stderr": c.stderr} for c in table.columns],
      "rows": rows,
  }


def done_in_json(previous: dict[str, Any] | None) -> set[tuple[str, int]]:
  """(row, seed) of every run the committed JSON holds."""
  return {(row["name"], run["seed"]) for row in (previous or {}).get("rows", [])
          for run in row.get("runs", [])}
