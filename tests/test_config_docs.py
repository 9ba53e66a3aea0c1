"""One source for every default: the config's `model` and `objective` blocks, `--help` and
docs/cli.md come from the fields of `ModelConfig` / `ObjectiveConfig` (and config.py's tables);
renamed fields of saved runs still load."""

import dataclasses
import os
import pathlib
import re
import sys

import ml_collections
import pytest

from conftest import run_subprocess
from mimtext import config as config_lib
from mimtext import experiment
from mimtext import objectives
from mimtext.models import sentence_ae

REPO = pathlib.Path(__file__).resolve().parents[1]
DATACLASSES = (sentence_ae.ModelConfig, objectives.ObjectiveConfig)


def _train(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return run_subprocess([sys.executable, "-m", "launch.train", *args], 100, cwd=REPO, env=env)


def _squeeze(text: str) -> str:
  """The text without whitespace: absl rewraps the help to the terminal width."""
  return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("cls", DATACLASSES, ids=lambda c: c.__name__)
def test_every_dataclass_field_has_a_one_line_doc(cls):
  for f in dataclasses.fields(cls):
    doc = f.metadata.get("doc", "")
    assert doc.strip() and "\n" not in doc, f.name
    assert "derived" in f.metadata or f.default is not dataclasses.MISSING, f.name


@pytest.mark.parametrize("block,cls", [("model", sentence_ae.ModelConfig),
                                       ("objective", objectives.ObjectiveConfig)])
def test_the_config_blocks_are_the_dataclass_fields_less_the_derived_ones(block, cls):
  config = config_lib.get_config()[block]
  fields = {f.name for f in dataclasses.fields(cls) if "derived" not in f.metadata}
  assert set(config) == fields
  derived = {f.name for f in dataclasses.fields(cls) if "derived" in f.metadata}
  assert derived == ({"vocab_size", "mi_head"} if block == "model" else {"model"})


def test_help_lists_every_section_and_field_with_its_default_and_doc():
  proc = _train("--help")
  text = proc.stdout + proc.stderr
  assert "--config: Experiment configuration" in text, text[-2000:]
  assert "(default: 'batch_size" not in text  # no YAML dump of the whole config
  for section in config_lib.SECTIONS:
    assert f"[{section.block or 'top level'}] {section.title}" in text
  squeezed = _squeeze(text)
  for name, (default, doc) in config_lib.field_docs().items():
    shown = repr(default) if isinstance(default, str) else str(default)
    assert _squeeze(f"* {name}={shown}: {doc}") in squeezed, name
  assert "objective.psi" not in text and "objective.kl_z_weight=1.0" in text


def test_helpfull_still_lists_every_flag_once():
  proc = _train("--helpfull")
  text = proc.stdout + proc.stderr
  assert text.count("--config: Experiment configuration") == 1, text[-2000:]
  assert "--workdir" in text and "--flagfile" in text
  assert "(default: 'batch_size" not in text


def test_an_old_field_name_on_the_command_line_is_one_line_naming_the_new(tmp_path):
  proc = _train("--flagfile=launch/configs/quickstart.flags", f"--workdir={tmp_path / 'w'}",
                "--config.objective.psi=0.1")
  assert proc.returncode != 0
  assert proc.stderr.splitlines()[0] == (
      "FATAL: --config.objective.psi: renamed; use --config.objective.kl_z_weight"), proc.stderr


def _old_saved_config() -> dict:
  """A config.json as saved before the rename (HSVAE at ψ = λ = 0.01)."""
  saved = config_lib.get_config().to_dict()
  saved["objective"].update(name="hsvae", psi=0.01, lam=0.02)
  del saved["objective"]["kl_z_weight"], saved["objective"]["kl_gamma_weight"]
  saved["model"]["posterior"] = "hsvae"
  return saved


def test_a_run_saved_under_the_old_names_loads_under_the_new():
  saved = _old_saved_config()
  merged = experiment.merge_config(config_lib.get_config(), saved)
  assert "psi" not in merged.objective and "lam" not in merged.objective
  assert (merged.objective.kl_z_weight, merged.objective.kl_gamma_weight) == (0.01, 0.02)
  # Read without any defaults (the raw saved config), too.
  raw = ml_collections.ConfigDict(saved)
  obj = experiment.objective_config(raw, experiment.model_config(raw, vocab_size=10))
  assert (obj.kl_z_weight, obj.kl_gamma_weight) == (0.01, 0.02)
  # A resume with the new names (e.g. the updated flagfile) matches the old saved config.
  experiment.check_resumable_config(merged, saved, "/some/dir")
  assert experiment.upgrade_saved_config(merged.to_dict()) == merged.to_dict()


def test_a_config_with_both_names_of_a_field_is_refused():
  saved = _old_saved_config()
  saved["objective"]["kl_z_weight"] = 1.0
  with pytest.raises(experiment.ConfigError, match="objective.kl_z_weight"):
    experiment.upgrade_saved_config(saved)


@pytest.mark.parametrize("name", sorted(objectives.LOSSES))
def test_the_objective_name_sets_no_model_field_but_the_documented_mi_head(name):
  config = config_lib.get_config()
  reference = experiment.model_config(config, vocab_size=10)
  config.objective.name = name
  model = experiment.model_config(config, vocab_size=10)
  assert model.mi_head == (name == "mi")
  assert dataclasses.replace(model, mi_head=False) == reference
  mi_head = {f.name: f for f in dataclasses.fields(sentence_ae.ModelConfig)}["mi_head"]
  assert '"mi"' in mi_head.metadata["derived"]
