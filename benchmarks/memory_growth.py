"""Resident memory of training over many steps: does it grow?

Runs the library's train step (`train.make_train_step`, what launch.train runs: donated state,
the finiteness guard, metrics left on the device) over the first `--steps` batches of epoch 0 of
PTB train, in pipeline order (so every padded length of the epoch, each a compilation, is met in
the order training meets it), and samples the current resident set (VmRSS of
/proc/self/status) every `--every` steps, with the peak (VmHWM) and the mean step time since
the last sample. The metrics are fetched at each sample, as launch.train fetches them at its
logging interval. The first step of each new padded length (the one that compiles it) is timed
on its own and listed at the end: compilation time under each `--host_allocator`.

  $PY benchmarks/memory_growth.py                                   # 1,000 steps, bfloat16
  $PY benchmarks/memory_growth.py --matmul_dtype float32 --host_allocator default

Growth is judged after the last new padded length has been compiled (each compilation adds an
executable and its buffers): the line "after step N (last new shape)" compares the RSS at the end
with the RSS at the first sample after that step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step_throughput as harness  # noqa: E402  (the shared config / data helpers)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  harness.add_config_args(p)
  p.set_defaults(matmul_dtype="bfloat16")
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--every", type=int, default=100, help="steps between RSS samples")
  p.add_argument("--threads", type=int, default=2)
  args = p.parse_args(argv)
  if args.steps < 1 or args.every < 1:
    p.error("--steps and --every must be >= 1")
  args.jax_platform = "cpu"
  return args


def _status_mib(field: str) -> float:
  """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak) in MiB."""
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024.0
  raise KeyError(field)


def main(argv=None):
  args = parse_args(argv)
  env = harness.configure_threads_and_platform(args)
  import jax
  from mimtext import train as train_lib

  config, _, _ = harness.load_config(args)
  examples, vocab_size, source = harness.load_split_examples(args, config, "train")
  batches = harness.make_batches(examples, args, config)
  setup = train_lib.build_training_setup(config, vocab_size)
  step_fn = setup.make_train_step()
  key = train_lib.replicate(jax.random.PRNGKey(args.seed), setup.mesh)
  state = setup.state
  print(harness.machine_line(harness.machine_info()))
  print(f"data: {source}; {args.steps} batches of {config.batch_size}; matmul dtype "
        f"{config.model.matmul_dtype}; host allocator {env['host_allocator']}; "
        f"jax {jax.__version__}")
  seen, last_new_shape, first_steps = set(), 0, {}
  samples = [(0, _status_mib("VmRSS"), _status_mib("VmHWM"), float("nan"))]
  print(f"{'step':>6s} {'RSS MiB':>9s} {'peak MiB':>9s} {'ms/step':>8s}  shapes so far")
  start = time.perf_counter()
  for i, batch in enumerate(batches, start=1):
    shape = batch["tokens"].shape
    new_shape = shape not in seen
    if new_shape:
      seen.add(shape)
      last_new_shape = i
      jax.block_until_ready(state)
      first_start = time.perf_counter()
    state, metrics = step_fn(state, train_lib.shard_batch(batch, setup.mesh), key)
    if new_shape:                    # the step that compiles this padded length, timed alone
      jax.block_until_ready((state, metrics))
      first_steps[shape[1]] = time.perf_counter() - first_start
    if i % args.every == 0 or i == args.steps:
      loss = float(jax.device_get(metrics["loss"]))            # waits for the step
      now = time.perf_counter()
      ms = 1e3 * (now - start) / (i - samples[-1][0])
      start = now
      samples.append((i, _status_mib("VmRSS"), _status_mib("VmHWM"), ms))
      print(f"{i:6d} {samples[-1][1]:9.0f} {samples[-1][2]:9.0f} {ms:8.1f}  {len(seen)} "
            f"(loss {loss:.2f})", flush=True)
  rounded = {length: round(seconds, 2) for length, seconds in first_steps.items()}
  print(f"first step of each padded length (compiles it), s: {rounded}; "
        f"total {sum(first_steps.values()):.1f} s")
  after = [s for s in samples if s[0] >= last_new_shape]
  if len(after) >= 2:
    growth = after[-1][1] - after[0][1]
    print(f"after step {last_new_shape} (last new shape): RSS {after[0][1]:.0f} MiB at step "
          f"{after[0][0]}, {after[-1][1]:.0f} MiB at step {after[-1][0]}: growth {growth:+.0f} MiB "
          f"over {after[-1][0] - after[0][0]} steps; peak {after[-1][2]:.0f} MiB")
  else:
    print(f"the last new shape came at step {last_new_shape}: too late to judge growth; "
          "raise --steps")
  return samples


if __name__ == "__main__":
  main()
