"""Issue 8: `launch.generate --mode=sample|reconstruct|interpolate|impute|answer` on one tiny
checkpoint (4 steps of sMIM on the built-in corpus): what each mode prints, and one-line errors.

Every mode runs in-process through `generate.main` with absl flags set and unparsed around it
(the flags of `launch.generate` are registered for this module only, so `launch.evaluate`, which
shares some flag names, can be imported by other tests of the same session); one subprocess run
checks the one-line usage error of the command line.
"""

import ast
import importlib
import json
import logging as std_logging
import os
import pathlib
import re
import shutil
import subprocess
import sys

from absl import app
from absl import flags
import pytest

from mimtext import config as config_lib
from mimtext import experiment
from mimtext import train as train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
_TINY = {"model.embed_dim": 8, "model.hidden_dim": 16, "model.latent_dim": 4,
         "data.builtin_train_size": 64, "data.builtin_eval_size": 20, "batch_size": 16,
         "eval_batch_size": 20, "log_every_steps": 2, "num_devices": 1, "max_epochs": 0,
         "max_steps": 4, "eval.num_z_samples": 1, "eval.iw_samples": 1}
_NUMBERED = re.compile(r"^\s+(\d+)\. ")


def _flag_names() -> list[str]:
  """The flags `launch/generate.py` defines (flags.DEFINE_*("name", ...))."""
  tree = ast.parse((REPO / "launch" / "generate.py").read_text(encoding="utf-8"))
  return [node.args[0].value for node in ast.walk(tree)
          if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr.startswith("DEFINE_") and node.args
          and isinstance(node.args[0], ast.Constant)]


@pytest.fixture
def gen():
  """`launch.generate`, imported with its flags registered for one test only (tests of other
  modules may run on the same worker between two of these, with their own flags of these names)."""
  names = _flag_names()
  saved = {name: flags.FLAGS[name] for name in names if name in flags.FLAGS}
  for name in saved:
    delattr(flags.FLAGS, name)
  sys.modules.pop("launch.generate", None)
  module = importlib.import_module("launch.generate")
  try:
    yield module
  finally:
    for name in names:
      if name in flags.FLAGS:
        delattr(flags.FLAGS, name)
    for name, flag in saved.items():
      flags.FLAGS[name] = flag
    sys.modules.pop("launch.generate", None)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A 4-step sMIM run on the built-in corpus at a toy size."""
  config = config_lib.get_config()
  for field, value in _TINY.items():
    experiment.set_config_value(config, field, value)
  path = str(tmp_path_factory.mktemp("generate") / "run")
  train_lib.train_and_evaluate(config, path)
  return path


def _generate(gen, capsys, workdir, *args, stderr: bool = False):
  """stdout (and stderr) of `generate.main` with the flags --workdir=workdir *args."""
  capsys.readouterr()
  gen.flags.FLAGS(["generate", f"--workdir={workdir}", *args])
  # main sets absl's verbosity to WARNING; other tests on this worker read INFO logs, and
  # set_verbosity cannot give the "absl" logger back its unset level, so that is restored.
  absl_logger = std_logging.getLogger("absl")
  level = absl_logger.level
  try:
    gen.main(["generate"])
  finally:
    gen.flags.FLAGS.unparse_flags()
    absl_logger.setLevel(level)
  captured = capsys.readouterr()
  return (captured.out, captured.err) if stderr else captured.out


def _indented(text: str, prefix: str) -> list[str]:
  return [line for line in text.splitlines() if line.startswith(prefix)]


def test_default_prints_prior_samples_then_reconstructions(gen, capsys, workdir):
  out = _generate(gen, capsys, workdir, "--num_samples=3", "--num_reconstructions=2")
  samples, recon = out.split("\nreconstructions of ")
  # sMIM's default prior std is 0.1 (generation.default_prior_std).
  assert samples.startswith("3 samples from N(0, 0.1² I), greedy decoding:\n"), out
  assert len(_indented(samples, "  ")) == 3
  assert re.search(r"^distinct samples: [1-3]/3 \(\d\.\d\d\)$", samples, re.M), out
  assert recon.startswith("2 test sentence(s) (D data, M posterior mean, R posterior sample"), out
  for tag in "DMRP":
    assert len(_indented(recon, f"  {tag}: ")) == 2, out


def test_sample_from_the_posthoc_prior_saves_it_and_decodes_by_sampling(gen, capsys, workdir):
  path = os.path.join(workdir, "posthoc_prior.json")
  assert not os.path.exists(path)
  out = _generate(gen, capsys, workdir, "--mode=sample", "--prior=posthoc", "--num_samples=4",
                  "--method=sample", "--temperature=0.7")
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  k = saved["info"]["num_components"]
  assert out.startswith(f"4 samples from the post-hoc prior (a {k}-component Gaussian mixture "
                        f"fitted to 58 draws z ~ q(z|x) of training sentences, chosen by the "
                        f"post-hoc bound on training sentences"), out
  assert "on training sentences at step 4" in out.splitlines()[0], out
  assert "sampled decoding (temperature 0.7)" in out.splitlines()[0]
  assert len(_indented(out, "  ")) == 4 and "distinct samples: " in out
  assert "reconstructions" not in out


def test_long_loops_show_a_progress_bar_on_stderr(gen, capsys, workdir):
  out, err = _generate(gen, capsys, workdir, "--mode=sample", "--num_samples=201",
                       "--max_len=2", stderr=True)
  assert len(_indented(out, "  ")) == 201
  assert re.search(r"sample: +\d+%.*\| 3/3 ", err), err  # 3 chunks of <= 100 samples


def test_reconstruct_command_line_sentences_with_beam_search(gen, capsys, workdir):
  out = _generate(gen, capsys, workdir, "--mode=reconstruct", "--method=beam", "--beam_width=2",
                  "--sentences=the friend buys one lawyer|the qqq boy zzz qqq")
  assert out.startswith("reconstructions of 2 sentence(s) of --sentences (3 unknown word(s) "
                        "read as <unk>: qqq, zzz)"), out
  assert "beam search (width 2)" in out.splitlines()[0]
  assert _indented(out, "  D: ") == ["  D: the friend buys one lawyer",
                                     "  D: the <unk> boy <unk> <unk>"]
  for tag in "MRP":
    assert len(_indented(out, f"  {tag}: ")) == 2, out


def test_an_ae_gets_d_and_m_rows_and_the_reason_for_no_r_and_p(gen, capsys, workdir, tmp_path):
  ae = str(tmp_path / "ae")
  shutil.copytree(workdir, ae)
  config_path = os.path.join(ae, "config.json")
  with open(config_path, encoding="utf-8") as f:
    config = json.load(f)
  config["objective"]["name"] = "ae"  # same parameters; scored as z = μ(x)
  with open(config_path, "w", encoding="utf-8") as f:
    json.dump(config, f)
  out = _generate(gen, capsys, ae, "--mode=reconstruct", "--num_reconstructions=2")
  assert "(R and P skipped: an AE has z = μ(x)" in out
  assert len(_indented(out, "  D: ")) == 2 and len(_indented(out, "  M: ")) == 2
  assert not _indented(out, "  R: ") and not _indented(out, "  P: ")


def test_interpolate_prints_the_two_ends_and_n_numbered_points(gen, capsys, workdir):
  out = _generate(gen, capsys, workdir, "--mode=interpolate", "--num_points=4", "--split=valid",
                  "--method=sample")
  lines = out.splitlines()
  assert lines[0].startswith("interpolation in 4 points between the posterior samples"), out
  assert lines[1].startswith("  A: ") and lines[2].startswith("  B: ")
  numbers = [int(m.group(1)) for m in map(_NUMBERED.match, lines) if m]
  assert numbers == [1, 2, 3, 4] and len(lines) == 7, out
  given = _generate(gen, capsys, workdir, "--mode=interpolate", "--sentence_a=the friend buys",
                    "--sentence_b=one boy hurries")
  assert "between the posterior means E_q[z|x] of --sentence_a and --sentence_b" in given
  assert [int(m.group(1)) for m in map(_NUMBERED.match, given.splitlines()) if m] == [1, 2, 3, 4, 5]


def test_impute_prints_examples_and_the_adversarial_error(gen, capsys, workdir):
  out = _generate(gen, capsys, workdir, "--mode=impute", "--num_impute=10", "--split=valid",
                  "--beam_width=2")
  lines = out.splitlines()
  assert lines[0].startswith("imputation of the last 20% of the words of 10 valid sentence(s)")
  assert "beam search of width 2" in lines[0]
  examples = [line for line in lines if line.startswith("  ") and line.count(" ||| ") == 2]
  assert len(examples) == 5, out
  # 10 pairs: round(0.3 · 10) = 3 held out, round(0.1 · 10) = 1 for early stopping.
  assert re.search(r"^adversarial error on 3 held-out pairs \(6 train, 1 dev\): "
                   r"unigram -?\d+\.\d%, RNN -?\d+\.\d% \(seed 001 Table 4: .*minus 50%",
                   out, re.M), out
  one = _generate(gen, capsys, workdir, "--mode=impute", "--num_impute=1", "--split=valid")
  assert len([line for line in one.splitlines() if line.startswith("  ") and " ||| " in line]) == 1
  assert "adversarial error skipped: 1 imputed sentence; the classifiers need at least 2" in one


def test_answer_a_command_line_question_without_any_data(gen, capsys, workdir, monkeypatch):
  monkeypatch.setenv("MIMTEXT_DATA", "/no/such/data")  # never read when --question is given
  out = _generate(gen, capsys, workdir, "--mode=answer", "--question=the friend buys what ?")
  lines = out.splitlines()
  assert lines[0].startswith("answers to 1 question(s) of --question (2 unknown word(s) read as "
                             "<unk>: what, ?)"), out
  assert "greedy decoding, <unk> banned" in lines[0]
  assert lines[1] == "  Q1: the friend buys <unk> <unk>"
  assert [line.split(":")[0] for line in lines[2:]] == ["     5 <unk>", "    10 <unk>",
                                                         "    15 <unk>"], out


def test_answer_reads_questions_from_a_yahoo_directory(gen, capsys, workdir, tmp_path):
  yahoo = tmp_path / "yahoo"
  yahoo.mkdir()
  (yahoo / "test.txt").write_text("no question here .\nthe boy sees ? the moon .\n"
                                  "why ? because .\nwhat ? nothing\n", encoding="utf-8")
  out = _generate(gen, capsys, workdir, "--mode=answer", f"--data_dir={tmp_path}",
                  "--num_questions=2")
  assert f"of {yahoo}/test.txt" in out.splitlines()[0]
  assert _indented(out, "  Q") == ["  Q1: the boy sees <unk>", "  Q2: <unk> <unk>"], out
  assert len(_indented(out, "    ")) == 6


def test_answer_without_yahoo_data_or_question_names_the_flag(gen, capsys, workdir, monkeypatch):
  monkeypatch.delenv("MIMTEXT_DATA", raising=False)
  monkeypatch.setattr(experiment, "_shared_data_dir", lambda corpus: None)
  with pytest.raises(app.UsageError, match=r"no Yahoo corpus found .*--question=") as info:
    _generate(gen, capsys, workdir, "--mode=answer")
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("arg,message", [
    ("--mode=sample,dream", "--mode='sample,dream': unknown mode 'dream'"),
    ("--method=topk", "--method='topk': use one of greedy, sample, beam"),
    ("--beam_width=0", "--beam_width=0: must be >= 1"),
    ("--temperature=0", "--temperature=0.0: must be positive"),
    ("--num_questions=-1", "--num_questions=-1: must be >= 0"),
    ("--num_points=1", "--num_points=1: must be >= 2"),
])
def test_bad_values_are_one_line_usage_errors(gen, capsys, arg, message):
  # Checked before the run is loaded: no workdir needed.
  with pytest.raises(app.UsageError) as info:
    _generate(gen, capsys, "/nonexistent", arg)
  assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_command_line_usage_error_is_one_line(workdir):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "launch.generate", f"--workdir={workdir}",
                         "--mode=interpolate", "--beam_width=-3"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[0] == "FATAL: --beam_width=-3: must be >= 1", proc.stderr
  assert lines[1:] == ["Pass --helpshort or --helpfull to see help on flags."], proc.stderr
  assert proc.stdout == ""
