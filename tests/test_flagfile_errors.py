"""A mistyped --flagfile is one line naming the flag and the file, with the closest .flags file.

absl's own text ("FATAL Flags parsing error: ERROR:: Unable to open flagfile: [Errno 2] No such
file or directory: '...'") is replaced by `launch.common.flagfile_error_message`.
"""

import os
import pathlib
import sys

import pytest

from conftest import run_subprocess
from launch import common

REPO = pathlib.Path(__file__).resolve().parents[1]
HINT = "Pass --helpshort or --helpfull to see help on flags."


def _run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return run_subprocess([sys.executable, "-m", module, *args], 300, cwd=REPO, env=env)


def test_train_with_a_mistyped_flagfile_names_it_and_the_closest_one(tmp_path):
  workdir = tmp_path / "never"
  proc = _run("launch.train", "--flagfile=launch/configs/quickstrat.flags",
              f"--workdir={workdir}")
  assert proc.returncode == 2
  assert proc.stderr.splitlines() == [
      "FATAL: --flagfile=launch/configs/quickstrat.flags: no such file; did you mean "
      "launch/configs/quickstart.flags?", HINT], proc.stderr[-3000:]
  assert not workdir.exists()


def _message(monkeypatch, path, cwd=REPO):
  """What the launch scripts print (after "FATAL: ") for `--flagfile=path`, run in `cwd`."""
  monkeypatch.chdir(cwd)
  with pytest.raises(common.flags.Error) as raised:
    common.flags.FLAGS.read_flags_from_files([f"--flagfile={path}"], force_gnu=False)
  return common.flagfile_error_message(raised.value)


def test_the_suggestion_keeps_the_directory_written_or_looks_in_launch_configs(monkeypatch,
                                                                              tmp_path):
  assert _message(monkeypatch, "launch/configs/bowman_ptp.flags") == (
      "--flagfile=launch/configs/bowman_ptp.flags: no such file; did you mean "
      "launch/configs/bowman_ptb.flags?")
  # Not in the directory given (the repository root): the repository's configs are suggested.
  assert _message(monkeypatch, "quickstart.flags") == (
      "--flagfile=quickstart.flags: no such file; did you mean launch/configs/quickstart.flags?")
  # Nothing close anywhere: no suggestion.
  assert _message(monkeypatch, "launch/configs/no_such.flags") == (
      "--flagfile=launch/configs/no_such.flags: no such file")
  # A .flags file next to the one mistyped wins over the repository's.
  (tmp_path / "quickstart_mine.flags").write_text("--max_steps=1\n")
  assert _message(monkeypatch, "quickstart_min.flags", cwd=tmp_path) == (
      "--flagfile=quickstart_min.flags: no such file; did you mean quickstart_mine.flags?")


def test_a_directory_or_a_nested_missing_flagfile_is_named_too(monkeypatch, tmp_path):
  assert _message(monkeypatch, "launch/configs") == "--flagfile=launch/configs: is a directory"
  outer = tmp_path / "outer.flags"
  outer.write_text(f"--flagfile={tmp_path / 'inner.flags'}\n")
  assert _message(monkeypatch, outer) == f"--flagfile={tmp_path / 'inner.flags'}: no such file"


def test_other_flag_errors_keep_absls_text():
  assert common.flagfile_error_message(ValueError("boom")) == "Flags parsing error: boom"


def test_a_script_without_a_config_flag_checks_its_flagfiles_too():
  proc = _run("launch.encode", "--flagfile=launch/configs/quickstrat.flags")
  assert proc.returncode == 2
  assert proc.stderr.splitlines()[0] == (
      "FATAL: --flagfile=launch/configs/quickstrat.flags: no such file; did you mean "
      "launch/configs/quickstart.flags?"), proc.stderr[-3000:]
