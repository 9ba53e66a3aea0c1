"""Evaluation throughput of mimtext (JAX): sentences per second of the bounds and of decoding.

On the PTB test split (or its first `--max_sentences`), in batches of `--batch_size`
(launch.evaluate's default 50; the evaluation pipeline: no shuffle, sentences in order of length,
lengths padded to a multiple of 8, the last batch filled with filler rows), four measured functions,
all the library's own:

* elbo:   `bounds.sentence_terms(params, batch, key, obj_cfg, num_samples=10)`: the ELBO and MELBO
          ingredients (10 z draws per sentence, `iw_chunk` at a time), as `launch.evaluate`.
* iw:     `bounds.sentence_terms(..., num_samples=10, iw_samples=500, iw_chunk=C)`: the
          importance-weighted bound with K = 500 draws per sentence, streamed C at a time
          (`stream_draws`: memory of C decoder passes), as `launch.evaluate --iw_samples=500`.
* greedy: `reconstruction.posterior_code` (z = E q(z|x)) then `generation.generate_ids(...,
          method="greedy")` (`decoding.decode`), as the BLEU reconstructions of launch.evaluate.
* beam:   the same with `method="beam", beam_width=5` (`decoding.beam_search`).

Timing: every measured function makes one full pass over the batches (this compiles it, once per
distinct padded length), then a second, timed pass; "compile" is first − second. Each pass ends
with `jax.block_until_ready` on every output. Model: randomly initialised at the sizes of
`--flagfile` (default launch/configs/ptb_smim_128.flags) — the bounds cost the same whatever the
weights — or `--workdir W`, a trained run (`runner.load_run`). Decoding does depend on the weights:
a row stops at its first `<eos>`, and an untrained decoder rarely emits one, so random-init
decoding runs to the length limit (the worst case); the mean decoded length is printed beside it.

  python benchmarks/eval_throughput.py --max_sentences 200 --iw_samples 50      # CPU-sized
  python benchmarks/eval_throughput.py --jax_platform '' --batch_size 500       # GPU, full test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step_throughput as tst  # noqa: E402  (shared config, data and machine helpers)

MEASURES = ("elbo", "iw", "greedy", "beam")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  tst.add_config_args(p)  # --flagfile --batch_size --latent_dim --data_dir --seed
  p.set_defaults(batch_size=50)
  p.add_argument("--workdir", default=None,
                 help="a trained run (launch.train --workdir) to load instead of random weights")
  p.add_argument("--step", default="best", help="checkpoint of --workdir: best|latest|N")
  p.add_argument("--split", default="test")
  p.add_argument("--max_sentences", type=int, default=0, help="first N sentences; 0 = all")
  p.add_argument("--num_z_samples", type=int, default=10, help="z draws of the ELBO / MELBO")
  p.add_argument("--iw_samples", type=int, default=500, help="K of the importance-weighted bound")
  p.add_argument("--iw_chunk", type=int, default=10,
                 help="draws per chunk of bounds.sentence_terms (its iw_chunk; static)")
  p.add_argument("--beam_width", type=int, default=5)
  p.add_argument("--max_decode_len", type=int, default=0,
                 help="decoding length limit; 0 = longest sentence + 5 (as launch.evaluate)")
  p.add_argument("--measures", default=",".join(MEASURES),
                 help=f"comma-separated subset of {','.join(MEASURES)}")
  p.add_argument("--threads", type=int, default=2, help="the XLA CPU thread pool (via $NPROC)")
  p.add_argument("--jax_platform", default="cpu",
                 help="JAX_PLATFORMS ('cpu', 'gpu', ...); '' leaves JAX's default")
  p.add_argument("--profile", default=None, metavar="DIR",
                 help="wrap the timed passes in jax.profiler.trace(DIR)")
  p.add_argument("--json_out", default=None)
  args = p.parse_args(argv)
  args.measures = tuple(m.strip() for m in args.measures.split(",") if m.strip())
  bad = [m for m in args.measures if m not in MEASURES]
  if bad or not args.measures:
    p.error(f"--measures: unknown {bad}; choose from {MEASURES}")
  for name in ("batch_size", "num_z_samples", "iw_samples", "iw_chunk", "beam_width", "threads"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1")
  if args.max_sentences < 0 or args.max_decode_len < 0:
    p.error("--max_sentences and --max_decode_len must be >= 0")
  return args


def load_model(args):
  """(params, model_cfg, obj_cfg, examples of the split, description)."""
  import jax
  from mimtext import experiment
  from mimtext.models import sentence_ae
  if args.workdir:
    from mimtext.evaluation import runner
    run = runner.load_run(args.workdir, tst_step(args.step))
    config = run.config
    config.data.use_tfds = False
    data_dir = tst.find_data_dir(args.data_dir)
    if data_dir is not None:
      config.data.data_dir = data_dir
    corpus = experiment.load_corpus(config, vocab=run.vocab, splits=(args.split,))
    source = f"{args.split} split of {config.data.corpus} (vocabulary of {args.workdir})"
    return (run.params, run.model_cfg, run.obj_cfg, corpus[args.split].ids,
            f"{source}; trained run {args.workdir} at step {run.step}")
  config, applied, _ = tst.load_config(args)
  examples, vocab_size, source = tst.load_split_examples(args, config, args.split)
  model_cfg = experiment.model_config(config, vocab_size)
  obj_cfg = experiment.objective_config(config, model_cfg)
  params = sentence_ae.init_params(jax.random.PRNGKey(args.seed), model_cfg)
  return (params, model_cfg, obj_cfg, examples,
          f"{source}; random init at the sizes of {args.flagfile} ({len(applied)} --config lines)")


def tst_step(step: str):
  return int(step) if step.isdigit() else step


def make_batches(examples, batch_size: int):
  from mimtext.data import pipeline as pipeline_lib
  pipe = pipeline_lib.evaluation_pipeline(examples, batch_size)
  return list(pipe.epoch(0))


def measured_functions(args, params, model_cfg, obj_cfg, max_len: int) -> dict:
  """name -> fn(batch, key) returning device arrays (not yet waited on)."""
  from mimtext import objectives
  from mimtext.evaluation import bounds, generation, reconstruction
  scoring = objectives.common.scoring(obj_cfg)

  def elbo(batch, key):
    return bounds.sentence_terms(params, batch, key, obj_cfg, args.num_z_samples,
                                 iw_chunk=args.iw_chunk)

  def iw(batch, key):
    return bounds.sentence_terms(params, batch, key, obj_cfg, args.num_z_samples,
                                 args.iw_samples, iw_chunk=args.iw_chunk)

  def decode(method):
    def fn(batch, key):
      z = reconstruction.posterior_code(params, batch["tokens"], batch["lengths"], model_cfg)
      return generation.generate_ids(params, z, model_cfg, method=method,
                                     beam_width=args.beam_width, max_len=max_len,
                                     scoring=scoring)
    return fn

  table = {"elbo": elbo, "iw": iw, "greedy": decode("greedy"), "beam": decode("beam")}
  return {name: table[name] for name in args.measures}


def run_pass(fn, device_batches, key) -> tuple[float, list]:
  import jax
  start = time.perf_counter()
  outs = [fn(b, jax.random.fold_in(key, i)) for i, b in enumerate(device_batches)]
  jax.block_until_ready(outs)
  return time.perf_counter() - start, outs


def main(argv=None) -> dict:
  args = parse_args(argv)
  env = tst.configure_threads_and_platform(args)
  machine = tst.machine_info()
  import jax
  import jax.numpy as jnp

  params, model_cfg, obj_cfg, examples, source = load_model(args)
  if args.max_sentences:
    examples = examples[:args.max_sentences]
  if not examples:
    raise SystemExit("no sentences to evaluate")
  batches = make_batches(examples, args.batch_size)
  num_words = np.asarray([len(x) - 2 for x in examples])
  max_len = args.max_decode_len or int(num_words.max()) + 5
  n = len(examples)
  pad = tst.padding_fraction(batches)
  shapes = sorted({b["tokens"].shape[1] for b in batches})
  device_batches = [{k: jnp.asarray(v) for k, v in b.items() if k in ("tokens", "lengths", "valid")}
                    for b in batches]
  params = jax.device_put(params)
  print(tst.machine_line(machine))
  print(f"data: {source}")
  print(f"sentences: {n} in {len(batches)} batches of {args.batch_size}; padded lengths {shapes}; "
        f"padding fraction {pad:.3f}; decode max_len {max_len}")
  print(f"model: objective {obj_cfg.name}, vocab {model_cfg.vocab_size}, latent "
        f"{model_cfg.latent_dim}, hidden {model_cfg.hidden_dim}, embed {model_cfg.embed_dim}; "
        f"jax {jax.__version__}, backend {jax.default_backend()} ({jax.devices()[0].device_kind}); "
        f"NPROC={env['NPROC']}; host allocator {env['host_allocator']}")
  if os.getloadavg()[0] > 0.5 and jax.default_backend() == "cpu":
    print(f"WARNING: load average {os.getloadavg()[0]:.2f}: the CPUs are shared, the timings "
          "are not representative")

  fns = measured_functions(args, params, model_cfg, obj_cfg, max_len)
  key = jax.random.PRNGKey(args.seed)
  labels = {"elbo": f"ELBO+MELBO, k={args.num_z_samples}",
            "iw": f"IW bound, K={args.iw_samples} (chunk {args.iw_chunk})",
            "greedy": "greedy decode (z = mean)",
            "beam": f"beam-{args.beam_width} decode (z = mean)"}
  results = {}
  first_times = {}
  for name, fn in fns.items():  # compile pass: every measured function, every shape
    first_times[name], _ = run_pass(fn, device_batches, key)
    print(f"compile pass {name}: {first_times[name]:.1f}s")
  profile = contextlib.nullcontext()
  if args.profile:
    profile = jax.profiler.trace(args.profile)
    print(f"profiling the timed passes into {args.profile} (jax.profiler.trace)")
  with profile:
    for name, fn in fns.items():
      elapsed, outs = run_pass(fn, device_batches, key)
      r = {"label": labels[name], "first_pass_s": first_times[name], "timed_pass_s": elapsed,
           "compile_s": max(first_times[name] - elapsed, 0.0), "sentences": n,
           "sentences_per_s": n / elapsed}
      if name in ("greedy", "beam"):
        lengths = np.concatenate([np.asarray(jax.device_get(o[1]))[np.asarray(b["valid"]) > 0]
                                  for o, b in zip(outs, batches)])
        r["mean_decoded_tokens"] = float(lengths.mean())
        r["decoded_tokens_per_s"] = float(lengths.sum()) / elapsed
        r["stopped_before_max_len"] = float(np.mean(lengths < max_len))
      else:
        draws = args.num_z_samples if name == "elbo" else max(args.num_z_samples, args.iw_samples)
        r["z_draws_per_sentence"] = draws
        r["decoder_passes_per_s"] = n * draws / elapsed
      results[name] = r
  rss = tst.peak_rss_mib()

  print(f"\n{n} sentences ({args.split}), batch {args.batch_size}; load average at end "
        f"{os.getloadavg()[0]:.2f}; peak RSS {rss:.0f} MiB (whole process)")
  print(f"  {'measure':38s} {'sentences/s':>12s} {'timed pass s':>13s} {'compile s':>10s}  extra")
  for name, r in results.items():
    if "mean_decoded_tokens" in r:
      extra = (f"{r['mean_decoded_tokens']:.1f} tokens/sentence, "
               f"{100 * r['stopped_before_max_len']:.0f}% stopped at <eos>")
    else:
      extra = f"{r['decoder_passes_per_s']:.0f} sentence-decoder passes/s"
    print(f"  {r['label']:38s} {r['sentences_per_s']:12.1f} {r['timed_pass_s']:13.2f} "
          f"{r['compile_s']:10.1f}  {extra}")
  if args.profile:
    print("  (profiled: the timed passes ran under the tracer)")
  out = {"args": vars(args), "data": source, "sentences": n, "batches": len(batches),
         "padded_lengths": shapes, "padding_fraction": pad, "max_decode_len": max_len,
         "env": env, "machine": dict(machine, load_average_end=list(os.getloadavg())),
         "jax": f"{jax.__version__} ({jax.default_backend()}, {jax.devices()[0].device_kind})",
         "peak_rss_mib": rss, "results": results}
  if args.json_out:
    with open(args.json_out, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2, default=str)
    print(f"wrote {args.json_out}")
  return out


if __name__ == "__main__":
  main()
