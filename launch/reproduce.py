r"""Reproduces a paper table end to end: trains its rows, evaluates them, writes the results.

  python -m launch.reproduce --table=seed000_table2 --runs_dir=$HOME/mimtext-runs --dry_run
  python -m launch.reproduce --table=seed000_table2 --runs_dir=$HOME/mimtext-runs --parallel=2
  python -m launch.reproduce --render

Each row of the table (`mimtext/reproduce/tables.py`) trains in RUNS_DIR/ROW/seedS with
`launch.train` (resuming a run that is unfinished, skipping one that is done), is evaluated with
`launch.evaluate`, and lands in results/TABLE.json, from which docs/results/TABLE.md and
docs/RESULTS.md are rendered. Keep RUNS_DIR outside the repository: runs survive from one session
to the next, and a killed invocation resumes where it stopped. Logic lives in `mimtext.reproduce`.
"""

import os

from absl import app
from absl import flags

from launch import common
from mimtext.reproduce import execute
from mimtext.reproduce import render
from mimtext.reproduce import tables

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TABLE = flags.DEFINE_string("table", None,
                             f"The table to run: {', '.join(sorted(tables.TABLES))}.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", None, "Where the runs live (outside the repository), "
                                "RUNS_DIR/ROW/seedS; default $MIMTEXT_RUNS_DIR, else "
                                "~/mimtext-runs.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan (rows, what is done, the training "
                             "time left from measured step rates) and exit.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Trainings side by side; the CPU threads are "
                                 "split between them (--threads_per_run).")
_THREADS = flags.DEFINE_integer("threads_per_run", 0, "XLA CPU threads of each run ($NPROC); 0: "
                                "the CPU count divided by --parallel.")
_MAX_HOURS = flags.DEFINE_float("max_hours_per_run", None, "Training wall time of one run, summed "
                                "over its invocations, after which it counts as finished (stopped "
                                "by the time budget); default: no budget, the config's rules stop "
                                "it.")
_ROWS = flags.DEFINE_list("rows", [], "Run only these rows of the table (names).")
_NICE = flags.DEFINE_integer("nice", 10, "Niceness of the training and evaluation processes, so "
                             "that interactive work on the machine stays responsive.")
_RENDER = flags.DEFINE_bool("render", False, "Only re-render docs/results/*.md and "
                            "docs/RESULTS.md from the JSON in --results_dir.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where TABLE.json is written (default: "
                                   "results/ of the repository).")
_DOCS_DIR = flags.DEFINE_string("docs_dir", None, "Where results/TABLE.md and RESULTS.md are "
                                "written (default: docs/ of the repository).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  results_dir = _RESULTS_DIR.value or os.path.join(_REPO, "results")
  docs_dir = _DOCS_DIR.value or os.path.join(_REPO, "docs")
  if _RENDER.value:
    for path in render.render_all(results_dir, docs_dir):
      print(f"wrote {path}")
    return
  if not _TABLE.value:
    raise app.UsageError(f"--table is required (one of {', '.join(sorted(tables.TABLES))}), "
                         "or --render")
  try:
    table = tables.get_table(_TABLE.value)
  except KeyError as e:
    raise app.UsageError(str(e.args[0])) from None
  if _PARALLEL.value < 1 or _THREADS.value < 0:
    raise app.UsageError("--parallel must be >= 1 and --threads_per_run >= 0")
  if _MAX_HOURS.value is not None and _MAX_HOURS.value <= 0:
    raise app.UsageError(f"--max_hours_per_run={_MAX_HOURS.value}: must be positive")
  runs_dir = os.path.abspath(os.path.expanduser(
      _RUNS_DIR.value or os.environ.get("MIMTEXT_RUNS_DIR") or "~/mimtext-runs"))
  options = execute.Options(
      runs_dir=runs_dir, results_dir=results_dir, docs_dir=docs_dir,
      parallel=_PARALLEL.value, threads_per_run=_THREADS.value,
      max_hours_per_run=_MAX_HOURS.value, nice=_NICE.value, rows=tuple(_ROWS.value))
  try:
    runner = execute.Runner(table, options, log=lambda line: print(line, flush=True))
    if _DRY_RUN.value:
      print("\n".join(runner.plan_lines()))
      return
    failed = runner.run()
  except KeyError as e:
    raise app.UsageError(str(e.args[0])) from None
  except ValueError as e:
    common.exit_with_error(str(e), usage=False)
  except KeyboardInterrupt as e:
    common.exit_with_error(str(e), usage=False)
  if failed:
    common.exit_with_error(f"{failed} run(s) failed; see the lines above and their logs",
                           usage=False)
  print(f"table {table.name}: every run done; results in {runner.json_path}")


if __name__ == "__main__":
  common.run(main)
