"""launch.reproduce: tables as data, run status on disk, results JSON, rendering, end to end."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, subprocess_timeout, timeout_message
from mimtext.reproduce import execute
from mimtext.reproduce import render
from mimtext.reproduce import results
from mimtext.reproduce import runs
from mimtext.reproduce import tables


# ----------------------------------------------------------------------------- the definitions


@pytest.mark.parametrize("name", sorted(tables.TABLES))
def test_every_table_is_well_formed(name):
  table = tables.TABLES[name]
  names = [row.name for row in table.rows]
  assert len(names) == len(set(names)), "row names are run directories: unique"
  keys = {c.key for c in table.columns}
  for row in table.rows:
    assert (REPO / row.flagfile).is_file(), row.flagfile
    assert row.seeds and len(set(row.seeds)) == len(row.seeds)
    assert set(row.paper) <= keys, f"{row.name}: paper numbers of columns the table lacks"
    for paper in row.paper.values():
      assert paper.source and isinstance(paper.value, float)


def test_rows_shared_by_name_mean_the_same_training():
  """Two tables may share a row (its run directories) only with the same training flags; a table
  may take some of the row's seeds."""
  seen = {}
  for table in tables.TABLES.values():
    for row in table.rows:
      flags = tuple(row.train_flags(table))
      assert seen.setdefault(row.name, flags) == flags, row.name


def test_seed000_table2_has_the_issues_rows():
  table = tables.get_table("seed000_table2")
  assert [r.name for r in table.rows] == [
      "smim_16", "smim_128", "smim_512", "svae_16", "svae_128", "svae_512", "svae_kl_16",
      "svae_kl_128", "svae_kl_512", "ae_512", "lm"]
  assert table.row("smim_128").seeds == (0, 1, 2) and table.row("svae_128").seeds == (0, 1, 2)
  assert {r.name for r in table.rows if r.must_converge} == {"smim_128", "svae_128", "lm"}
  with pytest.raises(KeyError, match="no such table"):
    tables.get_table("seed000_table9")


# ----------------------------------------------------------------------------- runs on disk


def _spec(tmp_path, row="tiny_smim", seed=0, table="builtin_tiny"):
  t = tables.get_table(table)
  return runs.RunSpec(t, t.row(row), seed, str(tmp_path))


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    if isinstance(obj, list):
      f.write("".join(json.dumps(r) + "\n" for r in obj))
    else:
      json.dump(obj, f)


def _train_records(rate=0.5, steps=(1, 20, 40, 60)):
  out = [{"split": "train", "step": 1, "compile_seconds": 3.0, "wall_time": 100.0}]
  out += [{"split": "train", "step": s, "wall_time": 100.0 + rate * s, "epoch": 1,
           "tokens_per_sec": 1000.0 + s} for s in steps[1:]]
  return out + [{"split": "valid", "step": steps[-1], "epoch": 2, "criterion": 3.5, "rec": 4.0}]


def _checkpoint(spec, step):
  os.makedirs(spec.path(f"checkpoints/{step}"), exist_ok=True)
  open(spec.path(f"checkpoints/{step}/commit_success.txt"), "w").close()


def test_status_follows_the_stop_file_and_the_time_budget(tmp_path):
  spec = _spec(tmp_path)
  assert runs.status(spec).state == "absent"
  _write(spec.path("metrics.jsonl"), _train_records())
  os.makedirs(spec.path("checkpoints/13"))  # not committed: a kill during the save
  assert runs.status(spec).state == "absent"
  _checkpoint(spec, 60)
  st = runs.status(spec)
  assert (st.state, st.step) == ("training", 60)
  # Stopped by an invocation's own minutes: still training (a rerun goes on).
  _write(spec.path("stopped.json"), {"kind": "max_minutes", "step": 60, "epochs": 4,
                                     "reason": "max_minutes=1 reached"})
  assert runs.status(spec).state == "training"
  # ... unless the run's budget is spent.
  record = runs.load_record(spec)
  record["invocations"].append({"start": 0.0, "seconds": 7200.0})
  runs.save_record(spec, record)
  st = runs.status(spec, max_hours=1.5)
  assert st.state == "trained" and st.stop["kind"] == "time_budget"
  assert runs.status(spec, max_hours=3).state == "training"
  _write(spec.path("stopped.json"), {"kind": "early_stopping", "step": 60, "epochs": 4,
                                     "reason": "early_stopping_patience=4 reached"})
  assert runs.status(spec).state == "trained"
  record["evaluations"] = {name: {"command": args, "train_step": 60}
                           for name, args in spec.evaluations()}
  runs.save_record(spec, record)
  assert runs.status(spec).state == "done"
  record["evaluations"]["main"]["command"] = ["--iw_samples=7"]  # evaluated otherwise: again
  runs.save_record(spec, record)
  assert runs.status(spec).state == "trained"


def test_a_directory_of_another_run_is_refused(tmp_path):
  spec = _spec(tmp_path)
  runs.save_record(spec, {"identity": {"flags": ["--flagfile=x.flags"], "seed": 0},
                          "invocations": []})
  with pytest.raises(ValueError, match="holds a run of other flags"):
    runs.load_record(spec)


def test_step_rate_and_estimate_from_the_progress_lines(tmp_path):
  spec = _spec(tmp_path)
  records = _train_records(rate=0.5)
  assert runs.seconds_per_step(records) == pytest.approx(0.5)
  assert runs.seconds_per_step(records[:2]) is None
  _write(spec.path("metrics.jsonl"), records[:3])  # step 40 of max_steps=60
  _checkpoint(spec, 40)
  seconds, how = runs.estimate_seconds(spec, runs.status(spec), {})
  assert seconds is None or how  # fewer than two windows: no own rate yet
  _write(spec.path("metrics.jsonl"), records[:3] + [dict(records[2], step=50, wall_time=125.0)])
  seconds, how = runs.estimate_seconds(spec, runs.status(spec), {})
  assert seconds == pytest.approx((60 - 40) * 0.5) and how == "its own progress lines"


def test_the_row_flags_read_the_flagfile_for_caps_and_precision(tmp_path):
  t = tables.get_table("precision_ab")
  f32 = runs.RunSpec(t, t.row("ab_smim_128_f32"), 0, str(tmp_path))
  bf16 = runs.RunSpec(t, t.row("ab_smim_128_bf16"), 1, str(tmp_path))
  assert runs.precision(f32) == "float32" and runs.precision(bf16) == "bfloat16"
  assert runs.remaining_steps(f32, 100) == 2 * tables.PTB_STEPS_PER_EPOCH - 100
  assert bf16.train_args()[-2:] == [f"--workdir={bf16.workdir}", "--seed=1"]
  assert "--config.max_minutes=12.50" in bf16.train_args(12.5)


# ----------------------------------------------------------------------------- results


REPORT = {"elbo_nll": 80.0, "elbo_ppl": 60.0, "elbo_nll_no_eos": 78.0, "iw_nll": 75.0,
          "iw_ppl": 50.0, "iw_ppl_smim": 44.0, "posthoc_iw_nll": 76.0, "melbo_nll": 20.0,
          "melbo_ppl": 2.0, "bleu1": 0.5, "kl": 3.0, "info": {"mutual_information": 4.5},
          "step": 60}


def test_metric_values_and_the_tightest_valid_bound():
  assert results.best_bound(REPORT) == "iw"  # MELBO is lower but no bound
  reports = {"main": REPORT, "k500": {"iw_nll": 70.0}}
  assert results.metric_value(reports, {}, "best_ppl") == 50.0
  assert results.metric_value(reports, {}, "best_ppl_smim") == 44.0
  assert results.metric_value(reports, {}, "info.mutual_information") == 4.5
  assert results.metric_value(reports, {}, "histograms.x") is None
  assert results.metric_value(reports, {}, "k500/iw_nll") == 70.0
  assert results.metric_value(reports, {}, "k10/iw_nll") is None
  assert results.metric_value(reports, {"valid_rec": 4.0}, "train.valid_rec") == 4.0
  lm = {"main": {"exact_nll": 90.0, "exact_ppl": 100.0}}
  assert results.metric_value(lm, {}, "best_ppl") == 100.0
  summary = results.train_summary(_train_records())
  assert summary["valid_criterion"] == 3.5 and summary["tokens_per_sec"] == 1040.0


def _table_data(values_by_seed, candidate=None):
  t = tables.get_table("precision_ab")
  finished = {}
  for (row, seed), (crit, bleu) in values_by_seed.items():
    finished[(row, seed)] = {"seed": seed, "metrics": {"valid_criterion": crit, "valid_rec": 1.0,
                                                       "bleu1": bleu, "tokens_per_sec": 1.0}}
  return results.table_json(t, finished, None)


def test_aggregate_and_the_spread_verdict():
  data = _table_data({("ab_smim_128_f32", 0): (10.0, 0.50), ("ab_smim_128_f32", 1): (11.0, 0.52),
                      ("ab_smim_128_bf16", 0): (10.5, 0.51), ("ab_smim_128_bf16", 1): (11.2, 0.53)})
  f32 = data["rows"][0]
  assert f32["mean"]["valid_criterion"] == pytest.approx(10.5)
  assert f32["std"]["valid_criterion"] == pytest.approx(0.7071, abs=1e-4)
  text = render.verdict_text(data, data["spread_check"])
  assert "bfloat16 accepted" in text and "| no |" not in text
  data = _table_data({("ab_smim_128_f32", 0): (10.0, 0.50), ("ab_smim_128_f32", 1): (11.0, 0.52),
                      ("ab_smim_128_bf16", 0): (12.5, 0.50)})
  text = render.verdict_text(data, data["spread_check"])
  assert "not accepted" in text and "| no |" in text
  data = _table_data({("ab_smim_128_f32", 0): (10.0, 0.50)})
  assert "Not decided yet" in render.verdict_text(data, data["spread_check"])


def test_committed_runs_are_kept_and_rendering_is_a_pure_function_of_the_json(tmp_path):
  data = _table_data({("ab_smim_128_f32", 0): (10.0, 0.50), ("ab_smim_128_f32", 1): (11.0, 0.52)})
  for row in data["rows"]:
    for run in row["runs"]:
      run.update(precision="float32", epochs=2, steps=4208, stop_reason="max_epochs=2 reached",
                 train_wall_seconds=3600.0, train_invocations=1, eval_wall_seconds=60.0,
                 hardware="cpu", git_commit="abc", train_command="python -m launch.train x",
                 evaluate_commands=["python -m launch.evaluate y"])
  # A later invocation whose runs directory lacks these runs keeps them.
  again = results.table_json(tables.get_table("precision_ab"), {}, data)
  assert again == data
  assert results.done_in_json(data) == {("ab_smim_128_f32", 0), ("ab_smim_128_f32", 1)}
  (tmp_path / "results").mkdir()
  (tmp_path / "results" / "precision_ab.json").write_text(json.dumps(data))
  written = render.render_all(str(tmp_path / "results"), str(tmp_path / "docs"))
  md = (tmp_path / "docs" / "results" / "precision_ab.md").read_text()
  assert "10.500 ± 0.707 (2)" in md and "2 of 3 runs finished" in md and "Not decided yet" in md
  assert render.render_table(json.loads(json.dumps(data))) == md
  assert len(written) == 2 and "precision_ab.md" in (tmp_path / "docs" / "RESULTS.md").read_text()
  # Dry run from a clone that has only the JSON: those runs are done.
  runner = execute.Runner(tables.get_table("precision_ab"), execute.Options(
      runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"),
      docs_dir=str(tmp_path / "docs")))
  plan = "\n".join(runner.plan_lines())
  assert plan.count("done (the committed JSON)") == 2 and plan.count("to train") == 1


def test_the_committed_results_render_to_the_committed_markdown():
  """No number of docs/results/ is edited by hand: rendering the committed JSON gives the committed
  markdown, byte for byte."""
  tables_json = render.load_tables(str(REPO / "results"))
  for data in tables_json:
    md = REPO / "docs" / "results" / f"{data['table']}.md"
    assert md.read_text(encoding="utf-8") == render.render_table(data), (
        f"{md} differs from its JSON: run python -m launch.reproduce --render")
  index = REPO / "docs" / render.RESULTS_INDEX
  if tables_json or index.exists():
    assert index.read_text(encoding="utf-8") == render.render_index(tables_json)


# ----------------------------------------------------------------------------- end to end


def _reproduce_cmd(tmp_path, *extra):
  return [sys.executable, "-m", "launch.reproduce", "--table=builtin_tiny",
          f"--runs_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'results'}",
          f"--docs_dir={tmp_path / 'docs'}", "--parallel=2", "--threads_per_run=1", "--nice=0",
          *extra]


def _wait_for(predicate, process, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if process.poll() is not None:
      pytest.fail(f"launch.reproduce exited ({process.returncode}) before {what}")
    time.sleep(0.5)
  process.kill()
  pytest.fail(timeout_message(process.args, timeout, f"waiting for {what}"))


def test_reproduce_end_to_end_killed_and_resumed(tmp_path):
  """The tiny table: killed (the whole process group, as a session's end does) once the sMIM row
  has saved a checkpoint, then rerun: the row resumes, both rows are evaluated, the JSON and the
  markdown are written, and a third run has nothing left to do."""
  env = dict(os.environ, PYTHONPATH=str(REPO))
  dry = subprocess.run(_reproduce_cmd(tmp_path, "--dry_run"), cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=subprocess_timeout(60))
  assert dry.returncode == 0, dry.stderr
  assert "tiny_smim/seed0" in dry.stdout and "to train" in dry.stdout
  assert not (tmp_path / "runs").exists(), "a dry run writes nothing"

  process = subprocess.Popen(_reproduce_cmd(tmp_path), cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
  smim = tmp_path / "runs" / "tiny_smim" / "seed0"
  _wait_for(lambda: runs.checkpoint_step(str(smim)) > 0, process, subprocess_timeout(120),
            "the sMIM row's first checkpoint")
  os.killpg(process.pid, signal.SIGKILL)
  process.wait(timeout=30)

  rerun = subprocess.run(_reproduce_cmd(tmp_path), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=subprocess_timeout(200))
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  assert "tiny_smim/seed0: training resumes at step" in rerun.stdout, rerun.stdout
  assert "resumed from step" in (smim / "train.log").read_text()
  data = json.loads((tmp_path / "results" / "builtin_tiny.json").read_text())
  by_row = {row["name"]: row for row in data["rows"]}
  smim_run, lm_run = by_row["tiny_smim"]["runs"][0], by_row["tiny_lm"]["runs"][0]
  assert smim_run["steps"] == 60 and smim_run["stop_kind"] == "max_steps"
  assert smim_run["train_invocations"] == 2 and smim_run["train_wall_seconds"] > 0
  assert smim_run["metrics"]["elbo_nll"] > 0 and smim_run["metrics"]["exact_nll"] is None
  assert lm_run["metrics"]["exact_nll"] > 0 and lm_run["metrics"]["elbo_nll"] is None
  assert "launch.train --flagfile=launch/configs/quickstart.flags" in smim_run["train_command"]
  assert smim_run["metrics"]["iw_k1"] >= smim_run["metrics"]["iw_k2"] - 5
  assert [c.split(" --")[0] for c in smim_run["evaluate_commands"]] == [
      "python -m launch.evaluate", "python -m launch.evaluate", "python -m launch.generate"]
  reconstructions = smim_run["generated"]["samples"]["reconstruct"]["rows"]
  assert len(reconstructions) == 2 and set(reconstructions[0]) == {"D", "M", "R", "P"}
  md = (tmp_path / "docs" / "results" / "builtin_tiny.md").read_text()
  assert md == render.render_table(data) and "2 of 2 runs finished" in md
  assert f"(D) {reconstructions[0]['D']}" in md and "Interpolation:" in md

  third = subprocess.run(_reproduce_cmd(tmp_path), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=subprocess_timeout(60))
  assert third.returncode == 0 and third.stdout.count("done; collected") == 2, third.stdout


def test_new_runs_start_with_every_rows_first_seed_and_the_rows_that_must_converge(tmp_path):
  table = tables.get_table("seed000_table2")
  specs = runs.run_specs(table, str(tmp_path))
  absent = runs.Status("absent")
  ordered = sorted(specs, key=lambda s: execute.queue_rank(s, absent))
  assert [s.name for s in ordered[:3]] == ["smim_128/seed0", "svae_128/seed0", "lm/seed0"]
  assert [s.seed for s in ordered[:11]] == [0] * 11  # one run of every row first
  resumed = runs.Status("training", step=500)
  assert execute.queue_rank(specs[-1], resumed) < execute.queue_rank(specs[0], absent)


def test_truth_gaps_sort_estimates_into_bounds_and_not_bounds():
  table = tables.get_table("builtin_truth")
  run = {"seed": 0, "metrics": {"melbo_gap": -17.3, "posthoc500_gap": 20.6, "iw1_gap": -0.1},
         "stderr": {"melbo_gap": 0.2, "posthoc500_gap": 0.3, "iw1_gap": 0.1},
         "precision": "float32", "epochs": 27, "steps": 8451, "stop_reason": "early stopping",
         "train_wall_seconds": 900.0, "train_invocations": 1, "eval_wall_seconds": 300.0,
         "hardware": "cpu", "git_commit": "abc", "train_command": "python -m launch.train x",
         "evaluate_commands": ["python -m launch.evaluate y"]}
  data = results.table_json(table, {("builtin_smim_clamp", 0): run}, None)
  lines = render.truth_gap_lines(data)
  row = next(line for line in lines if line.startswith("| sMIM, hard clamp |"))
  above, below = row.split(" | ")[1:3]
  assert "post-hoc K=500 − H +20.60 ± 0.30" in above and "IW K=1 − H -0.10 ± 0.10" in above
  assert "MELBO N=1000 − H -17.30 ± 0.20" in below
  assert "## Which estimates stay above the truth" in render.render_table(data)
