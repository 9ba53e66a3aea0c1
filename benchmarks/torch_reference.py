"""A PyTorch sentenceMIM (PTB configuration) written the way the original PyTorch code does it.

This is the *peer* of mimtext's jitted JAX train step in `train_step_throughput.py`: the same
architecture, loss and optimiser, but built from stock PyTorch pieces in the style of the original
sMIM / sentence-VAE implementations:

* `nn.Embedding` (shared by encoder and decoder, no `padding_idx`), `nn.Dropout` on embeddings;
* `nn.GRU` run on `pack_padded_sequence` input after **sorting the batch by length** (descending),
  then `pad_packed_sequence` and **unsorting** (the step DESIGN.md §7 warns about: it is done here,
  and undone, exactly as the originals do);
* `nn.Linear` heads, `F.cross_entropy(..., ignore_index=PAD_ID)` over the padded logits;
* `torch.optim.Adam(lr=1e-3)`, one `zero_grad / backward / step` per batch, the gradient clipped
  first by `torch.nn.utils.clip_grad_norm_` when `clip_norm` > 0 (the official sMIM train.py: 0.25).

`padded=True` is the second variant: no sort and no packing; the batch is padded to its longest
sentence (`to_torch_batch(..., trim=True)`), both GRUs run over every padded position (one
`nn.GRU` call each, the shape cuDNN likes), and the encoder summary is its output at the last real
input of each row (a gather). The padded positions change nothing: the GRU is causal, the
cross-entropy ignores `<pad>` targets.

It is our own code (no original source was copied) and it is not part of the library: torch is
imported by this module only, and only when the benchmark asks for the torch side.

Architecture (seed 000 §4.2, mimtext `sentence_ae`): vocab v, embeddings e = 300, encoder GRU
h = 512 over the reversed words (`<eos>` never read; `<sos>` read last when `encoder_reads_sos`, as
the official sMIM model.py and launch/configs/ptb_smim_128.flags), embedding dropout on the encoder
and decoder inputs or (`embed_dropout_scope="decoder"`) on the decoder's only, mean / log-variance
by linear maps (d = 128),
log-variance clamped at −10, z = μ + σ ε; decoder GRU h = 512 whose input at every step is the
previous token's embedding concatenated with z and whose initial state is a linear map of z; output
projection to v. Loss: A-MIM, −mean_i [log p(x_i|z_i) + ½ (log q(z_i|x_i) + log N(z_i; 0, I))],
`<eos>` included in log p(x|z); with `batch_constant` the official script's constant log(B) / B is
added (no gradient: `objective.mim_batch_constant`).

Parameter layout equals mimtext's: `nn.GRU` has two bias vectors (b_ih, b_hh) like mimtext's
`b_i`, `b_h`, and the gate order r, z, n is the same, so `load_mimtext_params` copies a mimtext
params tree in exactly (weights transposed: mimtext stores input-major matrices).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD_ID = 0  # mimtext.data.vocab.PAD_ID
_LOG_2PI = math.log(2.0 * math.pi)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
  """Reverses the first lengths[i] steps of each row of x [b, t], padding left in place."""
  t = x.shape[1]
  j = torch.arange(t, device=x.device).unsqueeze(0)
  lengths = lengths.unsqueeze(1)
  idx = torch.where(j < lengths, lengths - 1 - j, j)
  return torch.gather(x, 1, idx)


class SentenceMIM(nn.Module):
  """The sMIM sentence autoencoder; `forward` returns the A-MIM loss of a batch."""

  def __init__(self, vocab_size: int, embed_dim: int = 300, hidden_dim: int = 512,
               latent_dim: int = 128, embed_dropout: float = 0.5, log_var_floor: float = -10.0,
               reverse_encoder_input: bool = True, encoder_reads_sos: bool = False,
               embed_dropout_scope: str = "both", batch_constant: bool = False,
               padded: bool = False):
    super().__init__()
    if embed_dropout_scope not in ("both", "decoder"):
      raise ValueError(f"embed_dropout_scope must be 'both' or 'decoder', got "
                       f"{embed_dropout_scope!r}")
    self.vocab_size = vocab_size
    self.log_var_floor = log_var_floor
    self.reverse_encoder_input = reverse_encoder_input
    self.encoder_reads_sos = encoder_reads_sos
    self.embed_dropout_scope = embed_dropout_scope
    self.batch_constant = batch_constant
    self.padded = padded
    self.embedding = nn.Embedding(vocab_size, embed_dim)
    self.embedding_dropout = nn.Dropout(p=embed_dropout)
    self.encoder_rnn = nn.GRU(embed_dim, hidden_dim, num_layers=1, batch_first=True)
    self.hidden2mean = nn.Linear(hidden_dim, latent_dim)
    self.hidden2logv = nn.Linear(hidden_dim, latent_dim)
    self.latent2hidden = nn.Linear(latent_dim, hidden_dim)
    self.decoder_rnn = nn.GRU(embed_dim + latent_dim, hidden_dim, num_layers=1, batch_first=True)
    self.outputs2vocab = nn.Linear(hidden_dim, vocab_size)

  def encode(self, tokens: torch.Tensor, lengths: torch.Tensor):
    """Posterior of a batch: mean, log-var, raw log-var.

    tokens: [b, t] `<sos> w… <eos> <pad>…`, lengths: [b] incl. `<sos>`/`<eos>` (CPU int64);
    **sorted by length** (descending) unless `padded`.
    """
    if self.encoder_reads_sos:
      words, num_read = tokens, lengths - 1         # <sos> w_1 … w_n (reversed: <sos> last)
    else:
      words, num_read = tokens[:, 1:], lengths - 2  # w_1 … w_n only
    if self.reverse_encoder_input:
      words = reverse_padded(words, num_read.to(words.device))
    emb = self.embedding(words)
    if self.embed_dropout_scope == "both":
      emb = self.embedding_dropout(emb)
    if self.padded:
      outputs, _ = self.encoder_rnn(emb)            # [b, t, h] over every position
      last = (num_read - 1).to(outputs.device).view(-1, 1, 1).expand(-1, 1, outputs.size(2))
      hidden = outputs.gather(1, last).squeeze(1)   # the state after the last real input
    else:
      packed = pack_padded_sequence(emb, num_read, batch_first=True)
      _, hidden = self.encoder_rnn(packed)          # [1, b, h], the last real state per row
      hidden = hidden.squeeze(0)
    mean = self.hidden2mean(hidden)
    raw_logv = self.hidden2logv(hidden)
    logv = torch.clamp(raw_logv, min=self.log_var_floor)  # zero gradient below the floor
    return mean, logv, raw_logv

  def decode(self, tokens: torch.Tensor, lengths: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Logits [b, t-1, v] (teacher forcing, z at every step); sorted by length unless `padded`."""
    inputs = tokens[:, :-1]
    emb = self.embedding_dropout(self.embedding(inputs))
    emb = torch.cat([emb, z.unsqueeze(1).expand(-1, emb.size(1), -1)], dim=-1)
    h0 = self.latent2hidden(z).unsqueeze(0)
    if self.padded:
      outputs, _ = self.decoder_rnn(emb, h0)        # causal: padded steps follow the real ones
      return self.outputs2vocab(outputs)
    packed = pack_padded_sequence(emb, lengths - 1, batch_first=True)
    outputs, _ = self.decoder_rnn(packed, h0)
    padded, _ = pad_packed_sequence(outputs, batch_first=True, total_length=inputs.size(1))
    return self.outputs2vocab(padded)

  def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, *, use_mean: bool = False,
              eps: torch.Tensor | None = None):
    """A-MIM loss of a batch and per-sentence log p(x|z) (in the batch's original order).

    Args:
      tokens: [b, t] int64; lengths: [b] int64 on the CPU (pack_padded_sequence wants them there).
      use_mean: z = μ (no sampling) — for the equivalence check.
      eps: optional [b, d] standard-normal noise in the original row order (else drawn here).
    Returns:
      (loss scalar, log_px [b]).
    """
    if self.padded:  # no sort, no packing: every row in its own place
      mean, logv, _ = self.encode(tokens, lengths)
      std = torch.exp(0.5 * logv)
      z = mean if use_mean else mean + std * (torch.randn_like(std) if eps is None else eps)
      logits = self.decode(tokens, lengths, z)
    else:
      # Sort by length, as pack_padded_sequence (enforce_sorted=True) and the original code do.
      sorted_lengths, sorted_idx = torch.sort(lengths, descending=True)
      sorted_tokens = tokens[sorted_idx.to(tokens.device)]
      mean, logv, _ = self.encode(sorted_tokens, sorted_lengths)
      std = torch.exp(0.5 * logv)
      if use_mean:
        z = mean
      else:
        noise = torch.randn_like(std) if eps is None else eps[sorted_idx.to(eps.device)]
        z = mean + std * noise
      logits = self.decode(sorted_tokens, sorted_lengths, z)
      # Undo the sort so every latent and every logit goes back to its own sentence.
      _, unsort_idx = torch.sort(sorted_idx)
      unsort_idx = unsort_idx.to(tokens.device)
      logits, mean, logv, z = (logits[unsort_idx], mean[unsort_idx], logv[unsort_idx],
                               z[unsort_idx])

    targets = tokens[:, 1:]                         # w_1 … w_n <eos> <pad>…; <pad> is ignored
    nll = F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1),
                          ignore_index=PAD_ID, reduction="none").view(targets.shape)
    log_px = -nll.sum(dim=1)
    log_q = -0.5 * (_LOG_2PI + logv + (z - mean) ** 2 / torch.exp(logv)).sum(dim=1)
    log_prior = -0.5 * (_LOG_2PI + z ** 2).sum(dim=1)
    loss = -(log_px + 0.5 * (log_q + log_prior)).mean()
    if self.batch_constant:  # the official script's log(B) / B (a constant: no gradient)
      rows = tokens.size(0)
      loss = loss + math.log(rows) / rows
    return loss, log_px


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def load_mimtext_params(model: SentenceMIM, params) -> None:
  """Copies a mimtext `sentence_ae` params tree (nested dicts of arrays) into `model`."""
  t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))

  def gru(module: nn.GRU, p):
    module.weight_ih_l0.copy_(t(p["w_i"]).T)
    module.weight_hh_l0.copy_(t(p["w_h"]).T)
    module.bias_ih_l0.copy_(t(p["b_i"]))
    module.bias_hh_l0.copy_(t(p["b_h"]))

  def linear(module: nn.Linear, p):
    module.weight.copy_(t(p["w"]).T)
    module.bias.copy_(t(p["b"]))

  with torch.no_grad():
    model.embedding.weight.copy_(t(params["embed"]["table"]))
    gru(model.encoder_rnn, params["encoder"])
    linear(model.hidden2mean, params["to_mean"])
    linear(model.hidden2logv, params["to_log_var"])
    linear(model.latent2hidden, params["z_to_h0"])
    gru(model.decoder_rnn, params["decoder"])
    linear(model.outputs2vocab, params["out"])


def to_torch_batch(batch: dict[str, np.ndarray], device: str = "cpu", *, trim: bool = False):
  """mimtext batch dict -> (tokens int64 [b, t] on `device`, lengths int64 [b] on the CPU).

  The original code feeds LongTensors; pack_padded_sequence wants CPU lengths. Filler rows
  (valid = 0, an empty sentence) cannot be packed, so the benchmark uses full batches only.
  `trim`: cut the padding to the batch's longest sentence (t = max lengths), as a collate
  function that pads to the longest does (the `padded` variant).
  """
  if not np.all(batch["valid"] > 0):
    raise ValueError("the torch reference takes full batches only (no filler rows)")
  if np.any(batch["lengths"] < 3):
    raise ValueError("every sentence needs at least one word for pack_padded_sequence")
  tokens = np.asarray(batch["tokens"], dtype=np.int64)
  if trim:
    tokens = tokens[:, :int(np.max(batch["lengths"]))]
  tokens = torch.from_numpy(np.ascontiguousarray(tokens)).to(device)
  lengths = torch.from_numpy(np.asarray(batch["lengths"], dtype=np.int64))
  return tokens, lengths


def make_train_step(model: SentenceMIM, learning_rate: float = 1e-3, clip_norm: float = 0.0):
  """`step(tokens, lengths) -> loss tensor`: one Adam step, the original code's loop body.

  clip_norm > 0 clips the global gradient norm first (`clip_grad_norm_`, as the official sMIM
  train.py; mimtext: `optax.clip_by_global_norm` before Adam).
  """
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
  params = [p for p in model.parameters()]
  model.train()

  def step(tokens, lengths):
    optimizer.zero_grad(set_to_none=True)
    loss, _ = model(tokens, lengths)
    loss.backward()
    if clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    return loss.detach()

  step.optimizer = optimizer
  return step
