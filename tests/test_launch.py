"""End to end through the command lines: train, resume, evaluate, generate; every config parses."""

import glob
import json
import os
import pathlib
import sys

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import pytest

from conftest import run_subprocess
from mimtext import config as config_lib
from mimtext import experiment
from mimtext import train as train_lib


REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGFILES = sorted(glob.glob(str(REPO / "launch" / "configs" / "*.flags")))
# Shrinks the quickstart so the whole chain runs in seconds.
TINY = ["--config.model.embed_dim=8", "--config.model.hidden_dim=16", "--config.model.latent_dim=4",
        "--config.data.builtin_train_size=96", "--config.data.builtin_eval_size=40",
        "--batch_size=16", "--config.eval_batch_size=20", "--config.log_every_steps=2"]


def _run(module, *args, check=True):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"), JAX_PLATFORMS="cpu")
  proc = run_subprocess([sys.executable, "-m", module, *args], 100, cwd=REPO, env=env)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


# The structure of each experiment (cells, summaries, objectives, schedules) at a toy size.
_TOY = {"model.embed_dim": 8, "model.hidden_dim": 16, "model.latent_dim": 4,
        "model.attention_dim": 0, "objective.mi_max_len": 6, "data.corpus": "builtin",
        "data.data_dir": "", "data.builtin_train_size": 24, "data.builtin_eval_size": 16,
        "data.holdout": 8, "batch_size": 8, "eval_batch_size": 8}


def _toy(config_json: dict):
  config = ml_collections.ConfigDict(config_json)
  for field, value in _TOY.items():
    experiment.set_config_value(config, field, value)
  return config


def _parse_flagfile(flagfile: str) -> dict:
  """The config a flagfile gives, parsed in-process the way `launch.train` parses it.

  ml_collections registers the `--config.FIELD` override flags it sees in sys.argv when the flag
  is defined, so the flag is defined in a fresh FlagValues under that argv (one process parses
  every flagfile; `test_dry_run_prints_the_config_and_writes_nothing` covers the command line).
  """
  argv = ["launch.train", f"--flagfile={flagfile}"]
  saved_argv, sys.argv = sys.argv, argv
  try:
    values = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", config_lib.get_config(), flag_values=values)
    values(argv)
  finally:
    sys.argv = saved_argv
  experiment.validate_config(values.config)
  return values.config.to_dict()


def test_dry_run_prints_the_config_and_writes_nothing(tmp_path):
  flagfile = str(REPO / "launch" / "configs" / "ptb_smim_128.flags")
  proc = _run("launch.train", f"--flagfile={flagfile}", f"--workdir={tmp_path / 'w'}", "--dry_run")
  assert json.loads(proc.stdout) == json.loads(json.dumps(_parse_flagfile(flagfile)))
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flagfile", FLAGFILES, ids=os.path.basename)
def test_every_flagfile_parses_documents_itself_and_takes_a_step_on_4_devices(flagfile, tmp_path):
  config_json = _parse_flagfile(flagfile)
  name = os.path.basename(flagfile)
  if name == "ptb_lm.flags":  # the language model: the same decoder, no latent
    assert config_json["data"]["corpus"] == "ptb"
    assert (config_json["objective"]["name"], config_json["model"]["condition"]) == ("lm", "none")
  elif name.startswith("ptb_"):
    family, latent = name[len("ptb_"):-len(".flags")].rsplit("_", 1)
    assert config_json["data"]["corpus"] == "ptb"
    assert config_json["model"]["latent_dim"] == int(latent)
    assert config_json["objective"]["name"] == {"smim": "mim", "svae": "vae", "svae_kl": "vae",
                                                "ae": "ae"}[family]
    assert config_json["objective"]["kl_schedule"] == (
        "linear" if family == "svae_kl" else "constant")
  with open(flagfile, encoding="utf-8") as f:
    assert f"python -m launch.train --flagfile=launch/configs/{name}" in f.read()

  config = _toy(config_json)
  experiment.validate_config(config)
  corpus = experiment.load_corpus(config)
  setup = train_lib.build_training_setup(config, corpus.vocab.size)
  assert setup.mesh.devices.size == 4
  pipe = train_lib.make_pipeline(corpus.splits["train"], config, train=True, seed=0)
  batch = train_lib.shard_batch(next(iter(pipe.epoch(0))), setup.mesh)
  state, metrics = setup.make_train_step()(setup.state, batch, jax.random.PRNGKey(0))
  assert int(state.step) == 1 and float(metrics["finite"]) == 1.0, metrics


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("quickstart"))
  first = _run("launch.train", "--flagfile=launch/configs/quickstart.flags", f"--workdir={workdir}",
               "--max_steps=4", *TINY)
  return workdir, first


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_quickstart_trains_checkpoints_and_logs_progress(quickstart_run):
  workdir, proc = quickstart_run
  assert "step 4/4" in proc.stderr and "tok/s" in proc.stderr and "ETA" in proc.stderr
  assert os.path.exists(os.path.join(workdir, "vocab.txt"))
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
  records = _metrics(workdir)
  assert {r["split"] for r in records} == {"train", "valid"}
  assert all("frac_at_floor" in r and "post_std" in r for r in records)


def test_resume_continues_from_the_latest_checkpoint(quickstart_run):
  workdir, _ = quickstart_run
  proc = _run("launch.train", "--flagfile=launch/configs/quickstart.flags", f"--workdir={workdir}",
              "--max_steps=8", *TINY)
  assert "resumed from step 4" in proc.stderr
  steps = [r["step"] for r in _metrics(workdir) if r["split"] == "train"]
  assert steps[-1] == 8 and 6 in steps and steps.count(4) == 1


def test_resume_with_another_model_is_refused(quickstart_run):
  workdir, _ = quickstart_run
  args = [a for a in TINY if "latent_dim" not in a] + ["--config.model.latent_dim=5"]
  proc = _run("launch.train", "--flagfile=launch/configs/quickstart.flags", f"--workdir={workdir}",
              "--max_steps=12", *args, check=False)
  assert proc.returncode != 0
  lines = [line for line in proc.stderr.splitlines() if line.startswith("FATAL")]
  assert (lines and lines[0].startswith("FATAL: --config.model.latent_dim=5: ")
          and "'hidden_dim'" not in lines[0]), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr and "cannot schedule new futures" not in proc.stderr


def test_evaluate_reads_the_checkpoint_and_writes_json(quickstart_run):
  workdir, _ = quickstart_run
  proc = _run("launch.evaluate", f"--workdir={workdir}", "--split=valid", "--num_z_samples=2",
              "--step=latest")
  assert "MELBO" in proc.stdout and "BLEU-1" in proc.stdout and "true H[p]" in proc.stdout
  with open(os.path.join(workdir, "eval_valid.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert report["N"] == 40 and report["num_z_samples"] == 2
  # A bound on the NLL cannot be below the true entropy beyond noise; an untrained model is far
  # above.
  assert report["elbo_nll"] > report["true_nll"] and report["iw_nll"] <= report["elbo_nll"] + 1e-3
  assert len(report["examples"]) == 5 and 0.0 <= report["bleu1"] <= 1.0
  with open(os.path.join(workdir, "curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_suite_writes_every_section_or_its_reason(quickstart_run, tmp_path):
  """--suite=all on the tiny run: every section is in the JSON and the Markdown report; qa and
  classify read corpora that are absent here (--data_root), so they say why they were skipped;
  an unknown section is a one-line usage error."""
  workdir, _ = quickstart_run
  _run("launch.evaluate", f"--workdir={workdir}", "--split=valid", "--num_z_samples=2",
       "--iw_samples=4", "--step=latest", "--suite=all", f"--data_root={tmp_path}",
       "--histogram_sentences=12", "--noplot")
  with open(os.path.join(workdir, "eval_valid.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert report["suite"] == ["bounds", "info", "histograms", "melbo", "qa", "classify"]
  assert "posthoc_iw_nll" in report and report["posthoc_prior"]["fitted_on"] == "train"
  assert report["info"]["active_units"] <= 4 and "mutual_information" in report["info"]
  assert report["histograms"]["M"] == 12
  assert report["melbo"]["sizes"][-1] == 40 and report["melbo"]["std"][-1] == 0.0
  assert "no Yahoo corpus" in report["qa"]["skipped"]
  assert "accuracy" in report["classify"]["builtin"]
  assert "skipped" in report["classify"]["dbpedia"]
  markdown = pathlib.Path(workdir, "report_valid.md").read_text(encoding="utf-8")
  for needle in ("| IW (post-hoc prior) |", "## info", "](fig3_histograms_valid.png)",
                 "](melbo_vs_n_valid.png)", "## qa", "## classify", "## time per section"):
    assert needle in markdown, needle
  bad = _run("launch.evaluate", f"--workdir={workdir}", "--suite=bounds,nonsense", check=False)
  assert bad.returncode == 2 and "--suite='bounds,nonsense': unknown section" in bad.stderr


def test_generate_prints_samples(quickstart_run):
  workdir, _ = quickstart_run
  proc = _run("launch.generate", f"--workdir={workdir}", "--num_samples=2",
              "--num_reconstructions=1", "--split=valid")
  assert "samples from N(0" in proc.stdout and "  D: " in proc.stdout and "  P: " in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--config.model.latent=3"], "latent"),
    (["--config.objective.name=vea"], "--config.objective.name"),
    (["--batch_size=0"], "--config.batch_size"),
])
def test_bad_flags_fail_before_any_work(tmp_path, args, message):
  workdir = tmp_path / "never"
  proc = _run("launch.train", "--flagfile=launch/configs/quickstart.flags", f"--workdir={workdir}",
              *args, check=False)
  assert proc.returncode != 0 and message in proc.stderr
  assert not workdir.exists()
