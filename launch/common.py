"""What the launch scripts share: one-line errors for user mistakes, and quieting the INFO chatter
of the libraries underneath."""

import logging as py_logging
import re
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from mimtext import experiment
from mimtext.data import text_files

HINT = "Pass --helpshort or --helpfull to see help on flags."
# Mistakes of the user (a flag value, a path, a corpus file), reported as one line, no traceback.
USER_ERRORS = (app.UsageError, text_files.DataError, FileNotFoundError, NotADirectoryError)


def exit_with_error(message: str, *, usage: bool = True) -> None:
  """Prints `FATAL: message` (and the help hint for a usage error) to stderr; exits 1 (2 for usage)."""
  first_line = str(message).strip().splitlines()[0] if str(message).strip() else "error"
  print(f"FATAL: {first_line}", file=sys.stderr)
  if usage:
    print(HINT, file=sys.stderr)
  sys.exit(2 if usage else 1)


def run(main: Callable[[Sequence[str]], None],
        user_errors: tuple[type[BaseException], ...] = USER_ERRORS) -> None:
  """`app.run(main)`, printing the user errors of `main` as one line instead of the usage text or a
  traceback. absl's own flag-parsing errors are one line already."""

  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      exit_with_error(str(e))
    except user_errors as e:
      exit_with_error(str(e).strip("'\""), usage=False)

  app.run(guarded)


def step_arg(value: str) -> str | int:
  """The checkpoint a `--step` flag names: "best", "latest" or a step number."""
  if value in ("best", "latest"):
    return value
  try:
    return int(value)
  except ValueError:
    raise app.UsageError(f"--step={value!r}: use best, latest or a step number") from None


def load_run(workdir: str, step: str):
  """`runner.load_run` of `--workdir` at `--step` (over the base config's defaults); a missing
  workdir or checkpoint is a usage error."""
  # Imported here: launch.train shares this module and needs none of the evaluation code.
  from launch.configs import base
  from mimtext import checkpoint as checkpoint_lib
  from mimtext.evaluation import runner
  try:
    return runner.load_run(workdir, step_arg(step), defaults=base.get_config())
  except (FileNotFoundError, checkpoint_lib.CheckpointError) as e:
    raise app.UsageError(str(e)) from None


def define_config_flag(name: str, default: ml_collections.ConfigDict, help_string: str,
                       argv: Sequence[str] | None = None):
  """`config_flags.DEFINE_config_dict`, with a one-line error for a bad override.

  ml_collections reads `--NAME.FIELD=V` overrides (and --flagfile contents) from sys.argv while the
  flag is defined, at import time, so an unknown field or a missing flagfile would otherwise end
  in a traceback. Checked first here: an unknown field names the closest existing one (a renamed
  field, its new name).

  `help_string` is the whole help of the flag (for launch.train: every section and field with its
  default and doc, `base.help_text`); the YAML dump of the default config that ml_collections shows
  as the flag's "(default: ...)" is left out. The flag is a key flag of the calling module, so
  `--help` (the main module's key flags) lists it; `--helpfull` lists it once, under this module.
  """
  argv = list(sys.argv if argv is None else argv)
  try:
    expanded = flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
  except flags.Error as e:
    exit_with_error(f"Flags parsing error: {e}")
  pattern = re.compile(rf"^--?(?:no)?{re.escape(name)}\.([^=]+)")
  for arg in expanded:
    match = pattern.match(arg)
    if match:
      message = experiment.unknown_field_message(default, match.group(1))
      if message is not None:
        exit_with_error(message.replace("--config.", f"--{name}.", 2))
  holder = config_flags.DEFINE_config_dict(name, default, help_string)
  flag = flags.FLAGS[name]
  flag.default_as_str = None
  caller = sys._getframe(1).f_globals.get("__name__")  # pylint: disable=protected-access
  flags.FLAGS.register_key_flag_for_module(sys.argv[0] if caller == "__main__" else caller, flag)
  return holder

_NOISY_PACKAGES = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/jax/_src/")


class _LibraryInfoFilter(py_logging.Filter):
  """Drops INFO records emitted from inside orbax / tfds / grain / jax; warnings always pass."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.WARNING:
      return True
    return not any(p in record.pathname for p in _NOISY_PACKAGES)


def setup_logging(verbosity: int = logging.INFO) -> None:
  """Our own INFO lines (progress, validation, evaluation) stay; libraries' INFO lines go."""
  logging.set_verbosity(verbosity)
  # Under app.run absl's records reach its own handler; in a notebook or another program they
  # propagate from the "absl" logger to the root's handlers: filter both ways.
  for target in (logging.get_absl_handler(), py_logging.getLogger("absl")):
    if not any(isinstance(f, _LibraryInfoFilter) for f in target.filters):
      target.addFilter(_LibraryInfoFilter())
