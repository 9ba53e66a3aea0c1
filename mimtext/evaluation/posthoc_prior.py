"""A post-hoc prior: a diagonal Gaussian mixture fitted to posterior codes after training.

p̂(z) = Σ_k π_k N(z; μ_k, diag σ²_k), fitted by expectation-maximisation (Dempster et al. 1977) to
N codes z_n (posterior means or samples). It is a prior a trained model can sample from and score
against when N(0, I) is far from the aggregate posterior (sMIM's codes, seed 000 §4; sparse codes,
seed 004), and a density whose held-out log-likelihood says how many modes the codes have.

EM, with responsibilities r_nk = π_k N(z_n; μ_k, σ²_k) / Σ_l π_l N(z_n; μ_l, σ²_l):
  N_k = Σ_n r_nk,  π_k = N_k / N,  μ_k = Σ_n r_nk z_n / N_k,
  σ²_kd = max(Σ_n r_nk (z_nd − μ_kd)² / N_k, min_var),
each step never decreasing the mean log-likelihood (1/N) Σ_n log p̂(z_n) (while no floor acts).
The codes are centred and scaled per dimension inside the fit (float32 conditioning) and the
mixture is mapped back; the initial means are k-means++ seeds (Arthur & Vassilvitskii 2007).

Notation: N codes, d latent, K components, c rows per chunk.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import distributions
from mimtext.evaluation import progress as progress_lib

Array = jax.Array

# Floats in one [c, K, d] block of the E and M steps (64 MiB in float32).
_BLOCK_ELEMENTS = 1 << 24
_MIN_COUNT = 1e-10  # N_k below this is an empty component: its π_k is ~0, its μ_k stays finite.


class GaussianMixture(NamedTuple):
  """A diagonal Gaussian mixture: log π [K], μ [K,d], log σ² [K,d] (a pytree of jax Arrays)."""
  log_weights: Array
  means: Array
  log_vars: Array


def _component_log_joint(gmm: GaussianMixture, z: Array) -> Array:
  """log π_k + log N(z; μ_k, diag σ²_k) for every component: [..., d] → [..., K]."""
  return gmm.log_weights + distributions.normal_log_prob(z[..., None, :], gmm.means, gmm.log_vars)


def log_prob(gmm: GaussianMixture, z: Array) -> Array:
  """log p̂(z) = log Σ_k π_k N(z; μ_k, diag σ²_k): [..., d] → [...] (jnp, differentiable)."""
  return jax.nn.logsumexp(_component_log_joint(gmm, jnp.asarray(z)), axis=-1)


@functools.partial(jax.jit, static_argnames=("n",))
def sample(gmm: GaussianMixture, key: Array, n: int) -> Array:
  """n draws z = μ_k + σ_k ⊙ ε, k ~ Categorical(π), ε ~ N(0, I): → [n,d]."""
  key_k, key_eps = jax.random.split(key)
  k = jax.random.categorical(key_k, gmm.log_weights, shape=(n,))
  return distributions.normal_sample(key_eps, gmm.means[k], gmm.log_vars[k])


def to_json(gmm: GaussianMixture) -> dict[str, Any]:
  """A JSON-serialisable dict of the mixture (lists of floats), to save beside a checkpoint."""
  means = np.asarray(gmm.means, np.float64)
  return {"kind": "diagonal_gaussian_mixture", "num_components": int(means.shape[0]),
          "dim": int(means.shape[1]),
          "log_weights": np.asarray(gmm.log_weights, np.float64).tolist(),
          "means": means.tolist(), "log_vars": np.asarray(gmm.log_vars, np.float64).tolist()}


def from_json(data: dict[str, Any]) -> GaussianMixture:
  """The mixture saved by `to_json` (float32 arrays), with its shapes checked."""
  log_weights = jnp.asarray(data["log_weights"], jnp.float32).reshape(-1)
  means = jnp.asarray(data["means"], jnp.float32)
  log_vars = jnp.asarray(data["log_vars"], jnp.float32)
  num = log_weights.shape[0]
  if means.ndim != 2 or means.shape[0] != num or log_vars.shape != means.shape:
    raise ValueError(f"inconsistent mixture shapes: log_weights {log_weights.shape}, means "
                     f"{means.shape}, log_vars {log_vars.shape}")
  return GaussianMixture(log_weights, means, log_vars)


# ------------------------------------------------------------------------------------------- fit


def _kmeans_plus_plus(x: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): K rows of x [N,d], each next one drawn with
  probability ∝ its squared distance to the nearest chosen row (uniformly once all are 0)."""
  n = len(x)
  chosen = [int(rng.integers(n))]
  sq = np.sum(np.square(x - x[chosen[0]]), axis=1)
  for _ in range(num - 1):
    total = sq.sum()
    if total > 0:
      nxt = int(rng.choice(n, p=sq / total))
    else:  # fewer distinct codes than K: any row not chosen yet
      nxt = int(rng.choice(np.setdiff1d(np.arange(n), chosen)))
    chosen.append(nxt)
    sq = np.minimum(sq, np.sum(np.square(x - x[nxt]), axis=1))
  return x[np.array(chosen)]


def _chunk_rows(n: int, num: int, d: int) -> int:
  """Rows per E/M chunk: a power of two ≥ N if it fits _BLOCK_ELEMENTS (so N = 900 and N = 1000
  share one compiled program), else the largest that fits."""
  fits = max(1, _BLOCK_ELEMENTS // (num * d))
  return min(1 << max(0, (n - 1).bit_length()), 1 << (fits.bit_length() - 1))


def _e_step(gmm: GaussianMixture, x: Array, valid: Array) -> tuple[Array, Array]:
  """Responsibilities r [C,c,K] (0 on padding) and the mean log-likelihood of the N valid rows.

  x [C,c,d], valid [C,c] (C chunks of c rows, `lax.map` over chunks).
  """
  def chunk(args):
    xc, vc = args
    joint = _component_log_joint(gmm, xc)  # [c,K]
    log_px = jax.nn.logsumexp(joint, axis=-1)
    return jnp.exp(joint - log_px[:, None]) * vc[:, None], jnp.sum(jnp.where(vc, log_px, 0.0))

  r, log_px = jax.lax.map(chunk, (x, valid))
  return r, jnp.sum(log_px) / jnp.sum(valid)


def _m_step(r: Array, x: Array, min_var: Array) -> GaussianMixture:
  """π, μ, σ² from responsibilities r [C,c,K] and rows x [C,c,d]; σ² floored at min_var [d]."""
  counts = jnp.maximum(jnp.sum(r, axis=(0, 1)), _MIN_COUNT)  # [K]
  means = jnp.einsum("ack,acd->kd", r, x) / counts[:, None]

  def chunk_sq(args):  # Σ_n r_nk (x_nd − μ_kd)², on the differences (no E[x²] − μ² cancellation)
    rc, xc = args
    return jnp.einsum("ck,ckd->kd", rc, jnp.square(xc[:, None, :] - means))

  var = jnp.sum(jax.lax.map(chunk_sq, (r, x)), axis=0) / counts[:, None]
  log_counts = jnp.log(counts)
  return GaussianMixture(log_counts - jax.nn.logsumexp(log_counts), means,
                         jnp.log(jnp.maximum(var, min_var)))


@jax.jit
def _em(init: GaussianMixture, x: Array, valid: Array, min_var: Array, num_iters: Array,
        tol: Array) -> tuple[GaussianMixture, Array, Array]:
  """EM until the mean log-likelihood rises by less than tol or after num_iters M-steps.

  Returns the mixture, its mean log-likelihood and the number of M-steps taken.
  """
  def cond(carry):
    _, step, prev, cur = carry
    return (step < num_iters) & ~(jnp.abs(cur - prev) < tol)

  def body(carry):
    gmm, step, _, cur = carry
    r, _ = _e_step(gmm, x, valid)
    new = _m_step(r, x, min_var)
    return new, step + 1, cur, _e_step(new, x, valid)[1]

  _, start = _e_step(init, x, valid)
  gmm, steps, _, log_lik = jax.lax.while_loop(
      cond, body, (init, jnp.zeros((), jnp.int32), jnp.asarray(-jnp.inf, start.dtype), start))
  return gmm, log_lik, steps


def fit_gaussian_mixture(codes: np.ndarray, num_components: int, *, seed: int = 0,
                         num_iters: int = 100, min_var: float = 1e-6,
                         tol: float = 1e-5) -> GaussianMixture:
  """Fits a K-component diagonal Gaussian mixture to the codes [N,d] by EM (module docstring).

  Deterministic given `seed` (numpy k-means++ seeding; EM itself has no randomness). The codes are
  standardised per dimension (a constant dimension is only centred) for the fit; initial σ² is 1 in
  those units (the codes' own variance), π uniform. Stops when the mean log-likelihood per code
  changes by less than `tol` nats or after `num_iters` M-steps.

  Args:
    codes: [N,d] posterior codes.
    num_components: K, 1 ≤ K ≤ N.
    seed: seed of the k-means++ initialisation.
    num_iters: most EM iterations.
    min_var: floor on every σ²_kd, in the units of the codes.
    tol: convergence threshold on the mean log-likelihood (nats per code).

  Returns:
    The fitted GaussianMixture (float32, codes' units).
  """
  codes = np.asarray(codes, np.float64)
  if codes.ndim != 2 or len(codes) == 0:
    raise ValueError(f"codes must be a non-empty [N, d] array; got shape {codes.shape}")
  n, d = codes.shape
  if not 1 <= num_components <= n:
    raise ValueError(f"num_components must be in 1..N = {n}; got {num_components}")
  if not np.all(np.isfinite(codes)):
    raise ValueError("codes contain NaN or infinite values")
  center = codes.mean(axis=0)
  scale = codes.std(axis=0)
  scale = np.where(scale > 0, scale, 1.0)
  x = (codes - center) / scale
  init_means = _kmeans_plus_plus(x, num_components, np.random.default_rng(seed))
  init = GaussianMixture(jnp.full((num_components,), -math.log(num_components), jnp.float32),
                         jnp.asarray(init_means, jnp.float32),
                         jnp.zeros((num_components, d), jnp.float32))
  rows = _chunk_rows(n, num_components, d)
  num_chunks = -(-n // rows)
  padded = np.zeros((num_chunks * rows, d), np.float32)
  padded[:n] = x
  valid = (np.arange(num_chunks * rows) < n).reshape(num_chunks, rows)
  gmm, _, _ = _em(init, jnp.asarray(padded.reshape(num_chunks, rows, d)), jnp.asarray(valid),
                  jnp.asarray(min_var / np.square(scale), jnp.float32),
                  jnp.asarray(num_iters, jnp.int32), jnp.asarray(tol, jnp.float32))
  return GaussianMixture(gmm.log_weights,
                         gmm.means * jnp.asarray(scale, jnp.float32) + jnp.asarray(center,
                                                                                   jnp.float32),
                         gmm.log_vars + jnp.asarray(2.0 * np.log(scale), jnp.float32))


@jax.jit
def _mean_log_prob(gmm: GaussianMixture, z: Array) -> Array:
  return jnp.mean(log_prob(gmm, z))


def holdout_split(codes: np.ndarray, *, seed: int = 0, holdout_fraction: float = 0.1
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(training codes, held-out codes): a random `holdout_fraction` of the rows (numpy `seed`) held
  out, the same rows for every density compared on them (float64)."""
  codes = np.asarray(codes, np.float64)
  n = len(codes)
  num_holdout = int(round(holdout_fraction * n))
  if not 1 <= num_holdout < n:
    raise ValueError(f"holdout_fraction={holdout_fraction} of N={n} codes leaves no held-out or no "
                     "training codes")
  order = np.random.default_rng(seed).permutation(n)
  return codes[order[num_holdout:]], codes[order[:num_holdout]]


def select_num_components(codes: np.ndarray, candidates: Sequence[int], *, seed: int = 0,
                          holdout_fraction: float = 0.1, progress: bool = False,
                          **fit_kwargs) -> tuple[int, dict[int, float]]:
  """Picks K by the held-out mean log-likelihood (1/|H|) Σ_{n∈H} log p̂_K(z_n).

  A random `holdout_fraction` of the codes (numpy `seed`) is held out, a mixture fitted to the rest
  for each candidate K (`fit_gaussian_mixture(..., seed=seed, **fit_kwargs)`), and the K scoring
  highest on the held-out codes returned (the smallest K among ties). Refit on all the codes with
  the chosen K to use it. `progress`: a bar over the candidates on stderr (`progress.bar`).

  Returns:
    (best K, {K: held-out mean log-likelihood in nats per code}).
  """
  if not candidates:
    raise ValueError("no candidate numbers of components")
  train, held = holdout_split(codes, seed=seed, holdout_fraction=holdout_fraction)
  held_z = jnp.asarray(held, jnp.float32)
  scores = {int(k): float(_mean_log_prob(fit_gaussian_mixture(train, int(k), seed=seed,
                                                              **fit_kwargs), held_z))
            for k in progress_lib.bar(list(candidates), desc="post-hoc prior: EM per K",
                                      unit="K", enabled=progress)}
  best = max(sorted(scores), key=lambda k: scores[k])
  return best, scores
