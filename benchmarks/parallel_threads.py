r"""One training with every thread against several trainings side by side: what `--parallel` buys.

  python benchmarks/parallel_threads.py [--runs 2] [--bf16] [--rounds 8] [--steps 30]

Runs `train_step_throughput.py --only jax` (the library's jitted PTB train step on fixed batches,
`launch/configs/ptb_smim_128.flags`) first alone with --threads=RUNS, then as RUNS processes at
once with --threads=1 each, and prints the median training throughput of each and their sum: the
number `launch.reproduce --parallel` rests on. Run it on an otherwise idle machine (the harness
warns when the load average is high); rounds of the side-by-side processes overlap except for
their start (each compiles first), so use enough rounds that the overlap dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_step_throughput.py")


def harness(threads: int, out: str, args) -> list[str]:
  cmd = [sys.executable, HARNESS, "--only", "jax", "--threads", str(threads), "--rounds",
         str(args.rounds), "--steps", str(args.steps), "--no_check", "--json_out", out]
  return cmd + (["--jax_bf16"] if args.bf16 else [])


def median_tokens(path: str) -> float:
  with open(path, encoding="utf-8") as f:
    results = json.load(f)
  name = next(k for k in results if k.startswith("jax") and isinstance(results[k], dict)
              and "median_tokens_per_s" in results[k])
  return results[name]["median_tokens_per_s"]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--runs", type=int, default=os.cpu_count() or 2)
  p.add_argument("--bf16", action="store_true", help="bfloat16 matmuls (--jax_bf16)")
  p.add_argument("--rounds", type=int, default=8)
  p.add_argument("--steps", type=int, default=30)
  args = p.parse_args()
  env = {k: v for k, v in os.environ.items() if k != "NPROC"}
  with tempfile.TemporaryDirectory() as tmp:
    alone = os.path.join(tmp, "alone.json")
    subprocess.run(harness(args.runs, alone, args), check=True, env=env,
                   stdout=subprocess.DEVNULL)
    outs = [os.path.join(tmp, f"side_{i}.json") for i in range(args.runs)]
    procs = [subprocess.Popen(harness(1, out, args), env=env, stdout=subprocess.DEVNULL)
             for out in outs]
    for proc in procs:
      if proc.wait() != 0:
        raise SystemExit(f"a side-by-side run failed (exit {proc.returncode})")
    one = median_tokens(alone)
    side = [median_tokens(out) for out in outs]
  dtype = "bfloat16" if args.bf16 else "float32"
  print(f"ptb_smim_128, {dtype}, batch 20, {args.rounds} rounds of {args.steps} steps, "
        f"{os.cpu_count()} CPUs")
  print(f"  one run, {args.runs} threads:          {one:9.0f} tok/s")
  print(f"  {args.runs} runs side by side, 1 thread: " + " + ".join(f"{t:.0f}" for t in side)
        + f" = {sum(side):.0f} tok/s ({sum(side) / one:.2f}x the one run's throughput; each run "
        f"{min(side) / one:.2f}-{max(side) / one:.2f}x as fast as alone)")


if __name__ == "__main__":
  main()
