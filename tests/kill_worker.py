"""Runs `launch.train` and SIGKILLs itself at a chosen point, for the exact-resume tests.

  python tests/kill_worker.py batch:N  ARGS...   # killed as the N-th batch (training or
                                                 # validation) is placed on the devices
  python tests/kill_worker.py save:S   ARGS...   # killed inside the save of step S: every item
                                                 # written, the step not yet committed

A self-inflicted SIGKILL at a fixed point is an external kill at that moment, made deterministic
(a tiny model runs hundreds of steps per second, faster than any outside timer).
"""

import os
import pathlib
import signal
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

from launch import common  # pylint: disable=g-import-not-at-top
from launch import train as launch_train  # pylint: disable=g-import-not-at-top
from mimtext import train as train_lib  # pylint: disable=g-import-not-at-top


def _kill() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_batch(n: int) -> None:
  place = train_lib.shard_batch
  count = [0]

  def shard_batch(batch, mesh):
    count[0] += 1
    if count[0] == n:
      _kill()
    return place(batch, mesh)

  train_lib.shard_batch = shard_batch


def _kill_inside_save(step: int) -> None:
  write = ocp.StandardCheckpointHandler.async_save

  async def async_save(self, directory, *args, **kwargs):
    futures = await write(self, directory, *args, **kwargs)
    if f"{os.sep}{step}.orbax-checkpoint-tmp{os.sep}params" in str(directory):
      for future in futures or ():
        future.result()  # the parameters are on disk, the step is not committed
      _kill()
    return futures

  ocp.StandardCheckpointHandler.async_save = async_save


if __name__ == "__main__":
  where, _, value = sys.argv.pop(1).partition(":")
  {"batch": _kill_at_batch, "save": _kill_inside_save}[where](int(value))
  common.run(launch_train.main, launch_train.TRAIN_ERRORS)
