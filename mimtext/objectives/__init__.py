"""Objectives: each `loss(params, batch, *, key, step, cfg) -> (loss, metrics)`."""

from mimtext.objectives import ae
from mimtext.objectives import elbo
from mimtext.objectives import mim
from mimtext.objectives.common import ObjectiveConfig

LOSSES = {"mim": mim.loss, "vae": elbo.loss, "ae": ae.loss}


def get_loss(name: str):
  """The loss function registered under `name` ("mim", "vae", "ae")."""
  if name not in LOSSES:
    raise ValueError(f"unknown objective {name!r}; choose one of {sorted(LOSSES)}")
  return LOSSES[name]


__all__ = ["LOSSES", "ObjectiveConfig", "get_loss"]
