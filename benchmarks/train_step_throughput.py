"""Training throughput of one sMIM optimiser step at the PTB configuration: mimtext (JAX) vs
PyTorch.

Measures target tokens per second (`<eos>` included: Σ (lengths − 1) over the batch) of one
optimiser step of the sentenceMIM PTB model as `launch/configs/ptb_smim_128.flags` configures it
(`--flagfile`): seed 000 §4.2 (embeddings 300, GRU 512 encoder over the reversed sentence and GRU
512 decoder, latent 128, 50% embedding dropout, A-MIM loss, Adam 1e-3, batch 20) plus the official
code's options that flagfile sets (the encoder reads `<sos>`, embedding dropout on the decoder
inputs only, gradient norm clipped at 0.25, the log(B)/B batch constant, vocabulary of the train
words seen at least twice: 9,972 with the specials):

* jax:   mimtext's own jitted step, `mimtext.train.build_training_setup(config, vocab)` and
         `make_train_step` on the flagfile's config — exactly what `launch.train` builds and runs
         (donated state, one-device mesh, optimiser with clipping, finiteness guard, metrics).
* torch: `benchmarks/torch_reference.py`, the same model written the way the original PyTorch
         sMIM / sentence-VAE code is (nn.GRU over pack_padded_sequence after sorting by length,
         F.cross_entropy with ignore_index, clip_grad_norm_, torch.optim.Adam), started from the
         same weights and configured from the same config (`torch_options`; an option it does not
         implement stops the run instead of being silently dropped).
* torch_padded (`--torch_padded`): the same reference without sort or packing, each batch padded
         to its longest sentence (the second PyTorch variant).

All frameworks train on the same batches: the first `--steps` batches of epoch 0 of mimtext's
`BatchPipeline` over the encoded PTB train split (shuffled, bucketed by length in chunks of
`data.bucket_batches` batches, padded to a multiple of 8). Each round times `--steps` JAX steps,
then `--steps` steps of each torch variant on that same batch list (interleaved, so drifting
machine load hits all alike). Before the rounds each framework runs two steps per distinct padded
length (the first compiles, in JAX; the second is the same shape in steady state, so the
difference is the compile time of that shape) and `--warmup` more steps. See benchmarks/README.md.

  python benchmarks/train_step_throughput.py                  # both, full measurement
  python benchmarks/train_step_throughput.py --only jax       # no torch needed
  python benchmarks/train_step_throughput.py --steps 3 --rounds 1 --warmup 1   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FLAGFILE = os.path.join("launch", "configs", "ptb_smim_128.flags")

# Words per sentence of the PTB train split (index = word count, 0..82; 42,068 sentences, mean
# 21.1 words): the length distribution of the random fallback corpus when PTB is absent.
PTB_WORD_COUNT_HISTOGRAM = (
    0, 137, 282, 309, 434, 504, 630, 739, 929, 992, 1101, 1226, 1508, 1457, 1540, 1529, 1640,
    1616, 1714, 1580, 1666, 1599, 1566, 1566, 1393, 1452, 1365, 1245, 1146, 1102, 1031, 881, 768,
    696, 581, 548, 483, 441, 384, 352, 263, 252, 237, 184, 159, 121, 99, 89, 74, 58, 56, 62, 40,
    27, 29, 27, 19, 28, 9, 14, 17, 13, 9, 8, 2, 1, 2, 2, 5, 6, 2, 1, 1, 6, 1, 3, 1, 3, 2, 0, 2, 1,
    1)
PTB_VOCAB_SIZE = 9_972  # PTB train words seen >= 2 times (data.min_count=2) + the 4 specials


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  add_config_args(p)
  p.add_argument("--steps", type=int, default=30, help="timed steps per framework per round")
  p.add_argument("--warmup", type=int, default=5,
                 help="untimed steps per framework after two steps on each distinct shape")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--threads", type=int, default=2,
                 help="torch.set_num_threads and the XLA CPU thread pool (via $NPROC, unless set)")
  p.add_argument("--only", choices=("jax", "torch", "both"), default="both")
  p.add_argument("--torch_padded", action="store_true",
                 help="also time the torch reference without sort / packing, each batch padded "
                      "to its longest sentence (skipped with --only jax)")
  p.add_argument("--jax_bf16", action="store_true",
                 help="also time mimtext with bfloat16 matmul operands (model.matmul_dtype="
                      "bfloat16) beside the flagfile's precision, in the same rounds")
  p.add_argument("--jax_platform", default="cpu",
                 help="JAX_PLATFORMS for the JAX side ('cpu', 'gpu', ...); '' leaves JAX's default")
  p.add_argument("--torch_device", default="cpu")
  p.add_argument("--no_check", action="store_true",
                 help="skip the init-loss / equivalence check before timing")
  p.add_argument("--profile", default=None, metavar="DIR",
                 help="wrap the timed rounds in jax.profiler.trace(DIR) (TensorBoard / Perfetto "
                      "trace); the rounds are then slower and not a throughput measurement")
  p.add_argument("--json_out", default=None, help="also write the results to this JSON file")
  args = p.parse_args(argv)
  for name in ("steps", "rounds", "threads"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1")
  for name in ("batch_size", "latent_dim"):
    if getattr(args, name) is not None and getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1")
  if args.warmup < 0:
    p.error("--warmup must be >= 0")
  return args


def add_config_args(p: argparse.ArgumentParser) -> None:
  """The flags both benchmarks share: the flagfile, its overrides, the data and the seed."""
  p.add_argument("--flagfile", default=DEFAULT_FLAGFILE,
                 help="launch.train flagfile whose --config.* lines configure model, objective, "
                      "optimizer and data (relative paths: from the working directory, else the "
                      "repository); 'none' = mimtext/config.py defaults")
  p.add_argument("--batch_size", type=int, default=None,
                 help="rows per batch (default: the config's batch_size, 20)")
  p.add_argument("--latent_dim", type=int, default=None,
                 help="overrides config.model.latent_dim (default: the flagfile's, 128)")
  p.add_argument("--matmul_dtype", choices=("float32", "bfloat16"), default=None,
                 help="overrides config.model.matmul_dtype, mimtext's matmul operands (default: "
                      "the flagfile's); the PyTorch reference stays float32")
  p.add_argument("--data_dir", default=None,
                 help="PTB directory with train.txt (default: $MIMTEXT_DATA/ptb, else "
                      "../shared/data/ptb); 'random' forces random sentences with PTB's lengths")
  p.add_argument("--seed", type=int, default=0, help="pipeline shuffle, init and dropout seed")
  p.add_argument("--host_allocator", choices=("reuse", "default"), default="reuse",
                 help="'reuse': glibc keeps freed buffers for the next step, as the launch "
                      "scripts set it (mimtext.host_allocator; process-wide, so PyTorch runs "
                      "under it too); 'default': glibc's own behaviour")


def configure_threads_and_platform(args) -> dict:
  """Must run before jax is imported: XLA reads $NPROC when it creates its CPU thread pool, and
  the host allocator is set (`--host_allocator`) before any thread allocates.

  XLA's CPU client sizes its Eigen intra-op pool ("tf_XLAEigen" threads) with
  tsl::port::MaxParallelism(), which honours $NPROC (else the CPUs of the process's affinity
  mask). The older recipe `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
  intra_op_parallelism_threads=1` does not set a count (and reportedly no longer has an effect).
  """
  os.environ.setdefault("NPROC", str(args.threads))
  if args.jax_platform:
    os.environ["JAX_PLATFORMS"] = args.jax_platform
  from mimtext import host_allocator   # before any thread allocates (module docstring)
  os.environ[host_allocator.ENV_VAR] = args.host_allocator
  allocator = host_allocator.reuse_freed_memory()
  return {"NPROC": os.environ["NPROC"], "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "host_allocator": allocator}


# ----------------------------------------------------------------------------- config


def _coerce(current, text: str):
  """`text` (a flagfile value) as the type of the config field's current value."""
  text = text.strip()
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"not a boolean: {text!r}")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]
  return text


def resolve_flagfile(path: str) -> str:
  for candidate in (path, os.path.join(REPO, path)):
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"--flagfile={path}: no such file (here nor under {REPO})")


def read_flagfile(path: str) -> tuple[list[tuple[str, str]], list[str]]:
  """The `--config.FIELD=VALUE` pairs of a flagfile (nested --flagfile= lines expanded) and the
  other flag lines, which this harness ignores."""
  pairs, ignored = [], []
  with open(resolve_flagfile(path), encoding="utf-8") as f:
    for raw in f:
      line = raw.strip()
      if not line or line.startswith("#"):
        continue
      if line.startswith("--flagfile="):
        more, more_ignored = read_flagfile(line.split("=", 1)[1])
        pairs += more
        ignored += more_ignored
      elif line.startswith("--config.") and "=" in line:
        field, value = line[len("--config."):].split("=", 1)
        pairs.append((field, value))
      else:
        ignored.append(line)
  return pairs, ignored


def load_config(args):
  """The experiment config launch.train would build from `--flagfile` (base defaults + its
  `--config.*` lines), then this harness's own overrides; returns (config, lines applied, lines
  ignored)."""
  from mimtext import config as config_lib
  from mimtext import experiment
  config = config_lib.get_config()
  applied, ignored = [], []
  if args.flagfile and args.flagfile.lower() != "none":
    pairs, ignored = read_flagfile(args.flagfile)
    for field, value in pairs:
      experiment.set_config_value(config, field,
                                  _coerce(experiment.config_value(config, field), value))
      applied.append(f"{field}={value}")
  if args.batch_size is not None:
    config.batch_size = args.batch_size
  if args.latent_dim is not None:
    config.model.latent_dim = args.latent_dim
  if args.matmul_dtype is not None:
    config.model.matmul_dtype = args.matmul_dtype
  config.seed = args.seed
  config.num_devices = 1
  config.data.use_tfds = False  # the plain text files: the same ids, without preparing TFDS
  return config, applied, ignored


def torch_options(model_cfg, obj_cfg, config) -> dict:
  """`SentenceMIM` / `make_train_step` keyword arguments equal to the mimtext config.

  Raises ValueError naming every option the PyTorch reference does not implement (so the two
  sides never silently differ). `log_var_init` / `init_scale` need nothing: torch starts from a
  copy of mimtext's initial weights.
  """
  unsupported = []
  want = {"cell": "gru", "bidirectional": False, "summary": "last", "encoder_highway": 0,
          "decoder_highway": 0, "condition": "both", "output_dropout": 0.0,
          "posterior": "gaussian", "floor_mode": "clamp", "mi_head": False}
  for name, value in want.items():
    if getattr(model_cfg, name) != value:
      unsupported.append(f"model.{name}={getattr(model_cfg, name)!r} (reference: {value!r})")
  obj_want = {"name": "mim", "num_samples": 1, "word_keep_rate": 1.0,
              "word_keep_schedule": "constant", "l1_weight": 0.0, "l2_weight": 0.0}
  for name, value in obj_want.items():
    if getattr(obj_cfg, name) != value:
      unsupported.append(f"objective.{name}={getattr(obj_cfg, name)!r} (reference: {value!r})")
  if config.optimizer.name != "adam":
    unsupported.append(f"optimizer.name={config.optimizer.name!r} (reference: 'adam')")
  if unsupported:
    raise ValueError("the PyTorch reference does not implement " + "; ".join(unsupported) +
                     ": use --only jax, or a flagfile without these options")
  return {"model": dict(embed_dim=model_cfg.embed_dim, hidden_dim=model_cfg.hidden_dim,
                        latent_dim=model_cfg.latent_dim, embed_dropout=model_cfg.embed_dropout,
                        log_var_floor=model_cfg.log_var_floor,
                        reverse_encoder_input=model_cfg.reverse_encoder_input,
                        encoder_reads_sos=model_cfg.encoder_reads_sos,
                        embed_dropout_scope=model_cfg.embed_dropout_scope,
                        batch_constant=obj_cfg.mim_batch_constant),
          "step": dict(learning_rate=config.optimizer.learning_rate,
                       clip_norm=config.optimizer.clip_norm)}


def describe_options(model_cfg, obj_cfg, config) -> dict:
  """The options that shape the timed step, for the printout and the JSON."""
  m = model_cfg
  return {"vocab_size": m.vocab_size, "embed_dim": m.embed_dim, "hidden_dim": m.hidden_dim,
          "latent_dim": m.latent_dim, "matmul_dtype": m.matmul_dtype, "cell": m.cell,
          "condition": m.condition,
          "embed_dropout": m.embed_dropout, "embed_dropout_scope": m.embed_dropout_scope,
          "encoder_reads_sos": m.encoder_reads_sos,
          "reverse_encoder_input": m.reverse_encoder_input, "log_var_floor": m.log_var_floor,
          "floor_mode": m.floor_mode, "objective": obj_cfg.name,
          "mim_batch_constant": obj_cfg.mim_batch_constant, "optimizer": config.optimizer.name,
          "learning_rate": config.optimizer.learning_rate,
          "clip_norm": config.optimizer.clip_norm, "batch_size": config.batch_size,
          "min_count": config.data.min_count, "max_len": config.data.max_len,
          "overflow": config.data.overflow, "bucket_batches": config.data.bucket_batches}


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
  """CPU model, core count, bf16 / AMX flags and load average (and the GPU, if nvidia-smi)."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("", platform.machine(), platform.processor()):
          model = value.strip()
        elif key == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  info = {"cpu": model, "cpus": os.cpu_count(),
          "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
          else None,
          "avx512_bf16": "avx512_bf16" in flags,
          "amx": sorted(f for f in flags if f.startswith("amx")),
          "load_average": [round(x, 2) for x in os.getloadavg()]}
  return info


def machine_line(info: dict) -> str:
  amx = ",".join(info["amx"]) if info["amx"] else "no"
  return (f"machine: {info['cpu']}; {info['cpus']} CPUs ({info['affinity_cpus']} in affinity); "
          f"avx512_bf16 {'yes' if info['avx512_bf16'] else 'no'}; amx {amx}; load average "
          + " ".join(f"{x:.2f}" for x in info["load_average"]))


def peak_rss_mib() -> float:
  """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


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
  candidates += [os.path.join("..", "shared", "data", "ptb"),
                 os.path.join(os.path.dirname(REPO), "shared", "data", "ptb"),
                 os.path.join(REPO, "shared", "data", "ptb")]
  for candidate in candidates:
    if os.path.isfile(os.path.join(candidate, "train.txt")):
      return os.path.abspath(candidate)
  return None


def load_split_examples(args, config, split: str) -> tuple[list[np.ndarray], int, str]:
  """Encoded sentences `<sos> … <eos>` of `split`, the vocabulary size, and where they came from.

  PTB is read as `launch.train` reads it (`experiment.load_corpus`: the config's min_count,
  max_len, overflow and tokenizer; vocabulary from train). Without PTB: random sentences with
  PTB's train length distribution.
  """
  data_dir = find_data_dir(args.data_dir)
  if data_dir is not None:
    from mimtext import experiment
    config.data.data_dir = data_dir
    corpus = experiment.load_corpus(config, splits=("train", split))
    return corpus[split].ids, corpus.vocab.size, f"PTB {split} split from {data_dir}"
  from mimtext.data import vocab as vocab_lib
  rng = np.random.default_rng(args.seed)
  hist = np.asarray(PTB_WORD_COUNT_HISTOGRAM, dtype=np.float64)
  n = int(hist.sum()) if split == "train" else 3_761
  words = rng.choice(len(hist), size=n, p=hist / hist.sum())
  first_word = len(vocab_lib.SPECIAL_TOKENS)
  examples = [np.concatenate([[vocab_lib.SOS_ID], rng.integers(first_word, PTB_VOCAB_SIZE, w),
                              [vocab_lib.EOS_ID]]).astype(np.int32) for w in words]
  return (examples, PTB_VOCAB_SIZE,
          f"RANDOM sentences ({n}, PTB's length distribution; PTB not found)")


def make_batches(examples, args, config) -> list[dict[str, np.ndarray]]:
  """The first `--steps` batches of epoch 0 of mimtext's training pipeline.

  `BatchPipeline.dataset` maps `make_batch` over `epoch_plan` rows; calling them directly gives the
  same batches without grain's prefetch threads running beside the timed loops. Full batches only
  (drop_remainder): the torch reference cannot pack filler rows.
  """
  from mimtext.data import pipeline as pipeline_lib
  pipe = pipeline_lib.BatchPipeline(examples, global_batch_size=config.batch_size,
                                    seed=args.seed, shuffle=True,
                                    bucket_batches=config.data.bucket_batches,
                                    drop_remainder=True, pad_multiple=8)
  plan = pipe.epoch_plan(0)
  if len(plan) < args.steps:
    raise ValueError(f"only {len(plan)} batches of {config.batch_size} in an epoch; lower --steps "
                     "or --batch_size")
  return [pipeline_lib.make_batch(examples, indices, pad_multiple=pipe.pad_multiple)
          for indices in plan[:args.steps]]


def num_tokens(batch) -> int:
  """Target tokens of a batch, `<eos>` included: Σ (lengths − 1) over valid rows."""
  return int(np.sum((batch["lengths"] - 1) * batch["valid"]))


def padding_fraction(batches, trim: bool = False) -> float:
  """1 − real target tokens / (rows × (padded length − 1)) over the batches; `trim`: padded to
  each batch's longest sentence (the torch_padded variant) instead of the multiple of 8."""
  real = sum(num_tokens(b) for b in batches)
  slots = sum(b["tokens"].shape[0] * ((int(np.max(b["lengths"])) if trim
                                       else b["tokens"].shape[1]) - 1) for b in batches)
  return 1.0 - real / slots


def first_of_each_shape(batches) -> list[int]:
  seen, picks = set(), []
  for i, b in enumerate(batches):
    if b["tokens"].shape not in seen:
      seen.add(b["tokens"].shape)
      picks.append(i)
  return picks


# ----------------------------------------------------------------------------- JAX side


class JaxRunner:
  """mimtext's jitted, donated train step on a one-device mesh, built as launch.train builds it."""

  def __init__(self, vocab_size: int, config):
    import jax
    from mimtext import train as train_lib

    self.jax = jax
    setup = train_lib.build_training_setup(config, vocab_size)
    self.model_cfg, self.obj_cfg, self.loss_fn = setup.model_cfg, setup.obj_cfg, setup.loss_fn
    self.mesh = setup.mesh
    params = setup.state.params
    # Host copy of the initial weights (the device state is donated step after step).
    self.initial_params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    from mimtext.models import sentence_ae
    self.num_params = sentence_ae.count_params(params)
    self.num_latent = self.model_cfg.latent_dim
    self.state = setup.state
    self.step = setup.make_train_step()
    self.key = train_lib.replicate(jax.random.PRNGKey(config.seed + 1), self.mesh)
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

  def __init__(self, vocab_size: int, args, options: dict, initial_params=None, *,
               padded: bool = False):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    import torch_reference

    self.torch, self.ref, self.padded = torch, torch_reference, padded
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    self.device = args.torch_device
    self.model = torch_reference.SentenceMIM(vocab_size, padded=padded, **options["model"])
    if initial_params is not None:
      torch_reference.load_mimtext_params(self.model, initial_params)
    self.model.to(self.device)
    self.num_params = torch_reference.count_params(self.model)
    self.num_latent = options["model"]["latent_dim"]
    self.step = torch_reference.make_train_step(self.model, **options["step"])
    self.loss = None

  def prepare(self, batches):
    return [self.ref.to_torch_batch(b, self.device, trim=self.padded) for b in batches]

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
    tokens, lengths = self.ref.to_torch_batch(batch, self.device, trim=self.padded)
    self.model.train()
    with torch.no_grad():
      loss, _ = self.model(tokens, lengths)
      self.model.eval()
      _, log_px = self.model(tokens, lengths, use_mean=True)
    self.model.train()
    return float(loss), log_px.cpu().numpy()


# ----------------------------------------------------------------------------- check and report


def _matmul_dtype(runner) -> str:
  cfg = getattr(runner, "model_cfg", None)
  return getattr(cfg, "matmul_dtype", "float32")


def check_init(runners: dict, batch, vocab_size: int, tolerance: float = 1e-4) -> list[str]:
  """Init losses on one batch: finite and of the expected size; equal weights agree exactly.

  At init the decoder is close to uniform, so −log p(x|z) ≈ log(v) per target token, and with
  log σ² ≈ 0 the latent term −½(log q + log N) ≈ ½ d (log 2π + 1) per sentence. `tolerance`: the
  largest relative difference of log p(x|z) accepted (1e-4 for float32 matmuls; bfloat16
  operands round to 3 significant digits, 1e-2).
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
    lines.append(f"  {name:12s} A-MIM loss at init (dropout on) {loss:10.2f} per sentence; "
                 f"expected ≈ {expected:.2f} (log(v)·tokens/sentences {rec:.2f} + ½d(log 2π + 1))  "
                 f"{'ok' if ok else 'UNEXPECTED'}")
    if not ok:
      raise AssertionError(f"{name} init loss {loss} is not finite / not near {expected:.2f}")
  if "jax" in results:
    for name in (n for n in results if n != "jax"):
      a, b = results["jax"][1], results[name][1]
      # bfloat16 operands round to 3 significant digits: a looser bound where either side has them.
      low = any(_matmul_dtype(runners[n]) != "float32" for n in ("jax", name))
      bound = max(tolerance, 1e-2) if low else tolerance
      diff = float(np.max(np.abs(a - b)))
      rel = diff / float(np.max(np.abs(a)))
      lines.append(f"  same weights, no dropout, z = μ: max |log p(x|z)_jax − log p(x|z)_{name}| = "
                   f"{diff:.2e} (relative {rel:.1e})  {'ok' if rel < bound else 'MISMATCH'}")
      if rel >= bound:
        raise AssertionError(f"the {name} reference disagrees with mimtext: relative diff {rel}")
  return lines


def summarise(times: list[float], tokens: int, steps: int) -> dict:
  rates = [tokens / t for t in times]
  return {"tokens_per_s": rates, "median_tokens_per_s": statistics.median(rates),
          "min_tokens_per_s": min(rates), "max_tokens_per_s": max(rates),
          "median_ms_per_step": 1e3 * statistics.median(times) / steps}


def versions(frameworks) -> dict:
  out = {"python": platform.python_version(), "numpy": np.__version__,
         "platform": f"{platform.machine()}, {os.cpu_count()} CPUs"}
  if "jax" in frameworks:
    import jax
    import jaxlib
    out["jax"] = f"{jax.__version__} (jaxlib {jaxlib.__version__}, backend " \
                 f"{jax.default_backend()}, {jax.devices()[0].device_kind})"
  if any(f.startswith("torch") for f in frameworks):
    import torch
    cuda = (f", cuda {torch.version.cuda}, {torch.cuda.get_device_name(0)}"
            if torch.cuda.is_available() else "")
    out["torch"] = f"{torch.__version__} (threads {torch.get_num_threads()}, interop " \
                   f"{torch.get_num_interop_threads()}{cuda})"
  return out


def warm_up(name, runner, prepared, batches, warmup: int) -> dict:
  """Two steps on the first batch of each padded length (the first compiles), then `warmup` more.

  Returns per shape the first and second step times and their difference (≈ compile time: the
  same step, the second time without compiling).
  """
  per_shape = []
  for i in first_of_each_shape(batches):
    first = runner.run([prepared[i]])
    second = runner.run([prepared[i]])
    per_shape.append({"padded_length": int(batches[i]["tokens"].shape[1]),
                      "first_step_s": first, "second_step_s": second,
                      "compile_s": max(first - second, 0.0)})
  extra = [i % len(batches) for i in range(warmup)]
  t_extra = runner.run([prepared[i] for i in extra]) if extra else 0.0
  total_compile = sum(s["compile_s"] for s in per_shape)
  shapes = ", ".join(f"{s['padded_length']}: {s['first_step_s']:.2f}/{s['second_step_s']:.2f}s"
                     for s in per_shape)
  print(f"warmup {name}: first/second step per padded length {{{shapes}}}; "
        f"first − second summed {total_compile:.1f}s"
        f"{' (compilation)' if name == 'jax' else ''}; {len(extra)} more steps {t_extra:.1f}s; "
        f"loss {runner.last_loss():.2f}")
  return {"per_shape": per_shape, "compile_s_total": total_compile,
          "warmup_steps": len(extra), "warmup_s": t_extra}


def main(argv=None) -> dict:
  args = parse_args(argv)
  env = configure_threads_and_platform(args)
  frameworks = {"jax": ("jax",), "torch": ("torch",), "both": ("jax", "torch")}[args.only]
  if args.torch_padded and "torch" in frameworks:
    frameworks += ("torch_padded",)
  machine = machine_info()

  config, applied, ignored = load_config(args)
  examples, vocab_size, source = load_split_examples(args, config, "train")
  batches = make_batches(examples, args, config)
  tokens_per_round = sum(num_tokens(b) for b in batches)
  shapes = sorted({b["tokens"].shape[1] for b in batches})
  pad = padding_fraction(batches)
  pad_trim = padding_fraction(batches, trim=True)
  print(machine_line(machine))
  print(f"config: {args.flagfile} ({len(applied)} --config lines"
        f"{'; ignored: ' + ' '.join(ignored) if ignored else ''})")
  print(f"data: {source}; vocab {vocab_size}")
  print(f"batches: {len(batches)} x {config.batch_size} sentences, {tokens_per_round} target "
        f"tokens (<eos> incl.) per round, {tokens_per_round / len(batches):.1f} per step; padded "
        f"lengths {shapes}; padding fraction {pad:.3f} (multiple of 8), {pad_trim:.3f} (longest "
        "of each batch)")

  # The JAX model is built first (it also provides the initial weights for torch); building it
  # does not start the torch side, so `--only jax` runs without torch installed.
  runners = {}
  jax_runner = JaxRunner(vocab_size, config)
  options = describe_options(jax_runner.model_cfg, jax_runner.obj_cfg, config)
  print("options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
  if "jax" in frameworks:
    runners["jax"] = jax_runner
    if args.jax_bf16 and jax_runner.model_cfg.matmul_dtype != "bfloat16":
      bf16_config = copy.deepcopy(config)
      bf16_config.model.matmul_dtype = "bfloat16"
      runners["jax_bf16"] = JaxRunner(vocab_size, bf16_config)
  if "torch" in frameworks:
    t_opts = torch_options(jax_runner.model_cfg, jax_runner.obj_cfg, config)
    runners["torch"] = TorchRunner(vocab_size, args, t_opts, jax_runner.initial_params)
    if "torch_padded" in frameworks:
      runners["torch_padded"] = TorchRunner(vocab_size, args, t_opts, jax_runner.initial_params,
                                            padded=True)
  for name, v in versions(frameworks).items():
    print(f"{name}: {v}")
  print(f"threads: torch.set_num_threads({args.threads}); XLA CPU pool NPROC={env['NPROC']}; "
        f"JAX_PLATFORMS={env['JAX_PLATFORMS'] or '(default)'}; XLA_FLAGS={env['XLA_FLAGS']!r}; "
        f"host allocator {env['host_allocator']}; load average at start {os.getloadavg()[0]:.2f}")
  if os.getloadavg()[0] > 0.5:
    print(f"WARNING: load average {os.getloadavg()[0]:.2f} before timing: other processes are "
          "using the CPUs, so these numbers are not representative (PyTorch's OpenMP threads "
          "degrade far more than XLA's pool when the cores are oversubscribed)")
  counts = {name: r.num_params for name, r in runners.items()}
  counts.setdefault("jax", jax_runner.num_params)
  note = "equal" if len(set(counts.values())) == 1 else "DIFFERENT"
  print("parameters: " + ", ".join(f"{n} {c:,}" for n, c in counts.items()) + f" ({note})")

  if not args.no_check:
    print("check on the first batch, all from the same initial weights:")
    for line in check_init(runners, batches[0], vocab_size):
      print(line)

  prepared = {name: r.prepare(batches) for name, r in runners.items()}
  warmups = {name: warm_up(name, r, prepared[name], batches, args.warmup)
             for name, r in runners.items()}

  times = {name: [] for name in runners}
  profile = contextlib.nullcontext()
  if args.profile:
    import jax
    profile = jax.profiler.trace(args.profile)
    print(f"profiling the timed rounds into {args.profile} (jax.profiler.trace)")
  with profile:
    for round_index in range(args.rounds):
      parts = []
      for name, r in runners.items():
        elapsed = r.run(prepared[name])
        times[name].append(elapsed)
        parts.append(f"{name} {tokens_per_round / elapsed:9.0f} tok/s "
                     f"({1e3 * elapsed / len(batches):6.1f} ms/step, loss {r.last_loss():7.2f})")
      print(f"round {round_index + 1}/{args.rounds}: " + " | ".join(parts))

  rss = peak_rss_mib()
  machine_end = dict(machine, load_average_end=[round(x, 2) for x in os.getloadavg()])
  results = {"args": vars(args), "config_lines": applied, "ignored_flag_lines": ignored,
             "options": options, "data": source, "vocab_size": vocab_size,
             "tokens_per_round": tokens_per_round, "steps_per_round": len(batches),
             "padded_lengths": shapes, "padding_fraction": pad,
             "padding_fraction_longest": pad_trim, "param_counts": counts, "env": env,
             "versions": versions(frameworks), "machine": machine_end,
             "load_average_end": os.getloadavg()[0], "peak_rss_mib": rss,
             "warmup": warmups, "profile_dir": args.profile}
  print(f"\nsummary over {args.rounds} rounds of {len(batches)} steps (batch {config.batch_size}, "
        f"latent {jax_runner.model_cfg.latent_dim}, padding {pad:.3f}); load average at end "
        f"{os.getloadavg()[0]:.2f}; peak RSS {rss:.0f} MiB (whole process)")
  print(f"  {'':12s} {'median tok/s':>13s} {'min tok/s':>10s} {'max tok/s':>10s} "
        f"{'median ms/step':>15s} {'compile s':>10s}")
  for name in runners:
    s = summarise(times[name], tokens_per_round, len(batches))
    s["compile_s_total"] = warmups[name]["compile_s_total"]
    results[name] = s
    print(f"  {name:12s} {s['median_tokens_per_s']:13.0f} {s['min_tokens_per_s']:10.0f} "
          f"{s['max_tokens_per_s']:10.0f} {s['median_ms_per_step']:15.1f} "
          f"{s['compile_s_total']:10.1f}")
  for jax_name in (n for n in runners if n.startswith("jax")):
    for name in (n for n in runners if n.startswith("torch")):
      j, t = results[jax_name], results[name]
      suffix = "" if name == "torch" else "_" + name.split("_", 1)[1]
      if jax_name != "jax":
        suffix = "_" + jax_name + suffix                   # e.g. ratio_median_jax_bf16_padded
      results["ratio_median" + suffix] = j["median_tokens_per_s"] / t["median_tokens_per_s"]
      results["ratio_best" + suffix] = j["max_tokens_per_s"] / t["max_tokens_per_s"]
      print(f"  {jax_name}/{name} throughput ratio: median "
            f"{results['ratio_median' + suffix]:.2f}x, best {results['ratio_best' + suffix]:.2f}x "
            "(>1: mimtext faster)")
  if args.profile:
    print("  (profiled: the rounds ran under the tracer, so these rates are not a measurement)")
  if args.json_out:
    with open(args.json_out, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2, default=str)
    print(f"wrote {args.json_out}")
  return results


if __name__ == "__main__":
  main()
