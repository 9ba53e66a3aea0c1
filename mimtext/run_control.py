"""Control of a training run from outside the loop: who holds the workdir, and stop signals.

`mimtext.train.train_and_evaluate` runs its loop inside both context managers:

  with run_control.held_workdir(workdir, cleanup=...), run_control.stop_signals() as signals:
    ...  # the loop checks `signals` after each step

- `held_workdir` prepares the workdir (`prepare_workdir`: created if absent, checked writable) and
  holds its lock file `workdir/train.lock` (`WorkdirLock`) for the block, so a second trainer on
  the same workdir is refused (`WorkdirLockedError`); a run that fails leaves no empty directory
  behind.
- `stop_signals` turns SIGTERM / SIGINT into a request the loop honours after its current step
  (it saves, then raises `TrainingInterrupted`); a third signal raises at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from typing import Iterator, Sequence

from absl import logging
import jax


class TrainingInterrupted(RuntimeError):
  """SIGTERM or SIGINT arrived; the current step was finished and saved before this was raised."""


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the lock file of the workdir."""


class WorkdirError(OSError):
  """The workdir cannot hold a run: it is a file, or it cannot be created or written."""


# ----------------------------------------------------------------------------- the workdir


def prepare_workdir(workdir: str) -> bool:
  """Creates `workdir` (and its parents) if needed and checks it can be written; returns whether
  it was created. Raises WorkdirError in one line naming the path and the cause."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory; pass a directory (it is "
                       "created if absent)")
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w", encoding="utf-8"):
      pass
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"--workdir={workdir} cannot be written ({e.strerror or e}); a training "
                       "run writes its checkpoints there: pass a writable directory") from None
  return created


LOCK_FILE = "train.lock"


class WorkdirLock:
  """An exclusive lock file `workdir/train.lock` holding the owner's pid and hostname.

  `acquire` creates it with O_EXCL. A lock left by a dead process of this host is taken over (with
  a warning); a lock of a live process, or of another host (whose pid cannot be checked), is
  refused with `WorkdirLockedError`. `release` removes it only while it is still ours.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.owner = {"pid": os.getpid(), "hostname": socket.gethostname()}
    self.held = False

  def _read(self) -> dict | None:
    try:
      with open(self.path, encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def acquire(self) -> None:
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      except FileExistsError:
        holder = self._read()
        if holder is not None and not self._is_stale(holder):
          raise WorkdirLockedError(
              f"{os.path.dirname(self.path)} is in use by another trainer (pid {holder.get('pid')} "
              f"on {holder.get('hostname')}, lock file {self.path}); wait for it, use another "
              "--workdir, or delete the lock file if that process is gone") from None
        logging.warning("taking over the stale lock %s of %s (that process is gone)", self.path,
                        holder or "an unreadable owner")
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(self.owner, f)
      self.held = True
      return
    raise WorkdirLockedError(f"could not take the lock file {self.path}; another trainer races")

  def _is_stale(self, holder: dict) -> bool:
    if holder.get("hostname") != self.owner["hostname"]:
      return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
      return True
    if pid == self.owner["pid"]:
      return False
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    except PermissionError:
      return False
    return False

  def release(self) -> None:
    if self.held and self._read() == self.owner:
      os.remove(self.path)
    self.held = False


@contextlib.contextmanager
def held_workdir(workdir: str, cleanup: Sequence[str] = ()) -> Iterator[None]:
  """Prepares `workdir` (`prepare_workdir`) and holds its lock for the block.

  Process 0 acquires the lock (`WorkdirLock`; `WorkdirLockedError` if a live trainer holds it);
  every process releases it on exit. A block that raises leaves no empty directory behind:
  process 0 then removes each of `cleanup` (paths under `workdir`) and, if this call created it,
  `workdir` itself, where they are empty.

  Args:
    workdir: the run's directory.
    cleanup: directories under `workdir` the block may have created (e.g. the checkpoints).
  """
  created = prepare_workdir(workdir)
  lock = WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  failed = True
  try:
    yield
    failed = False
  finally:
    lock.release()
    if failed and jax.process_index() == 0:
      for directory in cleanup:
        _remove_if_empty(os.path.join(workdir, directory))
      if created:
        _remove_if_empty(workdir)


def _remove_if_empty(directory: str) -> None:
  """A run that fails before its first save leaves no empty directories behind."""
  try:
    os.rmdir(directory)
  except OSError:  # absent, or not empty: it holds something worth keeping
    pass


# ----------------------------------------------------------------------------- stop signals


@contextlib.contextmanager
def stop_signals() -> Iterator[list[str]]:
  """Within the block, SIGTERM and SIGINT only record their name in the yielded list (main thread
  only; elsewhere the list stays empty): the loop finishes its step, saves and stops. A second
  signal is acknowledged ("already stopping"), a third raises TrainingInterrupted at once. The
  previous handlers come back on exit."""
  received: list[str] = []
  if threading.current_thread() is not threading.main_thread():
    yield received
    return

  def handler(signum, frame):
    del frame
    name = signal.Signals(signum).name
    received.append(name)
    if len(received) == 1:
      logging.warning("%s received: finishing the current step, then saving and stopping", name)
    elif len(received) == 2:  # e.g. a second Ctrl-C, or SIGTERM sent to a whole process group
      logging.warning("%s received: already stopping (the step is being saved); a third signal "
                      "stops at once without saving", name)
    else:
      raise TrainingInterrupted(f"{name} received a third time: stopped at once without saving; "
                                "rerun the same command to resume from the newest checkpoint")

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
