"""Objectives: each `loss(params, batch, *, key, step, cfg, deterministic=False) -> (loss, metrics)`.

| name | objective | paper |
| --- | --- | --- |
| mim | A-MIM | seed 000 Algorithm 1 |
| vae | −ELBO with annealing, free bits, multi-sample, word dropout, L1/L2 | seeds 001, 003, 004 |
| ae | deterministic autoencoder | seed 000 §4.5 |
| mi | −ELBO + λ L_MI | seed 002 Eq. 9 |
| hsvae | hierarchical sparse VAE | seed 004 Eq. 2 |
| matvae | −ELBO with ψ KL + λ MMD to a spike-and-slab prior | seed 004 appendix B |
"""

from mimtext.objectives import ae
from mimtext.objectives import common
from mimtext.objectives import elbo
from mimtext.objectives import hsvae
from mimtext.objectives import matvae
from mimtext.objectives import mi
from mimtext.objectives import mim
from mimtext.objectives.common import ObjectiveConfig

LOSSES = {"mim": mim.loss, "vae": elbo.loss, "ae": ae.loss, "mi": mi.loss, "hsvae": hsvae.loss,
          "matvae": matvae.loss}


def get_loss(name: str):
  """The loss function registered under `name`."""
  if name not in LOSSES:
    raise ValueError(f"unknown objective {name!r}; choose one of {sorted(LOSSES)}")
  return LOSSES[name]


__all__ = ["LOSSES", "ObjectiveConfig", "common", "get_loss"]
