"""Training throughput of one sMIM optimiser step at the PTB configuration: mimtext (JAX) vs PyTorch.

Measures target tokens per second (`<eos>` included: Σ (lengths − 1) over the batch) of one Adam
step of the sentenceMIM PTB model (seed 000 §4.2: vocab 10,002, embeddings 300, GRU 512 encoder over
the reversed sentence and GRU 512 decoder, latent 128, 50% embedding dropout, A-MIM loss, batch 20):

* jax:   mimtext's own jitted step, `mimtext.train.make_train_step` (donated state, one-device mesh,
         `make_optimizer("adam", 1e-3)`, `objectives.get_loss("mim")`) — exactly what
         `launch.train` runs, including its finiteness guard and metrics.
* torch: `benchmarks/torch_reference.py`, the same model written the way the original PyTorch
         sMIM / sentence-VAE code is (nn.GRU over pack_padded_sequence after sorting by length,
         F.cross_entropy with ignore_index, torch.optim.Adam), started from the same weights.

Both frameworks train on the same batches: the first `--steps` batches of epoch 0 of mimtext's
`BatchPipeline` over the encoded PTB train split (shuffled, bucketed by length in chunks of 50
batches, padded to a multiple of 8). Each round times `--steps` JAX steps, then `--steps` torch
steps on that same batch list (interleaved, so drifting machine load hits both alike). Before the
rounds each framework runs one step per distinct padded length (JAX compiles every shape there) and
`--warmup` more steps. See benchmarks/README.md for how to run and read it.

  python benchmarks/train_step_throughput.py                  # both, full measurement
  python benchmarks/train_step_throughput.py --only jax       # no torch needed
  python benchmarks/train_step_throughput.py --steps 3 --rounds 1 --warmup 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

# Words per sentence of the PTB train split (index = word count, 0..82; 42,068 sentences, mean
# 21.1 words): the length distribution of the random fallback corpus when PTB is absent.
PTB_WORD_COUNT_HISTOGRAM = (
    0, 137, 282, 309, 434, 504, 630, 739, 929, 992, 1101, 1226, 1508, 1457, 1540, 1529, 1640,
    1616, 1714, 1580, 1666, 1599, 1566, 1566, 1393, 1452, 1365, 1245, 1146, 1102, 1031, 881, 768,
    696, 581, 548, 483, 441, 384, 352, 263, 252, 237, 184, 159, 121, 99, 89, 74, 58, 56, 62, 40,
    27, 29, 27, 19, 28, 9, 14, 17, 13, 9, 8, 2, 1, 2, 2, 5, 6, 2, 1, 1, 6, 1, 3, 1, 3, 2, 0, 2, 1,
    1)
PTB_VOCAB_SIZE = 10_002
PTB_PARAM_COUNT_128 = 11_026_218  # vocab 10,002, e 300, h 512, d 128 (both frameworks)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--batch_size", type=int, default=20)
  p.add_argument("--latent_dim", type=int, default=128)
  p.add_argument("--steps", type=int, default=30, help="timed steps per framework per round")
  p.add_argument("--warmup", type=int, default=5,
                 help="untimed steps per framework after one step on each distinct shape")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--threads", type=int, default=2,
                 help="torch.set_num_threads and the XLA CPU thread pool (via $NPROC, unless set)")
  p.add_argument("--data_dir", default=None,
                 help="PTB directory with train.txt (default: $MIMTEXT_DATA/ptb, else "
                      "../shared/data/ptb); 'random' forces random sentences with PTB's lengths")
  p.add_argument("--only", choices=("jax", "torch", "both"), default="both")
  p.add_argument("--seed", type=int, default=0, help="pipeline shuffle, init and dropout seed")
  p.add_argument("--jax_platform", default="cpu",
                 help="JAX_PLATFORMS for the JAX side ('cpu', 'gpu', ...); '' leaves JAX's default")
  p.add_argument("--torch_device", default="cpu")
  p.add_argument("--no_check", action="store_true",
                 help="skip the init-loss / equivalence check before timing")
  p.add_argument("--json_out", default=None, help="also write the results to this JSON file")
  args = p.parse_args(argv)
  for name in ("batch_size", "latent_dim", "steps", "rounds", "threads"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1")
  if args.warmup < 0:
    p.error("--warmup must be >= 0")
  return args


def configure_threads_and_platform(args) -> dict:
  """Must run before jax is imported: XLA reads $NPROC when it creates its CPU thread pool.

  XLA's CPU client sizes its Eigen intra-op pool ("tf_XLAEigen" threads) with
  tsl::port::MaxParallelism(), which honours $NPROC (else the CPUs of the process's affinity
  mask). The older recipe `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
  intra_op_parallelism_threads=1` does not set a count (and reportedly no longer has an effect).
  """
  os.environ.setdefault("NPROC", str(args.threads))
  if args.jax_platform:
    os.environ["JAX_PLATFORMS"] = args.jax_platform
  return {"NPROC": os.environ["NPROC"], "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


# ----------------------------------------------------------------------------- data


def find_data_dir(flag: str | None) -> str | None:
  """The PTB directory (with train.txt), or None for the random fallback."""
  if flag:
    if flag.lower() == "random":
      return None
    for candidate in (flag, os.path.join(flag, "ptb")):
      if os.path.isfile(os.path.join(candidate, "train.txt")):
        return candidate
    raise FileNotFoundError(f"--data_dir={flag}: no train.txt there nor in {flag}/ptb")
  candidates = []
  if os.environ.get("MIMTEXT_DATA"):
    candidates += [os.path.join(os.environ["MIMTEXT_DATA"], "ptb"), os.environ["MIMTEXT_DATA"]]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  candidates += [os.path.join("..", "shared", "data", "ptb"),
                 os.path.join(os.path.dirname(repo), "shared", "data", "ptb")]
  for candidate in candidates:
    if os.path.isfile(os.path.join(candidate, "train.txt")):
      return os.path.abspath(candidate)
  return None


def load_examples(args) -> tuple[list[np.ndarray], int, str]:
  """Encoded train sentences `<sos> … <eos>`, the vocabulary size, and where they came from."""
  data_dir = find_data_dir(args.data_dir)
  if data_dir is not None:
    from mimtext.data import corpus as corpus_lib
    # Plain text files (use_tfds=False gives the same ids as the TFDS path, without preparing it).
    corpus = corpus_lib.load_corpus(data_dir, use_tfds=False)
    return corpus["train"].ids, corpus.vocab.size, f"PTB train split from {data_dir}"
  from mimtext.data import vocab as vocab_lib
  rng = np.random.default_rng(args.seed)
  hist = np.asarray(PTB_WORD_COUNT_HISTOGRAM, dtype=np.float64)
  n = int(hist.sum())
  words = rng.choice(len(hist), size=n, p=hist / hist.sum())
  first_word = len(vocab_lib.SPECIAL_TOKENS)
  examples = [np.concatenate([[vocab_lib.SOS_ID], rng.integers(first_word, PTB_VOCAB_SIZE, w),
                              [vocab_lib.EOS_ID]]).astype(np.int32) for w in words]
  return (examples, PTB_VOCAB_SIZE,
          f"RANDOM sentences ({n}, PTB's length distribution; PTB not found)")


def make_batches(examples, args) -> list[dict[str, np.ndarray]]:
  """The first `--steps` batches of epoch 0 of mimtext's training pipeline.

  `BatchPipeline.dataset` maps `make_batch` over `epoch_plan` rows; calling them directly gives the
  same batches without grain's prefetch threads running beside the timed loops.
  """
  from mimtext.data import pipeline as pipeline_lib
  pipe = pipeline_lib.BatchPipeline(examples, global_batch_size=args.batch_size, seed=args.seed,
                                    shuffle=True, bucket_batches=50, drop_remainder=True,
                                    pad_multiple=8)
  plan = pipe.epoch_plan(0)
  if len(plan) < args.steps:
    raise ValueError(f"only {len(plan)} batches in an epoch; lower --steps")
  return [pipeline_lib.make_batch(examples, indices, pad_multiple=pipe.pad_multiple)
          for indices in plan[:args.steps]]


def num_tokens(batch) -> int:
  """Target tokens of a batch, `<eos>` included: Σ (lengths − 1) over valid rows."""
  return int(np.sum((batch["lengths"] - 1) * batch["valid"]))


def first_of_each_shape(batches) -> list[int]:
  seen, picks = set(), []
  for i, b in enumerate(batches):
    if b["tokens"].shape not in seen:
      seen.add(b["tokens"].shape)
      picks.append(i)
  return picks


# ----------------------------------------------------------------------------- JAX side


class JaxRunner:
  """mimtext's jitted, donated train step on a one-device mesh."""

  def __init__(self, vocab_size: int, args):
    import jax
    import jax.numpy as jnp
    from mimtext import objectives
    from mimtext import train as train_lib
    from mimtext.models import sentence_ae

    self.jax = jax
    self.model_cfg = sentence_ae.ModelConfig(vocab_size=vocab_size, latent_dim=args.latent_dim)
    self.obj_cfg = objectives.ObjectiveConfig(model=self.model_cfg, name="mim")
    self.loss_fn = objectives.get_loss("mim")
    self.mesh = train_lib.make_mesh(1)
    optimizer = train_lib.make_optimizer("adam", 1e-3)
    params = sentence_ae.init_params(jax.random.PRNGKey(args.seed), self.model_cfg)
    # Host copy of the initial weights (the device state is donated step after step).
    self.initial_params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    self.num_params = sentence_ae.count_params(params)
    self.num_latent = args.latent_dim
    self.state = train_lib.replicate(
        train_lib.TrainState(jnp.asarray(0, jnp.int32), params, optimizer.init(params)),
        self.mesh)
    self.step = train_lib.make_train_step(self.loss_fn, optimizer, self.obj_cfg, self.mesh)
    self.key = train_lib.replicate(jax.random.PRNGKey(args.seed + 1), self.mesh)
    self._shard = lambda b: train_lib.shard_batch(b, self.mesh)
    self.last_metrics = None

  def prepare(self, batches):
    return [self._shard(b) for b in batches]

  def run(self, device_batches) -> float:
    """Runs one step per batch and waits for the last; returns the wall time in seconds."""
    start = time.perf_counter()
    state, metrics = self.state, None
    for batch in device_batches:
      state, metrics = self.step(state, batch, self.key)
    self.jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - start
    self.state, self.last_metrics = state, metrics
    return elapsed

  def last_loss(self) -> float:
    m = self.jax.device_get(self.last_metrics)
    if float(m["finite"]) != 1.0:
      raise FloatingPointError("the JAX step reported a non-finite loss or gradient")
    return float(m["loss"])

  def init_losses(self, batch) -> tuple[float, np.ndarray]:
    """(training-mode A-MIM loss with dropout, per-sentence log p(x|z=μ) without dropout)."""
    from mimtext.models import sentence_ae
    params = self.initial_params
    b = {k: self.jax.numpy.asarray(v) for k, v in batch.items()}
    loss, _ = self.loss_fn(params, b, key=self.jax.random.PRNGKey(123), step=0, cfg=self.obj_cfg)
    post = sentence_ae.encode(params, b["tokens"], b["lengths"], self.model_cfg)
    log_px = sentence_ae.sentence_log_likelihood(params, post.mean, b["tokens"], b["lengths"],
                                                 self.model_cfg)
    return float(loss), np.asarray(log_px)


# ----------------------------------------------------------------------------- torch side


class TorchRunner:
  """The PyTorch reference (benchmarks/torch_reference.py), imported lazily."""

  def __init__(self, vocab_size: int, args, initial_params=None):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    import torch_reference

    self.torch, self.ref = torch, torch_reference
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    self.device = args.torch_device
    self.model = torch_reference.SentenceMIM(vocab_size, latent_dim=args.latent_dim)
    if initial_params is not None:
      torch_reference.load_mimtext_params(self.model, initial_params)
    self.model.to(self.device)
    self.num_params = torch_reference.count_params(self.model)
    self.num_latent = args.latent_dim
    self.step = torch_reference.make_train_step(self.model, 1e-3)
    self.loss = None

  def prepare(self, batches):
    return [self.ref.to_torch_batch(b, self.device) for b in batches]

  def _sync(self):
    if self.device.startswith("cuda"):
      self.torch.cuda.synchronize()

  def run(self, torch_batches) -> float:
    self._sync()
    start = time.perf_counter()
    loss = None
    for tokens, lengths in torch_batches:
      loss = self.step(tokens, lengths)
    loss = float(loss)  # forces completion (CPU: already done; CUDA: waits)
    self._sync()
    elapsed = time.perf_counter() - start
    self.loss = loss
    return elapsed

  def last_loss(self) -> float:
    if not math.isfinite(self.loss):
      raise FloatingPointError("the torch step produced a non-finite loss")
    return self.loss

  def init_losses(self, batch) -> tuple[float, np.ndarray]:
    """Same as JaxRunner.init_losses, on the torch model (call before any training step)."""
    torch = self.torch
    tokens, lengths = self.ref.to_torch_batch(batch, self.device)
    self.model.train()
    with torch.no_grad():
      loss, _ = self.model(tokens, lengths)
      self.model.eval()
      _, log_px = self.model(tokens, lengths, use_mean=True)
    self.model.train()
    return float(loss), log_px.cpu().numpy()


# ----------------------------------------------------------------------------- check and report


def check_init(runners: dict, batch, vocab_size: int) -> list[str]:
  """Init losses on one batch: finite and of the expected size; equal weights agree exactly.

  At init the decoder is close to uniform, so −log p(x|z) ≈ log(v) per target token, and with
  log σ² ≈ 0 the latent term −½(log q + log N) ≈ ½ d (log 2π + 1) per sentence.
  """
  lines = []
  sentences = float(np.sum(batch["valid"]))
  latent_dim = runners[next(iter(runners))].num_latent
  rec = math.log(vocab_size) * num_tokens(batch) / sentences
  expected = rec + 0.5 * latent_dim * (math.log(2 * math.pi) + 1)
  results = {}
  for name, runner in runners.items():
    loss, log_px = runner.init_losses(batch)
    results[name] = (loss, log_px)
    ok = math.isfinite(loss) and 0.5 * expected < loss < 2.0 * expected
    lines.append(f"  {name:5s} A-MIM loss at init (dropout on) {loss:10.2f} per sentence; "
                 f"expected ≈ {expected:.2f} (log(v)·tokens/sentences {rec:.2f} + ½d(log 2π + 1))  "
                 f"{'ok' if ok else 'UNEXPECTED'}")
    if not ok:
      raise AssertionError(f"{name} init loss {loss} is not finite / not near {expected:.2f}")
  if len(results) == 2:
    a, b = results["jax"][1], results["torch"][1]
    diff = float(np.max(np.abs(a - b)))
    rel = diff / float(np.max(np.abs(a)))
    lines.append(f"  same weights, no dropout, z = μ: max |log p(x|z)_jax − log p(x|z)_torch| = "
                 f"{diff:.2e} (relative {rel:.1e})  {'ok' if rel < 1e-4 else 'MISMATCH'}")
    if rel >= 1e-4:
      raise AssertionError(f"the torch reference disagrees with mimtext: relative diff {rel}")
  return lines


def summarise(times: list[float], tokens: int, steps: int) -> dict:
  rates = [tokens / t for t in times]
  return {"tokens_per_s": rates, "median_tokens_per_s": statistics.median(rates),
          "min_tokens_per_s": min(rates), "max_tokens_per_s": max(rates),
          "median_ms_per_step": 1e3 * statistics.median(times) / steps}


def versions(frameworks) -> dict:
  out = {"python": platform.python_version(), "numpy": np.__version__,
         "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
  if "jax" in frameworks:
    import jax
    import jaxlib
    out["jax"] = f"{jax.__version__} (jaxlib {jaxlib.__version__}, backend " \
                 f"{jax.default_backend()}, {jax.devices()[0].device_kind})"
  if "torch" in frameworks:
    import torch
    out["torch"] = f"{torch.__version__} (threads {torch.get_num_threads()}, interop " \
                   f"{torch.get_num_interop_threads()})"
  return out


def main(argv=None) -> dict:
  args = parse_args(argv)
  env = configure_threads_and_platform(args)
  frameworks = ("jax", "torch") if args.only == "both" else (args.only,)

  examples, vocab_size, source = load_examples(args)
  batches = make_batches(examples, args)
  tokens_per_round = sum(num_tokens(b) for b in batches)
  shapes = sorted({b["tokens"].shape[1] for b in batches})
  print(f"data: {source}; vocab {vocab_size}")
  print(f"batches: {len(batches)} x {args.batch_size} sentences, {tokens_per_round} target tokens "
        f"(<eos> incl.) per round, {tokens_per_round / len(batches):.1f} per step; padded lengths "
        f"{shapes}")

  # The JAX model is built first (it also provides the initial weights for torch); building it
  # does not start the torch side, so `--only jax` runs without torch installed.
  runners = {}
  jax_runner = JaxRunner(vocab_size, args)
  if "jax" in frameworks:
    runners["jax"] = jax_runner
  if "torch" in frameworks:
    runners["torch"] = TorchRunner(vocab_size, args, jax_runner.initial_params)
  for name, v in versions(frameworks).items():
    print(f"{name}: {v}")
  print(f"threads: torch.set_num_threads({args.threads}); XLA CPU pool NPROC={env['NPROC']}; "
        f"JAX_PLATFORMS={env['JAX_PLATFORMS'] or '(default)'}; XLA_FLAGS={env['XLA_FLAGS']!r}; "
        f"load average at start {os.getloadavg()[0]:.2f}")
  if os.getloadavg()[0] > 0.5:
    print(f"WARNING: load average {os.getloadavg()[0]:.2f} before timing: other processes are "
          "using the CPUs, so these numbers are not representative (PyTorch's OpenMP threads "
          "degrade far more than XLA's pool when the cores are oversubscribed)")
  counts = {name: r.num_params for name, r in runners.items()}
  counts.setdefault("jax", jax_runner.num_params)
  note = "equal" if len(set(counts.values())) == 1 else "DIFFERENT"
  print("parameters: " + ", ".join(f"{n} {c:,}" for n, c in counts.items()) + f" ({note}; "
        f"PTB/latent 128 layout: {PTB_PARAM_COUNT_128:,})")

  if not args.no_check:
    print("check on the first batch, both from the same initial weights:")
    for line in check_init(runners, batches[0], vocab_size):
      print(line)

  prepared = {name: r.prepare(batches) for name, r in runners.items()}
  warm = first_of_each_shape(batches)
  extra = [i % len(batches) for i in range(args.warmup)]
  for name, r in runners.items():
    t_shapes = r.run([prepared[name][i] for i in warm])
    t_extra = r.run([prepared[name][i] for i in extra]) if extra else 0.0
    print(f"warmup {name}: {len(warm)} steps (one per shape{', compiling' if name == 'jax' else ''})"
          f" {t_shapes:.1f}s, {len(extra)} more steps {t_extra:.1f}s; loss {r.last_loss():.2f}")

  times = {name: [] for name in runners}
  for round_index in range(args.rounds):
    parts = []
    for name, r in runners.items():
      elapsed = r.run(prepared[name])
      times[name].append(elapsed)
      parts.append(f"{name} {tokens_per_round / elapsed:9.0f} tok/s "
                   f"({1e3 * elapsed / len(batches):6.1f} ms/step, loss {r.last_loss():7.2f})")
    print(f"round {round_index + 1}/{args.rounds}: " + " | ".join(parts))

  results = {"args": vars(args), "data": source, "vocab_size": vocab_size,
             "tokens_per_round": tokens_per_round, "steps_per_round": len(batches),
             "padded_lengths": shapes, "param_counts": counts, "env": env,
             "versions": versions(frameworks), "load_average_end": os.getloadavg()[0]}
  print(f"\nsummary over {args.rounds} rounds of {len(batches)} steps (batch {args.batch_size}, "
        f"latent {args.latent_dim}); load average at end {os.getloadavg()[0]:.2f}")
  print(f"  {'':6s} {'median tok/s':>13s} {'min tok/s':>10s} {'max tok/s':>10s} "
        f"{'median ms/step':>15s}")
  for name in runners:
    s = summarise(times[name], tokens_per_round, len(batches))
    results[name] = s
    print(f"  {name:6s} {s['median_tokens_per_s']:13.0f} {s['min_tokens_per_s']:10.0f} "
          f"{s['max_tokens_per_s']:10.0f} {s['median_ms_per_step']:15.1f}")
  if len(runners) == 2:
    j, t = results["jax"], results["torch"]
    results["ratio_median"] = j["median_tokens_per_s"] / t["median_tokens_per_s"]
    results["ratio_best"] = j["max_tokens_per_s"] / t["max_tokens_per_s"]
    print(f"  JAX/torch throughput ratio: median {results['ratio_median']:.2f}x, "
          f"best {results['ratio_best']:.2f}x (>1: mimtext faster)")
  if args.json_out:
    with open(args.json_out, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2, default=str)
    print(f"wrote {args.json_out}")
  return results


if __name__ == "__main__":
  main()
