"""Frozen-encoder text classification (seed 004 §4.2) and per-class γ maps (seed 004 §4.4, Fig. 4).

Classifier (seed 004 §4.2): p(y|z) = softmax(W₃ a(W₂ a(W₁ z + b₁) + b₂) + b₃), two dense layers of
32 units with the leaky ReLU a (slope 0.01, Maas 2013), on codes of a frozen, pre-trained encoder.
The latent is marginalised by Monte Carlo with K = 5 draws of q both to train and to test:
p(y|x) ≈ (1/K) Σ_k p(y|z_k), z_k ~ q(z|x) (for HSVAE γ_k ~ q(γ|x), then one z_k ~ q(z|x, γ_k)).
Training minimises −log p(y|x) with that estimate ("marginal", the paper's p(y|x) ≈ 0.2 Σ p(y|z_i));
"mean_loss" minimises the per-sample loss averaged over the K draws, −(1/K) Σ_k log p(y|z_k),
instead. Testing always averages the class probabilities over the K draws.

Optimisation: seed 004 does not state the classifier's optimiser settings; we use Adam (optax) with
learning rate 1e-3, batch 64, 20 epochs (our defaults), fresh z draws every step, one jitted
`lax.scan` per epoch.

Data: `yahoo_topic` and `dbpedia` have no train text here, so their labelled `test` split is cut by
a seeded permutation into probe-train (80 %) and probe-test (20 %) (`split_probe_sets`); the files
are sorted by class, so the permutation matters.

Notation: n sentences, d latent, k Monte Carlo draws, b batch, C classes, h = 32 hidden units.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimtext import nn
from mimtext import objectives
from mimtext import sparse_distributions as sd
from mimtext.evaluation import progress as progress_lib
from mimtext.models import sentence_ae

Array = jax.Array
HIDDEN_UNITS = 32
LEAKY_SLOPE = 0.01
OBJECTIVES = ("marginal", "mean_loss")


# sample(key, rows, k) → z [k,b,d]; rows: a `sentence_ae.Posterior` of b sentences ([b,d] fields,
# e.g. rows of `encoding.encode_sentences`). Must be jittable.
Sampler = Callable[[Array, sentence_ae.Posterior, int], Array]


# ----------------------------------------------------------------------------- posteriors


def take_rows(post: sentence_ae.Posterior, idx) -> sentence_ae.Posterior:
  """The rows idx [b] of every field (None fields stay None)."""
  return jax.tree_util.tree_map(lambda x: x[idx], post)


def sample_z(key: Array, rows: sentence_ae.Posterior, num_samples: int, *,
             spike_scale: float = sd.SPIKE_SCALE,
             cfg: objectives.ObjectiveConfig | None = None) -> Array:
  """K draws z ~ q(z|x) per row: [k,b,d] (seed 004 §4.2 steps 1-2), by the latent family of the
  objective (`objectives.latent_family`), the sampler the model was trained and scored with.

  Gaussian: z = μ + σ ε. HSVAE (beta_a given): γ_k ~ Beta(a, b), then one z_k ~ γ_k N(0, s²) +
  (1 − γ_k) N(μ, σ²) with an exact Bernoulli(γ_k) spike/slab choice (no relaxation at test time).
  `cfg` is the run's objective config; without one a Gaussian (or, given Beta parameters, an
  HSVAE) family with `spike_scale` is used.
  """
  if cfg is None:
    name = "vae" if rows.beta_a is None else "hsvae"
    posterior = "gaussian" if rows.beta_a is None else "hsvae"
    cfg = objectives.ObjectiveConfig(
        model=sentence_ae.ModelConfig(vocab_size=4, posterior=posterior), name=name,
        spike_scale=spike_scale)
  cfg = dataclasses.replace(cfg, concrete_hard=True)
  return objectives.latent_family(cfg).sample(key, rows, cfg, num_samples).z


def sample_mean(key: Array, rows: sentence_ae.Posterior, num_samples: int) -> Array:
  """K copies of the deterministic code (for an AE): [k,b,d]; key unused."""
  del key
  code = sentence_ae.posterior_code(rows)
  return jnp.broadcast_to(code, (num_samples,) + code.shape)


# ----------------------------------------------------------------------------- classifier


def init_classifier(key: Array, latent_dim: int, num_classes: int, *,
                    hidden_dim: int = HIDDEN_UNITS) -> dict:
  """Weights of d → 32 → 32 → C (seed 004 §4.2), PyTorch-style uniform init (`nn.init_dense`)."""
  k1, k2, k3 = jax.random.split(key, 3)
  return {"hidden": [nn.init_dense(k1, latent_dim, hidden_dim),
                     nn.init_dense(k2, hidden_dim, hidden_dim)],
          "out": nn.init_dense(k3, hidden_dim, num_classes)}


def classifier_logits(params: dict, z: Array) -> Array:
  """Class logits of p(y|z): [..., d] → [..., C] (two leaky-ReLU layers, then linear)."""
  h = z
  for layer in params["hidden"]:
    h = jax.nn.leaky_relu(nn.dense(layer, h), LEAKY_SLOPE)
  return nn.dense(params["out"], h)


def mc_log_probs(params: dict, zs: Array) -> Array:
  """log p(y|x) ≈ log (1/K) Σ_k p(y|z_k) (seed 004 §4.2): zs [k,b,d] → [b,C]."""
  log_p = jax.nn.log_softmax(classifier_logits(params, zs), axis=-1)
  return jax.scipy.special.logsumexp(log_p, axis=0) - jnp.log(zs.shape[0])


def classification_loss(params: dict, zs: Array, labels: Array, objective: str = "marginal"
                        ) -> Array:
  """Mean over the batch of −log p̂(y|x) ("marginal") or −(1/K) Σ_k log p(y|z_k) ("mean_loss")."""
  if objective == "marginal":
    log_p = mc_log_probs(params, zs)                                      # [b,C]
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))
  if objective == "mean_loss":
    log_p = jax.nn.log_softmax(classifier_logits(params, zs), axis=-1)    # [k,b,C]
    picked = jnp.take_along_axis(log_p, jnp.broadcast_to(labels[None, :, None],
                                                          log_p.shape[:2] + (1,)), axis=-1)
    return -jnp.mean(picked)
  raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


class TrainedClassifier(NamedTuple):
  """Classifier weights and the mean training loss of each epoch [epochs]."""
  params: dict
  epoch_losses: np.ndarray


def _epoch_batches(rng: np.random.Generator, n: int, batch_size: int) -> np.ndarray:
  """A shuffled epoch as [n // batch_size, batch_size] row indices (the remainder is dropped)."""
  perm = rng.permutation(n)
  m = n // batch_size
  return perm[:m * batch_size].reshape(m, batch_size)


def train_classifier(post: sentence_ae.Posterior, labels: np.ndarray, num_classes: int, *,
                     key: Array, sample: Sampler = sample_z, num_samples: int = 5,
                     epochs: int = 20, batch_size: int = 64, learning_rate: float = 1e-3,
                     objective: str = "marginal", hidden_dim: int = HIDDEN_UNITS,
                     progress: bool = False) -> TrainedClassifier:
  """Fits the seed 004 §4.2 classifier on frozen posteriors; fresh K draws of z every step.

  Args:
    post: q(z|x) of the n training sentences (`encoding.encode_sentences`), [n,d] per field.
    labels: int [n] in 0..num_classes−1.
    sample: (key, rows, K) → z [K,b,d], jittable (`sample_z`; `sample_mean` for an AE).
    num_samples: K Monte Carlo draws per sentence (paper: 5).
    epochs, batch_size, learning_rate: Adam settings (our defaults; the paper states none). The
      batch is min(batch_size, n); each epoch drops the n mod batch rows of a fresh permutation.
    objective: "marginal" or "mean_loss" (module docstring).
    progress: a bar over the epochs on stderr (`progress.bar`).
  """
  labels = np.asarray(labels, np.int32)
  n = len(labels)
  if n < 1 or np.shape(post.mean)[0] != n:
    raise ValueError(f"need posteriors and labels of the same n >= 1, got "
                     f"{np.shape(post.mean)} and {labels.shape}")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must lie in 0..{num_classes - 1}")
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
  batch_size = min(batch_size, n)
  init_key, key = jax.random.split(key)
  params = init_classifier(init_key, np.shape(post.mean)[1], num_classes, hidden_dim=hidden_dim)
  optimizer = optax.adam(learning_rate)
  data = jax.tree_util.tree_map(jnp.asarray, post)
  y_all = jnp.asarray(labels)

  @jax.jit
  def run_epoch(params, opt_state, epoch_key, batches):
    def step(carry, xs):
      params, opt_state = carry
      idx, step_key = xs
      zs = jax.lax.stop_gradient(sample(step_key, take_rows(data, idx), num_samples))
      loss, grads = jax.value_and_grad(classification_loss)(params, zs, y_all[idx], objective)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    keys = jax.random.split(epoch_key, batches.shape[0])
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (batches, keys))
    return params, opt_state, losses.mean()

  opt_state = optimizer.init(params)
  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  losses = []
  for epoch in progress_lib.bar(range(epochs), desc="classifier", unit="epoch",
                                enabled=progress):
    batches = jnp.asarray(_epoch_batches(rng, n, batch_size))
    params, opt_state, loss = run_epoch(params, opt_state, jax.random.fold_in(key, epoch), batches)
    losses.append(float(loss))
  return TrainedClassifier(params, np.asarray(losses))


def predict_proba(params: dict, post: sentence_ae.Posterior, *, key: Array,
                  sample: Sampler = sample_z, num_samples: int = 5,
                  batch_size: int = 1000) -> np.ndarray:
  """p(y|x) ≈ (1/K) Σ_k p(y|z_k), z_k ~ q(z|x) (seed 004 §4.2 test time): [n,C]."""
  n = np.shape(post.mean)[0]
  data = jax.tree_util.tree_map(jnp.asarray, post)

  @jax.jit
  def batch_proba(idx, batch_key):
    zs = sample(batch_key, take_rows(data, idx), num_samples)
    return jnp.exp(mc_log_probs(params, zs))

  out = []
  for i, start in enumerate(range(0, n, batch_size)):
    idx = np.arange(start, start + batch_size) % n     # fixed shape; wrapped rows are cut below
    out.append(np.asarray(batch_proba(jnp.asarray(idx), jax.random.fold_in(key, i)))
               [:min(batch_size, n - start)])
  return np.concatenate(out)


# ----------------------------------------------------------------------------- evaluation


def split_probe_sets(num: int, *, train_fraction: float = 0.8, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(probe-train, probe-test) indices of a seeded permutation of range(num): the first
  round(train_fraction · num) go to probe-train (default 80 / 20). Both sorted, disjoint, cover all.
  """
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
  num_train = int(round(train_fraction * num))
  if num_train < 1 or num_train >= num:
    raise ValueError(f"{num} examples cannot be split {train_fraction:.2f} / "
                     f"{1 - train_fraction:.2f} with both parts non-empty")
  perm = np.random.default_rng(seed).permutation(num)
  return np.sort(perm[:num_train]), np.sort(perm[num_train:])


def classify_report(post: sentence_ae.Posterior, labels: np.ndarray, *,
                    num_classes: int | None = None, seed: int = 0, train_fraction: float = 0.8,
                    sample: Sampler = sample_z, num_samples: int = 5, **train_kwargs) -> dict:
  """Accuracy of the seed 004 §4.2 classifier on a labelled split cut into probe-train / -test.

  majority_rate is the probe-test accuracy of always answering the most frequent probe-train
  class. `train_kwargs` go to `train_classifier` (epochs, batch_size, learning_rate, objective).
  """
  labels = np.asarray(labels, np.int32)
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  train_idx, test_idx = split_probe_sets(len(labels), train_fraction=train_fraction, seed=seed)
  key = jax.random.PRNGKey(seed)
  train_key, test_key = jax.random.split(key)
  fitted = train_classifier(take_rows(post, train_idx), labels[train_idx], num_classes,
                            key=train_key, sample=sample, num_samples=num_samples, **train_kwargs)
  proba = predict_proba(fitted.params, take_rows(post, test_idx), key=test_key, sample=sample,
                        num_samples=num_samples)
  test_labels = labels[test_idx]
  majority = int(np.argmax(np.bincount(labels[train_idx], minlength=num_classes)))
  return {"accuracy": float(np.mean(np.argmax(proba, axis=-1) == test_labels)),
          "majority_rate": float(np.mean(test_labels == majority)),
          "num_train": int(len(train_idx)), "num_test": int(len(test_idx)),
          "num_classes": int(num_classes), "num_samples": int(num_samples),
          "final_train_loss": float(fitted.epoch_losses[-1])}


def per_class_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Mean of the rows of each class: values [n,d], labels [n] → [C,d]; NaN rows for empty classes.

  With binarised E[γ] as values this is γ_class of seed 004 §4.4 (the Figure 4 heat map).
  """
  values = np.asarray(values, np.float64)
  labels = np.asarray(labels)
  if values.ndim != 2 or labels.shape != values.shape[:1]:
    raise ValueError(f"need values [n,d] and labels [n], got {values.shape} and {labels.shape}")
  sums = np.zeros((num_classes, values.shape[1]))
  np.add.at(sums, labels, values)
  counts = np.bincount(labels, minlength=num_classes)[:, None].astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(counts > 0, sums / counts, np.nan)


def gamma_class_matrix(beta_a: np.ndarray, beta_b: np.ndarray, labels: np.ndarray,
                       num_classes: int) -> np.ndarray:
  """γ_class of seed 004 §4.4: E[γ] = a / (a + b) binarised at 0.5, averaged per class: [C,d]."""
  mean_gamma = np.asarray(beta_a, np.float64) / (np.asarray(beta_a) + np.asarray(beta_b))
  return per_class_mean((mean_gamma >= 0.5).astype(np.float64), labels, num_classes)
