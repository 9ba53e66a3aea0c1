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
95.7 ms instead of 116.7 ms). The cost: the process's resident memory stays at its peak instead of
shrinking between steps, which is what a training or evaluation loop reaches every step anyway
(benchmarks/README.md has the 1,000-step RSS check).

Call it first thing in a process, before JAX creates its thread pools (the first computation or
`jax.devices()`); threads that have already allocated keep their arenas. The launch scripts call
it; set MIMTEXT_HOST_ALLOCATOR=default to leave the allocator alone. Where the C library is not
glibc (macOS, musl) it does nothing.
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


def reuse_freed_memory() -> str:
  """Applies the settings of the module docstring once per process; returns what was done.

  Returns one of "reuse" (applied now or earlier), "default" (MIMTEXT_HOST_ALLOCATOR=default),
  "unsupported" (not glibc, or mallopt refused a setting; the allocator is then as before
  for the settings that were refused).
  """
  global _applied
  if _applied is not None:
    return _applied
  choice = os.environ.get(ENV_VAR, "reuse").strip().lower()
  if choice not in ("reuse", "default"):
    raise ValueError(f"{ENV_VAR} must be 'reuse' or 'default', got {choice!r}")
  if choice == "default":
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
