"""What every objective shares: its configuration, randomness, reconstruction, batch averages.

Every objective is `loss(params, batch, *, key, step, cfg, deterministic=False) -> (loss, metrics)`
where `batch` holds `tokens` [b,t], `lengths` [b] and `valid` [b] (0 for filler rows), and the loss
is a plain mean over the valid sentences of the (global) batch: under `jax.jit` over a mesh XLA
inserts the all-reduce. `metrics["criterion"]` is what validation tracks (LR plateau schedule, best
checkpoint); `deterministic=True` switches dropout and word dropout off (evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mimtext import distributions
from mimtext import nn
from mimtext.models import sentence_ae
from mimtext.models.sentence_ae import documented_field as _field
from mimtext.objectives import latents

Array = jax.Array

KL_SCHEDULES = ("constant", "linear", "logistic")
WORD_KEEP_SCHEDULES = ("constant", "linear")
SAMPLE_AVERAGES = ("loss", "hidden")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """An objective (`name`) over a model, with the knobs the literature uses against collapse.

  Every field carries its one-line doc (and source) in `metadata["doc"]`: the config's `objective`
  block (mimtext/config.py), `launch.train --help` and docs/cli.md are built from these fields
  and their defaults. `model` (`metadata["derived"]`) is no config field.

  kl_schedule: "constant" (β = kl_weight), "linear" (β rises from 0 to kl_weight over
    kl_anneal_steps), "logistic" (β = kl_weight / (1 + exp(−k (step − x0))), seed 001 §3.1).
  num_samples / sample_average: L latent samples per sentence, averaging the L reconstruction terms
    ("loss", seed 003 Eq. 3) or the L decoder states before the softmax ("hidden", Eq. 7-8).
  word_keep_*: decoder word dropout (seed 001 §3.2): keep rate constant, or linear from
    word_keep_start_rate at word_keep_start_step to word_keep_end_rate at word_keep_end_step
    (seed 002 §5.4: keep 0 at step 2,000 → keep 1 at step 20,000).
  kl_z_weight, kl_gamma_weight: ψ and λ of HSVAE's loss (seed 004 Eq. 2),
    −E_q[log p(x|z)] + ψ E_{q(γ|x)} KL(q(z|γ,x) ‖ p(z|γ)) + λ KL(q(γ|x) ‖ p(γ));
    MAT-VAE's loss (appendix B) is −E_q[log p(x|z)] + ψ KL(q(z|x) ‖ p(z)) + λ MMD(q(z), p(z)),
    its λ being mmd_weight. Saved configs name them "psi" and "lam" (`experiment.RENAMED_FIELDS`).
  mim_batch_constant: A-MIM only: the constant log(B) / B of the official sMIM training script
    (B valid sentences in the batch; see `objectives.mim`). It has no gradient: only the reported
    loss moves.
  """

  model: sentence_ae.ModelConfig = _field(doc="The model the objective trains.",
                                          derived="the config's model block")
  name: str = _field("mim", 'The objective: "mim" (A-MIM, seed 000), "vae" (ELBO), "ae", "mi" '
                     '(seed 002 Eq. 9), "hsvae" (seed 004 §3), "matvae" (seed 004 app. B) or '
                     '"lm" (the language-model baseline: needs model.condition="none").')
  kl_weight: float = _field(1.0, "β, the weight of the KL term of vae / mi (its final value under "
                            "a kl_schedule).")
  kl_schedule: str = _field("constant", 'β over the steps: "constant", "linear" (0 → kl_weight '
                            'over kl_anneal_steps) or "logistic" (seed 001 §3.1).')
  kl_anneal_steps: int = _field(10_000, 'Steps of the "linear" KL schedule.')
  kl_logistic_k: float = _field(0.0025, 'k of the "logistic" KL schedule, β = kl_weight / '
                                "(1 + exp(−k (step − x0))) (seed 001 §3.1).")
  kl_logistic_x0: int = _field(2_500, 'x0, the midpoint step of the "logistic" KL schedule '
                               "(seed 001 §3.1).")
  free_bits: float = _field(0.0, "Nats per latent dimension: the KL term is Σ_d max(λ, KL_d) of "
                            "the batch-averaged KL (Kingma et al. 2016); 0 = off.")
  num_samples: int = _field(1, "L, the latent samples per sentence (seed 003).")
  sample_average: str = _field("loss", 'Averages the L samples\' reconstruction terms ("loss", '
                               'seed 003 Eq. 3) or decoder states ("hidden", AVG, Eq. 7-8).')
  word_keep_rate: float = _field(1.0, 'Decoder word keep rate of the "constant" schedule (seed '
                                 "001 §3.2): 1 = no word dropout, 0 = inputless decoder.")
  word_keep_schedule: str = _field("constant", 'Decoder word keep rate over the steps: "constant" '
                                   '(word_keep_rate) or "linear" (seed 002 §5.4).')
  word_keep_start_rate: float = _field(0.0, 'Keep rate of the "linear" schedule up to '
                                       "word_keep_start_step (seed 002 §5.4: 0).")
  word_keep_end_rate: float = _field(1.0, 'Keep rate of the "linear" schedule from '
                                     "word_keep_end_step (seed 002 §5.4: 1).")
  word_keep_start_step: int = _field(2_000, 'Step where the "linear" keep rate starts to rise '
                                     "(seed 002 §5.4: 2,000).")
  word_keep_end_step: int = _field(20_000, 'Step where the "linear" keep rate reaches '
                                   "word_keep_end_rate (seed 002 §5.4: 20,000).")
  l1_weight: float = _field(0.0, "Adds l1 · mean_i(‖μ_i‖₁ + ‖σ_i‖₁) on the posterior μ and σ (the "
                            "VAE_L1 baseline of seed 004 §4.1.2); 0 = off.")
  l2_weight: float = _field(0.0, "Adds l2 · mean_i(‖μ_i‖₂² + ‖σ_i‖₂²) on the posterior μ and σ "
                            "(the VAE_L2 baseline of seed 004 §4.1.2); 0 = off.")
  mi_weight: float = _field(1.0, 'λ of the MI criterion, L = L_VAE + λ L_MI (objective "mi", '
                            "seed 002 Eq. 9).")
  mi_max_len: int = _field(40, "Length of the sentences generated for L_MI (seed 002 Eq. 9).")
  kl_z_weight: float = _field(1.0, "ψ of seed 004 Eq. 2: weight of the KL on z, "
                              "E_q(γ|x) KL(q(z|γ,x) ‖ p(z|γ)) (hsvae) or KL(q(z|x) ‖ p(z)) "
                              '(matvae, app. B). Formerly "psi".')
  kl_gamma_weight: float = _field(1.0, "λ of seed 004 Eq. 2: hsvae's weight of the KL on γ, "
                                  'KL(Beta(a,b) ‖ Beta(α,β)). Formerly "lam".')
  prior_alpha: float = _field(1.0, "hsvae: α of the prior p(γ_d) = Beta(α, β) (seed 004 §3).")
  prior_beta: float = _field(1.0, "hsvae: β of the prior p(γ_d) = Beta(α, β) (seed 004 §3).")
  concrete_temperature: float = _field(0.5, "hsvae / matvae: τ of the binary concrete relaxation "
                                       "of the spike/slab choice (seed 004 app. D; authors' code).")
  concrete_hard: bool = _field(True, "Exact Bernoulli spike/slab choice forward, relaxed gradient "
                               "(straight-through, as the authors' code); False: a relaxed blend.")
  spike_scale: float = _field(0.05, "σ of the spike N(0, σ²) (the paper's σ → 0; authors' code: "
                              "0.05).")
  prior_gamma: float = _field(0.8, "matvae: spike probability γ of the prior p(z_d) = γ N(0, σ²) + "
                              "(1 − γ) N(0, 1), the prior sparsity (seed 004 app. B).")
  mmd_weight: float = _field(1.0, "matvae: λ, the weight of MMD(q(z), p(z)) (seed 004 app. B).")
  mmd_kernel: str = _field("imq", 'matvae MMD kernel: "imq" (inverse multiquadric, Mathieu et al. '
                           '2019 and the authors\' code) or "rbf".')
  mim_batch_constant: bool = _field(False, "mim: add the constant log(B)/B of the official sMIM "
                                    "training script (no gradient; only the reported loss moves).")

  def __post_init__(self):
    for name, allowed in (("kl_schedule", KL_SCHEDULES),
                          ("word_keep_schedule", WORD_KEEP_SCHEDULES),
                          ("sample_average", SAMPLE_AVERAGES), ("mmd_kernel", ("imq", "rbf"))):
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
    for name in ("kl_anneal_steps", "num_samples", "mi_max_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if not 0.0 < self.prior_gamma < 1.0:
      raise ValueError(f"prior_gamma must be in (0, 1), got {self.prior_gamma}")
    for name in ("prior_alpha", "prior_beta", "concrete_temperature", "spike_scale"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    for name in ("word_keep_rate", "word_keep_start_rate", "word_keep_end_rate"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    if self.free_bits < 0:
      raise ValueError(f"free_bits must be >= 0, got {self.free_bits}")


class StepKeys(NamedTuple):
  """Independent keys of one step; dropout keys are None when deterministic."""
  encoder_dropout: Array | None
  latent: Array
  decoder_dropout: Array | None
  word_dropout: Array | None
  extra: Array


def step_keys(key: Array, deterministic: bool) -> StepKeys:
  enc, z, dec, word, extra = jax.random.split(key, 5)
  if deterministic:
    return StepKeys(None, z, None, None, extra)
  return StepKeys(enc, z, dec, word, extra)


def kl_weight(step: Array, cfg: ObjectiveConfig) -> Array:
  """β_t of the KL term at optimiser step `step` (DESIGN §3)."""
  step = jnp.asarray(step, jnp.float32)
  if cfg.kl_schedule == "linear":
    return cfg.kl_weight * jnp.clip(step / cfg.kl_anneal_steps, 0.0, 1.0)
  if cfg.kl_schedule == "logistic":
    return cfg.kl_weight * jax.nn.sigmoid(cfg.kl_logistic_k * (step - cfg.kl_logistic_x0))
  return jnp.asarray(cfg.kl_weight, jnp.float32)


def word_keep(step: Array, cfg: ObjectiveConfig) -> float | Array:
  """The decoder's word keep rate at `step` (a Python 1.0 when word dropout is off)."""
  if cfg.word_keep_schedule == "linear":
    return nn.word_keep_rate(step, start_rate=cfg.word_keep_start_rate,
                             end_rate=cfg.word_keep_end_rate,
                             start_step=cfg.word_keep_start_step, end_step=cfg.word_keep_end_step)
  return cfg.word_keep_rate


class Scoring(NamedTuple):
  """How a trained model is scored (validation, evaluation, decoding): as it was trained.

  word_keep: the decoder's word keep rate when scoring: 0.0 for a decoder trained inputless
    (keep rate 0, seed 001 Table 2), else 1.0 (every input word, also after training with
    0 < keep < 1, as seed 001 §3.2 evaluates its word-dropout models).
  num_latents: L latents decoded jointly by averaging the L decoder states before the softmax
    (seed 003 Eq. 7-8, sample_average="hidden"); 1 otherwise ("loss" averaging of L samples is
    an estimator of the one-latent ELBO, so the model is the one-latent model).
  deterministic_z: z = μ(x), the AE (seed 000 §4.5): its log-variance head never trained, so no
    likelihood bound is defined.
  trained_with_word_dropout: 0 < keep < 1 at some point of training (scored with all inputs).
  latent_free: the language model (objective "lm"): the decoder ignores z, so log p(x) is exact.
  """
  word_keep: float
  num_latents: int
  deterministic_z: bool
  trained_with_word_dropout: bool
  latent_free: bool = False


def scoring(cfg: ObjectiveConfig) -> Scoring:
  """How a model trained with `cfg` is scored; see `Scoring`."""
  if cfg.word_keep_schedule == "linear":
    final_keep = cfg.word_keep_end_rate
    rates = (cfg.word_keep_start_rate, cfg.word_keep_end_rate)
  else:
    final_keep = cfg.word_keep_rate
    rates = (cfg.word_keep_rate,)
  inputless = final_keep == 0.0
  return Scoring(
      word_keep=0.0 if inputless else 1.0,
      num_latents=cfg.num_samples if cfg.sample_average == "hidden" else 1,
      deterministic_z=cfg.name == "ae",
      trained_with_word_dropout=any(r < 1.0 for r in rates) and not inputless,
      latent_free=cfg.name == "lm")


def batch_mean(values: Array, valid: Array) -> Array:
  """Mean of per-sentence values [b] over the valid rows (filler rows weigh 0)."""
  valid = valid.astype(jnp.float32)
  return jnp.sum(values * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def num_target_tokens(batch) -> Array:
  """Target tokens of the valid rows, <eos> included (Σ (lengths − 1))."""
  return jnp.sum((batch["lengths"] - 1) * batch["valid"])


def reconstruct(params, zs: Array, batch, cfg: ObjectiveConfig, keys: StepKeys, step) -> Array:
  """log p(x|z) per sentence from k samples zs [k,b,d], averaged as cfg.sample_average: [b].

  Training (`keys.word_dropout` given) draws word dropout at the scheduled keep rate; scoring
  (deterministic keys) feeds the decoder as `scoring(cfg)` says: no inputs for an inputless
  decoder, every word otherwise.
  """
  if keys.word_dropout is None:
    keep, word_key = scoring(cfg).word_keep, None
  else:
    keep, word_key = word_keep(step, cfg), keys.word_dropout
  return sentence_ae.multi_sample_log_likelihood(
      params, zs, batch["tokens"], batch["lengths"], cfg.model, average=cfg.sample_average,
      dropout_key=keys.decoder_dropout, word_key=word_key, word_keep_rate=keep)


def kl_term(kl_per_dim: Array, valid: Array, free_bits: float) -> Array:
  """Batch-mean KL; with free bits Σ_d max(λ, mean_b KL_d) (Kingma et al. 2016, Eq. in §C.8)."""
  if free_bits <= 0:
    return batch_mean(kl_per_dim.sum(-1), valid)
  v = valid.astype(jnp.float32)[:, None]
  per_dim = jnp.sum(kl_per_dim * v, axis=0) / jnp.maximum(jnp.sum(v), 1.0)
  return jnp.sum(jnp.maximum(per_dim, free_bits))


def reconstruction_metrics(log_px: Array, batch) -> dict[str, Array]:
  """Reconstruction −log p(x|z) per sentence and per target token (<eos> included)."""
  valid = batch["valid"].astype(jnp.float32)
  total = -jnp.sum(log_px * valid)
  return {
      "rec": total / jnp.maximum(jnp.sum(valid), 1.0),
      "rec_per_token": total / jnp.maximum(num_target_tokens(batch), 1.0),
  }


def posterior_metrics(post: sentence_ae.Posterior, draw: latents.LatentDraw, batch,
                      cfg: ObjectiveConfig, family: latents.LatentFamily) -> dict[str, Array]:
  """Batch means of the KL term, log q(z|x) and log p(z) under the objective's latent `family`,
  the mean posterior σ and the fraction of dimensions at the floor.

  draw: the loss's k draws (`LatentDraw`, z [k,b,d]); log q and log p are those of the first
  draw, the KL is `family.kl` (closed form, or its k-draw Monte Carlo average).
  """
  valid = batch["valid"]
  first = latents.take_draw(draw, 0)
  row_std, row_floor = posterior_row_stats(post, cfg.model)
  return {
      "kl": batch_mean(family.kl(post, draw, cfg), valid),
      "log_q": batch_mean(first.log_q, valid),
      "log_prior": batch_mean(family.log_prior(first.z, cfg), valid),
      "post_std": batch_mean(row_std, valid),
      "frac_at_floor": batch_mean(row_floor, valid),
  }


def posterior_row_stats(post: sentence_ae.Posterior, cfg: sentence_ae.ModelConfig
                        ) -> tuple[Array, Array]:
  """Per sentence: the mean posterior σ over dimensions, and the fraction of dimensions whose
  raw log-variance is at or below the floor (`distributions.fraction_at_floor`): ([b], [b]).

  The one definition that training metrics, validation and evaluation share (DESIGN §7): the raw
  log-variance is compared, so a smooth (softplus) floor that is never reached exactly still counts
  a dimension pushed against it. Batch means weigh these rows by the validity mask.
  """
  row_std = jnp.mean(jnp.exp(0.5 * post.log_var), axis=-1)
  row_floor = distributions.fraction_at_floor(post.raw_log_var, cfg.log_var_floor, axis=-1)
  return row_std, row_floor


def encode(params, batch, cfg: ObjectiveConfig, keys: StepKeys) -> sentence_ae.Posterior:
  return sentence_ae.encode(params, batch["tokens"], batch["lengths"], cfg.model,
                            dropout_key=keys.encoder_dropout)
