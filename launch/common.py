"""What the launch scripts share: one-line errors for user mistakes, and quieting the INFO chatter
of the libraries underneath."""

import difflib
import errno
import logging as py_logging
import os
import re
import signal
import sys
import tempfile
import threading
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from mimtext import checkpoint as checkpoint_lib
from mimtext import experiment
from mimtext import host_allocator
from mimtext.data import text_files

HINT = "Pass --helpshort or --helpfull to see help on flags."
# Set by `run`: this process is a launch command, which `exit_with_error` may end at once.
_AS_COMMAND = False
# Where a flagfile that is not found is also looked for (a suggestion only): the repository's own.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# absl's text for a flagfile it cannot open: "ERROR:: Unable to open flagfile: [Errno 2] No such
# file or directory: 'PATH'".
_FLAGFILE_ERROR = re.compile(r"Unable to open flagfile: \[Errno (\d+)\] ([^:]+): '(.*)'\s*$", re.S)
# Mistakes of the user (a flag value, a path, a corpus file), reported as one line, no traceback.
USER_ERRORS = (app.UsageError, text_files.DataError, FileNotFoundError, NotADirectoryError,
               checkpoint_lib.CheckpointError)


def exit_with_error(message: str, *, usage: bool = True) -> None:
  """Prints `FATAL: message` (and the help hint for a usage error) to stderr; exits 1 (2 for
  usage)."""
  first_line = str(message).strip().splitlines()[0] if str(message).strip() else "error"
  print(f"FATAL: {first_line}", file=sys.stderr)
  if usage:
    print(HINT, file=sys.stderr)
  # Work abandoned by the error (e.g. orbax's read coroutines after a corrupt array) is garbage
  # collected at exit, where Python prints an "Exception ignored in ..." traceback for each: the
  # one line above already says what happened.
  sys.unraisablehook = lambda unraisable: None
  threading.excepthook = lambda args: None  # the same for library threads (orbax's signalling)
  code = 2 if usage else 1
  if _AS_COMMAND:
    # As a command (`run`), end here: tensorstore's C++ threads still finishing the reads that
    # failed print "Event loop is closed" tracebacks during interpreter shutdown, after the line
    # that already says what happened. Everything of the run was written and closed before.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def run(main: Callable[[Sequence[str]], None],
        user_errors: tuple[type[BaseException], ...] = USER_ERRORS) -> None:
  """`app.run(main)`, printing the user errors of `main` as one line instead of the usage text or a
  traceback. absl's own flag-parsing errors are one line already; a missing --flagfile is checked
  first (`check_flagfiles`), to name the closest existing one."""

  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      exit_with_error(str(e))
    except user_errors as e:
      exit_with_error(str(e).strip("'\""), usage=False)

  global _AS_COMMAND
  _AS_COMMAND = True
  check_flagfiles(sys.argv)
  threading.excepthook = quiet_shutdown_races
  app.run(guarded)


def quiet_shutdown_races(args: threading.ExceptHookArgs,
                         default: Callable = threading.__excepthook__) -> None:
  """The thread exception hook of the launch scripts: orbax's background threads (cleanup of
  temporary checkpoint paths) that still run when a refused or finished command closes their
  executor fail with "cannot schedule new futures after shutdown"; that traceback says nothing
  about the run (the command's own result or one-line error does), so it is dropped. Every other
  thread exception is printed as usual."""
  if (isinstance(args.exc_value, RuntimeError)
      and "cannot schedule new futures after shutdown" in str(args.exc_value)):
    return
  default(args)


def _display_path(path: str) -> str:
  """`path` relative to the working directory when it lies below it, else absolute."""
  relative = os.path.relpath(path)
  return path if relative.startswith(os.pardir) else relative


def closest_flagfile(path: str) -> str | None:
  """The existing `.flags` file whose name is closest to that of `path` (difflib), or None.

  Looked for in `path`'s directory first (written with the same directory prefix), then, when
  nothing there is close, in the repository's `launch/configs/`.
  """
  directory, name = os.path.split(path)
  stem = name[:-len(".flags")] if name.endswith(".flags") else name
  for folder, shown in ((directory or os.curdir, directory), (CONFIGS_DIR, None)):
    try:
      candidates = sorted(f for f in os.listdir(folder) if f.endswith(".flags"))
    except OSError:
      continue
    stems = {f[:-len(".flags")]: f for f in candidates}
    match = difflib.get_close_matches(stem, list(stems), n=1, cutoff=0.6)
    if match:
      found = stems[match[0]]
      if shown is not None:
        return os.path.join(shown, found)
      return _display_path(os.path.join(folder, found))
  return None


def flagfile_error_message(error: Exception) -> str:
  """One line for a flagfile absl cannot open: `--flagfile=PATH: no such file; did you mean X?`.

  Any other flag-parsing error keeps absl's text, prefixed "Flags parsing error: ".
  """
  match = _FLAGFILE_ERROR.search(str(error))
  if match is None:
    return f"Flags parsing error: {error}"
  code, reason, path = int(match.group(1)), match.group(2), match.group(3)
  if code == errno.ENOENT:
    message = f"--flagfile={path}: no such file"
    suggestion = closest_flagfile(path)
    if suggestion is not None and os.path.abspath(suggestion) != os.path.abspath(path):
      message += f"; did you mean {suggestion}?"
    return message
  return f"--flagfile={path}: {reason[:1].lower()}{reason[1:]}"


def check_flagfiles(argv: Sequence[str]) -> list[str]:
  """`argv[1:]` with every `--flagfile` expanded; a missing or unreadable one (nested ones too)
  exits with one line naming it and the closest existing `.flags` file (`flagfile_error_message`).
  """
  try:
    return flags.FLAGS.read_flags_from_files(list(argv[1:]), force_gnu=False)
  except flags.Error as e:
    exit_with_error(flagfile_error_message(e))


def step_arg(value: str) -> str | int:
  """The checkpoint a `--step` flag names: "best", "latest" or a step number."""
  if value in ("best", "latest"):
    return value
  try:
    return int(value)
  except ValueError:
    raise app.UsageError(f"--step={value!r}: use best, latest or a step number") from None


def load_run(workdir: str, step: str):
  """`runner.load_run` of `--workdir` at `--step` (over the defaults of `mimtext.config`); a
  missing workdir or step is a usage error."""
  # Imported here: launch.train shares this module and needs none of the evaluation code.
  from mimtext.evaluation import runner
  try:
    return runner.load_run(workdir, step_arg(step))
  except (FileNotFoundError, checkpoint_lib.StepNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  # A damaged checkpoint (CheckpointError) is no usage error: `run` prints it in one line, exit 1.


def define_config_flag(name: str, default: ml_collections.ConfigDict, help_string: str,
                       argv: Sequence[str] | None = None):
  """`config_flags.DEFINE_config_dict`, with a one-line error for a bad override.

  ml_collections reads `--NAME.FIELD=V` overrides (and --flagfile contents) from sys.argv while the
  flag is defined, at import time, so an unknown field or a missing flagfile would otherwise end
  in a traceback. Checked first here: an unknown field names the closest existing one (a renamed
  field, its new name); a missing flagfile, the closest existing `.flags` file.

  `help_string` is the whole help of the flag (for launch.train: every section and field with its
  default and doc, `mimtext.config.help_text`); the YAML dump of the default config that
  ml_collections shows as the flag's "(default: ...)" is left out. The flag is a key flag of the
  calling module, so `--help` (the main module's key flags) lists it; `--helpfull` lists it once,
  under this module.
  """
  expanded = check_flagfiles(list(sys.argv if argv is None else argv))
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


def prepare_host(mode: str = "default") -> str:
  """The first step of every launch script's main: sets the host allocator
  (`mimtext.host_allocator`: "reuse" or "default"; MIMTEXT_HOST_ALLOCATOR overrides `mode`)
  before JAX starts its threads. Returns the mode in effect."""
  try:
    return host_allocator.configure(mode)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def host_allocator_mode(config: ml_collections.ConfigDict, data_dir: str | None = None) -> str:
  """config.host_allocator with "auto" resolved: "reuse" unless the corpus is the built-in one
  (a small model, where the slower compilation outweighs the faster steps). `data_dir`: a
  command-line override of config.data.data_dir."""
  mode = config.get("host_allocator", "auto")
  if mode not in host_allocator.CONFIG_CHOICES:
    raise app.UsageError(f"--config.host_allocator={mode!r}: must be auto, reuse or default")
  if mode == "auto":
    builtin = config.data.corpus == "builtin" and not (data_dir or config.data.data_dir)
    return "default" if builtin else "reuse"
  return mode


def setup_logging(verbosity: int = logging.INFO) -> None:
  """Our own INFO lines (progress, validation, evaluation) stay; libraries' INFO lines go."""
  logging.set_verbosity(verbosity)
  # Under app.run absl's records reach its own handler; in a notebook or another program they
  # propagate from the "absl" logger to the root's handlers: filter both ways.
  for target in (logging.get_absl_handler(), py_logging.getLogger("absl")):
    if not any(isinstance(f, _LibraryInfoFilter) for f in target.filters):
      target.addFilter(_LibraryInfoFilter())


def output_directory(workdir: str, requested: str | None) -> str:
  """Where the evaluation writes: `requested` (created; a usage error if it cannot be written),
  else the workdir when writable, else a new temporary directory (said on stderr before any
  work, so that nothing computed is lost)."""
  if requested:
    os.makedirs(requested, exist_ok=True)
    problem = not_writable(requested)
    if problem:
      raise app.UsageError(f"--output_dir={requested}: cannot write there ({problem})")
    return requested
  problem = not_writable(workdir)
  if not problem:
    return workdir
  fallback = tempfile.mkdtemp(prefix="mimtext_eval_")
  print(f"note: {workdir} is not writable ({problem}): the reports, figures and post-hoc prior "
        f"go to {fallback} (or pass --output_dir)", file=sys.stderr)
  return fallback


def not_writable(directory: str) -> str | None:
  """None when a file can be created in `directory`, else why not."""
  try:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test_"):
      pass
  except OSError as e:
    return e.strerror or str(e)
  return None


def exit_cleanly_on_signals(message: str) -> None:
  """From now on SIGTERM and SIGINT print `message` and end the process with status 0: for the
  moments after a command's work is done and saved (a late SIGTERM would otherwise end it with
  -15 and no word)."""

  def handler(signum, frame):
    del frame
    print(f"{signal.Signals(signum).name} received: {message}", file=sys.stderr, flush=True)
    os._exit(0)  # pylint: disable=protected-access  (nothing left to clean up)

  for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, handler)
