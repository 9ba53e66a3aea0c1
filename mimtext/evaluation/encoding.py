"""The one inference path from sentences to q(z|x): `pipeline.inference_batches` → `encode_batch`
(the one jitted encoder) → `sentence_ae.Posterior` of every sentence, in input order.

Every caller that encodes given sentences goes through here: the evaluation (`runner`, `suite`,
`qa`, `posthoc`; `downstream` classifies the posteriors), generation and reconstruction, and the
public API (`mimtext.api`). Callers that encode inside a larger jitted step
(`bounds.sentence_terms`, `imputation.icm_step`, the training losses) call `sentence_ae.encode`
there.

The posterior type is `sentence_ae.Posterior` throughout, its fields numpy arrays [n,d] here
(`encode_sentences`) or jax arrays [b,d] (`encode_batch`); `raw_log_var` is the encoder's
log-variance before the floor, kept so that the floor statistics can be taken from it. A posterior
built from (mean, σ) alone (`gaussian_posterior`) has raw_log_var = log_var.

Notation: n sentences, b batch rows, t tokens, d latent.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimtext.data import pipeline as pipeline_lib
from mimtext.evaluation import progress as progress_lib
from mimtext.models import sentence_ae

DEFAULT_BATCH_SIZE = 200
DEFAULT_PAD_MULTIPLE = 16


@functools.partial(jax.jit, static_argnames=("cfg",))
def encode_batch(params, batch: dict[str, jax.Array], cfg: sentence_ae.ModelConfig
                 ) -> sentence_ae.Posterior:
  """q(z|x) of one padded batch (`pipeline.make_batch`: "tokens" [b,t], "lengths" [b]; other
  fields are ignored): a `sentence_ae.Posterior` of [b,d] jax arrays, filler rows included."""
  return sentence_ae.encode(params, batch["tokens"], batch["lengths"], cfg)


def _posterior_fields(cfg: sentence_ae.ModelConfig) -> tuple[str, ...]:
  """The `Posterior` fields the encoder of `cfg` fills: the Beta fields only for the HSVAE head."""
  gaussian = ("mean", "log_var", "raw_log_var")
  return gaussian + (("beta_a", "beta_b") if cfg.posterior == "hsvae" else ())


def encode_sentences(params, cfg: sentence_ae.ModelConfig, examples: Sequence[np.ndarray], *,
                     batch_size: int = DEFAULT_BATCH_SIZE,
                     pad_multiple: int = DEFAULT_PAD_MULTIPLE, bucket_rows: bool = False,
                     progress: bool = False, desc: str = "encode",
                     leave_bar: bool = False) -> sentence_ae.Posterior:
  """q(z|x) of n sentences (ids `<sos> .. <eos>`): numpy float32 [n,d] fields, in input order.

  The sentences are batched by `pipeline.inference_batches` (in order of length, `batch_size` rows
  per batch, or with `bucket_rows` a power of two for the last one; lengths padded to a multiple
  of `pad_multiple`) and each batch encoded by `encode_batch`. A sentence's posterior does not
  depend on which sentences share its batch (at float rounding, on the batch's row count only).
  n = 0 gives [0,d] fields.

  Args:
    params: the model parameters.
    cfg: the model config (static: one compilation per batch shape).
    examples: n int arrays `<sos> w_1 .. w_m <eos>`.
    batch_size, pad_multiple, bucket_rows: the batching (`pipeline.inference_batches`).
    progress: a bar named `desc` on stderr over the batches (`progress.bar`); `leave_bar` keeps
      it on the terminal when done.

  Returns:
    A `sentence_ae.Posterior` of numpy arrays: mean, log_var, raw_log_var [n,d]; beta_a, beta_b
    [n,d] for the HSVAE head, else None.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n, d = len(examples), cfg.latent_dim
  fields = _posterior_fields(cfg)
  out = {name: np.zeros((n, d), np.float32) for name in fields}
  batches = pipeline_lib.inference_batches(examples, batch_size, pad_multiple=pad_multiple,
                                           bucket_rows=bucket_rows)
  for batch in progress_lib.bar(batches, desc=desc, enabled=progress, leave=leave_bar,
                                total=pipeline_lib.num_batches(n, batch_size)):
    post = jax.device_get(encode_batch(params, batch, cfg))
    rows = batch["valid"] > 0
    for name in fields:
      out[name][batch["index"][rows]] = getattr(post, name)[rows]
  return sentence_ae.Posterior(**out)


def gaussian_posterior(mean: np.ndarray, std: np.ndarray) -> sentence_ae.Posterior:
  """The diagonal Gaussian N(mean, diag std²) as a `Posterior` ([n,d] each; raw_log_var =
  log_var), e.g. for an encoder known only by its (mean, σ)."""
  log_var = 2.0 * np.log(std)
  return sentence_ae.Posterior(mean, log_var, log_var)


def deterministic_code(post: sentence_ae.Posterior) -> np.ndarray:
  """The deterministic code `sentence_ae.posterior_code` of every row (μ; (1 − E_q[γ]) μ for
  HSVAE): numpy [n,d]."""
  return np.asarray(sentence_ae.posterior_code(post))


def code_and_std(post: sentence_ae.Posterior) -> tuple[np.ndarray, np.ndarray]:
  """The deterministic code and the (slab) σ = exp(½ log σ²) of every row: numpy [n,d] each."""
  return deterministic_code(post), np.asarray(jnp.exp(0.5 * jnp.asarray(post.log_var)))
