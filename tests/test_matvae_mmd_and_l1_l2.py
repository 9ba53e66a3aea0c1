"""Seed 004 as published: MAT-VAE's per-coordinate MMD, the L1/L2 baselines on μ and σ, the configs.

Prokhorov et al. 2021 (HSVAE) §4.1.1-4.1.2 and appendix B; Mathieu et al. 2019 (MAT-VAE).
"""

import glob
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import objectives
from mimtext import sparse_distributions as sd
from mimtext.models import sentence_ae
from mimtext.objectives import matvae

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "launch" / "configs"

MODEL = sentence_ae.ModelConfig(vocab_size=13, embed_dim=6, hidden_dim=8, latent_dim=3,
                                embed_dropout=0.0)
TOKENS = np.array([[1, 4, 5, 6, 2, 0, 0], [1, 7, 8, 2, 0, 0, 0], [1, 9, 10, 11, 12, 5, 2],
                   [1, 3, 2, 0, 0, 0, 0]], np.int32)
LENGTHS = np.array([5, 4, 7, 3], np.int32)
# The last row is filler: it must not count in any batch mean.
BATCH = {"tokens": TOKENS, "lengths": LENGTHS, "valid": np.array([1, 1, 1, 0], np.float32)}


# ------------------------------------------------------------------------------------------ MMD


def _mmd_per_coordinate_loop(x, y, scales):
  """Unbiased MMD² with k(u, v) = C / (C + (u − v)²) per coordinate, C = 2 s, Σ over d and s."""
  n, d = x.shape
  m = y.shape[0]
  total = 0.0
  for s in scales:
    c = 2.0 * s
    k = lambda u, v: c / (c + (u - v) ** 2)
    for j in range(d):
      kxx = sum(k(x[a, j], x[b, j]) for a in range(n) for b in range(n) if a != b)
      kyy = sum(k(y[a, j], y[b, j]) for a in range(m) for b in range(m) if a != b)
      kxy = sum(k(x[a, j], y[b, j]) for a in range(n) for b in range(m))
      total += kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)
  return total


def _mmd_whole_vector(x, y, scales):
  """The previous form: one IMQ kernel C / (C + ‖u − v‖²) on the whole vector, C = 2 d s."""
  n, d = x.shape
  m = y.shape[0]
  sq = lambda u, v: np.sum((u[:, None, :] - v[None, :, :]) ** 2, -1)
  total = 0.0
  for s in scales:
    c = 2.0 * d * s
    kxx, kyy, kxy = (c / (c + sq(x, x)), c / (c + sq(y, y)), c / (c + sq(x, y)))
    total += ((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
              + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
              - 2.0 * kxy.mean())
  return total


def _spike_slab_prior(rng, n, d, gamma=0.8, spike=0.05):
  """Draws of MAT-VAE's prior p(z_d) = γ N(0, spike²) + (1 − γ) N(0, 1) (γ: spike probability)."""
  on_spike = rng.random((n, d)) < gamma
  return np.where(on_spike, spike * rng.normal(size=(n, d)), rng.normal(size=(n, d)))


def test_mmd_is_per_coordinate_as_mathieu_and_matches_a_numpy_double_loop():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(10, 5)) * 1.3 + 0.2
  y = _spike_slab_prior(rng, 8, 5)
  got = sd.mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), kernel="imq",
               scale=matvae.MMD_SCALES)
  want = _mmd_per_coordinate_loop(x, y, matvae.MMD_SCALES)
  np.testing.assert_allclose(float(got), want, rtol=1e-4)
  # One scale on its own, C = 2 · scale.
  got_one = sd.mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), scale=0.5)
  np.testing.assert_allclose(float(got_one), _mmd_per_coordinate_loop(x, y, (0.5,)), rtol=1e-4)
  assert matvae.MMD_SCALES == (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@pytest.mark.parametrize("d,min_ratio", [(32, 30.0), (768, 500.0)])
def test_per_coordinate_mmd_is_tens_to_hundreds_of_times_the_whole_vector_form(d, min_ratio):
  # A dense Gaussian aggregate posterior against the γ = 0.8 spike-and-slab prior: the penalty
  # MAT-VAE puts on a non-sparse code. The whole-vector kernel made it 40-1000 times weaker.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(64, d))
  y = _spike_slab_prior(rng, 64, d)
  per_coordinate = float(sd.mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32),
                                scale=matvae.MMD_SCALES))
  whole = _mmd_whole_vector(x, y, matvae.MMD_SCALES)
  assert 0.0 < whole and per_coordinate / whole > min_ratio, (per_coordinate, whole)


def test_matvae_loss_penalises_the_per_coordinate_mmd_of_posterior_and_prior_samples(monkeypatch):
  seen = {}
  original = sd.mmd

  def spy(x, y, **kw):
    seen.update(x=np.asarray(x, np.float64), y=np.asarray(y, np.float64), kw=kw)
    seen["value"] = original(x, y, **kw)
    return seen["value"]

  monkeypatch.setattr(sd, "mmd", spy)
  params = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  ocfg = objectives.ObjectiveConfig(model=MODEL, name="matvae", kl_z_weight=0.01, mmd_weight=3.0)
  value, m = matvae.loss(params, BATCH, key=jax.random.PRNGKey(1), step=0, cfg=ocfg)
  assert seen["kw"].get("scale") == matvae.MMD_SCALES and seen["x"].shape == (4, 3)
  want = _mmd_per_coordinate_loop(seen["x"], seen["y"], matvae.MMD_SCALES)
  np.testing.assert_allclose(float(m["mmd"]), want, rtol=1e-4)
  np.testing.assert_allclose(float(value), float(m["rec"] + 0.01 * m["kl"] + 3.0 * m["mmd"]),
                             rtol=1e-5)


# ----------------------------------------------------------------------------- L1 / L2 baselines


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_l1_l2_baselines_penalise_posterior_mu_and_sigma(norm):
  # Seed 004 §4.1.2: "the activation of μ and σ of q(z|x) regularised by either L1 or L2 norms".
  params = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  weight = 0.3

  def loss(w):
    ocfg = objectives.ObjectiveConfig(model=MODEL, name="vae", **{f"{norm}_weight": w})
    return float(objectives.get_loss("vae")(params, BATCH, key=jax.random.PRNGKey(2), step=0,
                                            cfg=ocfg)[0])

  post = sentence_ae.encode(params, TOKENS, LENGTHS, MODEL)
  mu = np.asarray(post.mean, np.float64)
  sigma = np.exp(0.5 * np.asarray(post.log_var, np.float64))
  if norm == "l1":
    per_row = np.abs(mu).sum(-1) + np.abs(sigma).sum(-1)
  else:
    per_row = (mu ** 2).sum(-1) + (sigma ** 2).sum(-1)
  want = weight * per_row[:3].mean()  # the filler row is left out
  np.testing.assert_allclose(loss(weight) - loss(0.0), want, rtol=1e-4)
  # σ ≈ 1 at initialisation: the σ part is most of the penalty, not a rounding error.
  assert abs(sigma[:3].sum(-1).mean()) > 0.5


# ------------------------------------------------------------------------------------- configs


def _flags(path):
  """{field: value} of a flagfile's `--config.FIELD=VALUE` lines, and its header text."""
  fields, header = {}, []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line.startswith("#"):
        header.append(line)
      elif line.startswith("--config."):
        key, value = line[len("--config."):].split("=", 1)
        fields[key] = value
  return fields, "\n".join(header)


SEED004 = sorted(p for pattern in ("hsvae_*.flags", "matvae_*.flags", "vae_*.flags")
                 for p in glob.glob(str(CONFIGS / pattern)))


def test_seed004_configs_exist():
  names = {os.path.basename(p) for p in SEED004}
  for corpus in ("yahoo_topic", "dbpedia"):
    for family in ("vae", "vae_l1", "vae_l2", "hsvae", "matvae"):
      assert f"{family}_{corpus}_32.flags" in names
    for family in ("hsvae", "matvae"):
      assert f"{family}_{corpus}_768.flags" in names
    # The (α, β) grid of Figs. 3 / 9 and the λ grid of MAT-VAE (Figs. 3 / 7), 32-D.
    grid = {(int(a), int(b)) for a, b in (re.fullmatch(rf"hsvae_{corpus}_32_a(\d+)_b(\d+)\.flags",
                                                      n).groups()
                                          for n in names if n.startswith(f"hsvae_{corpus}_32_a"))}
    assert {(10, 30), (30, 10), (4, 1)} <= grid
    assert {f"matvae_{corpus}_32_lam1.flags", f"matvae_{corpus}_32_lam100.flags"} <= names


@pytest.mark.parametrize("path", SEED004, ids=os.path.basename)
def test_seed004_configs_follow_section_4_1(path):
  name = os.path.basename(path)
  f, header = _flags(path)
  # §4.1.2: GRU 512 encoder and decoder, 256-D shared embeddings, Adam 0.0008, z concatenated to
  # the decoder inputs only; §4.1.1: vocabulary of the 20,000 most frequent words.
  assert f["model.cell"] == "gru" and f["model.hidden_dim"] == "512"
  assert f["model.embed_dim"] == "256" and f["optimizer.learning_rate"] == "0.0008"
  assert f["model.condition"] == "concat", name
  assert f["data.max_vocab"] == "20000", name
  # Authors' code (Scripts/Models/hsvae.py, mat_vae.py): batch 256, 15 epochs, constant lr.
  assert f["batch_size"] == "256" and f["max_epochs"] == "15"
  assert f["optimizer.plateau_factor"] == "1.0"
  # §4.1.2: ψ, λ < 1 on the KL terms of every model (authors' code: 0.01).
  if name.startswith("hsvae_"):
    assert float(f["objective.kl_z_weight"]) < 1 and float(f["objective.kl_gamma_weight"]) < 1
    match = re.search(r"_a(\d+)_b(\d+)\.flags$", name)
    if match:
      assert (float(f["objective.prior_alpha"]), float(f["objective.prior_beta"])) == (
          float(match.group(1)), float(match.group(2)))
  elif name.startswith("matvae_"):
    assert float(f["objective.kl_z_weight"]) < 1
    match = re.search(r"_lam(\d+)\.flags$", name)
    assert float(f["objective.mmd_weight"]) == (float(match.group(1)) if match else 0.01)
  else:
    assert float(f["objective.kl_weight"]) < 1
    assert ("objective.l1_weight" in f) == name.startswith("vae_l1_")
    assert ("objective.l2_weight" in f) == name.startswith("vae_l2_")
  # The header names its target figure and the paper's sections it follows.
  assert "Fig." in header and "§4.1" in header
  assert f"python -m launch.train --flagfile=launch/configs/{name}" in header
