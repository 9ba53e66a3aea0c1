"""The README's first command trains a model that works: the quickstart config, run as a user
runs it.

`launch.train --flagfile=launch/configs/quickstart.flags` (sMIM) and its AE twin (the same flags
with `--config.objective.name=ae`), then `launch.evaluate` on the built-in test split. A model that
works reconstructs its input (BLEU-1 of greedy reconstructions from the posterior mean ≥ 0.7),
keeps the latent topic in z (a linear probe recovers it with accuracy ≥ 0.9; the Bayes rate from
the whole sentence is about 0.97, the majority class about 0.27) and, for sMIM, turns prior draws
into mostly distinct sentences. These are the two slowest tests of the suite (minutes each).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Training takes about 2 minutes on an idle 2-core CPU; a busy CI machine runs the other half of
# the suite beside it, so the limit is generous and a slow run reports its time.
TIMEOUT_S = 1800


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"))
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=TIMEOUT_S)
  elapsed = time.perf_counter() - start
  if proc.returncode != 0:
    raise AssertionError(f"{args[0]} failed ({proc.returncode}) after {elapsed:.0f} s:\n"
                         f"{proc.stderr[-3000:]}")
  print(f"{args[0]}: {elapsed:.0f} s")
  return proc


@pytest.fixture(scope="module", params=["mim", "ae"])
def quickstart_report(request, tmp_path_factory):
  workdir = tmp_path_factory.mktemp(f"quickstart_{request.param}") / "w"
  _run("launch.train", "--flagfile=launch/configs/quickstart.flags", f"--workdir={workdir}",
       f"--config.objective.name={request.param}")
  # The learned proposal of the post-hoc bound (a minute or two more here) is tested against
  # quadrature in test_proposal.py and through the API in test_api.py; here the widened one.
  _run("launch.evaluate", f"--workdir={workdir}", "--noplot", "--nolearned_proposal")
  with open(workdir / "eval_test.json", encoding="utf-8") as f:
    report = json.load(f)
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  report["markdown"] = (workdir / "report_test.md").read_text(encoding="utf-8")
  report["workdir"] = str(workdir)
  return request.param, report, records


def test_quickstart_reconstructs_its_input(quickstart_report):
  _, report, _ = quickstart_report
  assert report["bleu1"] >= 0.7, report["examples"]


def test_quickstart_keeps_the_topic_in_z(quickstart_report):
  _, report, _ = quickstart_report
  assert report["probe_accuracy"] >= 0.9, report["probe_accuracy"]


def test_quickstart_prior_samples_are_mostly_distinct(quickstart_report):
  name, report, _ = quickstart_report
  if name == "ae":
    pytest.skip("an AE has no prior to sample from")
  assert report["prior_distinct"] >= 0.8, report["prior_samples"]


def test_quickstart_logs_its_first_step(quickstart_report):
  """The first progress line comes right after the first (compiling) step, not an epoch later."""
  _, _, records = quickstart_report
  first = next(r for r in records if r["split"] == "train")
  assert first["step"] == 1 and "compile_seconds" in first, first


def test_quickstart_bounds_lie_above_the_true_entropy(quickstart_report):
  """Every valid bound (ELBO, IW, and the IW bound under the post-hoc prior, the one bound an AE
  has) lies above the exact held-out entropy of the built-in corpus beyond its standard error;
  MELBO's position is reported with its gap, not asserted (it is no bound on the model's NLL)."""
  name, report, _ = quickstart_report
  truth, stderr = report["true_nll"], report["true_nll_stderr"]
  names = ["posthoc_iw"] + ([] if name == "ae" else ["elbo", "iw"])
  for bound in names:
    assert report[f"{bound}_nll"] - truth > stderr, (bound, report[f"{bound}_nll"], truth, stderr)
  if name != "ae":
    assert report["iw_nll"] <= report["elbo_nll"] + 1e-6
    assert "MELBO − true entropy" in report["markdown"]
    # sMIM's σ sits at its floor: the proposal widened beyond q (chosen on training sentences)
    # makes the post-hoc bound far tighter than the model's own (58 against 571 nats measured).
    assert report["posthoc_prior"]["proposal_scale"] > 0, report["posthoc_prior"]
    assert report["posthoc_iw_nll"] < 0.5 * report["iw_nll"], (report["posthoc_iw_nll"],
                                                              report["iw_nll"])
  for figure in (["fig3_histograms_test.png"] +
                 ([] if name == "ae" else ["melbo_vs_n_test.png"])):
    assert f"]({figure})" in report["markdown"]
    assert os.path.getsize(os.path.join(report["workdir"], figure)) > 1000


def test_quickstart_every_generate_mode_runs(quickstart_report):
  name, report, _ = quickstart_report
  if name == "ae":
    pytest.skip("the sMIM checkpoint runs every mode; the AE's skips are tested elsewhere")
  proc = _run("launch.generate", f"--workdir={report['workdir']}",
              "--mode=sample,reconstruct,interpolate,impute,answer", "--num_samples=3",
              "--num_reconstructions=2", "--num_impute=20", "--prior=posthoc",
              "--question=the boy sees a dog ?", "--method=beam", "--beam_width=3")
  out = proc.stdout
  for marker in ("samples from the post-hoc prior", "D: ", "M: ", "R: ", "P: ", "interpolation",
                 "imputation", "adversarial error", "answers to 1 question"):
    assert marker in out, (marker, out[-3000:])
