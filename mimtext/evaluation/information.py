"""Information measures of posterior codes: MI, per-dimension KL, active units, sparsity, entropy.

Every function takes numpy arrays of N sentences' posterior parameters or codes and returns numpy
values (floats accumulated in float64); the O(N²) pairwise work runs in JAX, in float32, chunked so
that memory stays bounded (about ``_BLOCK_ELEMENTS`` floats per block) for N up to ~50k:
- Mutual information I_q(x; z) by the aggregate-posterior estimator (He et al. 2019, "Lagging
  inference networks", §4 / their code): log q(z_i) ≈ log (1/N') Σ_j q(z_i|x_j).
- KL(q(z_d|x) ‖ N(0, 1)) per dimension, active units (Burda et al. 2016), Hoyer sparsity (seed 004
  Eq. 3), the nearest-neighbour entropy estimate of the codes (Kozachenko-Leonenko; Kraskov et al.
  2004, Eq. 20; seed 000 Table 6), the MELBO against the subset size (seed 000 appendix B,
  Figure 5) and log q(z_i|x_j) for all pairs (seed 000 Figure 3).

The posterior q(z|x) is a diagonal Gaussian N(μ(x), diag σ²(x)) given by (mean, log_var).

Notation: N sentences (codes), d latent, k neighbours, n subset size, c row chunk, m column chunk.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimtext import distributions
from mimtext import sparse_distributions as sd

Array = jax.Array

# Floats in one [c, m, d] block of pairwise work (64 MiB in float32).
_BLOCK_ELEMENTS = 1 << 24
_EULER_GAMMA = 0.5772156649015329


# --------------------------------------------------------------------------------- chunking helpers


def _chunk_sizes(n: int, d: int, chunk: int) -> tuple[int, int]:
  """Row chunk c ≤ chunk and column chunk m such that c · m · d ≤ _BLOCK_ELEMENTS."""
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  rows = min(chunk, n)
  cols = max(1, min(n, _BLOCK_ELEMENTS // (rows * max(d, 1))))
  return rows, cols


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
  """Zero-pads the first axis of x up to a multiple of `multiple`."""
  pad = -len(x) % multiple
  return np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x


def _column_blocks(mean: np.ndarray, log_var: np.ndarray, cols: int):
  """(mean, log_var) [N,d] → [N/m, m, d] each (zero-padded), global index and validity [N/m, m]."""
  n, d = mean.shape
  num = -(-n // cols)
  index = np.arange(num * cols).reshape(num, cols)
  return (_pad_rows(mean, cols).reshape(num, cols, d),
          _pad_rows(log_var, cols).reshape(num, cols, d), index, index < n)


def _as_posterior(mean, log_var, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  mean, log_var, z = (np.asarray(a, np.float32) for a in (mean, log_var, z))
  if mean.ndim != 2 or mean.shape != log_var.shape or mean.shape != z.shape:
    raise ValueError(f"mean, log_var and z must all be [N, d]; got {mean.shape}, {log_var.shape}, "
                     f"{z.shape}")
  if len(mean) == 0:
    raise ValueError("no codes given (N = 0)")
  return mean, log_var, z


def _log_q_block(z_rows: Array, mean_cols: Array, log_var_cols: Array) -> Array:
  """log q(z_i | x_j) = log N(z_i; μ_j, diag σ²_j) for a block of pairs: [c,d], [m,d] → [c,m].

  Computed as −½ Σ_d [log 2π + log σ²_jd + (z_id − μ_jd)² / σ²_jd] on the differences (not the
  expanded z² − 2zμ + μ², which cancels catastrophically in float32 for σ² near a −10 floor).
  """
  return distributions.normal_log_prob(z_rows[:, None, :], mean_cols[None], log_var_cols[None])


# ---------------------------------------------------------------------------- mutual information


@jax.jit
def _aggregate_log_q(z_rows: Array, row_index: Array, mean_blocks: Array, log_var_blocks: Array,
                     col_index: Array, col_valid: Array, exclude_self: Array) -> Array:
  """log Σ_j q(z_i | x_j) over all (valid, and j ≠ i if exclude_self) columns j: [c].

  z_rows [c,d], row_index [c]; mean_blocks, log_var_blocks [M,m,d]; col_index, col_valid [M,m];
  exclude_self a bool scalar (traced: one program for both). One [c,m] block at a time
  (`lax.map`), a logsumexp per block, then one over the M blocks.
  """
  def block(cols):
    mean, log_var, index, valid = cols
    keep = valid[None, :] & ((index[None, :] != row_index[:, None]) | ~exclude_self)
    log_q = jnp.where(keep, _log_q_block(z_rows, mean, log_var), -jnp.inf)
    return jax.nn.logsumexp(log_q, axis=1)

  per_block = jax.lax.map(block, (mean_blocks, log_var_blocks, col_index, col_valid))
  return jax.nn.logsumexp(per_block, axis=0)


def mutual_information(mean: np.ndarray, log_var: np.ndarray, z: np.ndarray, *,
                       exclude_self: bool = False, chunk: int = 1024) -> float:
  """Aggregate-posterior estimate of I_q(x; z) in nats (He et al. 2019, Lagging inference networks).

  I_q(x; z) = E_x E_q(z|x) [log q(z|x) − log q(z)], q(z) = (1/N) Σ_j q(z|x_j), estimated as

    Î = (1/N) Σ_i [log q(z_i|x_i) − log (1/N') Σ_j q(z_i|x_j)],  z_i ~ q(z|x_i) (one draw each),

  with j over all N sentences (N' = N), or over j ≠ i (N' = N − 1) when `exclude_self`. With j = i
  included, Î ≤ log N (the i = i term alone bounds the aggregate from below), so it saturates for
  informative codes in small batches (DESIGN §7); without it Î is no longer bounded by log N and is
  biased upwards instead. Pairs are scored in float32 blocks (logsumexp), the mean accumulated in
  float64.

  Args:
    mean: μ(x_i) [N,d].
    log_var: log σ²(x_i) [N,d].
    z: one sample z_i ~ q(z|x_i) per sentence [N,d].
    exclude_self: leave j = i out of the aggregate posterior (needs N ≥ 2).
    chunk: rows z_i scored at once (memory ≈ chunk · m · d floats, m chosen to fit).

  Returns:
    Î in nats.
  """
  mean, log_var, z = _as_posterior(mean, log_var, z)
  n, d = mean.shape
  if exclude_self and n < 2:
    raise ValueError("exclude_self needs at least 2 sentences")
  rows, cols = _chunk_sizes(n, d, chunk)
  blocks = tuple(jnp.asarray(a) for a in _column_blocks(mean, log_var, cols))
  log_self = np.asarray(_normal_log_prob(z, mean, log_var), np.float64)
  z_pad = _pad_rows(z, rows)
  log_agg = np.concatenate([
      np.asarray(_aggregate_log_q(jnp.asarray(z_pad[s:s + rows]), jnp.arange(s, s + rows), *blocks,
                                  jnp.asarray(exclude_self)), np.float64)
      for s in range(0, len(z_pad), rows)])[:n]
  n_agg = n - 1 if exclude_self else n
  return float(np.mean(log_self - (log_agg - math.log(n_agg))))


_normal_log_prob = jax.jit(distributions.normal_log_prob)


@jax.jit
def _log_q_rows(z_rows: Array, mean_blocks: Array, log_var_blocks: Array) -> Array:
  """log q(z_i | x_j) for a chunk of rows against every column block: [c,d] → [c, M·m]."""
  per_block = jax.lax.map(lambda cols: _log_q_block(z_rows, *cols), (mean_blocks, log_var_blocks))
  return jnp.transpose(per_block, (1, 0, 2)).reshape(z_rows.shape[0], -1)


def pairwise_log_q(mean: np.ndarray, log_var: np.ndarray, z: np.ndarray, *,
                   chunk: int = 1024) -> np.ndarray:
  """log q(z_i | x_j) for all pairs (seed 000 Figure 3b): [N,d] ×3 → float32 [N,N].

  Entry [i, j] = log N(z_i; μ(x_j), diag σ²(x_j))
              = −½ Σ_d [log 2π + log σ²_jd + (z_id − μ_jd)² / σ²_jd];
  the diagonal is the i = j ("same input") term. The result is N² floats: keep N to a few thousand.
  """
  mean, log_var, z = _as_posterior(mean, log_var, z)
  n, d = mean.shape
  rows, cols = _chunk_sizes(n, d, chunk)
  mean_blocks, log_var_blocks, _, _ = _column_blocks(mean, log_var, cols)
  mean_blocks, log_var_blocks = jnp.asarray(mean_blocks), jnp.asarray(log_var_blocks)
  z_pad = _pad_rows(z, rows)
  out = np.concatenate([np.asarray(_log_q_rows(jnp.asarray(z_pad[s:s + rows]), mean_blocks,
                                               log_var_blocks))
                        for s in range(0, len(z_pad), rows)])
  return out[:n, :n]


# ------------------------------------------------------------------------ KL, active units, Hoyer


def kl_per_dimension(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
  """Mean over sentences of KL(N(μ_d, σ²_d) ‖ N(0, 1)) per dimension: [N,d] ×2 → float64 [d].

  KL_d = (1/N) Σ_i ½ [μ_id² + σ²_id − 1 − log σ²_id] (the summand of `normal_kl_standard`); a
  collapsed dimension (q = p for every x) has KL_d = 0, and Σ_d KL_d is the ELBO's KL term.
  """
  kl = distributions.normal_kl_standard_per_dim(np.asarray(mean, np.float64),
                                                np.asarray(log_var, np.float64))
  return np.mean(np.asarray(kl, np.float64), axis=0)


def family_kl_summary(family, post, draw, cfg) -> dict:
  """The KL term of the objective's ELBO over N sentences, by its latent family
  (`objectives.latents.LatentFamily`): the prior is the model's own (N(0, I), MAT-VAE's
  spike-and-slab, HSVAE's p(z, γ)).

  post: the N posteriors (`sentence_ae.Posterior`); draw: k draws of them (`family.sample`).
  Returns "kl_total" (nats per sentence, the mean over sentences) and "kl_per_dimension" [d]
  (means over sentences, summing to kl_total) where the family has the KL per dimension in closed
  form; else kl_total = the mean of `family.kl` (Monte Carlo over the k draws where it has no
  closed form) and "kl_per_dimension_skipped" with the reason. "kl_estimate" says which.
  """
  if family.kl_per_dimension is not None:
    per_dim = np.mean(np.asarray(family.kl_per_dimension(post, cfg), np.float64), axis=0)
    return {"kl_per_dimension": [float(v) for v in per_dim], "kl_total": float(per_dim.sum()),
            "kl_estimate": "closed form"}
  kl = np.asarray(family.kl(post, draw, cfg), np.float64)
  k = int(np.shape(draw.z)[0])
  return {"kl_total": float(np.mean(kl)),
          "kl_estimate": f"Monte Carlo, {k} draw(s) of q per sentence",
          "kl_per_dimension_skipped": (
              f"the {family.name} family's KL term has no closed form per dimension (a "
              "spike-and-slab mixture in its prior); kl_total is its Monte Carlo estimate")}


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
  """Number of latent dimensions with Cov_x(E_q[z_d]) > threshold (Burda et al. 2016): [N,d] → int.

  Cov_x is the unbiased (ddof = 1) variance over the N sentences of the posterior means; fewer than
  two sentences have no covariance and give 0.
  """
  means = np.asarray(means, np.float64)
  if means.shape[0] < 2:
    return 0
  return int(np.sum(np.var(means, axis=0, ddof=1) > threshold))


_hoyer_sparsity = jax.jit(sd.hoyer_sparsity)
_average_hoyer = jax.jit(sd.average_hoyer)


def hoyer(vector: np.ndarray) -> float:
  """Hoyer sparsity of one vector [d], d ≥ 2 (seed 004 Eq. 3): (√d − ‖v‖₁/‖v‖₂) / (√d − 1).

  1 for a one-hot vector, 0 for a constant one (all |v_d| equal) and for v = 0
  (`sparse_distributions.hoyer_sparsity`).
  """
  vector = np.asarray(vector, np.float32)
  if vector.ndim != 1:
    raise ValueError(f"hoyer takes one vector [d]; got shape {vector.shape}")
  return float(_hoyer_sparsity(vector))


def average_hoyer(codes: np.ndarray) -> float:
  """Average Hoyer sparsity of the codes [N,d] (seed 004 §4.1.3, Eq. 3): mean_i Hoyer(z_i / σ(z)).

  Each dimension is divided by its population standard deviation over the N codes first
  (`sparse_distributions.average_hoyer`), so a collapsed dimension cannot fake sparsity.
  """
  return float(_average_hoyer(np.asarray(codes, np.float32)))


# -------------------------------------------------------------------------------------- entropy


def _digamma_int(n: int) -> float:
  """ψ(n) = −γ + Σ_{m=1}^{n−1} 1/m for an integer n ≥ 1, in float64."""
  return -_EULER_GAMMA + float(np.sum(1.0 / np.arange(1, n, dtype=np.float64)))


def log_unit_ball_volume(d: int) -> float:
  """log V_d, V_d = π^{d/2} / Γ(d/2 + 1) the volume of the Euclidean ball of radius 1 in R^d."""
  return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)


@functools.partial(jax.jit, static_argnames=("k",))
def _knn_sq_distances(rows: Array, row_index: Array, col_blocks: Array, col_index: Array,
                      col_valid: Array, k: int) -> Array:
  """Squared Euclidean distance from each row to its k-th nearest other point: [c,d] → [c].

  col_blocks [M,m,d], col_index / col_valid [M,m]. Distances Σ_d (a_d − b_d)² on the differences
  (exact for near-duplicates, unlike ‖a‖² + ‖b‖² − 2 a·b); the point itself and padding are masked
  with +∞; the k smallest of each [c,m] block are kept, then the k smallest of those.
  """
  def block(cols):
    points, index, valid = cols
    sq = jnp.sum(jnp.square(rows[:, None, :] - points[None]), axis=-1)
    keep = valid[None, :] & (index[None, :] != row_index[:, None])
    sq = jnp.where(keep, sq, jnp.inf)
    return -jax.lax.top_k(-sq, min(k, sq.shape[1]))[0]  # [c, ≤k]

  smallest = jax.lax.map(block, (col_blocks, col_index, col_valid))  # [M,c,≤k]
  smallest = jnp.transpose(smallest, (1, 0, 2)).reshape(rows.shape[0], -1)
  return -jax.lax.top_k(-smallest, k)[0][:, k - 1]


def knn_distances(codes: np.ndarray, k: int = 1, *, chunk: int = 1024) -> np.ndarray:
  """Euclidean distance r_i from each code to its k-th nearest other code: [N,d] → float64 [N]."""
  codes = np.asarray(codes, np.float32)
  if codes.ndim != 2:
    raise ValueError(f"codes must be [N, d]; got shape {codes.shape}")
  n, d = codes.shape
  if not 1 <= k < n:
    raise ValueError(f"need 1 <= k < N for k-nearest neighbours; got k={k}, N={n}")
  rows, cols = _chunk_sizes(n, d, chunk)
  col_blocks, _, col_index, col_valid = _column_blocks(codes, codes, max(cols, k))
  col_blocks = jnp.asarray(col_blocks)
  padded = _pad_rows(codes, rows)
  sq = np.concatenate([
      np.asarray(_knn_sq_distances(jnp.asarray(padded[s:s + rows]), jnp.arange(s, s + rows),
                                   col_blocks, col_index, col_valid, k=k), np.float64)
      for s in range(0, len(padded), rows)])[:n]
  return np.sqrt(sq)


def kraskov_entropy(codes: np.ndarray, k: int = 1, *, min_distance: float = 1e-10,
                    chunk: int = 1024) -> float:
  """Kozachenko-Leonenko k-NN estimate of the differential entropy of the codes, in nats.

  Kraskov et al. 2004, Eq. 20 (used by seed 000 Table 6), written with radii:

    Ĥ = ψ(N) − ψ(k) + log V_d + (d/N) Σ_i log r_i,

  r_i the Euclidean distance from z_i to its k-th nearest neighbour among the other N − 1 codes and
  V_d = π^{d/2} / Γ(d/2 + 1) the volume of the unit-RADIUS ball. (Kraskov et al. write ε_i = 2 r_i
  and c_d = V_d / 2^d, the volume of the unit-diameter ball: the same number.)

  Duplicate codes have r_i = 0 and log r_i = −∞ (a law with atoms has differential entropy −∞);
  r_i is floored at `min_distance` so the estimate stays finite but drops by d · log(1/min_distance)
  / N per duplicate: a very negative value flags repeated codes (e.g. an AE fed identical
  sentences). The estimate is consistent; for a fixed N it is biased, more so as d grows.

  Args:
    codes: [N,d], N > k.
    k: neighbour order.
    min_distance: floor on r_i.
    chunk: rows scored at once.

  Returns:
    Ĥ in nats.
  """
  codes = np.asarray(codes)
  r = np.maximum(knn_distances(codes, k, chunk=chunk), min_distance)
  n, d = codes.shape
  return float(_digamma_int(n) - _digamma_int(k) + log_unit_ball_volume(d)
               + d * np.mean(np.log(r)))


def gaussian_entropy(d: int, std: float = 1.0) -> float:
  """Entropy of N(0, σ² I_d) in nats: H = (d/2) log(2πe σ²) (seed 000 Table 6, column N(d))."""
  return 0.5 * d * math.log(2.0 * math.pi * math.e * std ** 2)


def gaussian_entropy_of_sample(codes: np.ndarray) -> float:
  """Entropy of the Gaussian fitted to the codes [N,d]: ½ log det(2πe Σ̂), Σ̂ the sample covariance.

  An upper bound on the entropy of any law with covariance Σ̂ (the Gaussian maximises it); Σ̂ is
  unbiased (ddof = 1); a singular Σ̂ (a collapsed dimension, N ≤ d) gives −∞.
  """
  codes = np.asarray(codes, np.float64)
  if codes.ndim != 2 or codes.shape[0] < 2:
    raise ValueError(f"codes must be [N, d] with N >= 2; got shape {codes.shape}")
  d = codes.shape[1]
  cov = np.atleast_2d(np.cov(codes, rowvar=False))
  sign, logdet = np.linalg.slogdet(cov)
  if sign <= 0:
    return -math.inf
  return 0.5 * (d * math.log(2.0 * math.pi * math.e) + logdet)


# ------------------------------------------------------------------------------ MELBO vs size


def melbo_vs_size(rec_nll: np.ndarray, sizes: Sequence[int], *, num_subsets: int = 20,
                  seed: int = 0) -> dict:
  """MELBO as a function of the evaluation-set size (seed 000 appendix B, Figure 5).

  For each n, `num_subsets` subsets S of n sentences drawn without replacement give
  MELBO(S) = (1/n) Σ_{i∈S} rec_nll_i + log n (seed 000 Eq. 16 on S); their mean and standard
  deviation (ddof = 0) are returned. The log n term makes the bound grow with n; for n = N every
  subset is the whole set and the standard deviation is 0.

  Args:
    rec_nll: [N] per-sentence reconstruction −(1/N_z) Σ_j log p(x_i|z_ij), nats.
    sizes: subset sizes, each in 1..N.
    num_subsets: random subsets per size (seed 000 uses max(N − K, 500)).
    seed: numpy seed of the subset draws.

  Returns:
    {"sizes": [...], "mean": [...], "std": [...], "N": N, "num_subsets": num_subsets}.
  """
  rec_nll = np.asarray(rec_nll, np.float64).reshape(-1)
  n_total = len(rec_nll)
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
  rng = np.random.default_rng(seed)
  out = {"sizes": [], "mean": [], "std": [], "N": n_total, "num_subsets": num_subsets}
  for size in sizes:
    size = int(size)
    if not 1 <= size <= n_total:
      raise ValueError(f"subset size {size} outside 1..N = {n_total}")
    # Sorted indices: the same subset always sums in the same order (exactly 0 std at n = N).
    values = np.array([
        np.mean(rec_nll[np.sort(rng.choice(n_total, size, replace=False))]) + math.log(size)
        for _ in range(num_subsets)])
    out["sizes"].append(size)
    out["mean"].append(float(values.mean()))
    out["std"].append(float(np.std(values - values[0])))  # shifted: exactly 0 if all equal
  return out
