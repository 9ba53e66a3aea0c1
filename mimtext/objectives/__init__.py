"""Objectives: each
`loss(params, batch, *, key, step, cfg, deterministic=False) -> (loss, metrics)`.

| name | objective | paper | latents (`LATENTS`) |
| --- | --- | --- | --- |
| mim | A-MIM | seed 000 Algorithm 1 | Gaussian |
| vae | −ELBO¹ | seeds 001, 003, 004 | Gaussian |
| ae | deterministic autoencoder | seed 000 §4.5 | z = μ |
| lm | language model² | seeds 000, 001 (baseline) | none |
| mi | −ELBO + λ L_MI | seed 002 Eq. 9 | Gaussian |
| hsvae | hierarchical sparse VAE | seed 004 Eq. 2 | q(γ|x) q(z|γ,x), p(γ) p(z|γ) |
| matvae | −ELBO, ψ KL + λ MMD to a spike-and-slab prior | seed 004 appendix B | spike-and-slab p |

¹ annealing, free bits, multi-sample, word dropout, L1/L2.
² the decoder without z (condition "none"), exact NLL.

Gaussian: q(z|x) = N(μ, diag σ²), p(z) = N(0, I); the AE decodes z = μ and uses the Gaussian
family only as a proposal (`evaluation.bounds`); MAT-VAE pairs the Gaussian q with its prior.

Each objective module holds its loss and, next to it, its `LATENTS` (`latents.LatentFamily`): how
its latents are drawn and scored. `latent_family(cfg)` looks it up for evaluation.
"""

from mimtext.objectives import ae
from mimtext.objectives import common
from mimtext.objectives import elbo
from mimtext.objectives import hsvae
from mimtext.objectives import lm
from mimtext.objectives import latents
from mimtext.objectives import matvae
from mimtext.objectives import mi
from mimtext.objectives import mim
from mimtext.objectives.common import ObjectiveConfig
from mimtext.objectives.latents import LatentDraw
from mimtext.objectives.latents import LatentFamily

MODULES = {"mim": mim, "vae": elbo, "ae": ae, "mi": mi, "hsvae": hsvae, "matvae": matvae,
           "lm": lm}
LOSSES = {name: module.loss for name, module in MODULES.items()}


def get_loss(name: str):
  """The loss function registered under `name`."""
  if name not in LOSSES:
    raise ValueError(f"unknown objective {name!r}; choose one of {sorted(LOSSES)}")
  return LOSSES[name]


def latent_family(cfg: ObjectiveConfig) -> LatentFamily:
  """The latent family of the objective `cfg.name` (its module's `LATENTS`).

  Raises ValueError when the model's posterior head is not the one the family draws from (an
  HSVAE objective needs posterior="hsvae", every other one the Gaussian head).
  """
  get_loss(cfg.name)
  family = MODULES[cfg.name].LATENTS
  if cfg.model.posterior != family.posterior:
    raise ValueError(f"the {cfg.name} objective draws its latents from a {family.posterior} "
                     f"posterior, but the model has posterior={cfg.model.posterior!r}")
  return family


__all__ = ["LOSSES", "LatentDraw", "LatentFamily", "MODULES", "ObjectiveConfig", "common",
           "get_loss", "latent_family", "latents"]
