"""A small public Python API over a trained run: `mimtext.load(workdir)` → `SentenceModel`.

  >>> import mimtext
  >>> model = mimtext.load("runs/ptb_smim_128")            # the best checkpoint
  >>> mean, std = model.encode(["the cat sat", "a dog ran"])  # [2,d], [2,d] numpy
  >>> model.reconstruct(["the cat sat"])                     # ['the cat sat']
  >>> model.sample(3)                                        # three prior samples
  >>> model.interpolate("the cat sat", "a dog ran", n=5)     # five sentences
  >>> model.log_likelihood_bounds(["the cat sat"])["iw_nll"]

`SentenceModel` is a thin layer: every method calls the pure functions underneath
(`encoding.encode_sentences` / `encoding.encode_batch`, `generation.generate`,
`bounds.sentence_terms`, `bounds.nll_bounds`), and the module-level functions here (`tokenize`,
`unknown_words`, `batches`, `encode_examples`) are usable on their own with any parameters.

Every model is used as it was trained (`objectives.common.scoring`): an inputless decoder decodes
without its inputs, a hidden-averaging decoder (seed 003 Eq. 7-8) decodes L latents jointly, an AE
uses z = μ(x) (its log-variance head never trained).

Text: a sentence is a string split by the run's tokeniser (`data.tokenizer` of its config:
"whitespace", "lower" or "lower_punct"; see `vocab_lib.tokenize`), exactly as the training corpus
was, and looked up in the run's vocabulary; a word not in it becomes `<unk>` (`unknown_words`
lists them). Sentences are never truncated or dropped; the empty string is the empty sentence
`<sos> <eos>`.

Batching (`batches`, i.e. `pipeline.inference_batches`): sentences are sorted by length, cut into
batches of `batch_size`, and each batch is padded to a fixed shape, rows to a power of two (at
least 8, at most `batch_size`) and length to a multiple of `PAD_LENGTH_MULTIPLE` tokens, so a
jitted function compiles once per shape bucket rather than once per call. Results come back in the
input order.

Notation: n sentences, b batch rows, t tokens, d latent, L jointly decoded latents.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Iterable, Iterator, Sequence

from absl import logging
import chex
import jax
import jax.numpy as jnp
import numpy as np

from mimtext import experiment
from mimtext import objectives
from mimtext.data import pipeline as pipeline_lib
from mimtext.data import vocab as vocab_lib
from mimtext.evaluation import bounds
from mimtext.evaluation import encoding
from mimtext.evaluation import generation
from mimtext.evaluation import posthoc
from mimtext.evaluation import runner
from mimtext.models import sentence_ae

PAD_LENGTH_MULTIPLE = 16
MODES = ("mean", "sample")
PRIORS = ("gaussian", "posthoc", "model")
DEFAULT_MAX_LEN = 40


# ----------------------------------------------------------------------------- pure functions


def _as_sentences(sentences: Iterable[str], name: str = "sentences") -> list[str]:
  """The sentences as a list of strings; a lone string is refused (it is not a list of them)."""
  if isinstance(sentences, (str, bytes)):
    raise TypeError(f"{name} must be a list of strings, got a single {type(sentences).__name__}; "
                    f"wrap it in a list: [{str(sentences)[:30]!r}]")
  out = list(sentences)
  for i, s in enumerate(out):
    if not isinstance(s, str):
      raise TypeError(f"{name}[{i}] must be a string, got {type(s).__name__}")
  return out


def tokenize(sentences: Iterable[str], vocab: vocab_lib.Vocabulary,
             tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> list[np.ndarray]:
  """Ids `<sos> w_1 … w_m <eos>` of each sentence: n int32 arrays [m+2].

  Each sentence is split by `vocab_lib.tokenize(sentence, tokenizer)` ("whitespace", the default,
  "lower" or "lower_punct": pass the run's `data.tokenizer`, as `SentenceModel.tokenize` does).
  Words not in `vocab` become `<unk>` (id 3); "" is the empty sentence [<sos>, <eos>].

  >>> tokenize(["the cat", ""], vocab)   # [array([1, 7, 42, 2]), array([1, 2])]
  """
  vocab_lib.check_tokenizer(tokenizer)
  return [vocab.encode(s, tokenizer=tokenizer) for s in _as_sentences(sentences)]


def unknown_words(sentences: Iterable[str], vocab: vocab_lib.Vocabulary,
                  tokenizer: str = vocab_lib.DEFAULT_TOKENIZER) -> collections.Counter:
  """Occurrences of each word of `sentences` that `vocab` lacks (each one is read as `<unk>`).

  Words are the tokens of `vocab_lib.tokenize(sentence, tokenizer)` (see `tokenize`). The
  unknown-word spellings `<unk>` / `_UNK` themselves are not counted: they are the token.

  >>> unknown_words(["the zyzzyva sat"], vocab)   # Counter({'zyzzyva': 1})
  """
  vocab_lib.check_tokenizer(tokenizer)
  counts: collections.Counter = collections.Counter()
  for s in _as_sentences(sentences):
    counts.update(w for w in vocab_lib.tokenize(s, tokenizer)
                  if vocab.id(w) == vocab_lib.UNK_ID and w not in vocab_lib.UNK_ALIASES)
  return counts


row_bucket = pipeline_lib.row_bucket


def batches(examples: Sequence[np.ndarray], batch_size: int, *,
            pad_multiple: int = PAD_LENGTH_MULTIPLE) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches of `examples` (ids `<sos> … <eos>`), shortest sentences first.

  `pipeline.inference_batches` with rows bucketed: tokens [b,t], lengths [b], index [b] (the
  row's position in `examples`, −1 for a filler row), valid [b]; b = `row_bucket(rows,
  batch_size)`, t a multiple of `pad_multiple`. Every example appears in exactly one batch.

  >>> [b["tokens"].shape for b in batches(tokenize(["a b"] * 300, vocab), 128)]
  [(128, 16), (128, 16), (64, 16)]
  """
  return pipeline_lib.inference_batches(examples, batch_size, pad_multiple=pad_multiple,
                                        bucket_rows=True)


def encode_examples(params, cfg: sentence_ae.ModelConfig, examples: Sequence[np.ndarray], *,
                    batch_size: int = 256, point_mass: bool = False,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """The deterministic code and posterior σ of every example: mean [n,d], std [n,d] (float32).

  mean is `sentence_ae.posterior_code` (μ; (1 − E_q[γ]) μ for an HSVAE head); std is exp(½ log σ²)
  of the Gaussian head (for HSVAE the σ of the slab q(z|γ = 0, x)), or 0 with `point_mass` (an
  AE: z = μ exactly). Batched as `batches` (`encoding.encode_sentences`); n = 0 gives [0,d]
  arrays.

  >>> mean, std = encode_examples(params, cfg, tokenize(["the cat sat"], vocab))   # [1,d] each
  """
  post = encoding.encode_sentences(params, cfg, examples, batch_size=batch_size,
                                   pad_multiple=PAD_LENGTH_MULTIPLE, bucket_rows=True,
                                   progress=progress, leave_bar=True)
  mean, std = encoding.code_and_std(post)
  if point_mass:
    std = np.zeros_like(std)
  chex.assert_shape([mean, std], (len(examples), cfg.latent_dim))
  return mean, std


class _LazyTrainSplit:
  """The training split, loaded only if `posthoc.load_or_fit` has to fit (reads `.head(n)`)."""

  def __init__(self, run: runner.Run):
    self._run = run

  def head(self, n: int):
    corpus = experiment.load_corpus(self._run.config, self._run.vocab, splits=("train",))
    return corpus["train"].head(n)


# ----------------------------------------------------------------------------- the model


def load(workdir: str, step: str | int = "best") -> SentenceModel:
  """The trained model of `workdir` at `step` ("best", "latest" or a step number).

  Fields the saved config predates take the defaults of `mimtext.config`. Raises
  FileNotFoundError for a missing workdir and `checkpoint.CheckpointError` when it holds no such
  checkpoint.

  >>> model = mimtext.load("runs/ptb_smim_128", step="latest")
  """
  return SentenceModel(runner.load_run(workdir, step))


class SentenceModel:
  """A trained sentence autoencoder (a `runner.Run`) with text in, text or arrays out.

  Every method is used as the model was trained (see the module docstring); sampling methods take
  an integer `seed` and are deterministic given it (and `batch_size`, which sets the batches the
  per-batch keys are folded into).

  >>> model = SentenceModel(runner.load_run("runs/ptb_svae_16"))
  >>> model                        # SentenceModel(objective='vae', latent_dim=16, ...)
  """

  def __init__(self, run: runner.Run):
    self._run = run
    self._obj_cfg = run.obj_cfg
    self._scoring = objectives.common.scoring(self._obj_cfg)
    self._family = objectives.latent_family(self._obj_cfg)
    self._posthoc: tuple[posthoc.Prior, dict[str, Any]] | None = None
    self._proposal: tuple[Any, dict[str, Any]] | None = None

  # --------------------------------------------------------------------------- properties

  @property
  def run(self) -> runner.Run:
    return self._run

  @property
  def config(self):
    """The run's experiment config (`ml_collections.ConfigDict`)."""
    return self._run.config

  @property
  def vocab(self) -> vocab_lib.Vocabulary:
    return self._run.vocab

  @property
  def tokenizer(self) -> str:
    """The run's tokeniser (`data.tokenizer`; "whitespace" for a run that predates the field)."""
    return experiment.tokenizer(self._run.config)

  @property
  def params(self):
    return self._run.params

  @property
  def step(self) -> int:
    return self._run.step

  @property
  def workdir(self) -> str:
    return self._run.workdir

  @property
  def latent_dim(self) -> int:
    return self._run.model_cfg.latent_dim

  @property
  def objective(self) -> str:
    """The objective's name: "mim", "vae", "ae", "mi", "hsvae" or "matvae"."""
    return self._obj_cfg.name

  @property
  def model_config(self) -> sentence_ae.ModelConfig:
    return self._run.model_cfg

  @property
  def objective_config(self) -> objectives.ObjectiveConfig:
    return self._obj_cfg

  @property
  def scoring(self) -> objectives.common.Scoring:
    """How the model is used (`objectives.common.scoring`): decoder inputs, L, z = μ."""
    return self._scoring

  def __repr__(self) -> str:
    return (f"SentenceModel(objective={self.objective!r}, latent_dim={self.latent_dim}, "
            f"vocab_size={self.vocab.size}, num_latents={self._scoring.num_latents}, "
            f"step={self.step}, workdir={self.workdir!r})")

  # --------------------------------------------------------------------------- text → codes

  def tokenize(self, sentences: Iterable[str]) -> list[np.ndarray]:
    """Ids `<sos> … <eos>` of each sentence under the run's vocabulary (see `tokenize`).

    >>> model.tokenize(["the cat"])   # [array([1, 7, 42, 2], dtype=int32)]
    """
    return tokenize(sentences, self.vocab, self.tokenizer)

  def unknown_words(self, sentences: Iterable[str]) -> collections.Counter:
    """Words of `sentences` not in the vocabulary, with their counts; each is read as `<unk>`.

    >>> model.unknown_words(["the zyzzyva sat", "zyzzyva"])   # Counter({'zyzzyva': 2})
    """
    return unknown_words(sentences, self.vocab, self.tokenizer)

  def encode(self, sentences: Iterable[str], *, batch_size: int = 256,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The code of each sentence: mean [n,d] and std [n,d] float32 numpy arrays, in input order.

    Sentences are split by the run's tokeniser; words not in the vocabulary become `<unk>`
    (`unknown_words`). mean is the deterministic code `sentence_ae.posterior_code`: the posterior
    mean μ(x), and for HSVAE (1 − E_q[γ]) μ(x), the mean of its spike-and-slab posterior (the
    spike sits at 0). std is the posterior σ(x) (HSVAE: the σ of the slab); for an AE it is 0,
    since the AE uses z = μ(x). Any n (0 gives [0,d] arrays); `progress` shows a tqdm bar on stderr.

    >>> mean, std = model.encode(["the cat sat", "a dog ran"], batch_size=128)
    >>> mean.shape, std.shape        # ((2, d), (2, d))
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return encode_examples(self.params, self.model_config, self.tokenize(sentences),
                           batch_size=batch_size, point_mass=self._scoring.deterministic_z,
                           progress=progress)

  # --------------------------------------------------------------------------- codes → text

  def decode(self, z, *, method: str = "greedy", seed: int = 0, beam_width: int = 5,
             temperature: float = 1.0, max_len: int = DEFAULT_MAX_LEN,
             ban_unk: bool = False) -> list[str]:
    """Sentences decoded from codes z [n,d] (or [L,n,d], L latents decoded jointly), as trained.

    method: "greedy", "sample" (temperature sampling with `seed`) or "beam" (`beam_width`); see
    `generation.generate`. A code [n,d] given to an L-latent decoder decodes as L copies of itself.

    >>> mean, _ = model.encode(["the cat sat"])
    >>> model.decode(mean + 0.1)     # ['the cat sat']
    """
    z = jnp.asarray(z, jnp.float32)
    chex.assert_rank(z, {2, 3})
    chex.assert_axis_dimension(z, -1, self.latent_dim)
    if z.shape[-2] == 0:
      return []
    return generation.generate(self.params, z, self.model_config, self.vocab, method=method,
                               key=jax.random.PRNGKey(seed), temperature=temperature,
                               beam_width=beam_width, ban_unk=ban_unk, max_len=max_len,
                               scoring=self._scoring)

  def reconstruct(self, sentences: Iterable[str], mode: str = "mean", *, method: str = "greedy",
                  beam_width: int = 5, temperature: float = 1.0, seed: int = 0,
                  max_len: int | None = None, batch_size: int = 256,
                  ban_unk: bool = False) -> list[str]:
    """Each sentence encoded and decoded again: n strings, in input order.

    mode="mean" decodes the deterministic code (`posterior_code`); mode="sample" a posterior draw
    z ~ q(z|x) of the objective's latent family (L joint draws for an L-latent decoder). An AE
    decodes z = μ(x) in both modes. method as `decode`. max_len (tokens): default the longest
    input + 5, at least 40.

    >>> model.reconstruct(["the cat sat", "a dog ran"])                  # greedy, from the mean
    >>> model.reconstruct(["the cat sat"], "sample", method="beam", seed=1)
    """
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if method not in generation.METHODS:
      raise ValueError(f"method must be one of {generation.METHODS}, got {method!r}")
    examples = self.tokenize(sentences)
    if not examples:
      return []
    if max_len is None:
      max_len = max(DEFAULT_MAX_LEN, max(len(x) for x in examples) + 3)
    key = jax.random.PRNGKey(seed)
    out: list[str | None] = [None] * len(examples)
    for i, batch in enumerate(batches(examples, batch_size)):
      post = encoding.encode_batch(self.params, batch, self.model_config)
      batch_key = jax.random.fold_in(key, i)
      if mode == "mean" or self._scoring.deterministic_z:
        z = self._family.code(post)                                          # [b,d]
      else:
        z = self._family.sample(jax.random.fold_in(batch_key, 0), post, self._obj_cfg,
                                self._scoring.num_latents).z                  # [L,b,d]
      texts = generation.generate(self.params, z, self.model_config, self.vocab, method=method,
                                  key=jax.random.fold_in(batch_key, 1), temperature=temperature,
                                  beam_width=beam_width, ban_unk=ban_unk, max_len=max_len,
                                  scoring=self._scoring)
      for row, text in zip(batch["index"], texts):
        if row >= 0:
          out[row] = text
    return out  # type: ignore[return-value]

  def posthoc_prior(self) -> tuple[posthoc.Prior, dict[str, Any]]:
    """The post-hoc prior (a Gaussian mixture or a flow fitted to the aggregate posterior of the
    training set, `posthoc.fit`) and its fit info.

    Loaded from `WORKDIR/posthoc_prior.json` when it was fitted at this step, else fitted on the
    run's training split (which must be available: the built-in corpus or $MIMTEXT_DATA) and
    saved there (`posthoc.load_or_fit`). Cached on the model.

    >>> prior, info = model.posthoc_prior(); info["prior_kind"]  # "mixture" or "flow"
    """
    if self._posthoc is None:
      self._posthoc = posthoc.load_or_fit(self._run, _LazyTrainSplit(self._run))
    return self._posthoc

  def sample(self, n: int, std: float | None = None, *, prior: str = "gaussian", seed: int = 0,
             method: str = "greedy", beam_width: int = 5, temperature: float = 1.0,
             max_len: int = DEFAULT_MAX_LEN, ban_unk: bool = False) -> list[str]:
    """n sentences decoded from prior draws of z (L joint draws each for an L-latent decoder).

    prior: "gaussian": z ~ N(0, std² I), std by default `generation.default_prior_std` (0.1 for
      sMIM, 1 otherwise); "posthoc": z from the density fitted to the training set's aggregate
      posterior (`posthoc_prior`; the first call may fit it, reading the training split); "model":
      exact draws of the objective's own prior (`family.prior_sample`: N(0, I), or the
      spike-and-slab priors of HSVAE / MAT-VAE; not for an AE, which has none). `std` is for
      "gaussian" only.
    method as `decode`.

    >>> model.sample(3)                                  # greedy, z ~ N(0, σ² I)
    >>> model.sample(3, prior="posthoc", method="sample", seed=2)
    """
    if n < 0:
      raise ValueError(f"n must be >= 0, got {n}")
    if prior not in PRIORS:
      raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if std is not None and prior != "gaussian":
      raise ValueError(f"std is the scale of the gaussian prior; prior={prior!r} has its own")
    if prior == "model" and self._scoring.deterministic_z:
      raise ValueError("an AE has no prior of its own: use prior='gaussian' or 'posthoc'")
    if n == 0:
      return []
    sampler = None
    if prior == "posthoc":
      gmm, _ = self.posthoc_prior()
      sampler = posthoc.prior_sampler(gmm)
    elif prior == "model":
      sampler = lambda key, num: self._family.prior_sample(key, num, self._obj_cfg)
    if std is None:
      std = generation.default_prior_std(self._obj_cfg)
    return generation.prior_samples(self.params, self.model_config, self.vocab,
                                    jax.random.PRNGKey(seed), num=n, std=std, max_len=max_len,
                                    scoring=self._scoring, prior=sampler, method=method,
                                    temperature=temperature, beam_width=beam_width,
                                    ban_unk=ban_unk)

  def interpolate(self, a: str, b: str, n: int = 5, *, method: str = "greedy",
                  endpoints: str = "mean", seed: int = 0, beam_width: int = 5,
                  temperature: float = 1.0, max_len: int = DEFAULT_MAX_LEN,
                  ban_unk: bool = False) -> list[str]:
    """n sentences decoded at equispaced points z(α) = (1 − α) z_a + α z_b, α ∈ [0, 1], both ends
    included (seed 001 §6.3; `generation.linear_path`).

    endpoints="mean": z_a, z_b are the deterministic codes; "sample": posterior draws (one per
    latent for an L-latent decoder, as seed 000 §4.7; the codes for an AE). method as `decode`.

    >>> model.interpolate("the cat sat", "a dog ran", n=5)   # 5 strings, first ≈ a, last ≈ b
    """
    if not isinstance(a, str) or not isinstance(b, str):
      raise TypeError("a and b must be strings (one sentence each)")
    if endpoints not in MODES:
      raise ValueError(f"endpoints must be one of {MODES}, got {endpoints!r}")
    if n < 2:
      raise ValueError(f"n must be >= 2 (both endpoints), got {n}")
    post = encoding.encode_sentences(self.params, self.model_config, self.tokenize([a, b]),
                                     batch_size=2, pad_multiple=PAD_LENGTH_MULTIPLE)
    key = jax.random.PRNGKey(seed)
    if endpoints == "mean" or self._scoring.deterministic_z:
      ends = self._family.code(post)                                          # [2,d]
    else:
      ends = self._family.sample(jax.random.fold_in(key, 0), post, self._obj_cfg,
                                 self._scoring.num_latents).z                 # [L,2,d]
    z = generation.linear_path(ends[..., 0, :], ends[..., 1, :], n)          # [(L,) n, d]
    chex.assert_axis_dimension(z, -2, n)
    return self.decode(z, method=method, seed=seed + 1, beam_width=beam_width,
                       temperature=temperature, max_len=max_len, ban_unk=ban_unk)

  # --------------------------------------------------------------------------- likelihood

  def log_likelihood_bounds(self, sentences: Iterable[str], *, num_samples: int = 10,
                            iw_samples: int = 10, seed: int = 0, batch_size: int = 64,
                            posthoc: bool = True) -> dict[str, Any]:
    """Bounds on −log p(x) of the given sentences, per corpus and per sentence (nats).

    The corpus-level numbers are `bounds.nll_bounds` over these n sentences (N, num_tokens,
    rec, kl, elbo_nll, iw_nll, melbo_nll, their *_no_eos and perplexities; `bounds.nll_bounds`
    documents each), from `bounds.sentence_terms` with `num_samples` draws for the ELBO and
    K = `iw_samples` for the importance-weighted bound. Added per sentence ([n] float64 arrays):
      "reconstruction": −(1/k) Σ_j log p(x|z_j) (at z = μ for an AE);
      "elbo": reconstruction + L · KL(q(z|x) ‖ p(z)), the ELBO bound on −log p(x);
      "iw": −log (1/K) Σ_j p(x, z_j) / q(z_j|x), the importance-weighted bound.
      "posthoc_iw" (with `posthoc`, the default): the importance-weighted bound under the run's
        post-hoc prior p̂ (`posthoc_prior`: loaded, or fitted on the training split and saved,
        logged either way), with the proposal the evaluation uses (the learned r(z|x) of
        `posthoc.load_or_fit_proposal`, trained on the training split and saved on first use, for
        an AE or a Gaussian posterior); it bounds −log p̂(x) of the decoder with p̂, and is the one
        valid bound of an sMIM far from N(0, I) and of an AE.
      "posthoc_widened_iw" (beside a learned proposal): the same bound under the widened
        proposal the learned one started from, the fallback.
    "bound" names the tightest valid corpus-level bound present and "nll_bound" is its value
    (a language model: "exact", its exact NLL). For an AE there is no bound of its own ("elbo" /
    "iw"): "bounds_skipped" says why. Draws are keyed by `seed` and the batch, so they depend on
    `batch_size`.

    >>> out = model.log_likelihood_bounds(["the cat sat", "a dog ran"], iw_samples=100)
    >>> out["bound"], out["nll_bound"], out["posthoc_iw"]  # e.g. "posthoc_iw", 41.2, [2]
    """
    if num_samples < 1 or iw_samples < 1:
      raise ValueError(f"num_samples and iw_samples must be >= 1, got {num_samples}, "
                       f"{iw_samples}")
    examples = self.tokenize(sentences)
    n = len(examples)
    if n == 0:
      raise ValueError("log_likelihood_bounds needs at least one sentence")
    key = jax.random.PRNGKey(seed)
    extra = self._posthoc_bound_inputs() if posthoc and not self._scoring.latent_free else {}
    terms: dict[str, np.ndarray] = {}
    names = ("log_px", "log_px_no_eos", "iw_log_px", "iw_log_px_no_eos", "kl",
             "posthoc_iw_log_px", "posthoc_iw_log_px_no_eos", "posthoc_widened_iw_log_px",
             "posthoc_widened_iw_log_px_no_eos")
    for i, batch in enumerate(batches(examples, batch_size)):
      inputs = {name: jnp.asarray(batch[name]) for name in ("tokens", "lengths", "valid")}
      out = jax.device_get(bounds.sentence_terms(self.params, inputs, jax.random.fold_in(key, i),
                                                 self._obj_cfg, num_samples, iw_samples,
                                                 **extra))
      rows = batch["valid"] > 0
      for name in names:
        if name in out:
          terms.setdefault(name, np.zeros(n, np.float64))[batch["index"][rows]] = out[name][rows]
    num_words = np.asarray([len(x) - 2 for x in examples])
    report: dict[str, Any] = bounds.nll_bounds(terms, num_words, self._scoring)
    report["reconstruction"] = -terms["log_px"]
    if not (self._scoring.deterministic_z or self._scoring.latent_free):
      report["elbo"] = -terms["log_px"] + self._scoring.num_latents * terms["kl"]
      report["iw"] = -terms["iw_log_px"]
      report.update(num_samples=num_samples, iw_samples=iw_samples)
    for name in ("posthoc_iw", "posthoc_widened_iw"):
      if f"{name}_log_px" in terms:
        report[name] = -terms[f"{name}_log_px"]
        report["iw_samples"] = iw_samples
    present = [b for b in ("exact", "posthoc_iw", "iw", "elbo") if f"{b}_nll" in report]
    if present:
      report["bound"] = min(present, key=lambda b: report[f"{b}_nll"])
      report["nll_bound"] = report[f"{report['bound']}_nll"]
    for name in ("reconstruction", "elbo", "iw", "posthoc_iw", "posthoc_widened_iw"):
      if name in report:
        chex.assert_shape(report[name], (n,))
    return report

  def _posthoc_bound_inputs(self) -> dict[str, Any]:
    """The `bounds.sentence_terms` arguments of the post-hoc bound: the run's fitted prior and the
    proposal the evaluation suite uses (q widened by the fit's chosen scale; N(μ, s² I) for an
    AE)."""
    path = os.path.join(self._run.workdir, posthoc.FILE_NAME)
    logging.info("post-hoc prior: %s", f"loading or refitting {path}" if os.path.exists(path)
                 else f"fitting on the training split (saved to {path})")
    gmm, info = self.posthoc_prior()
    learned = None
    if posthoc.learns_proposal(self._run):
      if self._proposal is None:
        self._proposal = posthoc.load_or_fit_proposal(self._run, _LazyTrainSplit(self._run), gmm,
                                                      info)
      learned, proposal_info = self._proposal
      logging.info("post-hoc proposal: %s", posthoc.describe_learned_proposal(proposal_info))
    return posthoc.bound_inputs(gmm, info, self._scoring.deterministic_z, learned)


__all__ = ["PAD_LENGTH_MULTIPLE", "SentenceModel", "batches", "encode_examples", "load",
           "row_bucket", "tokenize", "unknown_words"]
