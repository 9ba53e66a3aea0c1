"""mimtext.host_allocator: with it, a step's large temporaries are reused without page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mimtext import host_allocator

# Runs in a fresh process (the setting must precede JAX's threads): a jitted function whose
# temporary buffer (the [4096, 5120] float32 product, 84 MB) is above glibc's largest mmap
# threshold, so by default each call maps fresh pages; prints the minor faults of calls 6 to 15.
_CHILD = r"""
import json, os, resource, sys
from mimtext import host_allocator
mode = host_allocator.reuse_freed_memory()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 64)); w = jnp.ones((64, 5120))
f = jax.jit(lambda x, w: jnp.sum(jnp.tanh(x @ w), axis=0) + jnp.max(x @ w, axis=0))
faults = []
for _ in range(15):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(f(x, w))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"mode": mode, "faults": faults[5:]}))
"""


def _child_faults(setting: str) -> dict:
  env = dict(os.environ, MIMTEXT_HOST_ALLOCATOR=setting, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                       timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_allocator._glibc() is None, reason="the C library is not glibc")
def test_reuse_removes_the_page_faults_of_a_repeated_call():
  default, reuse = _child_faults("default"), _child_faults("reuse")
  assert (default["mode"], reuse["mode"]) == ("default", "reuse")
  # 84 MB of fresh 4 KiB pages is ~20,000 faults per call. Reused memory needs none, once the
  # heap has settled; now and then a call still grows it (an allocation took part of a free block).
  assert min(default["faults"]) > 5000, default
  assert sum(f < 500 for f in reuse["faults"]) >= 8, reuse


def test_bad_setting_is_refused_by_name(monkeypatch):
  monkeypatch.setattr(host_allocator, "_applied", None)
  monkeypatch.setenv(host_allocator.ENV_VAR, "jemalloc")
  with pytest.raises(ValueError, match="MIMTEXT_HOST_ALLOCATOR / host_allocator must be one of"):
    host_allocator.reuse_freed_memory()


def test_default_leaves_the_allocator_alone(monkeypatch):
  monkeypatch.setattr(host_allocator, "_applied", None)
  monkeypatch.setenv(host_allocator.ENV_VAR, "default")
  assert host_allocator.reuse_freed_memory() == "default"


def test_the_environment_variable_overrides_the_mode(monkeypatch):
  monkeypatch.setattr(host_allocator, "_applied", None)
  monkeypatch.setenv(host_allocator.ENV_VAR, "default")
  assert host_allocator.configure("reuse") == "default"
  assert host_allocator.configure("reuse") == "default"     # set once per process


@pytest.mark.parametrize("corpus, data_dir, mode, expected", [
    ("builtin", "", "auto", "default"),          # the small built-in model: compiling dominates
    ("ptb", "", "auto", "reuse"),
    ("builtin", "/some/corpus", "auto", "reuse"),
    ("ptb", "", "default", "default"),
    ("builtin", "", "reuse", "reuse"),
])
def test_launch_train_resolves_auto_by_corpus(corpus, data_dir, mode, expected):
  from launch import common
  from mimtext import config as config_lib
  config = config_lib.get_config()
  config.data.corpus, config.host_allocator = corpus, mode
  assert common.host_allocator_mode(config, data_dir or None) == expected


def test_launch_refuses_a_bad_config_value():
  from absl import app
  from launch import common
  from mimtext import config as config_lib
  config = config_lib.get_config()
  config.host_allocator = "jemalloc"
  with pytest.raises(app.UsageError, match="--config.host_allocator='jemalloc': must be auto"):
    common.host_allocator_mode(config)
