"""Information measures of posterior codes (mimtext.evaluation.information) and their figures.

Tolerances of the Monte Carlo tests were set from repeated runs (5-8 seeds) and are stated where
they are used.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from mimtext.evaluation import figures
from mimtext.evaluation import information

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _gaussian_channel(n: int, signal_std: float, noise_var: float, seed: int):
  """x ~ N(0, s²) as posterior means, q(z|x) = N(x, v), one z per x: (mean, log_var, z) [n,1]."""
  rng = np.random.default_rng(seed)
  mean = rng.normal(0.0, signal_std, (n, 1))
  log_var = np.full((n, 1), math.log(noise_var))
  z = mean + math.sqrt(noise_var) * rng.normal(size=(n, 1))
  return mean, log_var, z


def _reference_log_q(mean, log_var, z) -> np.ndarray:
  """log q(z_i | x_j) [N,N] by a plain float64 broadcast."""
  var = np.exp(log_var)[None]
  return -0.5 * np.sum(np.log(2 * np.pi) + log_var[None] + (z[:, None] - mean[None]) ** 2 / var,
                       axis=-1)


def _reference_mi(log_q: np.ndarray, exclude_self: bool) -> float:
  n = len(log_q)
  agg = log_q.copy()
  if exclude_self:
    np.fill_diagonal(agg, -np.inf)
  m = agg.max(axis=1, keepdims=True)
  log_agg = np.log(np.sum(np.exp(agg - m), axis=1)) + m[:, 0] - math.log(n - exclude_self)
  return float(np.mean(np.diag(log_q) - log_agg))


# ------------------------------------------------------------------------ mutual information


def test_mi_is_zero_for_a_collapsed_posterior():
  rng = np.random.default_rng(0)
  n, d = 500, 4
  mean, log_var = np.zeros((n, d)), np.zeros((n, d))
  z = rng.normal(size=(n, d))  # q(z|x) = N(0, I) = p(z) for every x: the code says nothing
  assert abs(information.mutual_information(mean, log_var, z)) < 0.05
  assert abs(information.mutual_information(mean, log_var, z, exclude_self=True)) < 0.05


def test_mi_matches_the_gaussian_channel():
  # I(x; z) = ½ log(1 + s²/v) for z = x + noise, x ~ N(0, s²), noise ~ N(0, v): 0.805 nats here.
  # Over 5 seeds the N = 2000 estimate was 0.786-0.802 (include j = i); tolerance 0.05.
  mean, log_var, z = _gaussian_channel(2000, 1.0, 0.25, seed=0)
  truth = 0.5 * math.log(1.0 + 1.0 / 0.25)
  with_self = information.mutual_information(mean, log_var, z)
  without_self = information.mutual_information(mean, log_var, z, exclude_self=True)
  assert abs(with_self - truth) < 0.05
  assert abs(without_self - truth) < 0.05
  assert without_self > with_self


def test_mi_exclude_self_removes_the_log_n_ceiling_in_small_batches():
  # True I = ½ log(1 + 10⁴) = 4.6 nats > log 32 = 3.47: with j = i the estimate cannot exceed
  # log N (DESIGN §7); without it, it can and does.
  n = 32
  mean, log_var, z = _gaussian_channel(n, 1.0, 1e-4, seed=1)
  with_self = information.mutual_information(mean, log_var, z)
  without_self = information.mutual_information(mean, log_var, z, exclude_self=True)
  assert with_self <= math.log(n) + 1e-6
  assert without_self > math.log(n) + 0.5


@pytest.mark.parametrize("exclude_self", [False, True])
def test_chunked_pairs_match_a_dense_reference(monkeypatch, exclude_self):
  # A tiny block budget forces many padded row and column chunks (37 = 4·8 + 5 rows, m = 2 columns).
  monkeypatch.setattr(information, "_BLOCK_ELEMENTS", 50)
  rng = np.random.default_rng(2)
  n, d = 37, 3
  mean = rng.normal(size=(n, d))
  log_var = rng.uniform(-3.0, 0.5, (n, d))
  z = mean + np.exp(0.5 * log_var) * rng.normal(size=(n, d))
  reference = _reference_log_q(mean, log_var, z)
  np.testing.assert_allclose(information.pairwise_log_q(mean, log_var, z, chunk=8), reference,
                             rtol=1e-5, atol=1e-4)
  mi = information.mutual_information(mean, log_var, z, exclude_self=exclude_self, chunk=8)
  assert mi == pytest.approx(_reference_mi(reference, exclude_self), abs=1e-4)


# ------------------------------------------------------------------- KL, active units, Hoyer


def test_kl_per_dimension_matches_the_hand_formula():
  mean = np.array([[1.0, 0.0], [0.0, 0.0]])
  log_var = np.array([[0.0, math.log(2.0)], [0.0, 0.0]])
  # dim 0: ½(1 + 1 − 1 − 0) = ½ for sentence 1, 0 for sentence 2; dim 1: ½(0 + 2 − 1 − log 2), 0.
  np.testing.assert_allclose(information.kl_per_dimension(mean, log_var),
                             [0.25, 0.25 * (1.0 - math.log(2.0))], rtol=1e-6)  # float32, as trained
  assert information.kl_per_dimension(np.zeros((3, 5)), np.zeros((3, 5))) == pytest.approx(
      np.zeros(5))


def test_active_units_counts_the_planted_dimensions():
  rng = np.random.default_rng(3)
  means = 0.03 * rng.normal(size=(400, 6))  # variance 9e-4 < 0.01: inactive
  means[:, [1, 4]] = rng.normal(size=(400, 2))  # variance 1: active
  assert information.active_units(means) == 2
  assert information.active_units(means, threshold=2.0) == 0
  assert information.active_units(means[:1]) == 0


def test_hoyer_of_one_hot_constant_and_known_vectors():
  assert information.hoyer(np.array([0.0, 0.0, 5.0, 0.0])) == pytest.approx(1.0, abs=1e-6)
  assert information.hoyer(np.full(4, -2.0)) == pytest.approx(0.0, abs=1e-6)
  assert information.hoyer(np.zeros(4)) == 0.0
  r2 = math.sqrt(2.0)
  assert information.hoyer(np.array([3.0, -4.0])) == pytest.approx((r2 - 7 / 5) / (r2 - 1),
                                                                    abs=1e-6)
  one_hot_rows = np.eye(4)[np.arange(40) % 4] * 3.0  # every column has the same std
  assert information.average_hoyer(one_hot_rows) == pytest.approx(1.0, abs=1e-5)
  assert information.average_hoyer(np.ones((40, 4)) + np.arange(40)[:, None]) < 1e-5


# ----------------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("d, tolerance", [(2, 0.15), (8, 0.35)])
def test_kraskov_entropy_of_a_gaussian_sample(d, tolerance):
  # N = 2000, σ = 1.5, k = 1. Over 8 seeds the error was +0.013 ± 0.031 (max 0.064) nats at d = 2
  # and −0.090 ± 0.057 (max 0.151) at d = 8 (the k-NN estimator's small-sample bias grows with d).
  codes = 1.5 * np.random.default_rng(10 + d).normal(size=(2000, d))
  truth = information.gaussian_entropy(d, std=1.5)
  assert truth == pytest.approx(0.5 * d * math.log(2 * math.pi * math.e * 2.25))
  assert information.kraskov_entropy(codes) == pytest.approx(truth, abs=tolerance)
  assert information.gaussian_entropy_of_sample(codes) == pytest.approx(truth, abs=0.05 * d)


def test_kraskov_entropy_scales_and_finds_the_right_neighbours(monkeypatch):
  monkeypatch.setattr(information, "_BLOCK_ELEMENTS", 40)  # many padded chunks
  rng = np.random.default_rng(4)
  codes = rng.normal(size=(37, 3))
  dense = np.sqrt(np.sum((codes[:, None] - codes[None]) ** 2, axis=-1))
  np.fill_diagonal(dense, np.inf)
  for k in (1, 3):
    np.testing.assert_allclose(information.knn_distances(codes, k, chunk=8),
                               np.sort(dense, axis=1)[:, k - 1], rtol=1e-5)
  # H(a z) = H(z) + d log a, exactly for the estimator (every radius scales by a).
  h = information.kraskov_entropy(codes, k=2, chunk=8)
  assert information.kraskov_entropy(4.0 * codes, k=2, chunk=8) == pytest.approx(
      h + 3 * math.log(4.0), abs=1e-4)


def test_kraskov_entropy_floors_duplicates():
  codes = np.random.default_rng(5).normal(size=(50, 2))
  duplicated = np.concatenate([codes, codes[:1]])
  h_dup = information.kraskov_entropy(duplicated)
  assert np.isfinite(h_dup)
  assert h_dup < information.kraskov_entropy(codes) - 0.5  # two radii at the 1e-10 floor


def test_gaussian_entropy_of_a_degenerate_sample_is_minus_infinity():
  codes = np.random.default_rng(6).normal(size=(20, 3))
  codes[:, 2] = 1.0  # a collapsed dimension
  assert information.gaussian_entropy_of_sample(codes) == -math.inf


# --------------------------------------------------------------------------- MELBO vs size


def test_melbo_vs_size_full_set_and_shrinking_spread():
  rec = np.random.default_rng(7).gamma(4.0, 10.0, size=1000)
  out = information.melbo_vs_size(rec, [1, 10, 500, 1000], num_subsets=400, seed=1)
  assert out["sizes"] == [1, 10, 500, 1000]
  assert out["mean"][-1] == pytest.approx(rec.mean() + math.log(1000), rel=1e-12)
  assert out["std"][-1] == 0.0
  # Sampling without replacement: std of a subset mean = s · sqrt((N − n) / (n (N − 1))).
  s = rec.std()
  for i, n in enumerate(out["sizes"][:3]):
    expected = s * math.sqrt((1000 - n) / (n * 999))
    assert out["std"][i] == pytest.approx(expected, rel=0.2)
    assert out["mean"][i] == pytest.approx(rec.mean() + math.log(n), abs=4 * expected / 20)
  with pytest.raises(ValueError, match="outside"):
    information.melbo_vs_size(rec, [1001])


# ---------------------------------------------------------------------------------- figures


def _is_png(path) -> bool:
  with open(path, "rb") as f:
    return f.read(8) == _PNG_MAGIC


def test_figures_write_pngs(tmp_path):
  rng = np.random.default_rng(8)
  log_q = rng.normal(size=(12, 12)) - 5.0 * (1 - np.eye(12))
  log_px = log_q.copy()
  log_px[0, 1] = -np.inf
  written = [
      figures.plot_pairwise_histograms(log_px, log_q, str(tmp_path / "pairs.png")),
      figures.plot_pairwise_histograms(None, log_q, str(tmp_path / "q_only.png")),
      figures.plot_melbo_vs_size({"sizes": [10, 100, 1000], "mean": [80.0, 82.0, 84.5],
                                  "std": [3.0, 1.0, 0.0]}, str(tmp_path / "melbo.png"),
                                 true_entropy=79.0),
      figures.plot_class_heatmap(rng.uniform(size=(3, 5)), ["a", "b", "c"], list("vwxyz"),
                                 str(tmp_path / "heat.png"), "per-class mean γ"),
  ]
  for path in written:
    assert os.path.getsize(path) > 1000 and _is_png(path)
  with pytest.raises(ValueError, match="does not match"):
    figures.plot_class_heatmap(np.zeros((2, 2)), ["a"], ["b", "c"], str(tmp_path / "x.png"), "t")
