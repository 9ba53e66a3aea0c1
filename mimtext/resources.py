"""What a training run needs in memory, estimated before anything is allocated.

A config such as `latent_dim=100000000` otherwise passes every check and grows memory until the
machine swaps or the process is killed. `check_training_fits` refuses it up front, naming the
figure. The estimate (bytes, float32):

  parameters P (counted from `jax.eval_shape` of the initialiser, so nothing is allocated)
  × 4 for parameters, gradients and Adam's two moments, plus activations kept for the backward
  pass per device: b_dev · t · (3v + 16h + 4e + 2d) for the logits, log-softmax and their
  gradient (3v), the recurrent gates and states of encoder and decoder (16h), embeddings (4e)
  and z fed to every step (2d).

Notation: b batch, t tokens per sentence, v vocabulary, h hidden, e embedding, d latent.
It is an order-of-magnitude guard, not a profile: XLA fuses and rematerialises.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import jax

from mimtext import experiment
from mimtext.models import sentence_ae

_FLOAT_BYTES = 4
_PARAM_COPIES = 4  # parameters, gradients, Adam's first and second moments
_HEADROOM = 0.9    # refuse estimates above this share of the memory available


class MemoryEstimate(NamedTuple):
  num_params: int
  params_bytes: int        # with gradients and optimiser state
  activation_bytes: int    # per device
  largest_param: str       # "decoder/w_i (384, 768)"

  @property
  def total_bytes(self) -> int:
    return self.params_bytes + self.activation_bytes


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / 2**30:,.1f} GiB"


def estimate_training_memory(cfg: sentence_ae.ModelConfig, per_device_batch: int,
                             max_tokens: int) -> MemoryEstimate:
  """The estimate of the module docstring for one device's share of a training step."""
  shapes = jax.eval_shape(lambda: sentence_ae.init_params(jax.random.PRNGKey(0), cfg))
  leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
  num_params = sum(math.prod(leaf.shape) for _, leaf in leaves)
  path, leaf = max(leaves, key=lambda item: math.prod(item[1].shape))
  name = "/".join(str(getattr(k, "key", k)) for k in path)
  per_token = (3 * cfg.vocab_size + 16 * cfg.hidden_dim + 4 * cfg.embed_dim
               + 2 * cfg.latent_dim)
  return MemoryEstimate(
      num_params=num_params,
      params_bytes=_PARAM_COPIES * _FLOAT_BYTES * num_params,
      activation_bytes=_FLOAT_BYTES * per_device_batch * max_tokens * per_token,
      largest_param=f"{name} {tuple(leaf.shape)}")


def available_bytes(device: jax.Device | None = None) -> int | None:
  """Memory one device can use: the accelerator's limit, or the host's physical memory on CPU
  (None when neither is known)."""
  device = device or jax.local_devices()[0]
  stats = getattr(device, "memory_stats", lambda: None)()
  if device.platform != "cpu" and stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def check_training_fits(cfg: sentence_ae.ModelConfig, per_device_batch: int, max_tokens: int,
                        available: int | None = None, *, at_least: bool = False
                        ) -> MemoryEstimate:
  """Raises `experiment.ConfigError` (one line, naming the figures and the largest parameter) when
  the estimate exceeds 90% of the memory available; returns the estimate otherwise. `at_least`: the
  figures are a lower bound (`check_config_fits`), and the message says so."""
  estimate = estimate_training_memory(cfg, per_device_batch, max_tokens)
  available = available_bytes() if available is None else available
  if available is not None and estimate.total_bytes > _HEADROOM * available:
    raise experiment.ConfigError(
        f"this model needs {'at least' if at_least else 'about'} {_gib(estimate.total_bytes)} "
        "to train but the device has "
        f"{_gib(available)}: {estimate.num_params:,} parameters take "
        f"{_gib(estimate.params_bytes)} with gradients and Adam state (largest: "
        f"{estimate.largest_param}), activations {_gib(estimate.activation_bytes)} at "
        f"{per_device_batch} sentences × {max_tokens} tokens per device"
        f"{', the smallest vocabulary and sentences (a lower bound)' if at_least else ''}; lower "
        "--config.model.latent_dim / hidden_dim / embed_dim, data.max_vocab or the batch size")
  return estimate


# The smallest sentence a run can have: <sos> word <eos>.
_MIN_TOKENS = 3


def check_config_fits(config, available: int | None = None) -> MemoryEstimate | None:
  """`check_training_fits` before any work, when the corpus (so the vocabulary size and the
  longest sentence) is not known yet: the estimate at the smallest vocabulary (the special tokens
  plus a word) and sentence, a lower bound of what `train.build_training_setup` checks later, so
  a config refused here would be refused there too (e.g. `--config.model.latent_dim=100000000`
  under `--dry_run`).

  Skipped (None) under `distributed`, whose devices are known only after initialisation.

  Raises:
    experiment.ConfigError: one line, as `check_training_fits`.
  """
  if config.get("distributed", False):
    return None
  devices = config.num_devices or jax.device_count()
  cfg = experiment.model_config(config, experiment._MIN_VOCAB)  # pylint: disable=protected-access
  return check_training_fits(cfg, max(config.batch_size // devices, 1), _MIN_TOKENS, available,
                             at_least=True)
