"""Shared test setup: 4 fake CPU devices, a persistent compilation cache, the shared corpora."""

import os
import pathlib
import tempfile

import jax
import pytest

# Must run before any JAX backend is initialised: every test session sees 4 CPU devices, so
# 1-device vs 4-device comparisons can run in one process (Mesh over devices[:1] vs devices[:4]).
jax.config.update("jax_num_cpu_devices", 4)
_CACHE = os.environ.get(
    "MIMTEXT_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "mimtext_test_jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

REPO = pathlib.Path(__file__).resolve().parents[1]

# Module-scoped fixtures that train a run (seconds to minutes each) are built once per worker that
# runs one of their tests: `--dist=loadscope` (setup.cfg) sends every test of a module to one
# worker, so each is built once. (`--dist=loadgroup` with xdist_group marks did not group anything
# under pytest 9: pytest-xdist 3.8 renames items through `Item._nodeid`, which pytest 9 no longer
# reads, so the quickstart's two trainings ran twice each.)


def _shared_data_dir() -> pathlib.Path:
  env = os.environ.get("MIMTEXT_DATA")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real corpora (../shared/data or $MIMTEXT_DATA). Required on CI; skipped elsewhere if
  absent."""
  path = _shared_data_dir()
  if not (path / "ptb" / "train.txt").exists():
    if os.environ.get("CI"):
      pytest.fail(f"shared corpora not found at {path}; set MIMTEXT_DATA")
    pytest.skip(f"shared corpora not found at {path}")
  return path


@pytest.fixture(autouse=True)
def _restore_the_absl_logger_level():
  """Tests that parse absl flags or run a launch script's main set the "absl" logger's level
  (absl's --verbosity flag); other tests on the same worker read INFO records with caplog. Each
  test gets back the level it started with."""
  import logging  # pylint: disable=g-import-not-at-top
  logger = logging.getLogger("absl")
  level = logger.level
  yield
  logger.setLevel(level)


# Subprocess time limits: a base figure measured on an idle machine, scaled by
# $MIMTEXT_TEST_TIMEOUT_SCALE (default 3, so a busy 2-core CI worker running other tests alongside
# still finishes). A child that runs past its limit fails the test with what was slow.
DEFAULT_TIMEOUT_SCALE = 3.0


def subprocess_timeout(seconds: float) -> float:
  """`seconds` × $MIMTEXT_TEST_TIMEOUT_SCALE (default `DEFAULT_TIMEOUT_SCALE`)."""
  raw = os.environ.get("MIMTEXT_TEST_TIMEOUT_SCALE", "")
  try:
    scale = float(raw) if raw.strip() else DEFAULT_TIMEOUT_SCALE
  except ValueError:
    raise ValueError(f"MIMTEXT_TEST_TIMEOUT_SCALE={raw!r}: not a number") from None
  if not scale > 0:
    raise ValueError(f"MIMTEXT_TEST_TIMEOUT_SCALE={raw!r}: must be positive")
  return seconds * scale


def timeout_message(cmd, timeout: float, what: str = "") -> str:
  """The failure message of a child that ran past `timeout` seconds."""
  shown = " ".join(str(c) for c in cmd) if isinstance(cmd, (list, tuple)) else str(cmd)
  return (f"{shown} took more than {timeout:g} s{' ' + what if what else ''} (killed); the machine "
          "may be overloaded: raise MIMTEXT_TEST_TIMEOUT_SCALE (now "
          f"{os.environ.get('MIMTEXT_TEST_TIMEOUT_SCALE', DEFAULT_TIMEOUT_SCALE)}) if so")


def run_subprocess(cmd, base_timeout: float, **kwargs):
  """`subprocess.run(cmd, capture_output=True, text=True, **kwargs)` with the scaled timeout of
  `base_timeout`; running past it fails the test naming the command and the limit (and the
  output it had printed) instead of raising TimeoutExpired."""
  import subprocess  # pylint: disable=g-import-not-at-top
  timeout = subprocess_timeout(base_timeout)
  kwargs.setdefault("capture_output", True)
  kwargs.setdefault("text", True)
  try:
    return subprocess.run(cmd, timeout=timeout, **kwargs)
  except subprocess.TimeoutExpired as e:
    tail = e.stderr or b""
    tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
    pytest.fail(timeout_message(cmd, timeout) + (f"; its stderr ended with:\n{tail[-2000:]}"
                                                 if tail else ""), pytrace=False)
