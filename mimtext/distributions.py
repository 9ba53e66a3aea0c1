"""Pure distributions: the diagonal normal and its log-variance floor.

Every function reduces (sums) over the last axis d and broadcasts over leading axes (b, k, ...).
A diagonal normal is given by its mean μ and log-variance log σ², both ``[..., d]``.

Shape notation: b batch, t time, v vocabulary, e embedding, h hidden, d latent, k samples.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array
FloorMode = Literal["clamp", "softplus", "none"]

_LOG_2PI = math.log(2.0 * math.pi)


def normal_sample(key: Array, mean: Array, log_var: Array, *,
                  sample_shape: tuple[int, ...] = ()) -> Array:
  """Reparameterised sample z = μ + exp(log σ² / 2) ⊙ ε, ε ~ N(0, I).

  ε comes from ``jax.random.normal`` (a true Gaussian, not a truncated one), so gradients flow to μ
  and log σ².

  Args:
    key: PRNG key.
    mean: μ ``[..., d]``.
    log_var: log σ² ``[..., d]`` (broadcastable with ``mean``).
    sample_shape: leading sample dims, e.g. ``(k,)``.

  Returns:
    z ``[*sample_shape, ..., d]``.
  """
  shape = tuple(sample_shape) + jnp.broadcast_shapes(jnp.shape(mean), jnp.shape(log_var))
  dtype = jnp.result_type(mean, log_var)
  eps = jax.random.normal(key, shape, dtype)
  return mean + jnp.exp(0.5 * log_var) * eps


def normal_log_prob(z: Array, mean: Array, log_var: Array) -> Array:
  """Log density of a diagonal normal.

  log N(z; μ, σ²) = −½ Σ_d [log 2π + log σ²_d + (z_d − μ_d)² / σ²_d].

  Args:
    z: ``[..., d]``.
    mean: μ ``[..., d]``.
    log_var: log σ² ``[..., d]``.

  Returns:
    ``[...]``.
  """
  return -0.5 * jnp.sum(_LOG_2PI + log_var + jnp.square(z - mean) * jnp.exp(-log_var), axis=-1)


def standard_normal_log_prob(z: Array) -> Array:
  """Log density of N(0, I): log N(z; 0, I) = −½ Σ_d [log 2π + z_d²].

  Args:
    z: ``[..., d]``.

  Returns:
    ``[...]``.
  """
  return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)


def normal_kl_standard_per_dim(mean: Array, log_var: Array) -> Array:
  """KL(N(μ_d, σ²_d) ‖ N(0, 1)) = ½ [μ_d² + σ²_d − 1 − log σ²_d] of each dimension (free bits).

  Args:
    mean: μ ``[..., d]``.
    log_var: log σ² ``[..., d]``.

  Returns:
    ``[..., d]``.
  """
  return 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)


def normal_kl_standard(mean: Array, log_var: Array) -> Array:
  """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_d [μ_d² + σ²_d − 1 − log σ²_d]: the sum over d of
  ``normal_kl_standard_per_dim``.

  Args:
    mean: μ ``[..., d]``.
    log_var: log σ² ``[..., d]``.

  Returns:
    ``[...]``.
  """
  return jnp.sum(normal_kl_standard_per_dim(mean, log_var), axis=-1)


def normal_kl(mean_q: Array, log_var_q: Array, mean_p: Array, log_var_p: Array) -> Array:
  """KL between diagonal normals.

  KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) = ½ Σ_d [log σ²_p − log σ²_q + (σ²_q + (μ_q − μ_p)²) / σ²_p − 1].

  Args:
    mean_q: μ_q ``[..., d]``.
    log_var_q: log σ_q² ``[..., d]``.
    mean_p: μ_p ``[..., d]``.
    log_var_p: log σ_p² ``[..., d]``.

  Returns:
    ``[...]``.
  """
  return 0.5 * jnp.sum(
      log_var_p - log_var_q
      + (jnp.exp(log_var_q) + jnp.square(mean_q - mean_p)) * jnp.exp(-log_var_p) - 1.0,
      axis=-1)


def normal_entropy(log_var: Array) -> Array:
  """Differential entropy of a diagonal normal: H = ½ Σ_d [1 + log 2π + log σ²_d].

  Args:
    log_var: log σ² ``[..., d]``.

  Returns:
    ``[...]``.
  """
  return 0.5 * jnp.sum(1.0 + _LOG_2PI + log_var, axis=-1)


def log_var_floor(raw_log_var: Array, floor: float, mode: FloorMode = "clamp") -> Array:
  """Applies an explicit lower bound to a log-variance.

  - ``"clamp"``: max(raw, floor). The gradient is exactly zero below the floor (as the original sMIM
    code's clamp at −10), so a dimension that reaches the floor can get stuck there.
  - ``"softplus"``: floor + softplus(raw − floor) = floor + log(1 + exp(raw − floor)). Always >
    floor, ≈ raw well above the floor, and its gradient σ(raw − floor) is never exactly zero.
  - ``"none"``: raw (identity).

  Args:
    raw_log_var: ``[...]`` unconstrained log σ².
    floor: the bound (e.g. −10.0).
    mode: ``"clamp"``, ``"softplus"`` or ``"none"``.

  Returns:
    Same shape as ``raw_log_var``.
  """
  if mode == "clamp":
    return jnp.maximum(raw_log_var, floor)
  if mode == "softplus":
    return floor + jax.nn.softplus(raw_log_var - floor)
  if mode == "none":
    return raw_log_var
  raise ValueError(f"unknown log-variance floor mode {mode!r}; expected clamp, softplus or none")


def fraction_at_floor(raw_log_var: Array, floor: float, tol: float = 1e-3, *,
                      axis: int | None = None) -> Array:
  """Fraction of entries at (or below) the floor: mean of [raw ≤ floor + tol].

  The raw (unfloored) log-variance is compared, whatever the floor mode, so "clamp" and "softplus"
  count the same dimensions.

  Args:
    raw_log_var: ``[...]`` log σ² before flooring.
    floor: the bound used by ``log_var_floor``.
    tol: slack above the floor that still counts as "at the floor".
    axis: the axis to average over (None: every entry).

  Returns:
    float32 in [0, 1]: a scalar, or ``raw_log_var`` without ``axis``.
  """
  return jnp.mean((raw_log_var <= floor + tol).astype(jnp.float32), axis=axis)
