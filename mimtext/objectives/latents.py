"""Latent families: how an objective's latents are drawn from q, scored under p, and summarised.

Every objective names one `LatentFamily` (its module's `LATENTS`; `objectives.latent_family(cfg)`
looks it up), the one place that says, for the model that objective trains:
- `sample(key, post, cfg, num) -> LatentDraw`: num reparameterised draws of q(z|x) with their log
  density log q(z|x), and the auxiliary variable a they were drawn through (HSVAE's γ; None for a
  Gaussian posterior);
- `log_prior(z, cfg) -> [...]`: log p(z) under the model's own prior;
- `kl(post, draw, cfg) -> [b]`: the KL term of the objective's ELBO, in closed form where one
  exists (the draws unused), else the Monte Carlo estimate averaged over the k draws (HSVAE: its
  ELBO's KL(q(z, γ|x) ‖ p(z, γ)), Monte Carlo over z|γ and closed form over γ);
- `code(post) -> [b,d]`: the deterministic code E_q[z|x] (`sentence_ae.posterior_code`, the one
  definition: μ; (1 − E_q[γ]) μ for HSVAE);
- `prior_sample(key, n, cfg) -> [n,d]`: exact draws of p(z);
- `posterior`: the posterior head (`ModelConfig.posterior`) the family needs;
- `kl_per_dimension(post, cfg) -> [b,d]`: the KL term split over the latent dimensions, in closed
  form, or None where the family's KL has no closed form per dimension (MAT-VAE's mixture prior,
  HSVAE's joint KL over (z, γ));
- `generation_prior_std`: σ of the N(0, σ² I) that prior samples are decoded from instead of
  `prior_sample`, or None to decode exact draws of p(z) (sMIM: 0.1, seed 000 appendix D.3: its
  marginal over z is implicit and the anchor N(0, I) sets its scale only roughly).
The losses draw their latents with `sample` and the evaluation bounds use the same functions
(`evaluation.bounds`), so a model is scored under the prior and posterior it was trained with.
log q and log p are densities of z alone (for HSVAE marginal over γ, in closed form): any other
density of z, such as a prior fitted after training, can replace log p in an importance weight.

This module holds the Gaussian family, q(z|x) = N(μ, diag σ²) with p(z) = N(0, I) (sMIM, sVAE, AE,
MI-VAE: seed 000 Eq. 3-4, seed 001 Eq. 2). MAT-VAE's spike-and-slab prior lives in `matvae`,
HSVAE's hierarchical prior in `hsvae`.

Notation: b batch, d latent, k samples, n prior draws.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from mimtext import distributions
from mimtext.models import sentence_ae

Array = jax.Array


class LatentDraw(NamedTuple):
  """k draws of the latents of b sentences from q(z|x).

  z: [k,b,d]. log_q: [k,b] log q(z|x), the density of z (the proposal density of an
  importance-weighted bound). aux: the auxiliary variable a that z was drawn through, as a pytree
  of [k,b,d] arrays (HSVAE: (log γ, log(1 − γ)), z ~ q(z|γ,x), γ ~ q(γ|x)), or None.
  """
  z: Array
  log_q: Array
  aux: Any = None


class LatentFamily(NamedTuple):
  """The latent model of one objective family as pure functions; see the module docstring."""
  name: str
  posterior: str
  sample: Callable[..., LatentDraw]
  log_prior: Callable[..., Array]
  kl: Callable[..., Array]
  code: Callable[[sentence_ae.Posterior], Array]
  prior_sample: Callable[..., Array]
  kl_per_dimension: Callable[..., Array] | None = None
  generation_prior_std: float | None = None

  @property
  def gaussian_posterior(self) -> bool:
    """q(z|x) is the diagonal Gaussian N(μ, diag σ²) (estimators that need its density)."""
    return self.posterior == "gaussian"


def take_draw(draw: LatentDraw, index: int) -> LatentDraw:
  """The draw `index` of k, without its sample axis: z [b,d], log_q [b], ...."""
  return jax.tree_util.tree_map(lambda x: x[index], draw)


def point_draw(post: sentence_ae.Posterior) -> LatentDraw:
  """The single 'draw' z = μ of an AE (seed 000 §4.5), scored under N(μ, σ²): k = 1."""
  log_q = distributions.normal_log_prob(post.mean, post.mean, post.log_var)
  return LatentDraw(post.mean[None], log_q[None], None)


def gaussian_sample(key: Array, post: sentence_ae.Posterior, cfg, num: int) -> LatentDraw:
  """num draws z = μ + σ ε of q(z|x) = N(μ, diag σ²) and log q(z|x): z [k,b,d], log q [k,b].

  `cfg` is unused (the family signature).
  """
  del cfg
  z = distributions.normal_sample(key, post.mean, post.log_var, sample_shape=(num,))
  log_q = distributions.normal_log_prob(z, post.mean, post.log_var)
  return LatentDraw(z, log_q, None)


def standard_normal_log_prior(z: Array, cfg) -> Array:
  """log N(z; 0, I) = −½ Σ_d [log 2π + z_d²]: [..., d] → [...] (seed 000 Eq. 4)."""
  del cfg
  return distributions.standard_normal_log_prob(z)


def gaussian_kl(post: sentence_ae.Posterior, draw: LatentDraw, cfg) -> Array:
  """KL(N(μ, σ²) ‖ N(0, I)) in closed form (seed 001 Eq. 2): [b]; the draws are not needed."""
  del draw, cfg
  return distributions.normal_kl_standard(post.mean, post.log_var)


def gaussian_kl_per_dimension(post: sentence_ae.Posterior, cfg) -> Array:
  """KL(N(μ_d, σ_d²) ‖ N(0, 1)) per dimension in closed form: [b,d] (sums to `gaussian_kl`)."""
  del cfg
  return distributions.normal_kl_standard_per_dim(post.mean, post.log_var)


def standard_normal_prior_sample(key: Array, n: int, cfg) -> Array:
  """n draws of N(0, I): [n,d], d = cfg.model.latent_dim."""
  return jax.random.normal(key, (n, cfg.model.latent_dim))


GAUSSIAN = LatentFamily(
    name="gaussian", posterior="gaussian", sample=gaussian_sample,
    log_prior=standard_normal_log_prior, kl=gaussian_kl, code=sentence_ae.posterior_code,
    prior_sample=standard_normal_prior_sample, kl_per_dimension=gaussian_kl_per_dimension)

# sMIM: the Gaussian family, with prior samples decoded from N(0, 0.1² I) (seed 000 appendix D.3).
SMIM_GAUSSIAN = GAUSSIAN._replace(name="smim_gaussian", generation_prior_std=0.1)

