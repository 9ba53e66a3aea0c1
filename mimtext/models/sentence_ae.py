"""Sentence autoencoders: one configurable network for sMIM, sVAE, AE, MI-VAE, HSVAE and MAT-VAE.

Data flow (DESIGN §2): shared word embeddings → RNN encoder (GRU or LSTM, uni- or bidirectional,
input optionally reversed) → summary of its states (last real state, masked mean, or attention;
seed 002 §5.3) → optional highway layers → posterior head (diagonal Gaussian, seed 000 Eq. 3; or
the HSVAE head of seed 004 §3) → z → optional highway layers (seed 002 §5.2) → decoder RNN with z
as its initial state and/or concatenated to every input embedding → logits of p(x^k | x^{<k}, z).

The defaults are the sMIM network of seed 000 §4.2: GRU, encoder reads the sentence reversed, last
state, z both initial state and input. The objective decides how the pieces are used.

Notation: b batch, t time (tokens incl. <sos>/<eos>), v vocabulary, e embedding, h hidden, s
summary (h, or 2h when bidirectional), d latent, k samples. A batch row is `<sos> w_1 … w_n <eos>
<pad>…` with `lengths = n + 2`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mimtext import distributions
from mimtext import kernels
from mimtext import nn
from mimtext import sparse_distributions
from mimtext import special_tokens

Params = dict
Array = jax.Array

FLOOR_MODES = ("clamp", "softplus", "none")
SUMMARIES = ("last", "mean", "attention")
CONDITIONS = ("init", "concat", "both", "none")
POSTERIORS = ("gaussian", "hsvae")
EMBED_DROPOUT_SCOPES = ("both", "decoder")
LOG_VAR_INITS = ("default", "floor")



def documented_field(default=dataclasses.MISSING, doc: str = "", derived: str | None = None):
  """A config dataclass field with its one-line doc (and, for a field the run fills in itself
  rather than the user, what derives it) in `metadata`; `--help` and docs/cli.md read them."""
  metadata = {"doc": doc} if derived is None else {"doc": doc, "derived": derived}
  return dataclasses.field(default=default, metadata=metadata)


_field = documented_field


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static architecture of the sentence autoencoder (defaults: seed 000 §4.2, PTB).

  Every field carries its one-line doc (and source) in `metadata["doc"]`: the config's `model`
  block (mimtext/config.py), `launch.train --help` and docs/cli.md are built from these fields
  and their defaults. A field with `metadata["derived"]` is no config field:
  `experiment.model_config` sets it, from what that text says.
  """

  vocab_size: int = _field(doc="Vocabulary size, the 4 special tokens included.",
                           derived="the run's vocabulary")
  embed_dim: int = _field(300, "Word embedding size, shared by the encoder and the decoder "
                          "(seed 000 §4.2).")
  hidden_dim: int = _field(512, "RNN hidden size of the encoder and the decoder (seed 000 §4.2).")
  latent_dim: int = _field(128, "Dimension d of the latent code z (seed 000 §4.2).")
  cell: str = _field("gru", 'RNN cell: "gru" (seed 000 §4.2) or "lstm" (seeds 001, 003).')
  bidirectional: bool = _field(False, "Bidirectional encoder (seed 002 §5.1).")
  summary: str = _field("last", 'Encoder summary fed to the posterior head: "last" real state, '
                        'masked "mean" or "attention" (seed 002 §5.3).')
  attention_dim: int = _field(0, 'Width of the "attention" summary; 0 = the summary width.')
  encoder_highway: int = _field(0, "Highway layers between the summary and the posterior head.")
  decoder_highway: int = _field(0, "Highway layers on z before the decoder (seed 002 §5.2).")
  condition: str = _field("both", 'z enters the decoder as its "init" state, "concat" (joined to '
                          'every input embedding), or "both" (seed 000 §4.2); "none": the '
                          'decoder ignores z, a language model (objective "lm").')
  embed_dropout: float = _field(0.5, "Dropout rate on the word embeddings (which: "
                                "embed_dropout_scope).")
  output_dropout: float = _field(0.0, "Dropout on the decoder states before the softmax "
                                 "(seed 003 §5.1).")
  reverse_encoder_input: bool = _field(True, "The encoder reads the sentence reversed (seed 000 "
                                       "§4.2; ignored by a bidirectional encoder).")
  # Where seed 000 is silent, the official sMIM code (SentenceMIM-demo model.py) differs in two
  # ways; both are off by default (see launch/configs/*smim*.flags).
  encoder_reads_sos: bool = _field(False, "The encoder reads `<sos> w_1 … w_n` (reversed: "
                                   "`w_n … w_1 <sos>`), as the official sMIM code (model.py).")
  embed_dropout_scope: str = _field("both", 'Embeddings that embed_dropout drops: "both" '
                                    '(encoder and decoder) or "decoder" inputs only (official '
                                    "sMIM code).")
  posterior: str = _field("gaussian", 'Posterior head: "gaussian" (seed 000 Eq. 3) or "hsvae" '
                          "(Beta / spike-and-slab, seed 004 §3; goes with objective hsvae).")
  log_var_floor: float = _field(-10.0, "Floor on the posterior log-variance, applied as "
                                "floor_mode says (DESIGN §7).")
  floor_mode: str = _field("clamp", 'How log_var_floor applies: "clamp" (zero gradient below, as '
                           'the original sMIM code), "softplus" (smooth) or "none" (DESIGN §7).')
  # "default" starts with a noisy phase in which the decoder learns to ignore z: under A-MIM σ
  # falls to the floor within a few hundred steps anyway, but sMIM is slowed down for thousands of
  # steps (see launch/configs/quickstart.flags).
  log_var_init: str = _field("default", 'Log-variance head at init: "default" (σ ≈ 1, as the '
                             'official sMIM code) or "floor" (weights 0, bias log_var_floor).')
  mi_head: bool = _field(False, "The auxiliary q_MI(z|x) head of the mutual-information criterion "
                         "(seed 002 §4).", derived='objective.name: True exactly for "mi"')
  concentration_floor: float = _field(1e-2, "HSVAE head: the Beta concentrations of q(γ|x) are "
                                      "floor + softplus(raw) (DESIGN §7; authors' code: 1e-5).")
  init_scale: float = _field(0.0, "0 = the per-layer PyTorch-style defaults of `nn`; s > 0: every "
                             "weight, bias and embedding ~ U(−s, s) (seed 003 §5.1: 0.1).")
  # Not from a paper: mixed precision (benchmarks/README.md measures it). Parameters, gates and
  # the softmax stay float32; only the matmul operands are rounded.
  matmul_dtype: str = _field("float32", 'Operands of the RNN and output-layer matmuls under '
                             'teacher forcing, accumulated in float32: "float32" or "bfloat16" '
                             "(AMX / AVX512-BF16 CPUs, GPUs, TPUs).")

  def __post_init__(self):
    for name, allowed in (("floor_mode", FLOOR_MODES), ("summary", SUMMARIES),
                          ("condition", CONDITIONS), ("posterior", POSTERIORS),
                          ("cell", nn.CELLS), ("embed_dropout_scope", EMBED_DROPOUT_SCOPES),
                          ("log_var_init", LOG_VAR_INITS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
    for name in ("vocab_size", "embed_dim", "hidden_dim", "latent_dim"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    for name in ("encoder_highway", "decoder_highway", "attention_dim"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    for name in ("embed_dropout", "output_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
    if self.concentration_floor <= 0:
      raise ValueError(f"concentration_floor must be positive, got {self.concentration_floor}")
    if not self.init_scale >= 0:
      raise ValueError(f"init_scale must be >= 0 (0 = the default init), got {self.init_scale}")
    kernels.check_matmul_dtype(self.matmul_dtype)

  @property
  def summary_dim(self) -> int:
    return 2 * self.hidden_dim if self.bidirectional else self.hidden_dim

  @property
  def concat_z(self) -> bool:
    return self.condition in ("concat", "both")

  @property
  def init_from_z(self) -> bool:
    return self.condition in ("init", "both")


class Posterior(NamedTuple):
  """q(z|x): Gaussian mean [b,d], floored and raw log-variance [b,d].

  For the HSVAE head also the Beta(a, b) concentrations [b,d] of q(γ|x); None otherwise.
  """
  mean: Array
  log_var: Array
  raw_log_var: Array
  beta_a: Array | None = None
  beta_b: Array | None = None


# ----------------------------------------------------------------------------- parameters


def init_params(key: Array, cfg: ModelConfig) -> Params:
  """Initialises every weight of the autoencoder.

  With `cfg.init_scale` = s > 0 every array (weights, biases, embeddings) is then redrawn from
  U(−s, s), as seed 003 §5.1 ("all model parameters and word embeddings ... U(−0.1, 0.1)").
  With `cfg.log_var_init` = "floor" the log-variance head then starts at the floor: zero weights,
  bias `cfg.log_var_floor`.
  """
  keys = iter(jax.random.split(key, 16 + cfg.encoder_highway + cfg.decoder_highway))
  e, h, d, v, s = cfg.embed_dim, cfg.hidden_dim, cfg.latent_dim, cfg.vocab_size, cfg.summary_dim
  init_encoder = nn.init_birnn if cfg.bidirectional else nn.init_rnn
  params = {
      "embed": nn.init_embedding(next(keys), v, e),
      "encoder": init_encoder(next(keys), cfg.cell, e, h),
      "to_mean": nn.init_dense(next(keys), s, d),
      "to_log_var": nn.init_dense(next(keys), s, d),
      "decoder": nn.init_rnn(next(keys), cfg.cell, decoder_input_dim(cfg), h),
      "out": nn.init_dense(next(keys), h, v),
  }
  # Optional blocks are absent rather than empty, so checkpoints never hold empty containers.
  if cfg.encoder_highway:
    params["encoder_highway"] = [nn.init_highway(next(keys), s) for _ in range(cfg.encoder_highway)]
  if cfg.decoder_highway:
    params["decoder_highway"] = [nn.init_highway(next(keys), d) for _ in range(cfg.decoder_highway)]
  if cfg.summary == "attention":
    params["attention"] = nn.init_attention_summary(next(keys), s, cfg.attention_dim or s)
  if cfg.init_from_z:
    params["z_to_h0"] = nn.init_dense(next(keys), d, h)
  if cfg.mi_head:
    params["mi_head"] = {"to_mean": nn.init_dense(next(keys), h, d),
                         "to_log_var": nn.init_dense(next(keys), h, d)}
  if cfg.posterior == "hsvae":
    params["to_beta_a"] = nn.init_dense(next(keys), s, d)
    params["to_beta_b"] = nn.init_dense(next(keys), s, d)
  if cfg.init_scale > 0:
    params = _uniform_init(jax.random.fold_in(key, 0x5CA1E), params, cfg.init_scale)
  if cfg.log_var_init == "floor":
    params["to_log_var"] = {"w": jnp.zeros_like(params["to_log_var"]["w"]),
                            "b": jnp.full_like(params["to_log_var"]["b"], cfg.log_var_floor)}
  return params


def _uniform_init(key: Array, params: Params, scale: float) -> Params:
  """Every array of `params` redrawn from U(−scale, scale), each with its own key; same tree."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [
      jax.random.uniform(k, x.shape, x.dtype, -scale, scale) for k, x in zip(keys, leaves)])


def count_params(params: Params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def check_batch(tokens: Array, lengths: Array, z: Array | None = None,
                cfg: ModelConfig | None = None) -> None:
  """Shape checks at trace time, so a wrong input names itself instead of failing deep inside."""
  if jnp.ndim(tokens) != 2:
    raise ValueError(f"tokens must be [batch, time] ids, got shape {jnp.shape(tokens)}")
  if jnp.shape(lengths) != jnp.shape(tokens)[:1]:
    raise ValueError(f"lengths must be [batch] = {jnp.shape(tokens)[:1]}, got {jnp.shape(lengths)}")
  if z is not None and cfg is not None and jnp.shape(z) != (jnp.shape(tokens)[0], cfg.latent_dim):
    raise ValueError(f"z must be [batch, latent_dim] = {(jnp.shape(tokens)[0], cfg.latent_dim)}, "
                     f"got {jnp.shape(z)}")


def _embed_dropped(params: Params, ids: Array, cfg: ModelConfig, key: Array | None) -> Array:
  x = nn.embed(params["embed"], ids)
  if key is None:
    return x
  return nn.dropout(key, x, cfg.embed_dropout, deterministic=False)


# ----------------------------------------------------------------------------- encoder


def encoder_summary(params: Params, tokens: Array, lengths: Array, cfg: ModelConfig, *,
                    dropout_key: Array | None = None) -> Array:
  """The fixed-size summary of a sentence that the posterior head reads: [b,s].

  The encoder reads the words w_1 … w_n (neither <sos> nor <eos>; valid length lengths − 2),
  or with `cfg.encoder_reads_sos` `<sos> w_1 … w_n` (valid length lengths − 1), as the official
  sMIM code does; reversed (seed 000 §4.2) that is w_n … w_1 <sos>, so <sos> is its last input.
  The embeddings are dropped (`dropout_key` given) only when `cfg.embed_dropout_scope` is "both".
  """
  check_batch(tokens, lengths)
  if cfg.encoder_reads_sos:
    words, num_read = tokens, lengths - 1
  else:
    words, num_read = tokens[:, 1:], lengths - 2
  mask = nn.sequence_mask(num_read, words.shape[1])
  if cfg.embed_dropout_scope != "both":
    dropout_key = None
  x = _embed_dropped(params, words, cfg, dropout_key)
  if cfg.bidirectional:
    outputs, last = nn.birnn(params["encoder"], cfg.cell, x, mask, matmul_dtype=cfg.matmul_dtype)
  else:
    outputs, last = nn.rnn(params["encoder"], cfg.cell, x, mask,
                           reverse=cfg.reverse_encoder_input, matmul_dtype=cfg.matmul_dtype)
  if cfg.summary == "mean":
    summary = nn.summary_mean(outputs, mask)
  elif cfg.summary == "attention":
    summary, _ = nn.attention_summary(params["attention"], outputs, mask)
  else:
    summary = last
  for layer in params.get("encoder_highway", ()):
    summary = nn.highway(layer, summary)
  return summary


def encode(params: Params, tokens: Array, lengths: Array, cfg: ModelConfig, *,
           dropout_key: Array | None = None) -> Posterior:
  """q(z|x) from the encoder summary by linear heads (seed 000 Eq. 3; seed 004 §3 for HSVAE).

  Args:
    tokens: [b,t] int ids `<sos> w… <eos> <pad>…`; lengths: [b] real tokens incl. <sos>/<eos>.
    dropout_key: enables embedding dropout (training) when given and cfg.embed_dropout_scope is
      "both"; with "decoder" the encoder is deterministic.
  """
  summary = encoder_summary(params, tokens, lengths, cfg, dropout_key=dropout_key)
  raw_log_var = nn.dense(params["to_log_var"], summary)
  log_var = distributions.log_var_floor(raw_log_var, cfg.log_var_floor, cfg.floor_mode)
  mean = nn.dense(params["to_mean"], summary)
  if cfg.posterior == "hsvae":
    floor = cfg.concentration_floor
    a = floor + jax.nn.softplus(nn.dense(params["to_beta_a"], summary))
    b = floor + jax.nn.softplus(nn.dense(params["to_beta_b"], summary))
    return Posterior(mean, log_var, raw_log_var, a, b)
  return Posterior(mean, log_var, raw_log_var)


def posterior_code(post: Posterior) -> Array:
  """The deterministic code of a sentence: E_q[z] = μ, or (1 − E_q[γ]) μ for HSVAE: [b,d]."""
  if post.beta_a is None:
    return post.mean
  return sparse_distributions.spike_slab_mean(
      sparse_distributions.beta_log_mean(post.beta_a, post.beta_b)[1], post.mean)


# ----------------------------------------------------------------------------- decoder


def decoder_code(params: Params, z: Array) -> Array:
  """z after the decoder's highway layers (identity without them): [..., d]."""
  for layer in params.get("decoder_highway", ()):
    z = nn.highway(layer, z)
  return z


def decoder_initial_state(params: Params, code: Array, cfg: ModelConfig) -> Array | None:
  """The decoder's initial hidden state W z + c ([b,h]) when z conditions it, else None."""
  return nn.dense(params["z_to_h0"], code) if cfg.init_from_z else None


class DecoderInput(NamedTuple):
  """The parts of the decoder's input at each step, in the order of its layout: [embedding; z].

  The one owner of that order. The field order is both the order in which the teacher-forced
  decoder concatenates its input (`concat_decoder_input`) and the order of the row blocks of the
  decoder's input weights `params["decoder"]["w_i"]` ([e + d, G·h] with z an input, [e, G·h]
  without; `split_decoder_input_weights`), which the step-wise decoder of `decoding` uses.
  Holds arrays ([..., e] and [..., d]), weight blocks ([e, G·h] and [d, G·h]) or widths (ints);
  `z` is None when z is not a decoder input (`cfg.concat_z` False).
  """
  word: Array | int           # the (dropped-out) embedding of the previous token
  z: Array | int | None       # the decoder code (`decoder_code`), the same at every step


def decoder_input_widths(cfg: ModelConfig) -> DecoderInput:
  """The width of each part of the decoder's input: (e, d), or (e, None) without z as input."""
  return DecoderInput(word=cfg.embed_dim, z=cfg.latent_dim if cfg.concat_z else None)


def decoder_input_dim(cfg: ModelConfig) -> int:
  """The decoder's input width: e + d with z as input, else e."""
  return sum(width for width in decoder_input_widths(cfg) if width is not None)


def concat_decoder_input(parts: DecoderInput) -> Array:
  """The decoder's input [..., e(+d)]: the present parts concatenated in layout order."""
  present = [x for x in parts if x is not None]
  return present[0] if len(present) == 1 else jnp.concatenate(present, axis=-1)


def split_decoder_input_weights(params: Params, cfg: ModelConfig) -> DecoderInput:
  """The row blocks of the decoder's input weights W_i by the input part they read.

  x W_i = Σ_parts x_part W_i[part] for x = `concat_decoder_input(parts)`: returns
  (W_word [e, G·h], W_z [d, G·h] or None).
  """
  w_i = params["decoder"]["w_i"]
  blocks, start = [], 0
  for width in decoder_input_widths(cfg):
    if width is None:
      blocks.append(None)
      continue
    blocks.append(w_i[start:start + width])
    start += width
  return DecoderInput(*blocks)


def decoder_hidden(params: Params, z: Array, tokens: Array, lengths: Array, cfg: ModelConfig, *,
                   dropout_key: Array | None = None, word_key: Array | None = None,
                   word_keep_rate: float | Array = 1.0) -> Array:
  """Decoder hidden states under teacher forcing: [b,t-1,h] (position k predicts tokens[:, k+1]).

  The decoder reads `<sos> w_1 … w_n`; each real input after <sos> is replaced by <unk> with
  probability 1 − word_keep_rate (word dropout, seed 001 §3.2; drawn with `word_key`). The Python
  value 0.0 is the inputless decoder (every input after <sos> is <unk>; no key needed), 1.0 (the
  default) feeds every word.
  """
  check_batch(tokens, lengths, z, cfg)
  inputs = tokens[:, :-1]
  mask = nn.sequence_mask(lengths - 1, inputs.shape[1])
  inputs = nn.word_dropout(word_key, inputs, mask, word_keep_rate, unk_id=special_tokens.UNK_ID)
  x = _embed_dropped(params, inputs, cfg, dropout_key)
  code = decoder_code(params, z)
  z_in = (jnp.broadcast_to(code[:, None, :], x.shape[:2] + code.shape[-1:]) if cfg.concat_z
          else None)
  x = concat_decoder_input(DecoderInput(word=x, z=z_in))
  hidden, _ = nn.rnn(params["decoder"], cfg.cell, x, mask,
                     h0=decoder_initial_state(params, code, cfg), matmul_dtype=cfg.matmul_dtype)
  return hidden


def _output_dropped(hidden: Array, cfg: ModelConfig | None, dropout_key: Array | None) -> Array:
  """Decoder states through `cfg.output_dropout` when `dropout_key` is given (training)."""
  if dropout_key is not None and cfg is not None and cfg.output_dropout > 0:
    hidden = nn.dropout(jax.random.fold_in(dropout_key, 1), hidden, cfg.output_dropout,
                        deterministic=False)
  return hidden


def output_logits(params: Params, hidden: Array, cfg: ModelConfig | None = None,
                  dropout_key: Array | None = None) -> Array:
  """Logits of the next token from decoder states: [..., h] → [..., v] (float32 matmul).

  With `dropout_key` (training) the states first go through `cfg.output_dropout`.
  """
  return nn.dense(params["out"], _output_dropped(hidden, cfg, dropout_key))


def target_log_likelihoods(params: Params, hidden: Array, tokens: Array, lengths: Array,
                           cfg: ModelConfig, dropout_key: Array | None = None) -> Array:
  """log p(x^k | x^{<k}, z) of every target token from decoder states, 0 at padding: [b,t-1].

  The same values as `token_log_likelihoods(output_logits(...))`, through the fused
  `kernels.linear_log_likelihood` (no [b, t-1, v] log-probabilities, `cfg.matmul_dtype` operands).
  hidden: [b,t-1,h] (`decoder_hidden`); targets are tokens[:, 1:].
  """
  hidden = _output_dropped(hidden, cfg, dropout_key)
  targets = tokens[:, 1:]
  b, t = targets.shape
  per_token = kernels.linear_log_likelihood(
      hidden.reshape(b * t, -1), params["out"]["w"], params["out"]["b"], targets.reshape(-1),
      cfg.matmul_dtype).reshape(b, t)
  return jnp.where(nn.sequence_mask(lengths - 1, t), per_token, 0.0)


def decoder_logits(params: Params, z: Array, tokens: Array, lengths: Array, cfg: ModelConfig,
                   **kwargs) -> Array:
  """Logits of p(x^k | x^{<k}, z) for k = 1..t-1 (seed 000 Eq. 1): [b,t-1,v]."""
  hidden = decoder_hidden(params, z, tokens, lengths, cfg, **kwargs)
  return output_logits(params, hidden, cfg, kwargs.get("dropout_key"))


def token_log_likelihoods(logits: Array, tokens: Array, lengths: Array) -> Array:
  """log p(x^k | x^{<k}, z) of every target token, 0 at padding: [b,t-1].

  Targets are tokens[:, 1:] (w_1 … w_n <eos>); the <eos> step is included (it models the length).
  """
  targets = tokens[:, 1:]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.where(nn.sequence_mask(lengths - 1, targets.shape[1]), picked, 0.0)


def _sum_tokens(per_token: Array, lengths: Array, include_eos: bool) -> Array:
  if not include_eos:
    eos_position = lengths - 2                              # index of <eos> among the targets
    per_token = jnp.where(jnp.arange(per_token.shape[1])[None] == eos_position[:, None],
                          0.0, per_token)
  return per_token.sum(axis=1)


def sentence_log_likelihood(params: Params, z: Array, tokens: Array, lengths: Array,
                            cfg: ModelConfig, *, include_eos: bool = True, **kwargs) -> Array:
  """log p(x|z) = Σ_k log p(x^k | x^{<k}, z) per sentence: [b] (seed 000 Eq. 1-2).

  With include_eos=False the final <eos> term is left out (PPL without <eos>, seed 000 §4.3).
  Keyword arguments (dropout and word dropout) go to `decoder_hidden`.
  """
  hidden = decoder_hidden(params, z, tokens, lengths, cfg, **kwargs)
  per_token = target_log_likelihoods(params, hidden, tokens, lengths, cfg,
                                     kwargs.get("dropout_key"))
  return _sum_tokens(per_token, lengths, include_eos)


def multi_sample_log_likelihood(params: Params, zs: Array, tokens: Array, lengths: Array,
                                cfg: ModelConfig, *, average: str = "loss",
                                include_eos: bool = True, **kwargs) -> Array:
  """Reconstruction from k latent samples per sentence (seed 003): zs [k,b,d] → [b].

  average="loss": (1/k) Σ_j log p(x|z_j) (seed 003 Eq. 3).
  average="hidden": log p(x | h̄) with h̄_t = (1/k) Σ_j h_t(z_j), the decoder states averaged
  before the softmax at every step (seed 003 Eq. 7-8, LSTM-VAE-AVG). With k = 1 both equal
  `sentence_log_likelihood` (the keys are used unchanged, so the result is the same bit for bit).

  With k > 1 the k decoder passes draw independent dropout masks, as the loop over samples of seed
  003 does (§2 "we just place a loop before reparameterization", Fig. 2-3: one decoder pass per
  z^(l)): pass j takes `dropout_key` and `word_key` folded with j, so its embedding dropout,
  word dropout and (for "loss") output dropout masks are its own. For "hidden" the one averaged
  state h̄ goes through output dropout with `dropout_key` folded with k. Vectorised with vmap.
  """
  k = zs.shape[0]
  dropout_key, word_key = kwargs.pop("dropout_key", None), kwargs.pop("word_key", None)

  def sample_keys(j):
    if k == 1:
      return {"dropout_key": dropout_key, "word_key": word_key}
    fold = lambda key: None if key is None else jax.random.fold_in(key, j)
    return {"dropout_key": fold(dropout_key), "word_key": fold(word_key)}

  if average == "loss":
    per_sample = jax.vmap(lambda z, j: sentence_log_likelihood(
        params, z, tokens, lengths, cfg, include_eos=include_eos, **sample_keys(j), **kwargs))(
            zs, jnp.arange(k))
    return per_sample.mean(axis=0)
  if average == "hidden":
    hidden = jax.vmap(lambda z, j: decoder_hidden(
        params, z, tokens, lengths, cfg, **sample_keys(j), **kwargs))(zs, jnp.arange(k))
    out_key = dropout_key if (k == 1 or dropout_key is None) else jax.random.fold_in(dropout_key, k)
    per_token = target_log_likelihoods(params, hidden.mean(axis=0), tokens, lengths, cfg, out_key)
    return _sum_tokens(per_token, lengths, include_eos)
  raise ValueError(f"average must be 'loss' or 'hidden', got {average!r}")
