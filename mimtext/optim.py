"""The optimiser and what steers it between steps: the learning rate, the plateau schedule and
early stopping.

The learning rate lives in the optimiser state (`optax.inject_hyperparams`), so a schedule changes
it between steps and a checkpoint restores it; the schedules keep a JSON-serialisable `state()`
that the checkpoint's data state carries.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax

from mimtext import experiment
from mimtext import reporting


def make_optimizer(name: str, learning_rate: float, clip_norm: float = 0.0):
  """Adam or SGD (seed 000 §4.2), optional global-norm clipping, learning rate adjustable.

  The learning rate is an injected hyper-parameter stored in the optimiser state, so the plateau
  schedule can change it between steps and it is checkpointed with the state.
  """
  base = {"adam": optax.adam, "sgd": optax.sgd}
  if name not in base:
    raise experiment.ConfigError(f"--config.optimizer.name={name!r}: unknown optimizer; "
                                 f"choose one of {sorted(base)}")

  def chain(learning_rate):
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    return optax.chain(*parts, base[name](learning_rate))

  return optax.inject_hyperparams(chain)(learning_rate=learning_rate)


def learning_rate(opt_state) -> float:
  return float(opt_state.hyperparams["learning_rate"])


def with_learning_rate(opt_state, value: float):
  """A copy of an `inject_hyperparams` state with a new learning rate."""
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(value, dtype=jnp.asarray(hyper["learning_rate"]).dtype)
  return opt_state._replace(hyperparams=hyper)


class PlateauSchedule:
  """Multiply the learning rate by `factor` after `patience` validations without improvement.

  Seed 000 §4.2: ×0.25 after two (PTB) or one (other corpora) epochs with no improvement.
  """

  def __init__(self, factor: float, patience: int, best: float = math.inf, bad_epochs: int = 0):
    self.factor, self.patience = factor, patience
    self.best, self.bad_epochs = best, bad_epochs

  def update(self, value: float) -> bool:
    """Records a validation value; True when the learning rate should be reduced now."""
    if value < self.best:
      self.best, self.bad_epochs = value, 0
      return False
    self.bad_epochs += 1
    if self.patience > 0 and self.bad_epochs >= self.patience:
      self.bad_epochs = 0
      return True
    return False

  def state(self) -> dict:
    return {"best": self.best if math.isfinite(self.best) else None, "bad_epochs": self.bad_epochs}

  @classmethod
  def from_state(cls, factor, patience, state: dict | None) -> "PlateauSchedule":
    state = state or {}
    best = state.get("best")
    return cls(factor, patience, math.inf if best is None else best, state.get("bad_epochs", 0))


class EarlyStopping:
  """Stop after `patience` consecutive validations without a new best criterion (0 = never).

  Seed 003 §5.1: "until the validation perplexity has not improved for 3 times". Unlike
  `PlateauSchedule`, the count is not reset when the learning rate is reduced.
  """

  def __init__(self, patience: int, best: float = math.inf, bad_validations: int = 0):
    self.patience, self.best, self.bad_validations = patience, best, bad_validations

  def update(self, value: float) -> bool:
    """Records a validation value; True when training should stop now."""
    if value < self.best:
      self.best, self.bad_validations = value, 0
    else:
      self.bad_validations += 1
    return self.should_stop()

  def should_stop(self) -> bool:
    return self.patience > 0 and self.bad_validations >= self.patience

  def stop_reason(self) -> str | None:
    if not self.should_stop():
      return None
    return (f"early_stopping_patience={self.patience} reached: "
            f"{reporting.plural(self.bad_validations, 'validation')} without improvement of the "
            f"criterion (best {self.best:.4f})")

  def state(self) -> dict:
    return {"best": self.best if math.isfinite(self.best) else None,
            "bad_validations": self.bad_validations}

  @classmethod
  def from_state(cls, patience: int, state: dict | None,
                 best: float = math.inf) -> "EarlyStopping":
    """From a checkpoint's data_state entry; a checkpoint saved before early stopping existed
    (state None) starts the count at 0 from `best` (the plateau schedule's best criterion)."""
    if state is None:
      return cls(patience, best)
    saved_best = state.get("best")
    return cls(patience, math.inf if saved_best is None else saved_best,
               state.get("bad_validations", 0))
