"""Data parallelism across processes: 2 local processes × 2 CPU devices == 1 process × 4 devices.

Each process loads its own half of every global batch (BatchPipeline's process split) and feeds it
through `jax.make_array_from_process_local_data`; the jitted step all-reduces over both processes
(gloo collectives on CPU), exactly as on a multi-host TPU or GPU cluster.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np

# Three JAX processes compile and train at once: generous for a busy 2-core machine.
TIMEOUT_S = 900
WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
REPO = WORKER.parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(process_id, num_processes, port, out):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  return subprocess.Popen([sys.executable, str(WORKER), str(process_id), str(num_processes),
                           str(port), str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_two_processes_train_like_one(tmp_path):
  single = _launch(0, 1, 0, tmp_path / "single.json")
  port = _free_port()
  workers = [_launch(i, 2, port, tmp_path / "multi.json") for i in range(2)]
  start = time.monotonic()
  for proc in [single, *workers]:
    try:
      output, _ = proc.communicate(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
      for p in [single, *workers]:
        p.kill()
      raise AssertionError(f"the 3 processes did not finish within {TIMEOUT_S} s") from None
    assert proc.returncode == 0, output[-3000:]
  print(f"3 processes (1 alone, 2 together) finished in {time.monotonic() - start:.1f} s")
  one = json.loads((tmp_path / "single.json").read_text())
  two = json.loads((tmp_path / "multi.json").read_text())
  assert one["devices"] == two["devices"] == 4 and two["processes"] == 2
  assert len(one["losses"]) == 4
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
  np.testing.assert_allclose(two["w_abs_sum"], one["w_abs_sum"], rtol=1e-5)
