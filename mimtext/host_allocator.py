"""Keep the host allocator from handing large buffers back to the kernel between steps.

On CPU, every execution of a jitted step allocates its temporary buffers (the [t·b, v] logits and
their gradient, the saved gates: tens of MB at the PTB configuration) and frees them at the end.
glibc's malloc serves allocations above its mmap threshold (at most 32 MiB), and any allocation
too large for a thread's arena, with a fresh `mmap`, and returns it with `munmap` when freed. So
every step touches new pages: at batch 20 in bfloat16 the sMIM train step took ~26,000 minor page
faults and 50 ms of kernel time per 117 ms step (`benchmarks/step_breakdown.py` prints both
figures per row).

`reuse_freed_memory` sets three glibc `mallopt` parameters, the equivalent of starting the process
with MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647:

* M_ARENA_MAX = 1: every thread allocates from the main (sbrk) heap. A secondary arena cannot
  hold a block above its 64 MiB heap size and falls back to mmap whatever M_MMAP_MAX says, and
  XLA's executor threads allocate from such arenas.
* M_MMAP_MAX = 0: no allocation is served by mmap.
* M_TRIM_THRESHOLD = 2^31 − 1: freed memory at the top of the heap stays mapped.

Freed buffers are then reused by the next step without a page fault (0 faults per step; the step
90.3 ms instead of 116.7 ms). The costs, measured on the project's 2-core CPU machine
(benchmarks/README.md, "Host allocator"):

* XLA compiles ~50 % slower (4.8-5.5 s instead of 3.0-3.9 s per padded length of the f32 PTB
  step): its compiler threads then share one arena. A run compiles once per padded length; it
  pays off when the steps are large (PTB: 11 lengths, ~20 s more compiling, ~25 ms less per
  step) and not for a small model (the built-in quickstart trains in 96 s instead of 79 s).
* The resident memory stays near its peak instead of shrinking between steps (1.6 GiB instead of
  1.2 GiB for the bfloat16 PTB step; flat over 1,500 steps after the last new length).

Call it first thing in a process, before JAX creates its thread pools (the first computation or
`jax.devices()`); threads that have already allocated keep their arenas. `launch.train` calls it
as its config's `host_allocator` says ("auto": reuse unless the corpus is the built-in one); the
environment variable MIMTEXT_HOST_ALLOCATOR=reuse|default overrides that, in every launch script.
Where the C library is not glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = "MIMTEXT_HOST_ALLOCATOR"

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))

MODES = ("reuse", "default")
CONFIG_CHOICES = ("auto",) + MODES   # config.host_allocator (launch.train resolves "auto")

_applied: str | None = None


def _glibc():
  """The process's C library if it is glibc (it has `mallopt` and `gnu_get_libc_version`)."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None
  if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
    return None
  return libc


def configure(mode: str) -> str:
  """Sets the host allocator once per process; returns the mode in effect.

  Args:
    mode: "reuse" (the settings of the module docstring) or "default" (glibc as it is). The
      environment variable MIMTEXT_HOST_ALLOCATOR, when set, takes precedence.

  Returns:
    "reuse", "default", or "unsupported" (not glibc, or mallopt refused a setting). A second
    call returns the first call's result: the allocator cannot be set twice.
  """
  global _applied
  if _applied is not None:
    return _applied
  mode = os.environ.get(ENV_VAR, "").strip().lower() or mode
  if mode not in MODES:
    raise ValueError(f"{ENV_VAR} / host_allocator must be one of {MODES}, got {mode!r}")
  if mode == "default":
    _applied = "default"
    return _applied
  libc = _glibc()
  if libc is None:
    _applied = "unsupported"
    return _applied
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  libc.mallopt.restype = ctypes.c_int
  ok = all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
  _applied = "reuse" if ok else "unsupported"
  return _applied


def reuse_freed_memory() -> str:
  """`configure("reuse")`: for a notebook or program of one's own, before its first JAX call."""
  return configure("reuse")
