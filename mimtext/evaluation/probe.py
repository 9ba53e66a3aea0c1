"""Linear probes: how much of a known label (the built-in corpus's topic, a class) a code holds.

A multinomial logistic regression p(y = c | z) = softmax(W z̃ + b)_c on standardised codes
z̃ = (z − mean) / std (statistics of the training codes), fitted by full-batch L-BFGS on the
mean cross-entropy plus (l2 / 2) ‖W‖², then scored by accuracy on held-out codes. A collapsed
posterior gives about the majority-class rate; a code that carries the label gives about the
Bayes rate of the label given the sentence.

Notation: n codes, d latent, c classes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


class LinearProbe(NamedTuple):
  """A fitted probe: standardisation (mean, std [d]) and the linear map (w [d,c], b [c])."""
  mean: np.ndarray
  std: np.ndarray
  w: np.ndarray
  b: np.ndarray

  def predict(self, codes: np.ndarray) -> np.ndarray:
    """Most probable class of each code: [n,d] → int [n]."""
    z = (np.asarray(codes, np.float64) - self.mean) / self.std
    return np.argmax(z @ self.w + self.b, axis=-1)

  def accuracy(self, codes: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(self.predict(codes) == np.asarray(labels)))


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(z: Array, labels: Array, *, num_classes: int, l2: float, steps: int):
  d = z.shape[1]
  params = (jnp.zeros((d, num_classes), jnp.float32), jnp.zeros((num_classes,), jnp.float32))

  def objective(p):
    w, b = p
    log_probs = jax.nn.log_softmax(z @ w + b, axis=-1)
    nll = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
    return nll + 0.5 * l2 * jnp.sum(jnp.square(w))

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry, _):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=objective)
    return (optax.apply_updates(p, updates), state), value

  (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, length=steps)
  return params


def fit_linear_probe(codes: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3,
                     steps: int = 100) -> LinearProbe:
  """Fits a multinomial logistic regression of `labels` [n] (ints 0..c−1) on `codes` [n,d]."""
  codes = np.asarray(codes, np.float64)
  labels = np.asarray(labels)
  if codes.ndim != 2 or len(codes) != len(labels) or len(codes) < 2:
    raise ValueError(f"need codes [n,d] and labels [n] with n >= 2, got {codes.shape} and "
                     f"{labels.shape}")
  mean, std = codes.mean(0), codes.std(0)
  std = np.where(std > 0, std, 1.0)
  z = jnp.asarray((codes - mean) / std, jnp.float32)
  w, b = _fit(z, jnp.asarray(labels, jnp.int32), num_classes=int(labels.max()) + 1, l2=l2,
              steps=steps)
  return LinearProbe(mean, std, np.asarray(w, np.float64), np.asarray(b, np.float64))


def probe_accuracy(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                   test_labels: np.ndarray, **kwargs) -> float:
  """Accuracy on (test_codes, test_labels) of a probe fitted on the training codes."""
  return fit_linear_probe(train_codes, train_labels, **kwargs).accuracy(test_codes, test_labels)
