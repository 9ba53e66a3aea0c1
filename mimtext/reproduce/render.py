"""Markdown from a table's JSON alone: docs/results/TABLE.md and the index docs/RESULTS.md.

Pure functions of the JSON (`results.table_json`): rendering the committed JSON again must give
the committed markdown byte for byte (tests/test_reproduce.py checks it), so every number in
docs/results/ comes from a file that a command wrote.
"""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Any

RESULTS_INDEX = "RESULTS.md"


def fmt(value: Any, digits: int = 2) -> str:
  if value is None:
    return "—"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int) and digits == 0:
    return f"{value:,}"
  if isinstance(value, (int, float)):
    if not math.isfinite(value):
      return str(value)
    return f"{value:,.{digits}f}"
  return str(value)


def _hours(seconds: float | None) -> str:
  if not seconds:
    return "—"
  return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def mean_with_spread(row: dict[str, Any], column: dict[str, Any]) -> str:
  """"75.31 ± 0.12 (3)" for several runs, "75.31" for one, "—" for none."""
  mean, std = row["mean"].get(column["key"]), row["std"].get(column["key"])
  text = fmt(mean, column["digits"])
  if std is not None:
    text += f" ± {fmt(std, column['digits'])} ({len(row['runs'])})"
  elif mean is not None and column.get("stderr") and len(row["runs"]) == 1:
    stderr = row["runs"][0].get("stderr", {}).get(column["key"])
    if stderr is not None:
      text += f" ± {fmt(stderr, column['digits'])}"
  return text


def paper_comparisons(data: dict[str, Any]) -> list[dict[str, Any]]:
  """Every paper number of the table with ours beside it: row, column, paper, ours, difference
  (ours − paper) and the relative difference; ours None where the row has no runs yet."""
  columns = {c["key"]: c for c in data["columns"]}
  out = []
  for row in data["rows"]:
    for key, paper in row["paper"].items():
      ours = row["mean"].get(key)
      diff = None if ours is None else ours - paper["value"]
      rel = (None if diff is None or not paper["value"] else diff / abs(paper["value"]))
      out.append({"row": row["label"], "column": columns[key]["label"] if key in columns else key,
                  "digits": columns.get(key, {}).get("digits", 2), "paper": paper["value"],
                  "ours": ours, "diff": diff, "rel": rel, "source": paper["source"],
                  "convention": paper["convention"]})
  return out


def run_counts(data: dict[str, Any]) -> tuple[int, int]:
  """(runs finished, runs planned) of a table."""
  done = sum(len(r["runs"]) for r in data["rows"])
  return done, sum(len(r["seeds"]) for r in data["rows"])


def render_table(data: dict[str, Any]) -> str:
  """docs/results/TABLE.md from the table's JSON."""
  columns = data["columns"]
  done, planned = run_counts(data)
  lines = [f"# {data['title']}", "",
           f"Source: {data['source']}. Table `{data['table']}` of `launch.reproduce`; "
           f"{done} of {planned} runs finished. Rendered from `results/{data['table']}.json` by "
           f"`python -m launch.reproduce --render` (do not edit by hand).", "",
           "To reproduce (runs resume where they stopped):", "", "```bash",
           f"python -m launch.reproduce --table={data['table']} --runs_dir=$HOME/mimtext-runs",
           "```", ""]
  if data.get("notes"):
    lines += [data["notes"].strip(), ""]
  if columns:
    lines += ["## Our numbers", "",
              "| row | " + " | ".join(c["label"] for c in columns) + " |",
              "|---|" + "---|" * len(columns)]
    for row in data["rows"]:
      cells = [mean_with_spread(row, c) for c in columns] if row["runs"] else (
          ["not run yet"] + [""] * (len(columns) - 1))
      lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± standard deviation (number of seeds) where several seeds ran; for one "
              "run, ± the standard error of the columns that have one.", ""]
    lines += ["Columns:", ""] + [f"- **{c['label']}** (`{c['metric']}`): {c['doc']}"
                                 for c in columns if c.get("doc")]
  else:
    lines += ["Rows: " + "; ".join(f"{row['label']} ({len(row['runs'])} of {len(row['seeds'])} "
                                   "runs finished)" for row in data["rows"]) + "."]
  comparisons = paper_comparisons(data)
  if comparisons:
    lines += ["", "## Beside the paper", "",
              "| row | number | paper | ours | ours − paper | source |",
              "|---|---|---|---|---|---|"]
    for c in comparisons:
      diff = "—" if c["diff"] is None else (
          f"{c['diff']:+,.{c['digits']}f}" + (f" ({100 * c['rel']:+.0f}%)" if c["rel"] is not None
                                               else ""))
      lines.append(f"| {c['row']} | {c['column']} | {fmt(c['paper'], c['digits'])} | "
                   f"{fmt(c['ours'], c['digits'])} | {diff} | {c['source']} |")
    conventions = sorted({c["convention"] for c in comparisons if c["convention"]})
    if conventions:
      lines += ["", "Paper conventions: " + "; ".join(conventions) + "."]
  if data.get("truth_gaps"):
    lines += ["", "## Which estimates stay above the truth", ""] + truth_gap_lines(data)
  verdict = data.get("spread_check")
  if verdict:
    lines += ["", "## Verdict", "", verdict_text(data, verdict)]
  generated = [(row, run) for row in data["rows"] for run in row["runs"] if run.get("generated")]
  if generated:
    lines += ["", "## Generated text"]
    for row, run in generated:
      lines += ["", f"### {row['label']}, seed {run['seed']}"]
      for modes in run["generated"].values():
        lines += generated_lines(modes)
  lines += ["", "## Runs", "",
            "| row | seed | precision | epochs | steps | stopped by | training | evaluation | "
            "hardware | commit |", "|---|---|---|---|---|---|---|---|---|---|"]
  for row in data["rows"]:
    for run in row["runs"]:
      lines.append(
          f"| {row['label']} | {run['seed']} | {run['precision']} | {fmt(run['epochs'], 0)} | "
          f"{fmt(run['steps'], 0)} | {run['stop_reason'] or '—'} | "
          f"{_hours(run['train_wall_seconds'])} in {run['train_invocations']} invocation(s) | "
          f"{_hours(run['eval_wall_seconds'])} | {run['hardware']} | "
          f"`{run['git_commit'][:12]}` |")
  lines += ["", "## Commands", ""]
  for row in data["rows"]:
    for run in row["runs"]:
      lines += [f"- {row['label']}, seed {run['seed']}:", "", "  ```bash",
                f"  {run['train_command']}", *(f"  {c}" for c in run["evaluate_commands"]),
                "  ```"]
  return "\n".join(lines).rstrip() + "\n"


def generated_lines(modes: dict[str, Any]) -> list[str]:
  """The text blocks of one `launch.generate --output_json` file: reconstructions (D/M/R/P),
  prior samples, interpolations, imputations."""
  lines: list[str] = []
  if "reconstruct" in modes:
    block = modes["reconstruct"]
    lines += ["", f"Reconstructions: {block['header']}.", "", "```"]
    for k, row in enumerate(block["rows"]):
      lines += [""] if k else []
      lines += [f"({tag}) {row[tag]}" for tag in ("D", "M", "R", "P") if tag in row]
    lines.append("```")
  if "sample" in modes:
    block = modes["sample"]
    distinct = block.get("distinct_fraction")
    lines += ["", f"Samples: {block['header']}"
              + (f"; {100 * distinct:.0f}% distinct." if distinct is not None else "."), "",
              "```", *block["texts"], "```"]
  if "interpolate" in modes:
    block = modes["interpolate"]
    lines += ["", f"Interpolation: {block['header']}.", "", "```", f"A: {block['a']}",
              *(f"{k}. {text}" for k, text in enumerate(block["texts"], 1)), f"B: {block['b']}",
              "```"]
  if "impute" in modes:
    block = modes["impute"]
    lines += ["", f"Imputed endings ({block['num_imputed']} sentences; prefix ||| true ending "
                  "||| imputed ending):", "", "```"]
    lines += [f"{x['prefix']} ||| {x['true_ending']} ||| {x['imputed_ending']}"
              for x in block["examples"]]
    lines.append("```")
  return lines


def truth_gap_lines(data: dict[str, Any]) -> list[str]:
  """Per row, the gap columns (`truth_gaps`: estimate − truth, paired) sorted into those at or
  above the truth within 2 standard errors (consistent with a valid bound) and those below it by
  more (not bounds), each with its number."""
  columns = {c["key"]: c for c in data["columns"]}
  lines = ["An estimate below the truth by more than 2 standard errors is no upper bound on this "
           "model's −log p(x); one at or above it is consistent with being one (a valid bound can "
           "never be below it in expectation).", "",
           "| row | at or above the truth (gap ± s.e.) | "
           "below the truth: not bounds (gap ± s.e.) |",
           "|---|---|---|"]
  for row in data["rows"]:
    if len(row["runs"]) != 1:
      continue
    run = row["runs"][0]
    above, below = [], []
    for key in data["truth_gaps"]:
      gap, se = run["metrics"].get(key), run.get("stderr", {}).get(key)
      if gap is None or se is None:
        continue
      text = f"{columns[key]['label']} {gap:+.2f} ± {se:.2f}"
      (below if gap < -2 * se else above).append(text)
    lines.append(f"| {row['label']} | {'; '.join(above) or '—'} | {'; '.join(below) or '—'} |")
  return lines


def verdict_text(data: dict[str, Any], check: dict[str, Any]) -> str:
  """Whether each candidate run differs from the reference run of the same seed by no more than
  the reference row's seed-to-seed spread (max − min over its seeds), for every column of
  `check["columns"]`."""
  rows = {r["name"]: r for r in data["rows"]}
  candidate, reference = rows.get(check["candidate"]), rows.get(check["reference"])
  if not candidate or not reference or not candidate["runs"] or len(reference["runs"]) < 2:
    return (f"Not decided yet: {check['candidate']} needs a finished run and "
            f"{check['reference']} two, to measure the seed-to-seed spread.")
  labels = {c["key"]: c for c in data["columns"]}
  ref_by_seed = {r["seed"]: r["metrics"] for r in reference["runs"]}
  lines = [f"| number | {reference['label']} by seed | seed spread | {candidate['label']} by "
           "seed | largest difference at equal seed | within the spread |",
           "|---|---|---|---|---|---|"]
  all_within = True
  for key in check["columns"]:
    ref = [m[key] for m in ref_by_seed.values() if m.get(key) is not None]
    pairs = [(r["metrics"].get(key), ref_by_seed.get(r["seed"], {}).get(key))
             for r in candidate["runs"]]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if len(ref) < 2 or not pairs:
      continue
    spread = max(ref) - min(ref)
    gap = max(abs(a - b) for a, b in pairs)
    within = gap <= spread
    all_within &= within
    digits = labels[key]["digits"]
    lines.append(f"| {labels[key]['label']} | {', '.join(fmt(v, digits) for v in ref)} | "
                 f"{fmt(spread, digits)} | "
                 f"{', '.join(fmt(a, digits) for a, _ in pairs)} | {fmt(gap, digits)} | "
                 f"{'yes' if within else 'no'} |")
  lines += ["", f"Rule: for every seed, {candidate['label']} differs from {reference['label']} by "
                "no more than the spread of the reference across seeds.",
            "", f"**{check['accept'] if all_within else check['reject']}**"]
  return "\n".join(lines)


def largest_difference(data: dict[str, Any]) -> dict[str, Any] | None:
  """The paper comparison with the largest relative difference."""
  scored = [c for c in paper_comparisons(data) if c["rel"] is not None]
  return max(scored, key=lambda c: abs(c["rel"])) if scored else None


def render_index(tables: list[dict[str, Any]]) -> str:
  """docs/RESULTS.md: one line per table."""
  lines = ["# Results", "",
           "Every table that `launch.reproduce` has run on this project's machines. Each line "
           "links the table's document; the numbers come from `results/*.json`, rendered by "
           "`python -m launch.reproduce --render` (do not edit by hand).", "",
           "| table | runs finished | paper numbers compared | largest difference from the paper |",
           "|---|---|---|---|"]
  for data in sorted(tables, key=lambda d: d["table"]):
    done, planned = run_counts(data)
    compared = [c for c in paper_comparisons(data) if c["ours"] is not None]
    biggest = largest_difference(data)
    big = "—" if biggest is None else (
        f"{biggest['row']}, {biggest['column']}: {fmt(biggest['ours'], biggest['digits'])} vs "
        f"{fmt(biggest['paper'], biggest['digits'])} ({100 * biggest['rel']:+.0f}%)")
    lines.append(f"| [{data['title']}](results/{data['table']}.md) | {done} / {planned} | "
                 f"{len(compared)} of {len(paper_comparisons(data))} | {big} |")
  return "\n".join(lines) + "\n"


def load_tables(results_dir: str) -> list[dict[str, Any]]:
  out = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    with open(path, encoding="utf-8") as f:
      out.append(json.load(f))
  return out


def render_all(results_dir: str, docs_dir: str) -> list[str]:
  """Writes DOCS_DIR/results/TABLE.md for every RESULTS_DIR/TABLE.json and DOCS_DIR/RESULTS.md;
  returns the paths written."""
  tables = load_tables(results_dir)
  written = []
  os.makedirs(os.path.join(docs_dir, "results"), exist_ok=True)
  for data in tables:
    path = os.path.join(docs_dir, "results", f"{data['table']}.md")
    _write(path, render_table(data))
    written.append(path)
  path = os.path.join(docs_dir, RESULTS_INDEX)
  _write(path, render_index(tables))
  return written + [path]


def _write(path: str, text: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
